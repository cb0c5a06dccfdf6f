"""Fixtures for tests against the real Asterisk lab (SPEC section 7).

Usage (mark real-Asterisk tests with ``@pytest.mark.lab``; tests using ``lab`` get it anyway):

    def test_failover(lab, carrier, phone):
        lab.seed(ROUTES_YAML)                      # text or a path; returns the version
        b = carrier("b", "unavailable")            # SIPp UAS on 127.0.0.12:5060, 503s
        a = carrier("a", "answer")                 # 127.0.0.11: answers
        result = phone("ari").call("911234567")    # SIPp UAC from 127.0.0.10 to 127.0.0.1:5060
        assert result.final_code == 200
        assert (b.invites(), a.invites()) == (1, 1)
        assert a.request_uris() == ["sip:+34911234567@127.0.0.11:5060"]

- ``lab`` (session): ``lab up --no-carriers`` once per run, on a redis-server of the session's
  own (REDIS_URL while the session runs; the machine's Redis is never written). A running lab is
  reused as it is, on its Redis; its demo carriers are stopped for the session and restarted
  afterwards. Attributes ``ari_url``,
  ``ari_auth`` (user, password), ``redis_url``, ``asterisk_log``, ``state_dir``;
  ``seed(yaml_text_or_path) -> version`` (redis_seed API; returns once the running ari/agi
  services logged "routing version V loaded"); ``services_running()``;
  ``ari(method, path)`` -> (status, json);
  ``service_stopped("ari"|"agi")``: context manager that stops the lab's service and brings it
  back (for tests that stand in for it). The session tears down only what it started.
- ``carrier(name, behaviour)``: name "a".."d" (or "carrier-a", or the address); behaviours
  ``answer``, ``busy`` (486), ``unavailable`` (503), ``not_found`` (404), ``ring`` (180 forever,
  CANCEL -> 200 + 487), ``early_503`` (183 + SDP, 503 after 1 s), ``progress_503`` (183
  without SDP, 503 after 1 s), ``silent`` (no response), ``trying`` (100, then nothing),
  ``answer_after:N`` (200 after N s of ringing), ``error:CODE``, ``ring_then:CODE[:SECONDS]`` (180,
  then CODE after 0.5 s or SECONDS). ``.invites()``,
  ``.request_uris()``, ``.invite_header(name)`` (each INVITE's values of that header),
  ``.requests("CANCEL"|"BYE"...)`` come from SIPp's own message trace;
  ``.stop()``; stopped after each test.
- ``phone(via="ari"|"agi"|"baseline")``: ``.call(number, *, tenant=None, hangup_after=None,
  cancel_after=None, timeout=30, max_forwards=70) -> CallResult`` (``final_code``, ``codes``,
  ``answered``, ``cancelled``, ``duration``, ``trace``) and ``.load(number, calls=N, rate=R,
  concurrent=None) -> LoadResult`` (``final_codes`` {code: count}, ``successful``, ``failed``,
  ``elapsed``).
- A test that lets Asterisk INVITE a silent or absent carrier leaves that INVITE retransmitted
  until pjsip's timer B (32 s); a carrier started on that address meanwhile gets the
  retransmissions. ``invites()`` / ``request_uris()`` / ``requests()`` leave them and their
  CANCELs out: pjsip CANCELs them within a millisecond of the first reply, and a carrier that
  never replies sees a stray's next copy 1 s or more later (or never), its own INVITE's 0.5 s
  later (`sipp._is_stray`).
- The lab is one per machine (fixed addresses): two pytest sessions using it at once disturb
  each other (the leftover check below hangs up the other session's calls).
- A failed test that used ``lab`` shows, under its traceback, the last lines the ari and agi
  services and Asterisk logged while it ran (the routing decisions, with their versions).
- After every test that uses ``lab``: ARI must show no channel and no bridge (polled for 5 s);
  leftovers fail the test and are then hung up so the next test starts clean. ARI must still
  answer ``GET /applications`` (it stops when Asterisk's ARI deadlocks, docs/ari.md).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from outbound_router import lab as lab_mod
from outbound_router import sipp, topology
from outbound_router.local_redis import RedisProcess

LEAK_DEADLINE = 5.0
#: The lab's logs and their sizes when the session's lab was up: read back for the digest of
#: WARNING and ERROR lines printed after a failed lab test (CI shows little else of a run).
_LOGS_AT: dict[Path, int] = {}
#: Where those logs ended when a lab test started, for the lines shown under its failure.
_TEST_LOGS_AT = pytest.StashKey[dict[Path, int]]()
#: The last lines of each log shown under a failed lab test.
TEST_LOG_LINES = 60


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that use the lab are real-Asterisk tests, marked or not. Only this directory's:
    # tests/ari has a fixture of its own named ``lab`` (the fake Asterisk), and a hook of a
    # conftest sees every collected item, so those were marked too and `-m "not lab"` left
    # the ARI protocol tests out whenever tests/lab was collected with them.
    here = Path(__file__).parent
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()) and item.path.is_relative_to(here):
            item.add_marker(pytest.mark.lab)
    # The lifecycle test brings up and takes down a lab of its own on the fixed addresses:
    # it runs before the session lab exists.
    first = [i for i in items if i.nodeid.startswith("tests/lab/test_lab_lifecycle.py")]
    if first:
        rest = [i for i in items if i not in first]
        items[:] = first + rest


@dataclass
class Lab:
    """The running lab, as the tests see it."""

    info: lab_mod.LabInfo
    workdir: Path
    started_here: bool
    demo_carriers_before: bool
    #: the session's own redis-server (tests may kill and restart it), None on a reused lab
    redis: RedisProcess | None = None

    @property
    def ari_url(self) -> str:
        return self.info.ari_url

    @property
    def ari_auth(self) -> tuple[str, str]:
        return self.info.ari_auth

    @property
    def redis_url(self) -> str:
        return self.info.redis_url

    @property
    def asterisk_log(self) -> Path:
        return self.info.asterisk_log

    @property
    def state_dir(self) -> Path:
        return self.info.state_dir

    def seed(self, routes: str | os.PathLike[str], *, wait: float = 5.0) -> str:
        """Publish routes (YAML text or a file) through the redis_seed API; the new version.

        Waits until every running router service of the lab logged that it loaded it.
        """
        from redis_seed.connection import sync_client
        from redis_seed.routes_file import load_routes_file, parse_routes
        from redis_seed.store import publish

        path = Path(routes) if isinstance(routes, os.PathLike) else None
        if path is None and "\n" not in str(routes) and Path(str(routes)).is_file():
            path = Path(str(routes))
        table = load_routes_file(path) if path else parse_routes(str(routes), "<test routes>")
        offsets = lab_mod.service_log_offsets(lab_mod.paths(), lab_mod.load_state(lab_mod.paths()))
        client = sync_client(self.redis_url)
        try:
            version = publish(client, table, source=str(path or "test"))
        finally:
            client.close()
        try:
            lab_mod.wait_loaded(offsets, version, timeout=wait)
        except lab_mod.LabError as exc:
            raise AssertionError(str(exc)) from None
        return version

    def services_running(self) -> list[str]:
        return lab_mod.running_services(lab_mod.load_state(lab_mod.paths()))

    def ari(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return lab_mod.ari_request(path, self.ari_auth, method=method, body=body)

    def leftovers(self) -> tuple[list[Any], list[Any]]:
        """The channels and the bridges ARI shows now."""
        _, channels = self.ari("GET", "/channels")
        _, bridges = self.ari("GET", "/bridges")
        return list(channels or []), list(bridges or [])

    def service_stopped(self, name: str) -> contextlib.AbstractContextManager[None]:
        return lab_mod.service_stopped(name)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """``values`` in os.environ while the block runs (what the lab's commands read)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _private_redis(workdir: Path) -> Iterator[RedisProcess]:
    """A redis-server of the session's own, as REDIS_URL while the session runs: the lab the
    session brings up seeds and reads it, never the machine's Redis on 6379."""
    server = RedisProcess(workdir)
    server.start()
    try:
        with _environment(REDIS_URL=server.url):
            yield server
    finally:
        server.kill()


def _running_lab_redis(running: lab_mod.LabInfo) -> contextlib.AbstractContextManager[None]:
    """The Redis (URL and REDIS_PREFIX) a running lab's services use, as the session's: `lab
    up` and seeds follow REDIS_URL, and with it unset a reused lab's services were moved to
    the machine's Redis on 6379 (and the tests' routes written there)."""
    return _environment(**lab_mod.services_redis(running))


#: The machine's own Redis (SPEC's default REDIS_URL), which lab tests must never write to.
MACHINE_REDIS = ("127.0.0.1", 6379)


def _machine_redis_keys() -> set[bytes] | None:
    """The product's keys in the machine's Redis (read only), or None when none answers."""
    import redis

    try:
        with redis.Redis(*MACHINE_REDIS, socket_timeout=2) as client:
            return set(client.scan_iter("outbound-router*", count=1000))
    except (redis.RedisError, OSError):
        return None


@pytest.fixture(scope="session", autouse=True)
def _machine_redis_untouched() -> Iterator[None]:
    """Fails the session when the lab tests wrote the product's keys to the machine's Redis:
    twice a lab was moved there unseen (a `lab up` with REDIS_URL unset), the tests' routes
    with it. Left out when REDIS_URL names that Redis on purpose."""
    chosen = os.environ.get("REDIS_URL", "")
    before = None if f":{MACHINE_REDIS[1]}" in chosen else _machine_redis_keys()
    yield
    if before is None:
        return
    after = _machine_redis_keys() or set()
    if after - before:
        new = sorted(k.decode(errors="replace") for k in after - before)
        pytest.fail(f"the lab tests wrote {len(new)} keys to the machine's Redis on "
                    f"{MACHINE_REDIS[0]}:{MACHINE_REDIS[1]} (not this session's): "
                    f"{', '.join(new[:5])}... `outbound-router lab status` says which Redis the "
                    "lab uses now", pytrace=False)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    before = lab_mod.running_info()
    state = lab_mod.load_state(lab_mod.paths())
    had_demo_carriers = bool(before) and bool(state.get("carriers"))
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lab-session-")))
        redis = None
        if before is None:
            redis = stack.enter_context(_private_redis(tmp / "redis"))
        else:  # a running lab is reused as it is, on the Redis it has
            stack.enter_context(_running_lab_redis(before))
        info = lab_mod.up(carriers=False, say=lambda line: print(f"lab: {line}"))
        problems = lab_mod.startup_problems(lab_mod.paths())
        assert not problems, "Asterisk logged errors at start-up:\n" + "\n".join(problems)
        for log in (info.asterisk_log, info.state_dir / "ari.log", info.state_dir / "agi.log"):
            _LOGS_AT[log] = lab_mod.file_size(log)
        yield Lab(info, tmp, started_here=before is None,
                  demo_carriers_before=had_demo_carriers, redis=redis)
        if before is None:
            lab_mod.down(say=lambda line: print(f"lab: {line}"))
        elif had_demo_carriers:
            lab_mod.up(carriers=True, say=lambda line: print(f"lab: {line}"))


def _kind(line: str) -> str:
    """A log line without what changes from one occurrence to the next."""
    line = re.sub(r"^\[[^]]*\] |^\S+ \S+ ", "", line)  # Asterisk's or the services' time
    return re.sub(r"[0-9a-f]{8,}[-0-9a-f.]*|\d+", "N", line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    offsets = item.stash.get(_TEST_LOGS_AT, None)
    if not report.failed or not offsets:
        return
    for log, offset in offsets.items():
        if log.exists():
            lines = lab_mod.logged_since(log, offset).decode(errors="replace").splitlines()
            report.sections.append((f"{log.name} while the test ran (last {TEST_LOG_LINES} "
                                    f"of {len(lines)} lines)",
                                    "\n".join(lines[-TEST_LOG_LINES:])))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    reports = terminalreporter.stats.get("failed", []) + terminalreporter.stats.get("error", [])
    if not _LOGS_AT or not any("lab" in getattr(r, "keywords", {}) for r in reports):
        return
    terminalreporter.section("lab logs of the session: WARNING and ERROR lines, by kind")
    for log, offset in _LOGS_AT.items():
        if not log.exists():
            continue
        text = lab_mod.logged_since(log, offset).decode(errors="replace")
        lines = [ln for ln in text.splitlines() if "WARNING" in ln or "ERROR" in ln]
        terminalreporter.write_line(f"{log}: {len(lines)} such lines")
        for kind, count in collections.Counter(map(_kind, lines)).most_common(12):
            terminalreporter.write_line(f"  {count:5} x {kind[:200]}")


@pytest.fixture(autouse=True)
def _no_leftover_channels(request: pytest.FixtureRequest) -> Iterator[None]:
    if "lab" not in request.fixturenames:
        yield
        return
    lab: Lab = request.getfixturevalue("lab")
    p = lab_mod.paths()
    if not lab_mod.is_asterisk(lab_mod.load_state(p).get("asterisk_pid"), p.chroot):
        # A test before left Asterisk down (and failed for it): that one failure, not every
        # later test's (a CI run once took the lab down 30 tests in, and each lab test after
        # it failed, 30 s apiece).
        lab_mod.up(carriers=False, say=lambda line: print(f"lab: {line}"))
    request.node.stash[_TEST_LOGS_AT] = {log: lab_mod.file_size(log) for log in _LOGS_AT}
    yield
    deadline = time.monotonic() + LEAK_DEADLINE
    channels, bridges = lab.leftovers()
    while (channels or bridges) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling: teardown takes a few ms and has no event to await here
        channels, bridges = lab.leftovers()
    if channels or bridges:
        for ch in channels:
            lab.ari("DELETE", f"/channels/{ch['id']}")
        for br in bridges:
            lab.ari("DELETE", f"/bridges/{br['id']}")
        names = [c.get("name") for c in channels] + [f"bridge {b.get('id')}" for b in bridges]
        pytest.fail(f"left over after the test: {', '.join(map(str, names))}")
    if not lab_mod.is_asterisk(lab_mod.load_state(p).get("asterisk_pid"), p.chroot):
        pytest.fail("Asterisk is not running after this test (the next lab test starts it "
                    "again)")
    if lab.ari("GET", f"/applications/{topology.ARI_APP}")[0] == 0:
        # Asterisk's ARI deadlock (docs/ari.md): every later ARI test would fail with it.
        pytest.fail("ARI stopped answering GET /applications during this test: "
                    + lab_mod.stasis_app_status(0)[0].removeprefix("stasis").strip())


@pytest.fixture
def carrier(tmp_path: Path) -> Iterator[Callable[[str, str], sipp.Carrier]]:
    started: list[sipp.Carrier] = []

    def start(name: str, behaviour: str = "answer") -> sipp.Carrier:
        c = sipp.start_carrier(name, behaviour, tmp_path / "sipp")
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@dataclass(frozen=True)
class Phone:
    via: str
    address: str
    workdir: Path

    def call(self, number: str, *, tenant: str | None = None, hangup_after: float | None = None,
             cancel_after: float | None = None, timeout: float = 30.0,
             max_forwards: int | None = 70) -> sipp.CallResult:
        return sipp.place_call(self.address, number, self.workdir, tenant=tenant,
                               hangup_after=hangup_after, cancel_after=cancel_after,
                               timeout=timeout, max_forwards=max_forwards)

    def load(self, number: str, *, calls: int, rate: float, concurrent: int | None = None,
             tenant: str | None = None, talk: float = 0.5) -> sipp.LoadResult:
        return sipp.start_load(self.address, number, self.workdir, calls=calls, rate=rate,
                               concurrent=concurrent, tenant=tenant, talk=talk).wait()


@pytest.fixture
def phone(tmp_path: Path) -> Callable[..., Phone]:
    def make(via: str = "ari") -> Phone:
        return Phone(via, topology.phone(via).address, tmp_path / "phone")

    return make
