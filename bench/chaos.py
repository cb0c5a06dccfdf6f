"""Chaos runs: one disruption in the middle of a call load on both router paths, then checks
from the outside.

    .venv/bin/python bench/chaos.py SCENARIO [SCENARIO ...] | all
                                    [--seconds 15] [--act-at 6] [--talk-ms 4000]
                                    [--rate-scale 1.0]

Scenarios (the disruption, ``--act-at`` s into the load):

* ``control``: none;
* ``kill9_ari``: SIGKILL of the ``ari`` service itself (its supervisor starts it again);
* ``term_ari``, ``term_agi``: SIGTERM of that service, then ``lab up`` starts it again;
* ``asterisk``: Asterisk's ``core restart now``;
* ``redis``: the Redis of REDIS_URL stopped for 10 s, started again on the same port with the
  same settings, and the routes seeded again. Only a plain ``redis://127.0.0.1:PORT`` URL whose
  server is a ``redis-server`` this script can see qualifies; otherwise the scenario is skipped
  (said). The restarted server is a new process: its PID is printed;
* ``redis_stop``: that Redis stopped (SIGSTOP) for 10 s: hung, it neither answers nor closes
  its connections (a silent partition); then SIGCONT, and the routes seeded again. The same
  condition on REDIS_URL as ``redis``;
* ``carrier``: carrier-c (SIPp) killed for 5 s, then started again;
* ``stop_ari``: the ``ari`` service stopped (SIGSTOP) for 5 s.

Needs the lab up with its services and carriers a to d free for SIPp carriers of our own
(``outbound-router lab up --no-carriers``). Seeds a table of four carriers: carrier-a answers,
carrier-b answers 503, carrier-c answers after 2 s, carrier-d rings then answers 503 (+3491,
+3492, +3493 try b, c, d first and fail over to a; +3494 goes to a). SIPp phones call on both
paths (ARI phones 127.0.0.10: three streams, 22 calls/s; AGI phones 127.0.0.20: two streams,
8 calls/s; ``--rate-scale`` multiplies them) for ``--seconds`` s, each call a number of its own
and ``--talk-ms`` of talk once answered. At the end the routes that were current before are
made current again (published again if the Redis scenario lost them).

Prints, per scenario, a JSON report and a summary line: the calls placed and every phone's
final answer by code; carrier INVITEs; calls that INVITEd one trunk twice, and calls whose
attempts overlapped (a trunk INVITEd before the last attempt ended); what ARI still lists in
/channels and /bridges once the phones are done (and how long it took to empty); the CDR
(Master.csv) records against what the phones saw (missing, answered for a failed call, not
answered for an answered one); WARNING/ERROR kinds in the services' logs; a probe call on each
path afterwards. The scenario's files (SIPp scenarios and traces) stay in a work directory
whose name is printed. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import callrate

from outbound_router import lab, sipp, topology
from redis_seed.urls import mask_url
from routing.model import RoutingTable

ROUTES = """
defaults: {country_code: "34", setup_timeout: 2, ring_timeout: 10, max_attempts: 6}
carriers:
  fallback: {trunks: [carrier-a]}
  broken: {trunks: [carrier-b]}
  slow: {trunks: [carrier-c]}
  flaky: {trunks: [carrier-d]}
target_patterns:
  r91: {prefix: "+3491"}
  r92: {prefix: "+3492"}
  r93: {prefix: "+3493"}
  r94: {prefix: "+3494"}
outgoing_routes:
  - {name: p91, pattern: r91, carrier: broken, priority: 1}
  - {name: p92, pattern: r92, carrier: slow, priority: 1}
  - {name: p93, pattern: r93, carrier: flaky, priority: 1}
  - {name: f91, pattern: r91, carrier: fallback, priority: 2}
  - {name: f92, pattern: r92, carrier: fallback, priority: 2}
  - {name: f93, pattern: r93, carrier: fallback, priority: 2}
  - {name: d94, pattern: r94, carrier: fallback, priority: 1}
