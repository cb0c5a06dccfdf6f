"""The console script as a user runs it (subprocess), against a private redis-server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service_process import service_process

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "redis_seed" / "routes.example.yaml"


def run(*args: str, redis_url: str = "redis://127.0.0.1:1/0",
        check: bool = False, **more_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "REDIS_PREFIX": "cli-test", **more_env}
    return subprocess.run([sys.executable, "-m", "outbound_router.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=check)


def test_version_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    out = run("--version", check=True)
    assert out.stdout == f"outbound-router {version('outbound-router')}\n"


def test_validate_accepts_the_example_file() -> None:
    out = run("validate", str(EXAMPLE))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{EXAMPLE}: OK (7 routes, 4 carriers, 5 patterns, 1 group)\n"


def test_validate_reports_every_problem_as_file_line_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "carriers:\n"
        "  a: {trunks: [carrier-a]}\n"
        "target_patterns:\n"
        "  spain: {prefix: '34'}\n"
        "outgoing_routes:\n"
        "  - {pattern: spain, carrier: nobody, priority: 1, metric: 0}\n"
    )
    out = run("validate", str(bad))
    assert out.returncode == 1
    lines = out.stdout.splitlines()  # validate's report, as a linter's, on stdout
    assert all(re.match(rf"{re.escape(str(bad))}:\d+: \S", line) for line in lines), lines
    assert any(line.startswith(f"{bad}:4:") for line in lines), out.stdout
    assert sum(line.startswith(f"{bad}:6:") for line in lines) >= 2, out.stdout
    assert out.stderr == ""


def test_validate_and_seed_note_two_carriers_that_send_a_trunk_the_same_invite(
        redis_server: str, tmp_path: Path) -> None:
    # SPEC section 2 skips a carrier already tried, not a trunk: carrier-d got two INVITEs
    # for one number when "delta" and "strict" both came up in a call (acceptance run).
    shared = tmp_path / "shared.yaml"
    shared.write_text(EXAMPLE.read_text().replace(
        "    trunks: [carrier-c]\n", "    trunks: [carrier-c, carrier-a]\n", 1).replace(
        '    number_format: "E164"     # 34911234567\n    prefix: "1010"', "", 1))
    note = ("carriers peering, busyline dial trunk carrier-a with the same number format and "
            "prefix: a call whose routes reach more than one of them sends carrier-a the same "
            "INVITE again (a carrier already tried is skipped, its trunk is not)")
    out = run("validate", str(shared))
    assert (out.returncode, out.stdout.splitlines()[0]) == (0, f"{shared}: note: {note}")
    out = run("seed", str(shared), redis_url=redis_server)
    assert out.returncode == 0 and re.fullmatch(r"v\d{6}\n", out.stdout), out
    assert f"outbound-router seed: note: {shared}: {note}\n" in out.stderr
    # Another format or prefix sends another INVITE: no note (the example file has none)
    assert "note" not in run("validate", str(EXAMPLE)).stdout


def test_explain_json_from_a_file_gives_exact_shares() -> None:
    out = run("explain", "911234567", "--config", str(EXAMPLE), "--json", check=True)
    decision = json.loads(out.stdout)
    assert set(decision) == {"status", "number", "tiers"}
    assert decision["status"] == "OK"
    assert decision["number"] == "+34911234567"
    first = decision["tiers"][0]
    assert first["priority"] == 1
    assert [(r["route"], r["carrier"], r["metric"], r["share"]) for r in first["routes"]] == [
        ("spain-peering", "peering", 1, 1 / 3), ("spain-overloaded", "overloaded", 2, 2 / 3)]


def test_explain_takes_a_tenant_that_starts_with_a_dash() -> None:
    # The dialplan passes such a tenant on; `--tenant -acme` was an argparse usage error.
    spelt = run("explain", "911234567", "--tenant", "-acme", "--config", str(EXAMPLE),
                "--json")
    assert spelt.returncode == 0, spelt.stderr
    glued = run("explain", "911234567", "--tenant=-acme", "--config", str(EXAMPLE), "--json",
                check=True)
    assert json.loads(spelt.stdout)["tiers"] == json.loads(glued.stdout)["tiers"]
    missing = run("explain", "911234567", "--tenant", "--json")  # a value forgotten
    assert missing.returncode == 2 and "expected one argument" in missing.stderr


@pytest.mark.parametrize(("number", "status"), [
    ("91a234567", "INVALID"), ("0034806123456", "BLOCKED"), ("0049301234567", "NO_ROUTE")])
def test_explain_json_statuses(number: str, status: str) -> None:
    out = run("explain", number, "--config", str(EXAMPLE), "--json", check=True)
    decision = json.loads(out.stdout)
    assert decision["status"] == status
    assert set(decision) == {"status", "number", "tiers"}  # SPEC's object, no more


def test_seed_explain_versions_rollback_against_redis(redis_server: str, tmp_path: Path) -> None:
    v1 = run("seed", str(EXAMPLE), redis_url=redis_server, check=True).stdout.strip()
    changed = tmp_path / "changed.yaml"
    changed.write_text(EXAMPLE.read_text().replace(
        "pattern: spain, carrier: peering,    priority: 1, metric: 1",
        "pattern: spain, carrier: peering,    priority: 1, metric: 2"))
    v2 = run("seed", str(changed), redis_url=redis_server, check=True).stdout.strip()
    assert v1 != v2

    def shares() -> list[float]:
        out = run("explain", "+34911234567", "--json", redis_url=redis_server, check=True)
        return [r["share"] for r in json.loads(out.stdout)["tiers"][0]["routes"]]

    assert shares() == [0.5, 0.5]
    listing = run("versions", redis_url=redis_server, check=True).stdout.splitlines()
    assert [line.split()[0] for line in listing] == [v1, "*"]
    assert run("rollback", redis_url=redis_server, check=True).stdout.strip() == v1
    assert shares() == [1 / 3, 2 / 3]


def test_seed_if_empty_seeds_a_first_time_only(redis_server: str, tmp_path: Path) -> None:
    # A first start's routes (docker-compose's one-shot seed) must never replace what an
    # operator seeded since: each `docker compose up` seeded the example again.
    v1 = run("seed", "--if-empty", str(EXAMPLE), redis_url=redis_server, check=True)
    assert "not seeded" not in v1.stderr
    mine = tmp_path / "mine.yaml"
    mine.write_text(EXAMPLE.read_text().replace("metric: 1", "metric: 3"))
    v2 = run("seed", str(mine), redis_url=redis_server, check=True).stdout.strip()
    again = run("seed", "--if-empty", str(EXAMPLE), redis_url=redis_server, check=True)
    assert again.stdout.strip() == v2
    assert f"Redis holds routes (version {v2} is current" in again.stderr
    listing = run("versions", redis_url=redis_server, check=True).stdout.splitlines()
    assert [line.split()[0] for line in listing] == [v1.stdout.strip(), "*"]
    # the file is validated either way
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("trunks: [carrier-a]", "trunks: ['a&b']"))
    assert run("seed", "--if-empty", str(bad), redis_url=redis_server).returncode == 1


def test_a_bad_file_is_not_seeded(redis_server: str, tmp_path: Path) -> None:
    v1 = run("seed", str(EXAMPLE), redis_url=redis_server, check=True).stdout.strip()
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("trunks: [carrier-a]", "trunks: ['a&b']"))
    out = run("seed", str(bad), redis_url=redis_server)
    assert out.returncode == 1
    # seed's stdout is only ever a version: the problems are errors, on stderr, each a
    # FILE:LINE: message line and nothing else (a summary line without a line broke SPEC's form)
    lines = out.stderr.splitlines()
    assert lines and all(re.match(rf"{re.escape(str(bad))}:\d+: ", ln) for ln in lines), lines
    assert out.stdout == ""
    listing = run("versions", redis_url=redis_server, check=True).stdout.splitlines()
    assert listing[-1].split()[:2] == ["*", v1]


@pytest.mark.parametrize("url", [
    "redis://:hunter2@127.0.0.1:1/0",
    "redis://127.0.0.1:1/0?password=hunter2",
])
def test_unreachable_redis_is_a_clear_error_without_the_password(url: str) -> None:
    out = run("versions", redis_url=url)
    assert out.returncode == 2
    assert "cannot reach Redis" in out.stderr and "REDIS_URL" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout


@pytest.mark.parametrize(("url", "words"), [
    ("redis://:hunter2@127.0.0.1:abc/0", "malformed Redis URL"),
    ("redis://:hunter2@[::1/0", "malformed Redis URL"),
    # (port 1: should the check ever let one through, it reaches no Redis, not 6379's)
    ("redis://127.0.0.1:1/zero", "bad database number"),
    ("redis+sentinel://:hunter2@127.0.0.1:26379", "names no service"),
    ("http://:hunter2@127.0.0.1:1", "unsupported scheme"),
])
def test_a_malformed_redis_url_is_one_clear_line_not_a_traceback(url: str, words: str) -> None:
    out = run("versions", redis_url=url)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert words in out.stderr and "REDIS_URL" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout


@pytest.mark.parametrize(("url", "words"), [
    ("redis://:s3cr#et@127.0.0.1:1/0", "percent-encode"),
    ("redis://:s3cr/et@127.0.0.1:1/0", "percent-encode"),
    ("redis://:s3cr?et@127.0.0.1:1/0", "percent-encode"),
    ("redis//:s3cret@127.0.0.1:1/0", "not a Redis URL"),
    ("redis:/:s3cret@127.0.0.1:1/0", "not a Redis URL"),
    ("redis://:s3c@ret@127.0.0.1:1/0", "cannot reach Redis"),
])
def test_no_part_of_an_odd_redis_password_is_shown(url: str, words: str) -> None:
    out = run("versions", redis_url=url)
    assert out.returncode == 2
    assert words in out.stderr and "Traceback" not in out.stderr, out.stderr
    for piece in ("s3cr", "et@", "ret"):
        assert piece not in out.stderr + out.stdout, out.stderr


@pytest.mark.parametrize("url", ["http//u:s3cret@x", "http:/u:s3cret@x.example"])
def test_no_part_of_a_malformed_ari_url_password_is_shown(url: str) -> None:
    out = run("ari", ARI_URL=url, ARI_USERNAME="u", ARI_PASSWORD="pw")
    assert out.returncode == 2
    assert "ARI_URL" in out.stderr and "Traceback" not in out.stderr, out.stderr
    for piece in ("s3cr", "et@", "ret"):
        assert piece not in out.stderr + out.stdout, out.stderr


def test_seed_keep_must_be_at_least_one() -> None:
    out = run("seed", str(EXAMPLE), "--keep", "0")
    assert out.returncode == 2 and "--keep" in out.stderr and "Traceback" not in out.stderr


def test_agi_on_a_port_already_taken_exits_2_saying_what_to_do(redis_server: str) -> None:
    # It exited 1, the status of a bad routes file; a port in use is the environment's.
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run("agi", redis_url=redis_server, AGI_LISTEN=f"127.0.0.1:{port}")
    assert out.returncode == 2, out.stderr
    assert "cannot listen on" in out.stderr and "AGI_LISTEN" in out.stderr
    assert "another `outbound-router agi` running?" in out.stderr


def test_agi_on_an_address_not_of_this_machine_says_so(redis_server: str) -> None:
    # It asked whether another `outbound-router agi` was running.
    out = run("agi", redis_url=redis_server, AGI_LISTEN="192.0.2.1:4573")  # (binding sends nothing)
    assert out.returncode == 2, out.stderr
    assert "is HOST an address of this machine?" in out.stderr
    assert "another `outbound-router agi`" not in out.stderr


def test_versions_into_a_pipe_closed_early_ends_without_a_traceback(redis_server: str) -> None:
    # `outbound-router versions | head -1`: the reader is gone before the listing is written.
    run("seed", str(EXAMPLE), redis_url=redis_server, check=True)
    env = {**os.environ, "REDIS_URL": redis_server, "REDIS_PREFIX": "cli-test"}
    proc = subprocess.Popen([sys.executable, "-m", "outbound_router.cli", "versions"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


def test_empty_variables_count_as_unset() -> None:
    # A compose file's `REDIS_URL: ${REDIS_URL:-}` passes it empty; `lab up` already took
    # that as unset, the services and commands said "REDIS_URL: not a Redis URL: ''".
    from outbound_router.settings import Settings

    names = ("REDIS_URL", "REDIS_PREFIX", "ARI_URL", "ARI_APP", "AGI_LISTEN")
    for read in (Settings.for_ari, Settings.for_agi):
        assert read(dict.fromkeys(names, "")) == read({})
        assert read({}) == Settings()


def test_an_unreachable_rediss_url_points_at_tls() -> None:
    # A plain Redis reads a TLS hello as a command and waits: the client times out after
    # 10 s, and "Start Redis" alone sent the operator the wrong way (it was running).
    import redis

    from outbound_router.cli import redis_problem
    from outbound_router.settings import Settings

    timeout = redis.TimeoutError("Timeout connecting to server")
    tls = redis_problem(timeout, Settings(redis_url="rediss://:pw@127.0.0.1:6379/0"))
    plain = redis_problem(timeout, Settings(redis_url="redis://:pw@127.0.0.1:6379/0"))
    assert "speaks TLS" in tls and "speaks TLS" not in plain
    assert "pw" not in tls


def test_a_broken_pipe_in_a_service_is_not_taken_for_a_closed_stdout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Exit 141 without a word is for `versions | head`; the services write nothing to stdout,
    # so there a BrokenPipeError is a socket's, and must show.
    from outbound_router import cli

    def broken(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_agi", broken)
    with pytest.raises(BrokenPipeError):
        cli.main(["agi"])


@pytest.mark.parametrize("args", [("lab", "call", ""), ("lab", "demo", "--calls", "-3")])
def test_lab_arguments_that_cannot_work_are_refused_up_front(args: tuple[str, ...]) -> None:
    # `lab call ""` waited 31 s for a call with no number; `--calls -3` was taken.
    out = run(*args)
    assert out.returncode == 2 and "error: argument" in out.stderr, out.stderr


def test_lab_up_with_ari_credentials_asterisk_cannot_read_is_a_setting_error_up_front(
        tmp_path: Path) -> None:
    # It exited 1 (as a failed lab), after the Redis check and the chroot build.
    out = run("lab", "up", ARI_PASSWORD="a;b", OUTBOUND_ROUTER_CACHE=str(tmp_path))
    assert out.returncode == 2 and "ARI_PASSWORD: no ';'" in out.stderr, out.stderr
    assert not any(path.name == "chroot" for path in tmp_path.rglob("*"))


@pytest.mark.parametrize("port", ["\u00b2", "\u0664\u0665\u0667\u0663"])  # ², ٤٥٧٣
def test_agi_listen_with_digits_that_are_not_ascii_is_a_settings_error(port: str) -> None:
    # str.isdigit() took them: int() then raised ValueError (a traceback from `agi`), or
    # read the Arabic-Indic 4573 as a port.
    from outbound_router.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="AGI_LISTEN"):
        Settings.for_agi({"AGI_LISTEN": f"127.0.0.1:{port}"})


def test_seed_keep_takes_ascii_digits_only() -> None:
    import argparse

    from outbound_router.cli import at_least_one

    assert at_least_one("12") == 12
    with pytest.raises(argparse.ArgumentTypeError):
        at_least_one("\u00b2")


# Port 1, not the lab's 8088: should the refusal ever go, the service would connect there.
@pytest.mark.parametrize("url", ["http://u:secret@127.0.0.1:1",
                                 "http://u:sec/ret@127.0.0.1:1"])
def test_credentials_in_ari_url_are_refused_and_not_echoed(url: str) -> None:
    # They were taken, then dropped by the client without a word: the service asked for
    # ARI_USERNAME and ARI_PASSWORD, or used those and ignored the URL's pair.
    out = run("ari", ARI_URL=url, ARI_USERNAME="u", ARI_PASSWORD="pw")
    assert out.returncode == 2, out.stderr
    assert "ARI_USERNAME and ARI_PASSWORD" in out.stderr and "ret" not in out.stderr, out.stderr


@pytest.mark.parametrize(("service", "other"), [
    ("ari", {"AGI_LISTEN": "nonsense", "AGI_ALLOW": "x/99"}),
    ("agi", {"ARI_URL": "localhost:8088"}),
])
def test_a_service_does_not_check_the_other_service_s_settings(
        service: str, other: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # With one environment file for both, a typo in AGI_LISTEN stopped `ari`, and a bad
    # ARI_URL stopped `agi`.
    import importlib

    from outbound_router import cli
    from outbound_router.settings import Settings

    started: list[Settings] = []
    module = importlib.import_module("ari_app.main" if service == "ari" else "agi.main")
    monkeypatch.setattr(module, "run", lambda settings: started.append(settings) or 0)
    for name, value in other.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert cli.main([service]) == 0
    assert len(started) == 1


@pytest.mark.parametrize(("module", "env"), [
    ("ari_app.main", {"ARI_URL": "ftp://x"}),
    ("agi.main", {"AGI_LISTEN": "nonsense"}),
])
def test_python_dash_m_of_a_service_is_the_console_script(module: str, env: dict[str, str]) -> None:
    # `python -m ari_app.main` printed a traceback on a bad setting; `python -m agi.main`
    # exited 0 at once, doing nothing.
    out = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0",
                                          **env})
    name = module.partition(".")[0].removesuffix("_app")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"outbound-router {name}: {next(iter(env))}"), out.stderr


def test_an_empty_prefix_is_named_where_no_version_is_found(redis_server: str) -> None:
    # "no versions in Redis yet" sent an operator with a mistyped REDIS_PREFIX to seed again.
    run("seed", str(EXAMPLE), redis_url=redis_server, check=True)
    for command in (("versions",), ("rollback",), ("explain", "+34911234567")):
        out = run(*command, redis_url=redis_server, REDIS_PREFIX="cli-test-typo")
        assert "'cli-test-typo'" in out.stderr, (command, out.stderr)


def test_help_names_the_environment_and_the_exit_statuses() -> None:
    # `--help` showed only -h for ari, agi and versions; the environment and exit statuses
    # were in the README alone, and the help cited a SPEC that is not shipped.
    top = run("--help", check=True).stdout
    for word in ("REDIS_URL", "REDIS_PREFIX", "ARI_PASSWORD", "AGI_LISTEN", "AGI_ALLOW",
                 "exit status"):
        assert word in top, word
    helps = {c: run(c, "--help", check=True).stdout
             for c in ("validate", "seed", "versions", "explain", "ari", "agi")}
    assert "'*' marks the current one" in " ".join(helps["versions"].split())
    assert "ARI_USERNAME" in helps["ari"] and "AGI_LISTEN" in helps["agi"]
    assert all("SPEC" not in text for text in helps.values())
    assert "(default ari)" in run("lab", "call", "--help", check=True).stdout


def test_a_current_version_gone_from_redis_is_named(redis_server: str) -> None:
    # Evicted (a Redis shared with a cache) or deleted by hand: `versions` showed no current
    # version without a word, `explain` said it "vanished while being read"; routers that
    # start then get no routes.
    import redis

    run("seed", str(EXAMPLE), redis_url=redis_server, check=True)
    gone = run("seed", str(EXAMPLE), redis_url=redis_server, check=True).stdout.strip()
    redis.Redis.from_url(redis_server).delete(f"cli-test:version:{gone}")
    listed = run("versions", redis_url=redis_server)
    assert listed.returncode == 0 and "*" not in listed.stdout
    assert f"the current version {gone} is not in Redis" in listed.stderr
    assert "rollback VERSION" in listed.stderr
    explained = run("explain", "+34911234567", redis_url=redis_server)
    assert explained.returncode == 2
    assert f"the current version {gone} is not in Redis" in explained.stderr


def test_an_empty_file_argument_is_an_error_that_says_so() -> None:
    # `explain --config ""` read Redis as if no --config had been given; `seed ""` and
    # `validate ""` said "cannot read: Is a directory" (Path("") is ".").
    for args in (("validate", ""), ("seed", ""), ("explain", "911234567", "--config", "")):
        out = run(*args)
        assert out.returncode == 1, (args, out)
        assert "'': no file given (the file name is empty)" in out.stdout + out.stderr, args
        assert "Redis" not in out.stderr, args


class _Stderr:
    """A service's stderr, read line by line with a deadline (os.read: nothing is held in a
    buffer that select() cannot see)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self.fd = proc.stderr.fileno()
        self.pending = b""
        self.seen: list[str] = []

    def line_with(self, text: str, timeout: float) -> str:
        import select
        import time

        until = time.monotonic() + timeout
        while True:
            while b"\n" in self.pending:
                raw, self.pending = self.pending.split(b"\n", 1)
                self.seen.append(raw.decode(errors="replace"))
                if text in self.seen[-1]:
                    return self.seen[-1]
            left = until - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                break
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break  # the service ended
            self.pending += chunk
        raise AssertionError(f"no line with {text!r} within {timeout} s: {self.seen}")


