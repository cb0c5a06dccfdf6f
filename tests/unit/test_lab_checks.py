"""`lab up` and `lab down` against what a machine may hold: a service that ignores SIGTERM,
a hung Asterisk, an interrupted chroot build whose PID was taken since, a dual-stack
listener on the FastAGI port. No running lab needed (root, as the lab itself)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from outbound_router import lab, sipp, topology
from outbound_router.local_redis import RedisProcess


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OUTBOUND_ROUTER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


#: A service that does not stop on SIGTERM (one that hangs while shutting down); its argv
#: names `outbound_router.cli agi`, as the lab's does.
STUBBORN = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(120)")


def test_lab_down_leaves_no_service_that_ignored_sigterm(cache: Path) -> None:
    # The supervisor was SIGKILLed after 10 s, its service lived on (reparented to PID 1,
    # still on 127.0.0.1:4573) while `lab down` said "agi: stopped", and the next `lab up`
    # did not start agi: AGI calls hung.
    p = lab.paths()
    p.state_dir.mkdir(parents=True)
    log = p.state_dir / "agi.log"
    supervisor = sipp.spawn_detached(
        lab.supervised([sys.executable, "-c", STUBBORN, "outbound_router.cli", "agi"]), log)
    worker = None
    try:
        while worker is None or b"ready" not in log.read_bytes():
            assert sipp.exit_status(supervisor) is None, log.read_text()
            worker = lab.worker_of(supervisor, "agi")
            os.sched_yield()
        said: list[str] = []
        lab.stop_services(p, {"services": {"agi": {"pid": supervisor}}}, ["agi"], said.append,
                          timeout=1.0)
        assert said == [f"agi: stopped (pid {supervisor})"]
        lab.wait_reaped([worker])
        assert sipp.proc_argv(worker) == [], f"the service {worker} outlived `lab down`"
    finally:
        for pid in (worker, supervisor):
            if pid and sipp.proc_argv(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_hung_asterisk_is_a_lab_error_not_a_traceback(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its CLI never answered: `lab up` waited 60 s in silence, then died with
    # subprocess.TimeoutExpired.
    def hung(p: lab.Paths, command: str, timeout: float = 10) -> None:
        raise subprocess.TimeoutExpired(["asterisk", "-rx", command], timeout)

    monkeypatch.setattr(lab, "_rasterisk", hung)
    monkeypatch.setattr(lab, "is_asterisk", lambda pid, chroot: True)
    with pytest.raises(lab.LabError, match="does not answer its CLI and ARI"):
        lab.wait_asterisk(lab.paths(), {"asterisk_pid": 4242}, ("u", "p"), timeout=1)


def test_an_interrupted_build_named_after_a_pid_taken_since_is_cleaned(cache: Path) -> None:
    # Every build runs under the lab's lock: a build directory found under it is stale,
    # whatever process has its PID now (after a reboot PIDs come back small). `lab up`
    # refused for as long as that process ran: "another chroot build is running".
    p = lab.paths()
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            stale = p.cache / f"chroot.build-{other.pid}"
            (stale / "etc").mkdir(parents=True)
            said: list[str] = []
            lab._clean_stale_builds(p, said.append)
            assert not stale.exists() and said == [f"chroot: removing an interrupted build "
                                                   f"{stale}"]
            assert other.poll() is None  # not ours: left alone
        finally:
            other.kill()


def test_an_orphaned_debootstrap_of_an_interrupted_build_is_stopped(cache: Path) -> None:
    p = lab.paths()
    stale = p.cache / "chroot.build-1"
    stale.mkdir(parents=True)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                           str(stale)]) as orphan:  # stands for debootstrap
        try:
            assert str(stale) in sipp.proc_argv(orphan.pid)  # (its exec is done)
            lab._clean_stale_builds(p, lambda _: None)
            assert orphan.wait(timeout=5) == -signal.SIGKILL
            assert not stale.exists()
        finally:
            orphan.kill()


def test_a_dual_stack_listener_on_the_fastagi_port_keeps_agi_from_starting(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A listener on [::]:PORT (IPV6_V6ONLY off) holds 127.0.0.1:PORT too, and only
    # /proc/net/tcp6 lists it: agi was started into the taken port and exited at once.
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        squatter.bind(("::", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        monkeypatch.setattr(topology, "AGI_PORT", port)
        spawned: list[object] = []
        monkeypatch.setattr(sipp, "spawn_detached", lambda *a, **k: spawned.append(a))
        said: list[str] = []
        state: dict[str, object] = {}
        lab.paths().state_dir.mkdir(parents=True)
        lab.ensure_services(lab.paths(), state, "redis://127.0.0.1:1/0", ("u", "p"),
                            said.append, wanted=["agi"])
    assert spawned == [] and said == [f"agi: {topology.AGI_LISTEN} is already in use by "
                                      "another process; not started"]


def test_lab_down_leaves_a_redis_server_that_got_the_pid_of_its_own(
        cache: Path, tmp_path: Path) -> None:
    # A PID in state.json was taken for the lab's own process on the program's name alone:
    # `lab down` killed a redis-server (or a SIPp) that had got the PID of the lab's dead one.
    foreign = RedisProcess(tmp_path / "foreign")
    foreign.start()
    try:
        assert foreign.proc is not None
        lab.save_state(lab.paths(), {"redis": {"pid": foreign.proc.pid,
                                               "url": "redis://127.0.0.1:1/0"},
                                     "carriers": {"a": {"pid": foreign.proc.pid}}})
        lab.down(say=lambda _: None)
        assert foreign.proc.poll() is None, "lab down killed a redis-server it never started"
    finally:
        foreign.kill()


def test_lab_down_leaves_alone_an_agi_that_got_the_pid_of_the_lab_s(
        cache: Path, tmp_path: Path) -> None:
    # The state names a service supervisor by PID only; after a reboot (state.json is in
    # ~/.cache) that PID may be anybody's. Any process whose argv holds
    # "outbound_router.cli" and "agi" (a developer's `python -m outbound_router.cli agi`, a
    # `lab call N --via agi`, another cache directory's lab) passed for the lab's and was
    # SIGTERMed, its whole process group SIGKILLed after 10 s.
    p = lab.paths()
    p.state_dir.mkdir(parents=True)
    elsewhere = tmp_path / "someone-else"
    elsewhere.mkdir()
    theirs = sipp.spawn_detached([sys.executable, "-c", SLEEPER, "outbound_router.cli", "agi"],
                                 elsewhere / "agi.log")
    try:
        while b"ready" not in (elsewhere / "agi.log").read_bytes():
            os.sched_yield()
        lab.save_state(p, {"services": {"agi": {"pid": theirs}}})
        lab.down(say=lambda _: None)
        assert sipp.proc_argv(theirs) != [], "lab down killed a process that is not the lab's"
    finally:
        if sipp.proc_argv(theirs):
            os.killpg(theirs, signal.SIGKILL)
        sipp.exit_status(theirs)


def fake_services(monkeypatch: pytest.MonkeyPatch, running: set[int]) -> list[dict[str, str]]:
    """Services that start and stop without a process: PIDs 5001, 5002... in ``running``;
    returns the environments they were started with."""
    spawned: list[dict[str, str]] = []

    def spawn(argv: list[str], log: Path, env: dict[str, str]) -> int:
        spawned.append(env)
        running.add(5000 + len(spawned))
        return 5000 + len(spawned)

    def stop(p: lab.Paths, state: dict, names: list[str], say: lab.Say) -> None:
        for name in names:
            running.discard(state["services"].pop(name)["pid"])

    monkeypatch.setattr(lab, "is_service", lambda pid, name: pid in running)
    monkeypatch.setattr(lab, "stop_services", stop)
    monkeypatch.setattr(lab, "_service_ready", lambda name, log, offset: True)
    monkeypatch.setattr(sipp, "spawn_detached", spawn)
    return spawned


def test_lab_up_with_another_redis_url_restarts_the_services_on_it(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # seed, status and demo moved to the new REDIS_URL, the running services stayed on the
    # old one: routes seeded there were never used ("v000002 not loaded within 10 s").
    monkeypatch.delenv("REDIS_PREFIX", raising=False)
    spawned = fake_services(monkeypatch, running={4242})
    p = lab.paths()
    p.state_dir.mkdir(parents=True)
    state = {"services": {"ari": {"pid": 4242, "redis_url": "redis://127.0.0.1:1/0"}}}
    said: list[str] = []
    for _ in range(2):  # the second time, nothing to do
        lab.ensure_services(p, state, "redis://127.0.0.1:2/0", ("u", "p"), said.append,
                            wanted=["ari"])
    assert said == ["ari: restarting it on redis://127.0.0.1:2/0 (it ran on "
                    "redis://127.0.0.1:1/0)", f"ari: started (pid 5001), log {p.state_dir}/ari.log"]
    assert [env["REDIS_URL"] for env in spawned] == ["redis://127.0.0.1:2/0"]
    assert state["services"]["ari"] == {"pid": 5001, "redis_url": "redis://127.0.0.1:2/0",
                                        "redis_prefix": "outbound-router",
                                        "ari_auth": lab._credentials_digest(("u", "p"))}
    # the same with another REDIS_PREFIX (the services inherit it, and seed uses it)
    monkeypatch.setenv("REDIS_PREFIX", "other-platform")
    said.clear()
    for _ in range(2):
        lab.ensure_services(p, state, "redis://127.0.0.1:2/0", ("u", "p"), said.append,
                            wanted=["ari"])
    assert said == ["ari: restarting it on redis://127.0.0.1:2/0 under REDIS_PREFIX "
                    "'other-platform' (it ran on redis://127.0.0.1:2/0)",
                    f"ari: started (pid 5002), log {p.state_dir}/ari.log"]
    assert spawned[-1]["REDIS_PREFIX"] == "other-platform"


SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"


def test_lab_down_after_its_state_was_lost_stops_its_services_and_no_one_elses(
        cache: Path, tmp_path: Path) -> None:
    # state.json gone (a cleaned cache directory): `lab up` started a second ari beside the
    # first, and `lab down` left the services running and /proc mounted. The lab's own are
    # told by their log: another lab's (another cache directory) are left alone.
    p = lab.paths()
    p.state_dir.mkdir(parents=True)
    elsewhere = tmp_path / "other-lab"
    elsewhere.mkdir()
    argv = lab.supervised([sys.executable, "-c", SLEEPER, "outbound_router.cli", "agi"])
    ours = sipp.spawn_detached(argv, p.state_dir / "agi.log")
    theirs = sipp.spawn_detached(argv, elsewhere / "agi.log")
    try:
        for log in (p.state_dir / "agi.log", elsewhere / "agi.log"):
            while b"ready" not in log.read_bytes():
                os.sched_yield()
        said: list[str] = []
        assert lab.down(say=said.append)
        assert said == [f"agi: stopped a stray one the lab's state did not name (pid {ours})"]
        lab.wait_reaped([ours])
        assert sipp.proc_argv(ours) == [] and sipp.proc_argv(theirs) != []
    finally:
        for pid in (ours, theirs):
            if sipp.proc_argv(pid):
                os.killpg(pid, signal.SIGKILL)


def test_a_lab_up_that_waits_for_another_says_so(cache: Path) -> None:
    # (a chroot build holds the lock for a minute: the second `lab up` sat there in silence)
    p = lab.paths()
    said: list[str] = []
    waiter = [sys.executable, "-c", "import sys; from pathlib import Path\n"
              "from outbound_router import lab\n"
              "with lab.locked(lab.Paths(Path(sys.argv[1])), print): pass\n", str(p.cache)]
    with lab.locked(p, said.append):
        other = subprocess.Popen(waiter, stdout=subprocess.PIPE, text=True)
        assert other.stdout is not None
        line = other.stdout.readline()
    assert other.wait(timeout=10) == 0
    other.stdout.close()
    assert line == f"lab: waiting for another `lab up` or `lab down` to finish ({p.cache})\n"
    assert said == []


def test_lab_down_says_when_the_chroot_s_proc_stays_mounted(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `lab down` said "mount: unmounted" and exited 0 whether or not umount (then umount -l)
    # had worked.
    p = lab.paths()
    proc_dir = str(p.in_chroot("/proc").resolve())
    real_run = subprocess.run
    tried: list[list[str]] = []

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if argv[0] != "umount":
            return real_run(argv, **kwargs)  # type: ignore[call-overload, no-any-return]
        tried.append(argv)
        return subprocess.CompletedProcess(argv, 32, "", f"umount: {argv[-1]}: target is busy.")

    monkeypatch.setattr(lab, "is_mounted", lambda path: str(path.resolve()) == proc_dir)
    monkeypatch.setattr(lab.subprocess, "run", run)
    said: list[str] = []
    with pytest.raises(lab.LabError) as failed:
        lab.down(say=said.append)
    assert tried == [["umount", proc_dir], ["umount", "-l", proc_dir]]
    assert not any(line.startswith("mount:") for line in said)
    assert str(failed.value) == (f"still mounted: {proc_dir} (umount: {proc_dir}: target is "
                                 "busy.). Unmount by hand (umount -l POINT), then `lab down` "
                                 "again")


@pytest.mark.parametrize("version", ["22.10.1", "22.0.0-rc1", "22"])
def test_asterisk_22_of_any_release_gets_no_warning(version: str) -> None:
    assert lab.asterisk_version_warning(version) is None


@pytest.mark.parametrize("version", ["23.0.0", "2.10.1", "220.1", ""])
def test_another_major_version_is_named_in_a_warning(version: str) -> None:
    warning = lab.asterisk_version_warning(version)
    assert warning is not None
    assert f"this is Asterisk {version or '(version unknown)'}," in warning
    assert "made for Asterisk 22" in warning and "OUTBOUND_ROUTER_DEBIAN_MIRROR" in warning


def test_lab_up_with_other_ari_credentials_restarts_the_ari_service(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # install_config() rewrites ari.conf and `core reload`s Asterisk; the running ari service
    # kept the old password: every ARI request of every call got 401 while `lab up` and
    # `lab status` said "up" (the caller waited for nothing).
    monkeypatch.delenv("REDIS_PREFIX", raising=False)
    spawned = fake_services(monkeypatch, running=set())
    p = lab.paths()
    p.state_dir.mkdir(parents=True)
    state: dict = {}
    url = "redis://127.0.0.1:2/0"
    lab.ensure_services(p, state, url, ("outbound-router", "old"), lambda _: None,
                        wanted=["ari"])
    lab.ensure_services(p, state, url, ("outbound-router", "new"), lambda _: None,
                        wanted=["ari"])
    assert [env["ARI_PASSWORD"] for env in spawned] == ["old", "new"]
    assert "new" not in (p.state_file.read_text())  # no password in the state file


def test_the_phone_traces_of_old_calls_are_removed(cache: Path) -> None:
    # Every `lab call` and demo call left three files in calls/, over every lab up/down.
    p = lab.paths()
    p.calls_dir.mkdir(parents=True)
    for n in range(5):
        for suffix in (".xml", ".messages.log", ".messages.errors.log"):
            f = p.calls_dir / f"phone-{n}{suffix}"
            f.write_text("x")
            os.utime(f, (1000.0 + n, 1000.0 + n))
    assert lab.call_traces(p, keep=3) == p.calls_dir
    assert sorted(f.name for f in p.calls_dir.iterdir()) == sorted(
        f"phone-{n}{suffix}" for n in (3, 4)
        for suffix in (".xml", ".messages.log", ".messages.errors.log"))
    assert lab.call_traces(lab.Paths(cache / "elsewhere")) == cache / "elsewhere/lab/calls"


def test_the_services_run_this_installation_s_code_from_any_directory(tmp_path: Path) -> None:
    # `lab up` run from inside another checkout started that checkout's services: `python -m`
    # puts the current directory first on sys.path.
    other = tmp_path / "outbound_router"
    other.mkdir()
    (other / "__init__.py").write_text("")
    (other / "cli.py").write_text("print('another checkout')\n")
    (other / "supervise.py").write_text("print('another checkout')\n")
    for argv in (lab.cli_command("--version"), lab.supervised([sys.executable, "-c", "1"])):
        out = subprocess.run(argv, cwd=other.parent, capture_output=True, text=True,
                             timeout=30, check=False)
        assert "another checkout" not in out.stdout, argv
        assert out.returncode == 0, out.stderr


def test_a_service_log_past_its_bound_starts_afresh_when_the_service_starts(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ari.log and agi.log were appended to over every lab up/down, a line per call and per
    # attempt, and only ever grew.
    monkeypatch.delenv("REDIS_PREFIX", raising=False)
    monkeypatch.setattr(lab, "SERVICE_LOG_MAX_BYTES", 10)
    fake_services(monkeypatch, running=set())
    p = lab.paths()
    p.state_dir.mkdir(parents=True)
    (p.state_dir / "ari.log").write_text("an old line past the bound\n")
    (p.state_dir / "agi.log").write_text("short\n")
    lab.ensure_services(p, {}, "redis://127.0.0.1:2/0", ("u", "p"), lambda _: None)
    assert (p.state_dir / "ari.log.previous").read_text() == "an old line past the bound\n"
    assert not (p.state_dir / "ari.log").exists()  # (the fake service writes nothing)
    assert (p.state_dir / "agi.log").read_text() == "short\n"
    assert not (p.state_dir / "agi.log.previous").exists()


READY = b"\x1b[1;32mAsterisk Ready.\x1b[0m\n"
ENDING = b"Asterisk cleanly ending (0).\nExecuting last minute cleanups\n"


@pytest.mark.parametrize(("console", "ending"), [
    (b"", False),
    (b"booting\n" + READY, False),
    (b"booting\n" + READY + b"    -- Executing [s@x:1] NoOp(\"ending (\")\n", False),
    (b"booting\n" + READY + ENDING, True),
    (b"booting\n" + READY + b"Asterisk uncleanly ending (2).\n", True),
    # `core restart now`: the same process boots again and says so
    (b"booting\n" + READY + ENDING + b"Preparing for Asterisk restart...\n" + READY, False),
    # a console output past the tail read: its last lines decide
    (b"booting\n" + READY + b"x" * 100_000 + b"\n" + ENDING, True),
])
def test_an_asterisk_that_began_to_shut_down_is_told_from_one_that_runs(
        cache: Path, console: bytes, ending: bool) -> None:
    # `lab up` right after a SIGTERM kept the stopping Asterisk, which still answered ARI
    # and its CLI, and returned; Asterisk then exited and left the lab down (a CI run: every
    # lab test after it failed). Its console output is what tells.
    p = lab.paths()
    p.state_dir.mkdir(parents=True)
    if console:
        (p.state_dir / "asterisk.out").write_bytes(console)
    assert lab.asterisk_ending(p) is ending
