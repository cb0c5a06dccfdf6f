"""Which Redis `lab up` gives the lab's services."""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import pytest

from outbound_router import lab, topology
from outbound_router.local_redis import RedisProcess, free_port


def _paths(tmp_path: Path) -> lab.Paths:
    p = lab.Paths(tmp_path / "cache")
    p.state_dir.mkdir(parents=True)
    return p


def test_lab_up_again_keeps_the_redis_the_running_lab_uses(
        tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Brought up with REDIS_URL=X, the lab's services read X; a second `lab up` from a
    shell without REDIS_URL (to restart a service, to add the carriers) must not start the
    missing ones on the default Redis (127.0.0.1:6379, which answers on this machine kind)."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    # Should it go to the default after all: not the machine's 6379 (a PING, or a detached
    # redis-server of the lab's own left running there when nothing answers).
    monkeypatch.setattr(topology, "DEFAULT_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")

    def spawned(*_: object, **__: object) -> None:
        raise AssertionError("ensure_redis started a redis-server instead of the recorded one")

    monkeypatch.setattr(lab.sipp, "spawn_detached", spawned)
    p = _paths(tmp_path)
    state = {"redis": {"url": redis_server, "pid": None}}
    assert lab.ensure_redis(p, state, say=lambda _: None) == redis_server
    assert lab.load_state(p)["redis"] == {"url": redis_server, "pid": None}


def test_redis_url_given_wins_over_the_one_recorded(
        tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    other = RedisProcess(tmp_path / "other")
    other.start()
    try:
        monkeypatch.setenv("REDIS_URL", other.url)
        said: list[str] = []
        state = {"redis": {"url": redis_server, "pid": None}}
        assert lab.ensure_redis(_paths(tmp_path), state, say=said.append) == other.url
        assert said == [f"redis: using {other.url} (answers PING)"]
    finally:
        other.kill()


def test_redis_url_given_wins_over_the_lab_s_own_running_redis(
        tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Brought up where nothing answered (own redis-server started), a later
    # `REDIS_URL=<another Redis> lab up` kept the own one without a word: `seed` with
    # REDIS_URL wrote where no service reads ("REDIS_URL given wins" held only when the
    # recorded Redis was an external one).
    p = _paths(tmp_path)
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("REDIS_URL", nothing_there)
    state: dict = {}
    assert lab.ensure_redis(p, state, say=lambda _: None) == nothing_there
    own = state["redis"]["pid"]
    try:
        monkeypatch.setenv("REDIS_URL", redis_server)
        said: list[str] = []
        assert lab.ensure_redis(p, state, say=said.append) == redis_server
        assert state["redis"]["url"] == redis_server
        # and the own redis-server the state no longer names is not left running untracked
        lab.wait_reaped([own])
        assert not lab.is_redis(own, p)
    finally:
        lab.stop_process(own, lambda pid: lab.is_redis(pid, p))


def test_a_redis_url_lab_up_cannot_use_leaves_the_running_lab_s_redis_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A `lab up` that exits 2 for its REDIS_URL (nothing answers, and no Redis of the lab's
    # own can be started there: TLS, a password, another host) first stopped the running
    # lab's own redis-server, under its services and Asterisk (lab review).
    p = _paths(tmp_path)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    state: dict = {}
    lab.ensure_redis(p, state, say=lambda _: None)
    own = state["redis"]["pid"]
    try:
        monkeypatch.setenv("REDIS_URL", f"rediss://127.0.0.1:{free_port()}/0")
        said: list[str] = []
        with pytest.raises(lab.LabSettingError, match="nothing answers"):
            lab.ensure_redis(p, state, say=said.append)
        assert said == [] and lab.is_redis(own, p)
        assert lab.load_state(p)["redis"]["pid"] == own
    finally:
        lab.stop_process(own, lambda pid: lab.is_redis(pid, p))


def test_with_nothing_at_redis_url_the_lab_starts_its_redis_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without a running Redis: `outbound-router seed FILE` with the same REDIS_URL,
    or with none (the default 127.0.0.1:6379), must reach the lab's own redis-server."""
    from outbound_router.local_redis import free_port

    url = f"redis://127.0.0.1:{free_port()}/3"
    monkeypatch.setenv("REDIS_URL", url)
    said: list[str] = []
    p, state = _paths(tmp_path), {}
    got = lab.ensure_redis(p, state, say=said.append)
    try:
        assert got == url
        assert lab.redis_ping(url)
        assert said == [f"redis: nothing answers at {url}; started redis-server there "
                        f"(pid {state['redis']['pid']})"]
    finally:
        lab.stop_process(state["redis"]["pid"], lambda pid: lab.is_redis(pid, p))


def test_the_lab_s_own_redis_keeps_the_routes_over_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without persistence, a restart of the lab's redis-server (or `lab down`, `lab up`)
    lost every version, and the next `lab up` seeded the example routes over the table the
    routers were using (an operations audit)."""
    from outbound_router.local_redis import free_port
    from redis_seed.connection import sync_client
    from redis_seed.store import current_version

    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("REDIS_URL", url)
    p, state = _paths(tmp_path), {}
    lab.ensure_redis(p, state, say=lambda _: None)
    try:
        mine = lab.seed(url, lab.ROUTES_EXAMPLE)
        lab.stop_process(state["redis"]["pid"], lambda pid: lab.is_redis(pid, p))  # as `lab down`
        assert not lab.redis_ping(url)
        lab.ensure_redis(p, state, say=lambda _: None)
        client = sync_client(url)
        try:
            assert current_version(client) == mine
        finally:
            client.close()
    finally:
        lab.stop_process(state["redis"]["pid"], lambda pid: lab.is_redis(pid, p))


def test_nothing_at_a_redis_url_the_lab_cannot_start_a_redis_at_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # It started one of its own elsewhere, seeded the example routes into it and routed calls
    # from them, while `outbound-router seed` with that REDIS_URL failed.
    from outbound_router.local_redis import free_port

    url = f"redis://:secret@127.0.0.1:{free_port()}/0"  # a server we cannot make up
    monkeypatch.setenv("REDIS_URL", url)
    state: dict = {}
    with pytest.raises(lab.LabError, match="unset REDIS_URL for the lab's own") as info:
        lab.ensure_redis(_paths(tmp_path), state, say=lambda _: None)
    assert "secret" not in str(info.value)
    assert state == {}  # no redis-server of its own


@pytest.mark.parametrize(("password", "says"), [
    ("", "requires a password"), (":wrong@", "refused the credentials")])
def test_a_redis_that_refuses_the_credentials_is_an_error_not_a_reason_for_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str, says: str) -> None:
    from outbound_router.local_redis import REDIS_SERVER, free_port

    port = free_port()
    guarded = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--requirepass", "s3cret"],
                               stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not lab.tcp_listening("127.0.0.1", port):
            assert time.monotonic() < deadline and guarded.poll() is None
            time.sleep(0.02)  # polling: redis-server has no readiness event
        url = f"redis://{password}127.0.0.1:{port}/0"
        monkeypatch.setenv("REDIS_URL", url)
        state: dict = {}
        with pytest.raises(lab.LabError, match=says) as info:
            lab.ensure_redis(_paths(tmp_path), state, say=lambda _: None)
        assert "starts a Redis of its own only where nothing answers" in str(info.value)
        assert "wrong" not in str(info.value)
        assert state == {}
        # `lab up` says so before it builds a chroot or starts an Asterisk (it left one
        # running, /proc mounted), and exits 2: a setting to fix, as the other commands.
        monkeypatch.setenv("OUTBOUND_ROUTER_CACHE", str(tmp_path / "up"))

        def started(*_: object, **__: object) -> None:
            raise AssertionError("lab up went on with a Redis that refuses it")

        monkeypatch.setattr(lab, "build_chroot", started)
        monkeypatch.setattr(lab, "start_asterisk", started)
        assert lab.cmd_up(argparse.Namespace(no_carriers=True)) == lab.EXIT_ENVIRONMENT
    finally:
        guarded.kill()
        guarded.wait()


def test_lab_up_seeds_the_example_routes_only_into_a_redis_without_routes(
        tmp_path: Path, redis_server: str) -> None:
    """Routes someone seeded survive a `lab down` and `lab up`; a Redis that lost its data
    (restarted without persistence) gets the example again, instead of calls failing with
    ERROR while `lab status` still named the version seeded at the first `lab up`."""
    from redis_seed.connection import sync_client
    from redis_seed.store import current_version

    p, state, said = _paths(tmp_path), {}, []
    lab.ensure_seeded(p, state, redis_server, say=said.append)
    assert said == ["seed: Redis held no routes: redis_seed/routes.example.yaml -> v000001"]
    mine = lab.seed(redis_server, lab.ROUTES_EXAMPLE)  # an operator's routes
    said.clear()
    lab.ensure_seeded(p, state, redis_server, say=said.append)
    assert said == [f"routes: version {mine} current in Redis, kept"]
    client = sync_client(redis_server)
    try:
        assert current_version(client) == mine
        client.flushall()
    finally:
        client.close()
    said.clear()
    lab.ensure_seeded(p, state, redis_server, say=said.append)
    assert said == ["seed: Redis held no routes: redis_seed/routes.example.yaml -> v000001"]


def test_lab_up_looks_for_routes_under_the_redis_prefix_seed_and_the_services_use(
        tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With REDIS_PREFIX set, `lab up` found the default prefix's routes and seeded nothing,
    while its services (which inherit REDIS_PREFIX) read the empty prefix: every call ERROR."""
    p, said = _paths(tmp_path), []
    monkeypatch.delenv("REDIS_PREFIX", raising=False)
    lab.seed(redis_server, lab.ROUTES_EXAMPLE)  # routes under the default prefix
    monkeypatch.setenv("REDIS_PREFIX", "other-platform")
    assert lab.routes_version(redis_server) is None
    lab.ensure_seeded(p, {}, redis_server, say=said.append)
    assert said == ["seed: Redis held no routes: redis_seed/routes.example.yaml -> v000001"]
    assert lab.routes_version(redis_server) == "v000001"


def test_the_lab_state_holding_the_redis_password_is_readable_by_its_owner_only(
        tmp_path: Path) -> None:
    p = _paths(tmp_path)
    lab.save_state(p, {"redis": {"url": "redis://:secret@127.0.0.1:6379/0", "pid": None}})
    assert p.state_file.stat().st_mode & 0o777 == 0o600
    assert lab.load_state(p)["redis"]["url"] == "redis://:secret@127.0.0.1:6379/0"


@pytest.mark.parametrize("url", ["garbage", "redis://:pw@127.0.0.1:notaport/0"])
def test_a_malformed_redis_url_stops_lab_up_before_anything_starts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str) -> None:
    # It crashed with a traceback after Asterisk was started, leaving a half-started lab.
    import argparse

    def started(*_: object, **__: object) -> None:
        raise AssertionError("lab up went on with a malformed REDIS_URL")

    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setattr(lab, "_up", started)
    assert lab.cmd_up(argparse.Namespace(no_carriers=True)) == lab.EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert err.startswith("outbound-router lab: REDIS_URL: ") and err.count("\n") == 1
    assert "pw" not in err


def test_status_does_not_take_an_exited_redis_server_for_the_lab_s_own(
        tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's redis-server exited and another answers at its address: `lab status` went on
    calling it the lab's own, by the PID it had recorded (an operations audit)."""
    monkeypatch.setenv("OUTBOUND_ROUTER_CACHE", str(tmp_path / "cache"))
    p = lab.paths()
    p.state_dir.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    lab.save_state(p, {"redis": {"url": redis_server, "pid": gone.pid}})
    said: list[str] = []
    lab.status(say=said.append)
    [line] = [s for s in said if s.startswith("redis ")]
    assert f"own redis-server (pid {gone.pid}) exited, answers" in line