"""

CARRIERS = {"a": "answer", "b": "unavailable", "c": "answer_after:2", "d": "ring_then:503:1"}
HEALTHY = "a"

#: (path, number prefix: route and stream digit, calls/s). Every call dials the prefix and its
#: SIPp call number: the prefixes are all three digits and distinct, so no two calls share one.
STREAMS = [("ari", "911", 8), ("ari", "922", 8), ("ari", "933", 6),
           ("agi", "915", 4), ("agi", "926", 4)]

ANSWER_TIMEOUT_S = 30.0  # the phones wait this long for a final answer
PROBE_NUMBER = "94000001"  # +3494: carrier-a, one attempt
REDIS_OUTAGE_S = 10.0
CARRIER_OUTAGE_S = 5.0
ARI_STALL_S = 5.0
#: Redis settings carried over to the restarted server (its command line is gone: redis-server
#: rewrites it to its process title, "redis-server *:PORT").
REDIS_SETTINGS = ("port", "bind", "save", "appendonly", "appendfsync", "dir", "dbfilename",
                  "appendfilename", "appenddirname", "databases", "maxmemory",
                  "maxmemory-policy", "protected-mode")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               poll: float = 0.05) -> float:
    """Seconds until ``condition()`` held; raises TimeoutError after ``timeout`` s."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(poll)  # polling: what we wait for sends us no event
    return time.monotonic() - started


def gone(pid: int) -> bool:
    return sipp.proc_state(pid) in (None, "Z")


# ---- routes --------------------------------------------------------------------------------


def current_table(redis_url: str) -> RoutingTable | None:
    """The routing table current now (None: nothing seeded), to publish again should the
    Redis scenario lose it (a Redis without persistence comes back empty, and version ids then
    start again: the one found before may name another table)."""
    from redis_seed.connection import sync_client
    from redis_seed.errors import NoCurrentVersion, NoSuchVersion
    from redis_seed.keys import Keys
    from redis_seed.store import load_current

    client = sync_client(redis_url)
    try:
        return load_current(client, keys=Keys(lab.redis_prefix()))[1]
    except (NoCurrentVersion, NoSuchVersion):
        return None
    finally:
        client.close()


def republish(redis_url: str, table: RoutingTable) -> str:
    from redis_seed.connection import sync_client
    from redis_seed.keys import Keys
    from redis_seed.store import publish

    client = sync_client(redis_url)
    try:
        return publish(client, table, source="chaos: the routes current before",
                       keys=Keys(lab.redis_prefix()))
    finally:
        client.close()


# ---- the lab's Redis -----------------------------------------------------------------------


@dataclass(frozen=True)
class RedisServer:
    """The redis-server of REDIS_URL, and how to start it again as it was."""

    url: str
    port: int
    pid: int
    cwd: str
    argv: list[str]


