"""`lab up` on a machine with no chroot yet, `lab up` again, `lab status`, `lab down`.

Runs first in the session (tests/lab/conftest.py orders it), with a cache directory of its own:
it really builds a chroot with debootstrap (about a minute). When the default cache has no
chroot yet (a fresh CI machine), the one built here is kept there for the rest of the run.
A lab already running on the fixed addresses is taken down for the test and brought back.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from outbound_router import lab as lab_mod
from outbound_router import sipp, topology

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def _lab(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUTBOUND_ROUTER_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "outbound_router.cli", "lab", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=800,
                          check=False)


def _pids(state: dict) -> dict[str, int]:
    pids = {"asterisk": state["asterisk_pid"]}
    for letter, info in state.get("carriers", {}).items():
        pids[f"carrier-{letter}"] = info["pid"]
    for name, info in state.get("services", {}).items():
        if info.get("pid"):
            pids[name] = info["pid"]
    if (state.get("redis") or {}).get("pid"):
        pids["redis"] = state["redis"]["pid"]
    return pids


def _environment(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.decode().partition("=") for item in f.read().split(b"\0") if item]
    return {name: value for name, _, value in pairs}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _processes_rooted_in(root: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/root") == str(root):
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture
def fresh_cache() -> Path:
    default = lab_mod.cache_dir()
    fresh = default.parent / f"{default.name}-fresh-build-test"
    running = lab_mod.running_info()
    had_carriers = running is not None and bool(
        lab_mod.load_state(lab_mod.paths()).get("carriers"))
    # The Redis its services use, for bringing it back: run alone, without the session's
    # lab fixture, this file brought a reused lab back on the machine's Redis (6379, REDIS_URL
    # unset) and seeded the example routes there.
    redis_env = lab_mod.services_redis(running) if running is not None else {}
    if running is not None:
        lab_mod.down(say=print)
    if fresh.exists():
        _lab(fresh, "down")
        shutil.rmtree(fresh)
    yield fresh
    _lab(fresh, "down")
    keep = fresh / "chroot"
    default_ready = lab_mod.chroot_ready(lab_mod.paths())
    if keep.is_dir() and not default_ready and not lab_mod.mounts_under(keep):
        lab_mod.paths().cache.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(lab_mod.paths().chroot, ignore_errors=True)
        keep.rename(lab_mod.paths().chroot)  # a fresh machine: no second build for the session
    shutil.rmtree(fresh, ignore_errors=True)
    if running is not None:
        with pytest.MonkeyPatch.context() as env:
            for name, value in redis_env.items():
                env.setenv(name, value)
            lab_mod.up(carriers=had_carriers, say=print)


def test_lab_up_builds_then_reuses_reports_and_goes_down_cleanly(fresh_cache, redis_server,
                                                                  monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server)  # not the machine's Redis
    # 1. No chroot yet: `lab up` builds one, starts Asterisk, Redis, services, demo carriers.
    first = _lab(fresh_cache, "up")
    print(first.stdout, first.stderr)
    assert first.returncode == 0, first.stderr
    assert "chroot: building Debian sid" in first.stdout
    assert "fully booted" in first.stdout
    assert "start-up ERROR" not in first.stdout
    chroot = fresh_cache / "chroot"
    assert lab_mod.Paths(fresh_cache).chroot == chroot
    assert (chroot / lab_mod.CHROOT_MARKER).is_file()
    assert not list(fresh_cache.glob("chroot.build-*"))
    state = json.loads((fresh_cache / "lab" / "state.json").read_text())
    pids = _pids(state)
    assert all(_alive(pid) for pid in pids.values()), pids
    assert {f"carrier-{c.letter}" for c in topology.CARRIERS} <= set(pids)
    # Each service holds only the settings it uses: the FastAGI server no ARI password.
    assert "ARI_PASSWORD" in _environment(pids["ari"])
    assert not {"ARI_PASSWORD", "ARI_USERNAME"} & set(_environment(pids["agi"]))

    # 2. Again: nothing is built, started or installed a second time.
    second = _lab(fresh_cache, "up")
    assert second.returncode == 0, second.stderr
    for word in ("building", "started", "installed", "carrier-a:"):
        assert word not in second.stdout, second.stdout
    assert _pids(json.loads((fresh_cache / "lab" / "state.json").read_text())) == pids

    # 3. Status says what runs.
    status = _lab(fresh_cache, "status")
    assert status.returncode == 0, status.stdout
    assert f"running (pid {pids['asterisk']})" in status.stdout
    assert "answers" in status.stdout
    assert status.stdout.rstrip().endswith("lab        up")

    # 4. The README's main job (`scripts/demo` is setup, `lab up`, `lab demo`): calls routed
    # through both paths as the example routes say.
    demo = _lab(fresh_cache, "demo", "--calls", "3")
    print(demo.stdout, demo.stderr)
    assert demo.returncode == 0, demo.stdout
    assert "carrier-b(503) -> carrier-a(200)" in demo.stdout or "carrier-a(200)" in demo.stdout
    assert "caller got 403 Forbidden" in demo.stdout
    # A path whose service is not running is no demo: it fails, saying so (it said nothing
    # and exited 0).
    agi = state["services"]["agi"]["pid"]  # its supervisor: SIGTERM, no restart
    assert lab_mod.stop_process(agi, lambda pid: lab_mod.is_service(pid, "agi"))
    lame = _lab(fresh_cache, "demo", "--calls", "1")
    assert lame.returncode == lab_mod.EXIT_FAILED, lame.stdout
    assert "FAILED: 3 of 7 calls did not go as the example routes promise" in lame.stdout
    assert "agi 911234567: not placed, the agi service is not running (3 calls)" in lame.stdout
    del pids["agi"]
    # `lab up` cannot start it again while another process holds its port: exit 1, saying
    # so (it exited 0, and a suite run after `lab up && ...` went on with half a lab).
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((topology.AGI_HOST, topology.AGI_PORT))
        squatter.listen()
        half = _lab(fresh_cache, "up")
    assert half.returncode == lab_mod.EXIT_FAILED, half.stdout
    assert "already in use by another process; not started" in half.stdout
    assert half.stdout.rstrip().endswith("but with agi not running (see above; "
                                         "`outbound-router lab status`)")

    # 5. Down: no Asterisk, no SIPp, no mount, no process left in the chroot.
    down = _lab(fresh_cache, "down")
    assert down.returncode == 0, down.stderr
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert lab_mod.mounts_under(fresh_cache) == []
    assert _processes_rooted_in(chroot) == []
    assert not any(sipp.udp_bound(c.address, c.port) for c in topology.CARRIERS)
    assert not (fresh_cache / "lab" / "state.json").exists()
    after = _lab(fresh_cache, "status")
    assert after.returncode == lab_mod.EXIT_NOT_RUNNING
    assert "asterisk   not running" in after.stdout
