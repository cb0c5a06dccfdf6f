"""The ARI path on the real lab: phones at 127.0.0.10 -> Stasis(outbound-router) -> the lab's
`outbound-router ari` service -> SIPp carriers.

Everything is judged from the outside: the final SIP code the phone got (SIPp's trace), which
carriers got an INVITE or a CANCEL (the carriers' SIPp traces), and what ARI shows (channel
variables, no channel or bridge left: the fixture checks the latter after every test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from outbound_router import sipp

from .observer import AriObserver, logged_since, wait_for
from .routes import (
    E164,
    NUMBER,
    tiers_routes,
)

pytestmark = pytest.mark.lab

TIERS = tiers_routes(ring_timeout=3)
# The same, with carrier-b first: the hot update.
TIERS_B_FIRST = TIERS.replace("carrier: second, priority: 2", "carrier: second, priority: 0")


@pytest.fixture(scope="module", autouse=True)
def current_ari_service(lab):  # type: ignore[no-untyped-def]
    """Restart the lab's ari service once: it runs the checked-out code, and it is the newest
    websocket of the app (Asterisk sends the app's events to the last one that connected)."""
    restart_ari_service(lab)
    return lab


def restart_ari_service(lab) -> None:  # type: ignore[no-untyped-def]
    """Restart the lab's ari service; the lab waits until its events websocket is connected."""
    with lab.service_stopped("ari"):
        pass


@pytest.fixture
def tiers(lab):  # type: ignore[no-untyped-def]
    lab.seed(TIERS)
    return lab


@pytest.fixture
def ari(phone):  # type: ignore[no-untyped-def]
    return phone("ari")


@pytest.fixture
def observer(lab):  # type: ignore[no-untyped-def]
    with AriObserver(lab.ari_url, lab.ari_auth) as obs:
        yield obs


@pytest.fixture
def background():  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def caller_channels(lab) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    _, channels = lab.ari("GET", "/channels")
    return [c for c in channels or [] if c["name"].startswith("PJSIP/phone-ari-")]


def variable(lab, channel_id: str, name: str) -> str | None:  # type: ignore[no-untyped-def]
    status, body = lab.ari("GET", f"/channels/{channel_id}/variable?variable={name}")
    return body["value"] if status == 200 else None


def cancels(c: sipp.Carrier) -> int:
    return c.requests("CANCEL")


def byes(c: sipp.Carrier) -> int:
    return c.requests("BYE")


# -- the outcome matrix ----------------------------------------------------------------------


def test_answer_on_the_first_trunk(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "answer"), carrier("b", "answer")
    result = ari.call(NUMBER)
    assert result.final_code == 200
    assert a.request_uris() == [f"sip:{E164}@127.0.0.11:5060"]
    assert b.invites() == 0
    assert byes(a) == 1  # the phone's BYE went on to the carrier


def test_ringing_past_the_ring_timeout_stops(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "ring"), carrier("b", "answer")
    result = ari.call(NUMBER)
    assert result.final_code == 480  # Q.850 19, no answer
    assert (a.invites(), b.invites()) == (1, 0)
    assert cancels(a) == 1  # the router gave up on the ringing trunk: its INVITE is cancelled
    assert 2.5 < result.duration < 3 + 2  # ring_timeout 3 s


def test_a_silent_trunk_is_left_after_the_setup_timeout(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "silent"), carrier("b", "answer")
    result = ari.call(NUMBER)
    assert result.final_code == 200
    assert (a.invites(), b.invites()) == (1, 1)
    assert 1.5 < result.duration < 2 + 1.5  # setup_timeout 2 s (+ 0.5 s talk)


def test_early_media_then_503_fails_over(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "early_503"), carrier("b", "answer")
    result = ari.call(NUMBER)
    assert result.final_code == 200
    assert 183 in result.codes  # the carrier's early media reached the phone
    assert (a.invites(), b.invites()) == (1, 1)


def test_early_media_then_503_stops_when_the_carrier_says_so(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    d, b = carrier("d", "early_503"), carrier("b", "answer")
    result = ari.call("0033123456789")
    assert result.final_code == 503
    assert (d.invites(), b.invites()) == (1, 0)
    assert d.request_uris() == ["sip:+33123456789@127.0.0.14:5060"]


@pytest.mark.parametrize(("behaviours", "code"), [
    (("unavailable", "not_found", "unavailable"), 404),  # a rejection beats congestion
    (("unavailable", "unavailable", "unavailable"), 503),
])
def test_all_trunks_failing_give_the_phone_the_best_cause(tiers, carrier, ari, behaviours,
                                                         code) -> None:  # type: ignore[no-untyped-def]
    a, b, c = (carrier(name, how) for name, how in zip("abc", behaviours, strict=True))
    result = ari.call(NUMBER)
    assert result.final_code == code
    assert (a.invites(), b.invites(), c.invites()) == (1, 1, 1)


def test_the_phone_hanging_up_cancels_the_ringing_trunk(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "ring"), carrier("b", "answer")
    result = ari.call(NUMBER, cancel_after=1.5)
    assert result.cancelled
    assert result.final_code == 487
    assert 180 in result.codes  # the trunk's ringing, through the early bridge
    assert a.invites() == 1
    wait_for("carrier-a to get a CANCEL", lambda: cancels(a) == 1, timeout=5)
    assert b.invites() == 0  # no further attempt


@pytest.mark.parametrize(("dialled", "code"), [
    ("9abc", 484),  # INVALID: cause 28
    ("0049301234567", 404),  # NO_ROUTE: cause 3
    ("+34905123456", 403),  # BLOCKED: cause 21
])
def test_calls_that_cannot_be_routed_never_reach_a_carrier(tiers, carrier, ari, observer,
                                                          dialled, code) -> None:  # type: ignore[no-untyped-def]
    a = carrier("a", "answer")
    assert ari.call(dialled).final_code == code
    assert a.invites() == 0
    status = {484: "INVALID", 404: "NO_ROUTE", 403: "BLOCKED"}[code]
    assert observer.wait_variable("ROUTER_STATUS") == status


def test_the_router_being_down_gives_503_not_a_hang(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    a = carrier("a", "answer")
    with tiers.service_stopped("ari"):
        result = ari.call(NUMBER)
    assert result.final_code == 503  # Stasis() could not hand the call over: cause 34
    assert a.invites() == 0
    assert ari.call(NUMBER).final_code == 200  # back as soon as the service reconnected


def test_a_call_that_comes_while_the_router_is_away_for_a_moment_is_routed_when_it_is_back(
        tiers, carrier, ari, background) -> None:  # type: ignore[no-untyped-def]
    # A websocket reconnecting, a service restarted after a crash: Stasis() fails for that
    # moment, and the dialplan asks again every 0.25 s for 3 s. The phone got 503 (9 calls of
    # 60 at 10 calls/s while the app's connection was cut six times).
    a = carrier("a", "answer")
    offset = tiers.asterisk_log.stat().st_size
    with tiers.service_stopped("ari"):
        call = background.submit(ari.call, NUMBER)
        wait_for("Stasis() to fail once", lambda: '"RTR_TRIES=1")'
                 in logged_since(tiers.asterisk_log, offset))
    result = call.result()
    assert result.final_code == 200, result.codes
    assert a.invites() == 1


# -- tiers, weights, load ---------------------------------------------------------------------


def test_twenty_simultaneous_calls_all_fail_over_correctly(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "unavailable"), carrier("b", "answer")
    result = ari.load(NUMBER, calls=20, rate=200, concurrent=20, talk=3.0)
    assert result.final_codes == {200: 20}
    assert (a.invites(), b.invites()) == (20, 20)
    assert byes(b) == 20


# -- CDR variables, hot update -----------------------------------------------------------------


def test_the_outcome_is_recorded_on_the_caller_channel(tiers, carrier, ari,
                                                       background) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "unavailable"), carrier("b", "answer")
    call: Future[sipp.CallResult] = background.submit(ari.call, NUMBER, hangup_after=3)
    caller = wait_for("the caller to be bridged",
                      lambda: next((c for c in caller_channels(tiers) if c["state"] == "Up"), None))
    wait_for("ROUTER_TRUNK", lambda: variable(tiers, caller["id"], "ROUTER_TRUNK"))
    got = {name: variable(tiers, caller["id"], name) for name in
           ("ROUTER_STATUS", "ROUTER_CARRIER", "ROUTER_TRUNK", "ROUTER_ATTEMPTS", "ROUTER_NUMBER")}
    assert got == {
        "ROUTER_STATUS": "OK", "ROUTER_CARRIER": "second", "ROUTER_TRUNK": "carrier-b",
        "ROUTER_ATTEMPTS": "carrier-a:congestion:34:503|carrier-b:answered:16:200",
        "ROUTER_NUMBER": E164,
    }
    assert call.result().final_code == 200
    assert (a.invites(), b.invites()) == (1, 1)


def test_a_failed_call_records_its_attempts_too(tiers, carrier, ari, observer) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "unavailable"), carrier("b", "busy")
    assert ari.call(NUMBER).final_code == 486
    assert observer.wait_variable("ROUTER_ATTEMPTS") == (
        "carrier-a:congestion:34:503|carrier-b:busy:17:486")
    assert observer.variables().get("ROUTER_STATUS") == "OK"
    assert "ROUTER_TRUNK" not in observer.variables()
    assert (a.invites(), b.invites()) == (1, 1)


def test_a_new_routes_version_applies_to_the_next_call(lab, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    pid = _service_pid("ari")
    lab.seed(TIERS)
    a, b = carrier("a", "answer"), carrier("b", "answer")
    assert ari.call(NUMBER).final_code == 200
    assert (a.invites(), b.invites()) == (1, 0)
    lab.seed(TIERS_B_FIRST)
    assert ari.call(NUMBER).final_code == 200
    assert (a.invites(), b.invites()) == (1, 1)
    assert _service_pid("ari") == pid  # no restart


def _service_pid(name: str) -> int:
    from outbound_router import lab as lab_mod

    pid = int(((lab_mod.load_state(lab_mod.paths()).get("services") or {}).get(name) or {})
              .get("pid") or 0)
    assert lab_mod.is_service(pid, name), f"the lab's {name} service is not running"
    return pid


# -- the websocket cut mid-call -------------------------------------------------------------


def log_text(lab) -> str:  # type: ignore[no-untyped-def]
    return (lab.state_dir / "ari.log").read_text(errors="replace")


def bridged_calls(lab) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    _, bridges = lab.ari("GET", "/bridges")
    return [b for b in bridges or [] if len(b.get("channels", [])) == 2]


def test_a_bridged_call_goes_on_across_a_restart_of_the_service(tiers, carrier, ari,
                                                                background) -> None:  # type: ignore[no-untyped-def]
    a, b = carrier("a", "answer"), carrier("b", "answer")
    call: Future[sipp.CallResult] = background.submit(ari.call, NUMBER, hangup_after=5)
    bridge = wait_for("the call to be bridged", lambda: bridged_calls(tiers))[0]
    pid = _service_pid("ari")
    log = tiers.state_dir / "ari.log"
    offset = log.stat().st_size
    with tiers.service_stopped("ari"):  # the app's websocket is gone
        _, channels = tiers.ari("GET", "/channels")
        assert {c["id"] for c in channels} == set(bridge["channels"])  # the call goes on
    wait_for("the restarted service to adopt the call",
             lambda: "adopted bridged call" in logged_since(log, offset))
    assert _service_pid("ari") != pid
    result = call.result()
    assert result.final_code == 200
    assert result.duration > 5  # talked to the end, across the restart
    # The phone's BYE reached the restarted app, which hung up the carrier and removed the
    # bridge (the fixture checks that nothing is left).
    wait_for("carrier-a to get the BYE", lambda: byes(a) == 1, timeout=5)
    # And the next call routes.
    assert ari.call(NUMBER).final_code == 200
    assert (a.invites(), b.invites()) == (2, 0)


def test_a_crashed_service_comes_back_and_hangs_up_the_carrier_of_a_call_it_left(
        tiers, carrier, ari, background) -> None:  # type: ignore[no-untyped-def]
    # Killed, the app cannot tear down its bridged calls: the phone hangs up and the carrier's
    # leg stays up, billed. The lab restarts the service (outbound_router/supervise.py), which
    # adopts the call or, once the phone is gone, hangs the carrier up.
    from outbound_router import lab as lab_mod

    a = carrier("a", "answer")
    call: Future[sipp.CallResult] = background.submit(ari.call, NUMBER, hangup_after=3)
    wait_for("the call to be answered",
             lambda: [c for c in caller_channels(tiers) if c["state"] == "Up"])
    log = tiers.state_dir / "ari.log"
    offset = log.stat().st_size
    worker = lab_mod.service_worker("ari")
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    assert call.result().final_code == 200
    wait_for("the service to be back", lambda: "ARI events connected" in logged_since(log, offset))
    assert "killed by SIGKILL" in logged_since(log, offset)
    wait_for("carrier-a to get the BYE", lambda: byes(a) == 1, timeout=10)
    assert lab_mod.service_worker("ari") not in (None, worker)
    assert ari.call(NUMBER).final_code == 200


def test_a_second_router_taking_the_app_over_gets_the_calls_and_the_first_stops(
        tiers, carrier, ari, background, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A deploy that starts the new `outbound-router ari` before it stops the old: Asterisk
    # sends the app's events to the newest websocket only, ApplicationReplaced to the old one
    # (which its event filter dropped). The old one went on acting on its calls blind: its
    # ring timer hung up an attempt the new one had resumed, which judged that hang-up
    # (cause 16) a congestion failure and went on to the next trunk, where a no-answer stops.
    from outbound_router import lab as lab_mod

    a, b = carrier("a", "ring"), carrier("b", "answer")  # ring_timeout 3 s: no answer, stop
    supervisor = _service_pid("ari")
    log = tiers.state_dir / "ari.log"
    offset = log.stat().st_size
    call: Future[sipp.CallResult] = background.submit(ari.call, NUMBER)
    wait_for("carrier-a to ring", lambda: a.invites() == 1)
    env = {**os.environ, "REDIS_URL": tiers.redis_url, "ARI_URL": tiers.ari_url,
           "ARI_USERNAME": tiers.ari_auth[0], "ARI_PASSWORD": tiers.ari_auth[1]}
    second_log = tmp_path / "second-ari.log"
    with second_log.open("w") as out:
        second = subprocess.Popen([sys.executable, "-m", "outbound_router.cli", "ari"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for("the lab's ari service to stop by itself",
                 lambda: not lab_mod.is_service(supervisor, "ari"))
        assert "another connection took over the ARI application" in logged_since(log, offset)
        result = call.result()
        assert result.final_code == 480, result.codes  # rang out: stopped, as without the swap
        assert (a.invites(), cancels(a), b.invites()) == (1, 1, 0)
        assert "resumed attempt 1 on carrier-a" in second_log.read_text()
    finally:
        second.terminate()
        second.wait(timeout=10)
        lab_mod.up(carriers=False, say=lambda _: None)  # the lab's own ari again, newest
    assert ari.call(NUMBER).final_code == 480  # routed by it: carrier-a rings out again


def test_after_asterisk_restarts_the_app_is_back_by_itself_and_the_next_call_fails_over(
        tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    from outbound_router import lab as lab_mod

    a, b = carrier("a", "unavailable"), carrier("b", "answer")
    assert ari.call(NUMBER).final_code == 200  # the app's REST connections are now kept alive
    log = tiers.state_dir / "ari.log"
    offset = log.stat().st_size
    restart = lab_mod._rasterisk(lab_mod.paths(), "core restart now")
    assert restart.returncode == 0, restart.stderr
    # Asterisk's restart closes the events websocket and every kept-alive REST connection.
    wait_for("the app to see the websocket close",
             lambda: "websocket closed" in logged_since(log, offset))
    wait_for("the app to connect again",
             lambda: "ARI events connected" in logged_since(log, offset))
    assert ari.call(NUMBER).final_code == 200
    assert (a.invites(), b.invites()) == (2, 2)  # 503 then 200, before and after the restart


def test_a_ringing_call_goes_on_across_a_restart_of_the_service(tiers, carrier, ari,
                                                                background) -> None:  # type: ignore[no-untyped-def]
    # carrier-a rings and answers after 3 s; the service restarts while it rings.
    a, b = carrier("a", "answer_after:3"), carrier("b", "answer")
    call: Future[sipp.CallResult] = background.submit(ari.call, NUMBER, hangup_after=1)
    wait_for("carrier-a to ring", lambda: a.invites() == 1)
    offset = len(log_text(tiers))
    with tiers.service_stopped("ari"):  # the stopping app leaves its ringing attempt alone
        assert cancels(a) == 0
    wait_for("the restarted service to resume the call",
             lambda: "resumed attempt 1 on carrier-a" in log_text(tiers)[offset:])
    # The restarted app read the attempt's ROUTER_RESUME and waited for the same INVITE's
    # answer: the callee rang once, and the call was answered and bridged.
    result = call.result()
    assert result.final_code == 200
    assert (a.invites(), cancels(a), b.invites()) == (1, 0, 0)


def test_an_attempt_failing_while_the_service_is_down_fails_over_after_it(
        tiers, carrier, ari, background) -> None:  # type: ignore[no-untyped-def]
    # carrier-a rings, then turns the call down while no instance of the app runs: the
    # bridge holds the caller alone. The next instance took it for a leftover (the phone got
    # 503, carrier-b was never tried); it goes on with the rest of the plan now.
    a, b = carrier("a", "ring_then:503:2"), carrier("b", "answer")
    call: Future[sipp.CallResult] = background.submit(ari.call, NUMBER, hangup_after=1)
    wait_for("carrier-a to ring", lambda: a.invites() == 1)
    offset = len(log_text(tiers))
    with tiers.service_stopped("ari"):
        wait_for("carrier-a's 503", lambda: any(
            m.sent and m.status == 503 for m in a.messages()), timeout=10)
    wait_for("the restarted service to go on with the plan",
             lambda: "ended while no router listened" in log_text(tiers)[offset:])
    assert call.result().final_code == 200
    assert (a.invites(), b.invites()) == (1, 1)


def test_lab_up_after_asterisk_died_returns_once_calls_route_again(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    # `lab up` restarts Asterisk; the ari service, still running, reconnects within its
    # backoff. lab up returned before that, and a call placed at once got 503 (2 of 3 times
    # in a black-box audit).
    import signal

    from outbound_router import lab as lab_mod

    carrier("a", "answer")
    log = tiers.state_dir / "ari.log"
    offset = log.stat().st_size
    os.kill(lab_mod.load_state(lab_mod.paths())["asterisk_pid"], signal.SIGKILL)
    wait_for("the app to miss Asterisk",
             lambda: "ARI not reachable" in logged_since(log, offset))
    time.sleep(4)  # an outage of some seconds: the app's reconnect backoff has grown
    lab_mod.up(carriers=False, say=print)
    assert ari.call(NUMBER).final_code == 200


def test_lab_up_while_asterisk_is_stopping_starts_a_new_one(tiers, carrier, ari) -> None:  # type: ignore[no-untyped-def]
    # `lab up` right after a SIGTERM (or `core stop`) took the stopping Asterisk for a running
    # one, saw it exit and failed ("Asterisk exited during start-up"), leaving the lab down
    # until a second `lab up` (an operations audit).
    import signal

    from outbound_router import lab as lab_mod

    carrier("a", "answer")
    p = lab_mod.paths()
    old = lab_mod.load_state(p)["asterisk_pid"]
    os.kill(old, signal.SIGTERM)
    assert lab_mod.is_asterisk(old, p.chroot), "Asterisk was gone before `lab up`"
    lab_mod.up(carriers=False, say=print)
    assert lab_mod.load_state(p)["asterisk_pid"] != old
    assert ari.call(NUMBER).final_code == 200


def test_lab_status_says_which_part_is_down(tiers) -> None:  # type: ignore[no-untyped-def]
    from outbound_router import lab as lab_mod

    said: list[str] = []
    assert lab_mod.status(say=said.append) == lab_mod.EXIT_OK, said
    assert said[-1] == "lab        up"
    assert any(line.startswith("routes     version v") for line in said), said
    assert "stasis     app 'outbound-router' registered in Asterisk" in said, said
    said.clear()
    with tiers.service_stopped("ari"):
        assert lab_mod.status(say=said.append) == lab_mod.EXIT_FAILED, said
    assert said[-1] == "lab        up, but ari not running", said
