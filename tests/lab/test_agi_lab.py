"""The FastAGI path on the real lab: phones at 127.0.0.20, extensions_agi.conf, SIPp carriers.

The same outcome matrix as the ARI path (SPEC section 3), seen from the phone: the final SIP
code it gets, and which carriers got an INVITE (from SIPp's own traces).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agi.scripts import Scripts
from agi.server import AgiServer, AgiSession, Handler
from outbound_router import lab as lab_mod
from outbound_router import topology
from redis_seed.routes_file import parse_routes
from routing.snapshot import Snapshot

from .observer import logged_since, wait_for
from .routes import (
    E164,
    NUMBER,
    tiers_routes,
)

pytestmark = pytest.mark.lab

TIERS = tiers_routes(ring_timeout=4)


@pytest.fixture
def tiers(lab):  # type: ignore[no-untyped-def]
    lab.seed(TIERS)  # returns once the agi service has loaded it
    return lab


@pytest.fixture
def agi(phone):  # type: ignore[no-untyped-def]
    return phone("agi")


def log_size(lab) -> int:  # type: ignore[no-untyped-def]
    return Path(lab.asterisk_log).stat().st_size


def router_summary(lab, since: int) -> str:  # type: ignore[no-untyped-def]
    """The h extension's summary of the call logged after byte ``since`` of the Asterisk log
    (read from there on: the log grows large under the benchmarks)."""
    # The h extension runs just after the phone's final response.
    found = wait_for("the router summary in the Asterisk log", lambda: re.findall(
        r'NoOp\("[^"]*", "router ([^"]*)"\)', logged_since(lab.asterisk_log, since)), timeout=5)
    return str(found[-1])


def wait_for_invite(c) -> None:  # type: ignore[no-untyped-def]
    wait_for(f"an INVITE at {c.trunk.endpoint}", lambda: c.invites() > 0)


# -- the outcome matrix ----------------------------------------------------------------------


def test_answer_on_the_first_trunk(tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    a = carrier("a", "answer")
    before = log_size(tiers)
    result = agi.call(NUMBER)
    assert result.final_code == 200
    assert a.request_uris() == [f"sip:{E164}@127.0.0.11:5060"]
    assert router_summary(tiers, before) == (
        "OK carrier=first trunk=carrier-a attempts=carrier-a:answered:16:200")


def test_a_failover_is_recorded_on_the_caller(tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "unavailable"), carrier("b", "answer")
    before = log_size(tiers)
    assert agi.call(NUMBER).final_code == 200
    assert (a.invites(), b.invites()) == (1, 1)
    assert router_summary(tiers, before) == (
        "OK carrier=second trunk=carrier-b "
        "attempts=carrier-a:congestion:34:503|carrier-b:answered:16:200")


def test_ringing_without_answer_stops_after_the_ring_timeout(tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "ring"), carrier("b", "answer")
    result = agi.call(NUMBER)
    assert result.final_code == 480  # Q.850 19, no answer
    assert (a.invites(), b.invites()) == (1, 0)
    assert 3.5 < result.duration < 10


def test_a_silent_trunk_is_left_after_the_setup_timeout(tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "silent"), carrier("b", "answer")
    result = agi.call(NUMBER)
    assert result.final_code == 200
    assert (a.invites(), b.invites()) == (1, 1)
    assert result.duration < 4 + 1.5  # setup_timeout 2 s, not the 4 s ring timeout


def test_all_failing_hang_up_with_the_most_meaningful_cause(tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    a, b, c = carrier("a", "unavailable"), carrier("b", "not_found"), carrier("c", "unavailable")
    result = agi.call(NUMBER)
    assert result.final_code == 404  # the rejection (cause 1) beats congestion (503)
    assert (a.invites(), b.invites(), c.invites()) == (1, 1, 1)


def test_early_media_then_failure_stops_when_the_carrier_says_so(tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    d, b = carrier("d", "early_503"), carrier("b", "answer")
    result = agi.call("0033123456789")
    assert result.final_code == 503
    assert (d.invites(), b.invites()) == (1, 0)


@pytest.mark.parametrize(("dialled", "code"), [
    ("9abc", 484),  # INVALID: cause 28
    ("+34905123456", 403),  # BLOCKED: cause 21
    ("0049301234567", 404),  # NO_ROUTE: cause 3
])
def test_calls_that_cannot_be_routed_never_reach_a_carrier(tiers, carrier, agi, dialled,
                                                          code) -> None:  # type: ignore[no-untyped-def]
    a = carrier("a", "answer")
    assert agi.call(dialled).final_code == code
    assert a.invites() == 0


def test_the_router_being_down_gives_congestion_not_a_hang(tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    a = carrier("a", "answer")
    with tiers.service_stopped("agi"):
        result = agi.call(NUMBER)
    assert result.final_code == 503
    assert a.invites() == 0


def test_a_call_that_comes_while_the_router_restarts_is_routed_when_it_is_back(
        tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    # AGI() cannot connect (AGISTATUS=FAILURE) while the service restarts: the dialplan asks
    # again every 0.25 s for 3 s. The phone got 503 at once.
    a = carrier("a", "answer")
    offset = tiers.asterisk_log.stat().st_size
    with ThreadPoolExecutor(max_workers=1) as pool:
        with tiers.service_stopped("agi"):
            call = pool.submit(agi.call, NUMBER)
            wait_for("AGI() to fail once", lambda: '"RTR_TRIES=1")'
                     in logged_since(tiers.asterisk_log, offset))
        result = call.result()
    assert result.final_code == 200, result.codes
    assert a.invites() == 1


def fill_accept_queue(address: tuple[str, int]) -> list[socket.socket]:
    """Connections nobody accepts, until the listener's queue is full: a connect then waits
    (its SYN dropped), as to a host that drops packets."""
    queued: list[socket.socket] = []
    while len(queued) < 8:
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect(address)
        except OSError:  # (TimeoutError too): the queue is full
            s.close()
            return queued
        queued.append(s)
    raise AssertionError(f"{address}: the accept queue took {len(queued)} connections")


def test_a_router_host_that_drops_packets_gives_503_within_seconds(tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    # Each AGI() then waits 2 s to connect (Asterisk's MAX_AGI_CONNECT): the dialplan's 13
    # tries took some 29 s of silence before the 503 (a code review). Now 3 s of Asterisk's
    # clock from the first failure. A listening socket whose queue is full drops the SYNs.
    a = carrier("a", "answer")
    with tiers.service_stopped("agi"), socket.socket() as hole:
        hole.bind((topology.AGI_HOST, topology.AGI_PORT))
        hole.listen(0)
        queued = fill_accept_queue((topology.AGI_HOST, topology.AGI_PORT))
        try:
            result = agi.call(NUMBER, timeout=60)
        finally:
            for s in queued:
                s.close()
    assert result.final_code == 503
    assert a.invites() == 0
    assert result.duration < 10, result.duration  # 2 s + about 3 s, not ~29 s


def test_a_failed_attempt_is_judged_by_the_router_once_it_is_back(tiers, carrier, agi) -> None:  # type: ignore[no-untyped-def]
    # carrier-d (retry_after_early_media: false) sends 183, then 503 a second later. The agi
    # service is down when that Dial ends and back within the 3 s the dialplan asks again:
    # the carrier's own policy stops the call, as with the router up. Judged by the dialplan
    # alone (section 3's defaults), the 503 went on to carrier-b.
    d, b = carrier("d", "early_503"), carrier("b", "answer")
    before = log_size(tiers)
    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(agi.call, "0033123456789")
        wait_for_invite(d)
        with tiers.service_stopped("agi"):
            wait_for("the outcome AGI() to fail once", lambda: '"RTR_OTRIES=1")'
                     in logged_since(tiers.asterisk_log, before))
        result = call.result()
    assert result.final_code == 503
    assert (d.invites(), b.invites()) == (1, 0)
    assert router_summary(tiers, before) == (
        "OK carrier= trunk= attempts=carrier-d:congestion:34:503")


NEXT_ANSWERS = ("OK carrier=second trunk=carrier-b "
                "attempts=carrier-a:unjudged::|carrier-b:answered:16:200")


@pytest.mark.parametrize(("behaviour", "routes", "code", "b_invites", "summary"), [
    # A dead trunk fails over (CHANUNAVAIL) although the router cannot judge it.
    pytest.param("silent", TIERS, 200, 1, NEXT_ANSWERS, id="silent-next"),
    # The same when Dial's ring timer, shorter than the setup timer, ended it (NOANSWER that
    # never rang): it stopped the call with 480.
    pytest.param("silent", tiers_routes(ring_timeout=2, setup_timeout=3), 200, 1, NEXT_ANSWERS,
                 id="silent-ring-shorter-next"),
    # A 3xx (Dial's BUSY, with no new HANGUPCAUSE): it stopped the call with 486.
    pytest.param("redirect", TIERS, 200, 1, NEXT_ANSWERS, id="redirect-next"),
    # A ring timeout stops with no answer (480), not with the cause an earlier attempt left
    # in HANGUPCAUSE, or 0 (which chan_pjsip sent as 603).
    pytest.param("ring", TIERS, 480, 0, "OK carrier= trunk= attempts=carrier-a:unjudged::",
                 id="ring-timeout-480"),
    pytest.param("busy", TIERS, 486, 0, "OK carrier= trunk= attempts=carrier-a:unjudged:17:",
                 id="busy-486"),
])
def test_the_dialplan_judges_alone_while_the_router_stays_down(  # type: ignore[no-untyped-def]
        tiers, carrier, agi, behaviour, routes, code, b_invites, summary) -> None:
    # The router routes the call, then cannot judge carrier-a's attempt for longer than the
    # 3 s the dialplan asks again (here every outcome session ends without a verdict):
    # section 3's defaults, read from DIALSTATUS.
    scripts = Scripts(lambda: Snapshot.build(parse_routes(routes), "v-stand-in"),
                      random.Random())

    async def no_verdict(session: AgiSession) -> None:
        return

    a, b = carrier("a", behaviour), carrier("b", "answer")
    before = log_size(tiers)
    with tiers.service_stopped("agi"), stand_in_agi({"route": scripts.route,
                                                      "outcome": no_verdict}):
        result = agi.call(NUMBER)
    assert result.final_code == code
    assert (a.invites(), b.invites()) == (1, b_invites)
    assert router_summary(tiers, before) == summary


@contextlib.contextmanager
def stand_in_agi(handlers: Mapping[str, Handler]) -> Iterator[None]:
    """A FastAGI server of the test's own at AGI_LISTEN, in a thread (the lab's is stopped)."""
    loop = asyncio.new_event_loop()
    server = AgiServer(handlers, host=topology.AGI_HOST, port=topology.AGI_PORT)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(server.close(grace=1), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_an_outcome_session_that_ends_without_a_verdict_is_asked_again(  # type: ignore[no-untyped-def]
        tiers, carrier, agi) -> None:
    # The session ends before its answer (the service killed or overloaded then): AGISTATUS
    # is SUCCESS all the same. The dialplan appended what the attempt before had left in
    # ROUTER_LAST_ATTEMPT and stopped the call with 503 (a code review); it now asks again,
    # as when the router cannot be reached, and the carrier's own policy decides.
    scripts = Scripts(lambda: Snapshot.build(parse_routes(TIERS), "v-stand-in"), random.Random())
    unanswered = []

    async def outcome(session: AgiSession) -> None:
        if not unanswered:
            unanswered.append(session.request.arg(1))
            return  # the connection closes with no verdict
        await scripts.outcome(session)

    a, b = carrier("a", "unavailable"), carrier("b", "answer")
    before = log_size(tiers)
    with tiers.service_stopped("agi"), stand_in_agi({"route": scripts.route,
                                                      "outcome": outcome}):
        result = agi.call(NUMBER)
    assert unanswered == ["1"]
    assert result.final_code == 200, result.codes
    assert (a.invites(), b.invites()) == (1, 1)
    assert router_summary(tiers, before) == (
        "OK carrier=second trunk=carrier-b "
        "attempts=carrier-a:congestion:34:503|carrier-b:answered:16:200")


def test_a_caller_who_leaves_while_a_failed_attempt_is_judged_keeps_it_in_the_trace(  # type: ignore[no-untyped-def]
        tiers, carrier, agi) -> None:
    # The caller hangs up after carrier-a's 503 ended its Dial(), while the outcome script
    # judges it (held here: the agi service is frozen): the dialplan goes to the h extension
    # before the loop appends the attempt, which was missing from ROUTER_ATTEMPTS and the CDR.
    a = carrier("a", "early_503")  # 183, then 503 a second later
    before = log_size(tiers)
    worker = lab_mod.service_worker("agi")
    assert worker is not None
    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(agi.call, NUMBER, cancel_after=2.5)
        wait_for_invite(a)
        os.kill(worker, signal.SIGSTOP)  # the route script is done; outcome will wait
        try:
            result = call.result()
        finally:
            os.kill(worker, signal.SIGCONT)
    assert result.final_code == 487
    assert router_summary(tiers, before) == (
        "OK carrier= trunk= attempts=carrier-a:congestion:34:503")