@pytest.mark.parametrize("service", ["agi", "ari"])
def test_sighup_is_logged_and_the_service_goes_on(redis_server: str, service: str) -> None:
    # Its default action ended the service mid-call, and systemd counts an end by SIGHUP as
    # clean: Restart=on-failure left it down (acceptance run).
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "REDIS_URL": redis_server, "REDIS_PREFIX": "cli-test",
           "AGI_LISTEN": f"127.0.0.1:{port}", "ARI_URL": "http://127.0.0.1:1",
           "ARI_USERNAME": "u", "ARI_PASSWORD": "pw"}
    with service_process(service, env) as proc:
        stderr = _Stderr(proc)
        # up: listening (agi), or trying ARI, which is not there (ari)
        stderr.line_with("FastAGI listening" if service == "agi" else "ARI not reachable", 30)
        proc.send_signal(signal.SIGHUP)
        assert "SIGHUP ignored" in stderr.line_with("SIGHUP", 10)
        if service == "agi":
            socket.create_connection(("127.0.0.1", port), timeout=5).close()  # still serving
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:4573", ("127.0.0.1", 4573)),
    ("[::1]:4573", ("::1", 4573)),
    ("::1:4573", ("::1", 4573)),  # the last colon is the port's
    ("localhost:1", ("localhost", 1)),
])
def test_agi_listen_is_host_and_port(value: str, expected: tuple[str, int]) -> None:
    from outbound_router.settings import parse_listen

    assert parse_listen(value) == expected


@pytest.mark.parametrize(("value", "words"), [
    ("[::1:4573", "expected HOST:PORT"),  # was taken as ::1
    ("::1]:4573", "expected HOST:PORT"),
    ("[[::1]]:4573", "expected HOST:PORT"),
    ("[]:4573", "expected HOST:PORT"),
    ("127.0.0.1:0", "the port must be 1 to 65535"),  # said only "expected HOST:PORT"
    ("127.0.0.1:65536", "the port must be 1 to 65535"),
    ("4573", "expected HOST:PORT"),
])
def test_an_agi_listen_that_is_no_host_and_port_says_what_is_wrong(value: str,
                                                                   words: str) -> None:
    from outbound_router.settings import SettingsError, parse_listen

    with pytest.raises(SettingsError, match=re.escape(words)):
        parse_listen(value)