def find_redis(url: str) -> RedisServer | str:
    """The redis-server ``url`` names, or why the Redis scenario cannot stop and restart it."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (parts.scheme != "redis" or parts.hostname != "127.0.0.1" or port is None
            or parts.username or parts.password or parts.query):
        return (f"REDIS_URL {mask_url(url)} is not a plain redis://127.0.0.1:PORT URL: the "
                "redis scenario stops and restarts only such a local server")
    pid = lab.tcp_listener_pid("127.0.0.1", port)
    if pid is None:
        return f"no process of ours listens on 127.0.0.1:{port}"
    try:
        title = sipp.read_cmdline(pid)
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return f"PID {pid} (on port {port}) cannot be read"
    program = title[0].split()[0] if title else ""
    if os.path.basename(program) != "redis-server":
        return f"PID {pid} on port {port} is {program or 'not a program'}, not redis-server"
    binary = shutil.which("redis-server") if not os.path.isabs(program) else program
    if binary is None:
        return "redis-server is not on PATH: it could not be started again"
    from redis_seed.connection import sync_client

    client = sync_client(url)
    try:
        info = client.info("server")
        config = {k: str(v) for k, v in client.config_get(*REDIS_SETTINGS).items()}
    finally:
        client.close()
    if str(config.get("port")) != str(port):
        return f"the Redis on port {port} says its port is {config.get('port')}"
    argv = [binary]
    if info.get("config_file"):
        argv.append(str(info["config_file"]))
    for name in REDIS_SETTINGS:
        if name in config:  # (bind and save hold several words: one argument each)
            words = config[name].split() if name in ("bind", "save") else [config[name]]
            argv += [f"--{name}", *(words or [""])]
    return RedisServer(url, port, pid, cwd, [*argv, "--daemonize", "no"])


def restart_redis(server: RedisServer, outage: float, log_file: Path) -> int:
    """Stop ``server`` (SIGTERM), keep it down ``outage`` s, start it again; its new PID."""
    log(f"SIGTERM redis-server {server.pid} (port {server.port}); down {outage:g} s")
    os.kill(server.pid, signal.SIGTERM)
    took = wait_until(lambda: gone(server.pid), 15, f"redis-server {server.pid} exiting")
    log(f"redis-server exited after {took:.2f} s")
    time.sleep(outage)  # the outage itself
    pid = sipp.spawn_detached(server.argv, log_file)
    took = wait_until(lambda: lab.redis_ping(server.url), 15,
                      f"redis-server {pid} answering PING", poll=0.02)
    log(f"redis-server back as PID {pid} (answers PING after {took:.2f} s); stop it by that "
        "PID when done with it")
    p = lab.paths()
    state = lab.load_state(p)
    if (state.get("redis") or {}).get("pid") == server.pid:  # the lab's own: it is this one now
        state["redis"]["pid"] = pid
        lab.save_state(p, state)
    return pid


# ---- phones and carriers -------------------------------------------------------------------


@dataclass
class Stream:
    via: str
    prefix: str
    rate: float
    calls: int
    workdir: Path
    load: sipp.PhoneLoad | None = None
    seen: list[sipp.PhoneCall] = field(default_factory=list)  # once the load is done

    def start(self, talk_ms: int) -> None:
        self.load = sipp.start_load(
            topology.phone(self.via).address, self.prefix, self.workdir, calls=self.calls,
            rate=self.rate, concurrent=1000, talk=talk_ms / 1000, timeout=ANSWER_TIMEOUT_S,
            numbered=True)

    def wait(self, timeout: float) -> None:
        """Until SIPp is done (its own -timeout ends it; ``timeout`` only guards a stuck one)."""
        assert self.load is not None
        self.load.wait(timeout)
        self.seen = sipp.phone_calls(self.load.messages())


@dataclass(frozen=True)
class Attempt:
    carrier: str
    number: str  # as the phone dialled it
    attempt: sipp.CarrierAttempt


@dataclass
class Run:
    """One scenario's lab objects."""

    name: str
    workdir: Path
    redis_url: str
    carriers: list[tuple[str, sipp.Carrier]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def carrier(self, letter: str) -> sipp.Carrier:
        return [c for k, c in self.carriers if k == letter][-1]


def carrier_attempts(carriers: list[tuple[str, sipp.Carrier]], country: str = "+34"
                     ) -> list[Attempt]:
    return [Attempt(letter, sipp.uri_user(a.request_uri).removeprefix(country), a)
            for letter, c in carriers for a in c.attempts()]


# ---- ARI and CDR ---------------------------------------------------------------------------


def leftovers() -> tuple[list[Any], list[Any]] | None:
    """ARI's channels and bridges (None: ARI did not answer)."""
    auth = lab.ari_credentials()
    s1, channels = lab.ari_request("/channels", auth)
    s2, bridges = lab.ari_request("/bridges", auth)
    if s1 != 200 or s2 != 200:
        return None
    return list(channels or []), list(bridges or [])


def wait_empty(timeout: float) -> tuple[float | None, tuple[list[Any], list[Any]] | None]:
    """(seconds until ARI listed no channel and no bridge, or None; what it listed last)."""
    last: list[tuple[list[Any], list[Any]] | None] = [None]

    def empty() -> bool:
        last[0] = leftovers()
        return last[0] is not None and not last[0][0] and not last[0][1]

    try:
        return wait_until(empty, timeout, "ARI empty", poll=0.25), last[0]
    except TimeoutError:
        return None, last[0]


# ---- the disruptions -----------------------------------------------------------------------


def service_worker(name: str) -> int:
    pid = lab.service_worker(name)
    if pid is None:
        raise RuntimeError(f"the {name} service does not run")
    return pid


def lab_up() -> None:
    started = time.monotonic()
    r = subprocess.run(lab.cli_command("lab", "up", "--no-carriers"), capture_output=True,
                       text=True, check=False)
    last = (r.stdout.strip().splitlines() or [""])[-1]
    log(f"lab up: exit {r.returncode} after {time.monotonic() - started:.2f} s: {last} "
        f"{r.stderr.strip()[-300:]}")


def act_none(run: Run) -> None:
    log("no disruption (control run)")


def act_kill9_ari(run: Run) -> None:
    pid = service_worker("ari")
    log(f"kill -9 ari {pid}")
    os.kill(pid, signal.SIGKILL)
    took = wait_until(lambda: lab.service_worker("ari") not in (None, pid), 30,
                      "the supervisor restarting ari")
    log(f"supervisor restarted ari as {lab.service_worker('ari')} after {took:.2f} s")


def term(name: str) -> None:
    pid = service_worker(name)
    log(f"SIGTERM {name} {pid}")
    os.kill(pid, signal.SIGTERM)
    took = wait_until(lambda: gone(pid), 30, f"{name} exiting", poll=0.02)
    log(f"{name} exited after {took:.2f} s")
    lab_up()
    log(f"{name} now {lab.service_worker(name)}")


def act_term_ari(run: Run) -> None:
    term("ari")


def act_term_agi(run: Run) -> None:
    term("agi")


def act_asterisk(run: Run) -> None:
    log("core restart now")
    started = time.monotonic()
    auth = lab.ari_credentials()
    lab.asterisk_cli("core restart now")
    try:  # the old Asterisk may still answer for a moment
        wait_until(lambda: lab.ari_request("/asterisk/info", auth)[0] != 200, 5,
                   "Asterisk going down", poll=0.02)
    except TimeoutError:
        log("ARI never stopped answering: Asterisk may not have restarted")
    if lab.wait_app_registered(lab.load_state(lab.paths()), auth, say=log, timeout=60):
        log(f"Asterisk back with the app registered after {time.monotonic() - started:.2f} s")


def act_redis(run: Run) -> None:
    server = run.notes.pop("redis_server")
    run.notes["redis_pid"] = restart_redis(server, REDIS_OUTAGE_S,
                                           run.workdir / "redis-server.log")
    run.notes["redis_restarted"] = True
    _seed_after_the_outage(run)


def act_redis_stop(run: Run) -> None:
    server = run.notes.pop("redis_server")
    log(f"kill -STOP redis-server {server.pid} (port {server.port}) for {REDIS_OUTAGE_S:g} s")
    os.kill(server.pid, signal.SIGSTOP)
    try:
        time.sleep(REDIS_OUTAGE_S)  # the stall itself
    finally:
        os.kill(server.pid, signal.SIGCONT)
    log("kill -CONT")
    _seed_after_the_outage(run)


def _seed_after_the_outage(run: Run) -> None:
    started = time.monotonic()
    try:
        _, version = callrate.seed_routes(run.redis_url, ROUTES, "chaos: after the outage")
        log(f"seeded {version}; loaded by every service after "
            f"{time.monotonic() - started:.2f} s")
    except SystemExit as exc:  # seed_routes exits when a service did not load it in time
        log(f"seed after the outage: {exc}")
        run.notes["seed_error"] = str(exc)


def act_carrier(run: Run) -> None:
    c = run.carrier("c")
    log(f"kill -9 carrier c (sipp {c.pid}); down {CARRIER_OUTAGE_S:g} s")
    c.kill()
    time.sleep(CARRIER_OUTAGE_S)  # the carrier's outage itself
    run.carriers.append(("c", sipp.start_carrier("c", CARRIERS["c"], run.workdir / "carriers2")))
    log("carrier c back")


def act_stop_ari(run: Run) -> None:
    pid = service_worker("ari")
    log(f"kill -STOP ari {pid} for {ARI_STALL_S:g} s")
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(ARI_STALL_S)  # the stall itself
    finally:
        os.kill(pid, signal.SIGCONT)
    log("kill -CONT")


SCENARIOS: dict[str, Callable[[Run], None]] = {
    "control": act_none, "kill9_ari": act_kill9_ari, "term_ari": act_term_ari,
    "term_agi": act_term_agi, "asterisk": act_asterisk, "redis": act_redis,
    "redis_stop": act_redis_stop, "carrier": act_carrier, "stop_ari": act_stop_ari,
}


# ---- one run -------------------------------------------------------------------------------


def run_scenario(name: str, workdir: Path, redis_url: str, *, seconds: float, act_at: float,
                 talk_ms: int, rate_scale: float) -> dict[str, Any]:
    run = Run(name, workdir, redis_url)
    if name in ("redis", "redis_stop"):
        server = find_redis(redis_url)
        if isinstance(server, str):
            log(f"== {name}: SKIPPED: {server}")
            return {"name": name, "skipped": server}
        run.notes["redis_server"] = server
    _, version = callrate.seed_routes(redis_url, ROUTES, f"chaos: {name}")
    log(f"== {name}: routes {version}, files in {workdir}")
    try:
        for letter, behaviour in CARRIERS.items():
            run.carriers.append((letter, sipp.start_carrier(letter, behaviour,
                                                            workdir / "carriers")))
        return load_and_check(run, seconds=seconds, act_at=act_at, talk_ms=talk_ms,
                              rate_scale=rate_scale)
    finally:
        for _, c in run.carriers:
            c.stop()


def load_and_check(run: Run, *, seconds: float, act_at: float, talk_ms: int,
                   rate_scale: float) -> dict[str, Any]:
    cdr_offset = lab.file_size(lab.paths().cdr_csv)
    logs = {n: lab.paths().service_log(n) for n in topology.SERVICES}
    log_offsets = {n: lab.file_size(p) for n, p in logs.items()}
    streams = [Stream(via, prefix, rate * rate_scale, max(1, round(rate * rate_scale * seconds)),
                      run.workdir / f"phone-{via}-{prefix}") for via, prefix, rate in STREAMS]
    t0 = time.time()
    for s in streams:
        s.start(talk_ms)
    time.sleep(act_at)  # the moment of the disruption: by design, not a wait for an event
    act_t = time.time()
    try:
        SCENARIOS[run.name](run)
    except Exception as exc:  # noqa: BLE001 - said in the report; the checks still run
        log(f"the disruption failed: {exc!r}")
        run.notes["disruption_error"] = repr(exc)
    act_end = time.time()
    for s in streams:
        s.wait(timeout=seconds + ANSWER_TIMEOUT_S + talk_ms / 1000 + 60)
    log(f"phones done after {time.time() - t0:.1f} s")
    empty_after, left = wait_empty(60)
    log("ARI empty " + (f"after {empty_after:.2f} s" if empty_after is not None else "NOT")
        + " once the phones were done")
    report: dict[str, Any] = {"name": run.name, "act_at": round(act_t - t0, 2),
                              "act_took": round(act_end - act_t, 2),
                              "empty_after": empty_after and round(empty_after, 2)}
    if empty_after is None:
        report["leftovers"] = (
            {"channels": [f"{c.get('name')}:{c.get('state', '')}" for c in left[0]][:10],
             "channels_count": len(left[0]), "bridges": len(left[1])}
            if left else "ARI down")
    report.update(phone_report(streams, t0))
    calls = {c.number: c for s in streams for c in s.seen}
    report.update(carrier_report(run.carriers, calls, t0))
    report.update(cdr_report(lab.cdr_rows_since(cdr_offset), calls))
    for n, p in logs.items():
        text = lab.logged_since(p, log_offsets[n]).decode(errors="replace")
        kinds = collections.Counter(
            re.sub(r"[0-9a-f]{8,}[-0-9a-f.]*|\d+", "N", line.split(" ", 2)[-1])[:160]
            for line in text.splitlines() if "WARNING" in line or "ERROR" in line)
        report[f"{n}_log_warnings"] = dict(kinds.most_common(10))
    report["probe"] = {via: sipp.place_call(topology.phone(via).address, PROBE_NUMBER,
                                            run.workdir / f"probe-{via}", timeout=20,
                                            hangup_after=0.2).final_code
                       for via in ("ari", "agi")}
    report["empty_after_probe"] = wait_empty(10)[0] is not None
    report.update({k: v for k, v in run.notes.items() if k != "redis_server"})
    return report


def phone_report(streams: list[Stream], t0: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    calls = [c for s in streams for c in s.seen]
    out["placed"] = sum(s.calls for s in streams)
    missing = {s.prefix: s.calls - len(s.seen) for s in streams if len(s.seen) != s.calls}
    if missing:
        out["calls_not_sent"] = missing
    out["finals"] = dict(collections.Counter(str(c.final) for c in calls))
    out["per_stream"] = {f"{s.via}:{s.prefix}": dict(collections.Counter(
        str(c.final) for c in s.seen)) for s in streams}
    invites = sorted(c.invited_at for c in calls)
    out["placing_span_s"] = round(invites[-1] - invites[0], 2) if invites else None
    setups = sorted(c.final_at - c.invited_at for c in calls if c.final_at)
    if setups:
        out["setup_s_p50_p95_max"] = [round(callrate.percentile(setups, q), 2)
                                      for q in (0.5, 0.95, 1.0)]
        out["setups_over_5s"] = sum(1 for x in setups if x > 5)
    out["answered_then_dropped_by_network"] = sum(
        1 for c in calls if c.final == 200 and c.bye_received)
    out["phone_bye_unanswered"] = sum(1 for c in calls if c.bye_sent and not c.bye_answered)
    failed = sorted((round(c.invited_at - t0, 2), c.number, c.final)
                    for c in calls if c.final != 200)
    if failed:
        out["failed_window_s"] = [failed[0][0], failed[-1][0]]
        out["failed_examples"] = failed[:3] + failed[-3:]
    return out


def carrier_report(carriers: list[tuple[str, sipp.Carrier]], calls: dict[str, sipp.PhoneCall],
                   t0: float) -> dict[str, Any]:
    every = carrier_attempts(carriers)
    per_call: dict[str, list[Attempt]] = collections.defaultdict(list)
    for a in every:
        per_call[a.number].append(a)
    twice, overlap = [], []
    for number, attempts in per_call.items():
        attempts.sort(key=lambda a: a.attempt.invited_at)
        shown = [(a.carrier, round(a.attempt.invited_at - t0, 3),
                  a.attempt.ended_at and round(a.attempt.ended_at - t0, 3), a.attempt.final)
                 for a in attempts]
        if max(collections.Counter(a.carrier for a in attempts).values()) > 1:
            twice.append((number, shown))
        if any(x.attempt.ended_at is None or y.attempt.invited_at < x.attempt.ended_at - 0.02
               for x, y in zip(attempts, attempts[1:], strict=False)):
            overlap.append((number, shown))
    invites: collections.Counter[str] = collections.Counter(a.carrier for a in every)
    return {
        "carrier_invites": dict(sorted(invites.items())),
        "same_trunk_twice": len(twice), "same_trunk_twice_examples": twice[:5],
        "overlapping_attempts": len(overlap), "overlap_examples": overlap[:5],
        "invites_for_unknown_numbers": [n for n in per_call if n not in calls][:5],
        # the failover stopped: the last attempt failed on a trunk that is not the healthy
        # one, and the phone got no answer
        "failover_stopped": sum(1 for n, c in calls.items() if c.final != 200 and per_call.get(n)
                                and per_call[n][-1].attempt.final == 503
                                and per_call[n][-1].carrier != HEALTHY),
        "phone_200_without_carrier_200": [
            n for n, c in calls.items() if c.final == 200
            and not any(a.attempt.final == 200 for a in per_call.get(n, []))][:5],
    }


def cdr_report(records: list[list[str]], calls: dict[str, sipp.PhoneCall]) -> dict[str, Any]:
    """The last CDR record of every call against the phone's final answer (Master.csv's
    columns: dst 2, disposition 5, ROUTER_STATUS 8, carrier 10, attempts 12)."""
    by_dst: dict[str, list[list[str]]] = collections.defaultdict(list)
    for r in records:
        if len(r) >= 14:
            by_dst[r[2]].append(r)
    bad, shapes = [], collections.Counter[str]()
    for number, call in calls.items():
        if not by_dst.get(number):
            continue
        last = by_dst[number][-1]
        disposition, status, carrier, attempts = last[5], last[8], last[10], last[12]
        answered = call.final == 200
        if (answered != (disposition == "ANSWERED") or (answered and not carrier)
                or (answered and attempts and not attempts.endswith(":200"))):
            bad.append((number, call.final, disposition, status, carrier, attempts))
        tries = "|".join(":".join(e.split(":")[:2]) for e in attempts.split("|"))
        shapes[f"{disposition} {status} {tries.replace('carrier-', '')}"] += 1
    missing = [n for n in calls if n not in by_dst]
    return {"cdr_records": len(records), "cdr_missing": len(missing),
            "cdr_missing_examples": missing[:5], "cdr_inconsistent": len(bad),
            "cdr_inconsistent_examples": bad[:6],
            "cdr_last_record_shapes": dict(shapes.most_common(12))}


def summary(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"{r['name']:10} skipped: {r['skipped']}"
    finals = r.get("finals", {})
    failed = {k: v for k, v in finals.items() if k != "200"}
    left = "none" if r.get("empty_after") is not None else (
        r["leftovers"] if isinstance(r.get("leftovers"), str)
        else f"{r['leftovers']['channels_count']} ch/{r['leftovers']['bridges']} br")
    return (f"{r['name']:10} placed {r['placed']}, answered {finals.get('200', 0)} (then cut "
            f"by the network {r['answered_then_dropped_by_network']}), failed "
            f"{failed or 0}; same trunk twice {r['same_trunk_twice']}, overlaps "
            f"{r['overlapping_attempts']}; ARI leftovers {left}; CDR inconsistent "
            f"{r['cdr_inconsistent']} (missing {r['cdr_missing']}); probe "
            f"ari {r['probe']['ari']} agi {r['probe']['agi']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                        choices=[*SCENARIOS, "all"], help=f"{', '.join(SCENARIOS)} or all")
    parser.add_argument("--seconds", type=float, default=15.0, help="of calls (default 15)")
    parser.add_argument("--act-at", type=float, default=6.0,
                        help="the disruption, seconds into the load (default 6)")
    parser.add_argument("--talk-ms", type=int, default=4000, help="talk once answered")
    parser.add_argument("--rate-scale", type=float, default=1.0,
                        help="multiplies every stream's rate (30 calls/s in all at 1.0)")
    args = parser.parse_args()
    names = list(SCENARIOS) if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    info = callrate.running_lab()
    redis_url = os.environ.get("REDIS_URL") or info.redis_url
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    print(f"work directory: {work}", flush=True)
    table_before = current_table(redis_url)
    before, _ = callrate.seed_routes(redis_url, ROUTES, "chaos")
    reports = []
    redis_restarted = False
    try:
        for name in names:
            report = run_scenario(name, work / name, redis_url, seconds=args.seconds,
                                  act_at=args.act_at, talk_ms=args.talk_ms,
                                  rate_scale=args.rate_scale)
            redis_restarted |= bool(report.get("redis_restarted"))
            reports.append(report)
            print(json.dumps(report, indent=1, default=str), flush=True)
    finally:
        if redis_restarted and table_before is not None:
            log(f"the routes current before published again as "
                f"{republish(redis_url, table_before)} (Redis was restarted)")
        elif not redis_restarted:
            callrate.restore_routes(redis_url, before)
    print("summary (a measurement of this run, not a verdict):")
    for r in reports:
        print("  " + summary(r))


if __name__ == "__main__":
    main()
