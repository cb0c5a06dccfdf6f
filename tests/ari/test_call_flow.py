"""The call flow against a fake Asterisk whose carriers replay real recordings."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from ari_support import (
    ROUTES,
    Lab,
    answer_before_each_hangup,
    hang_up_answered,
    snapshot_of,
    wait_for,
)
from fake_ari import Behaviour

from ari_app.call import Call
from ari_app.client import AriUnavailable
from ari_app.leg import AttemptState
from routing.plan import Status
from routing.policy import Outcome
from routing.trace import entry_count, parse_trace

NUMBER = "911234567"


def no_leftovers(lab: Lab) -> None:
    assert lab.fake.leftovers() == ([], [])


def h_copies_the_abandoned_trace(variables: dict[str, str]) -> bool:
    """The ARI phones' h extension (asterisk_conf/extensions.conf) puts
    ROUTER_ATTEMPTS_ABANDONED on the CDR when it has more entries than ROUTER_ATTEMPTS."""
    return (entry_count(variables.get("ROUTER_ATTEMPTS_ABANDONED", ""))
            > entry_count(variables.get("ROUTER_ATTEMPTS", "")))


async def answered(lab: Lab, caller: str) -> None:
    """Wait until the caller was answered and the outcome recorded on it."""
    await wait_for(lambda: lab.fake.channels[caller].state == "Up"
                   and "ROUTER_ATTEMPTS" in lab.fake.channels[caller].variables)


async def test_answer_bridges_caller_and_carrier_and_records_the_outcome(lab: Lab) -> None:
    lab.carriers("a200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await answered(lab, caller)
    (bridge,) = lab.fake.bridges.values()
    assert bridge["channels"] == [caller, call.legs[0].channel_id]
    variables = lab.vars_of(caller)
    assert variables["ROUTER_STATUS"] == "OK"
    assert variables["ROUTER_CARRIER"] == "alpha"
    assert variables["ROUTER_TRUNK"] == "carrier-a"
    assert variables["ROUTER_NUMBER"] == "+34911234567"
    assert variables["ROUTER_ATTEMPTS"] == "carrier-a:answered:16:200"
    # The outcome is written: the h extension must not put "cancelled" on the CDR.
    assert variables["ROUTER_ATTEMPTS_ABANDONED"] == "carrier-a:cancelled::"
    assert not h_copies_the_abandoned_trace(variables)
    # The attempt's channel has no CDR of its own: the caller's record names it.
    assert lab.fake.channels[call.legs[0].channel_id].variables["CDR_PROP(disable)"] == "1"
    await hang_up_answered(lab, caller)
    assert f"/channels/{call.legs[0].channel_id}" in lab.fake.paths("DELETE")


async def test_the_caller_joins_the_bridge_when_the_first_attempt_could_not_be_created(
    lab: Lab, caplog: pytest.LogCaptureFixture,
) -> None:
    # The first trunk is no endpoint: /channels/create fails (500 Allocation failed). The
    # caller joined the bridge with the first attempt only, so it never did: the second
    # trunk's ringing never reached the phone, and its answer bridged it to nobody (seen on
    # the lab: 100 then 200 at the phone, and silence).
    lab.snapshots.append(snapshot_of("""
defaults: {country_code: "34", setup_timeout: 2, ring_timeout: 5}
carriers: {typo: {trunks: [carrier-x]}, alpha: {trunks: [carrier-a]}}
target_patterns: {spain: {prefix: "+34"}}
outgoing_routes:
  - {pattern: spain, carrier: typo, priority: 1}
  - {pattern: spain, carrier: alpha, priority: 2}
"""))
    lab.carriers("a200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await answered(lab, caller)
    (bridge,) = lab.fake.bridges.values()
    assert bridge["channels"] == [caller, call.legs[1].channel_id]
    assert parse_trace(lab.vars_of(caller)["ROUTER_ATTEMPTS"])[0].trunk == "carrier-x"
    # A WARNING per such attempt, as on the FastAGI path (the app warns once per routing
    # version about the trunk too); an ERROR on every call (980 lines in 24 s in an
    # operations audit) said the router failed, where the call went on.
    assert [(r.levelname, r.getMessage()) for r in caplog.records
            if r.levelno >= logging.WARNING and "eventFilter" not in r.getMessage()] == [
        ("WARNING", f"[{caller}] attempt 1: creating PJSIP/+34911234567@carrier-x failed: "
                    "POST /channels/create: 500 Allocation failed")]
    await hang_up_answered(lab, caller)
    no_leftovers(lab)


async def test_dial_string_is_built_from_the_plan(lab: Lab) -> None:
    lab.carriers("a200")
    caller = lab.fake.new_caller("0034911234567")
    await lab.started(caller)
    await answered(lab, caller)
    creates = [q for m, p, q in lab.fake.requests if p == "/channels/create"]
    assert creates[0]["endpoint"] == "PJSIP/+34911234567@carrier-a"
    assert creates[0]["originator"] == caller
    await hang_up_answered(lab, caller)


async def test_carrier_hanging_up_hangs_up_the_caller(lab: Lab) -> None:
    lab.carriers("a200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await answered(lab, caller)
    lab.fake.far_end_hangup(call.legs[0].channel_id)
    await lab.finished(caller)
    assert lab.fake.ended[caller].hangup_reason == "16"
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


@pytest.mark.parametrize(
    ("case", "first"),
    [("a503_b200", "carrier-a:congestion:34:503"),
     ("a404_b200", "carrier-a:rejected:1:404")],
)
async def test_failed_trunk_fails_over_to_the_next(lab: Lab, case: str, first: str) -> None:
    lab.carriers(case)
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await answered(lab, caller)
    assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == f"{first}|carrier-b:answered:16:200"
    assert lab.vars_of(caller)["ROUTER_TRUNK"] == "carrier-b"
    assert [leg.state for leg in call.legs] == [AttemptState.FAILED, AttemptState.ANSWERED]
    await hang_up_answered(lab, caller)


@pytest.mark.parametrize(("cause", "tech_cause"), [(16, None), (127, 406), (58, 488)],
                         ids=["200 and BYE at once", "200 without SDP", "200 without a codec"])
async def test_an_attempt_that_answered_and_ended_before_its_answer_was_seen_stops_the_call(
        lab: Lab, cause: int, tech_cause: int | None) -> None:
    # The carrier's 200 and its BYE at once, or a 200 Asterisk ACKed and BYEd itself: the
    # channel ended before its answer reached the bridge (no Up event), and carrier-b rang
    # the callee who had picked up (9 of 12 such calls on the lab). The caller's hangup-cause
    # hash has the attempt's 200.
    failed = Behaviour.recorded("a503_b200", "carrier-a")
    lab.carriers("a503_b200", **{"carrier-a": failed.answered_then_ended(cause, tech_cause)})
    call = await lab.call(NUMBER)
    assert lab.fake.dials == {"carrier-a": 1}
    assert call.result is not None and call.result.caller_cause == 16
    assert lab.fake.ended[call.caller_id].hangup_reason == "16"
    [entry] = parse_trace(lab.vars_of(call.caller_id)["ROUTER_ATTEMPTS"])
    assert (entry.trunk, entry.outcome) == ("carrier-a", "answered")
    no_leftovers(lab)


async def test_busy_stops_and_the_caller_gets_busy(lab: Lab) -> None:
    lab.carriers("a486_b200")
    call = await lab.call(NUMBER)
    assert call.result is not None and call.result.caller_cause == 17
    assert lab.fake.ended[call.caller_id].hangup_reason == "17"
    assert lab.fake.dials["carrier-b"] == 0
    assert lab.vars_of(call.caller_id)["ROUTER_ATTEMPTS"] == "carrier-a:busy:17:486"
    assert not h_copies_the_abandoned_trace(lab.vars_of(call.caller_id))
    no_leftovers(lab)


async def test_all_trunks_failing_gives_the_caller_the_most_meaningful_cause(lab: Lab) -> None:
    # carrier-a answers 503 (congestion), carrier-b 404 (rejected): the rejection wins.
    lab.carriers("a503_b503", **{"carrier-b": Behaviour.recorded("a486_b404", "carrier-b")})
    call = await lab.call(NUMBER)
    assert lab.fake.ended[call.caller_id].hangup_reason == "1"
    assert [e.outcome for e in parse_trace(lab.vars_of(call.caller_id)["ROUTER_ATTEMPTS"])] == [
        "congestion", "rejected"]
    no_leftovers(lab)


async def test_two_congested_trunks_give_the_caller_503(
    lab: Lab, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ari_app")
    lab.carriers("a503_b503")
    call = await lab.call(NUMBER)
    assert lab.fake.ended[call.caller_id].hangup_reason == "34"
    assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    # The policy says retry after both; the log says the second had no attempt after it.
    verdicts = [m.split("verdict=")[1].rsplit(" ", 1)[0] for r in caplog.records
                if "verdict=" in (m := r.getMessage())]
    assert verdicts == ["retry", "retry, none left"]
    no_leftovers(lab)


async def test_ringing_past_ring_timeout_stops(lab: Lab) -> None:
    lab.carriers("a480-noanswer_b200")
    call = await lab.call(NUMBER)
    assert call.legs[0].ring_timeout
    assert lab.fake.ended[call.caller_id].hangup_reason == "19"
    assert lab.fake.dials["carrier-b"] == 0
    assert lab.fake.ended[call.legs[0].channel_id].cancelled
    no_leftovers(lab)


async def test_no_provisional_reply_fails_over_after_setup_timeout(lab: Lab) -> None:
    lab.carriers("a-unreachable_b200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await answered(lab, caller)
    assert call.legs[0].setup_timeout and not call.legs[0].provisional
    assert lab.vars_of(caller)["ROUTER_ATTEMPTS"].startswith("carrier-a:unreachable:")
    await hang_up_answered(lab, caller)


async def test_early_media_then_503_fails_over(lab: Lab) -> None:
    progress_then_503 = Behaviour.recorded("a183-noanswer_b200", "carrier-a").then(
        Behaviour.recorded("a503_b200", "carrier-a"))
    lab.carriers("a503_b200", **{"carrier-a": progress_then_503})
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await answered(lab, caller)
    assert call.legs[0].early_media
    await hang_up_answered(lab, caller)


async def test_early_media_then_503_stops_when_the_carrier_says_so(lab: Lab) -> None:
    lab.snapshots.append(snapshot_of(_routes_with(
        "alpha: {trunks: [carrier-a], failover: {retry_after_early_media: false}}")))
    progress_then_503 = Behaviour.recorded("a183-noanswer_b200", "carrier-a").then(
        Behaviour.recorded("a503_b200", "carrier-a"))
    lab.carriers("a503_b200", **{"carrier-a": progress_then_503})
    call = await lab.call(NUMBER)
    assert lab.fake.dials["carrier-b"] == 0
    assert lab.fake.ended[call.caller_id].hangup_reason == "34"
    no_leftovers(lab)


async def ringing_for_long(lab: Lab) -> tuple[str, Call]:
    """A caller whose first attempt rings (ring timeout 30 s): its channel id and call."""
    lab.carriers("a480-noanswer_b200")
    lab.snapshots.append(snapshot_of(_routes_with(ring_timeout=30)))
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is AttemptState.RINGING)
    return caller, call


async def test_caller_hanging_up_while_ringing_cancels_the_attempt(lab: Lab) -> None:
    caller, call = await ringing_for_long(lab)
    leg = call.legs[0].channel_id
    lab.fake.caller_hangup(caller)
    await lab.finished(caller)
    assert lab.fake.ended[leg].cancelled
    assert call.legs[0].state is AttemptState.ABANDONED
    assert lab.fake.dials["carrier-b"] == 0
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_tier_failover_moves_from_priority_1_to_2(lab: Lab) -> None:
    lab.carriers("a503_b200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await answered(lab, caller)
    assert [leg.attempt.route.priority for leg in call.legs] == [1, 2]
    await hang_up_answered(lab, caller)


@pytest.mark.parametrize(
    ("number", "status", "cause"),
    [("91x234567", "INVALID", "28"), ("905123456", "BLOCKED", "21"),
     ("0044201234567", "NO_ROUTE", "3")],
)
async def test_unroutable_numbers_are_refused_with_a_fitting_cause(
    lab: Lab, number: str, status: str, cause: str
) -> None:
    lab.carriers("a200")
    call = await lab.call(number)
    assert lab.fake.ended[call.caller_id].hangup_reason == cause
    assert lab.vars_of(call.caller_id)["ROUTER_STATUS"] == status
    assert sum(lab.fake.dials.values()) == 0
    no_leftovers(lab)


async def test_no_routing_table_refuses_the_call_with_503(lab: Lab) -> None:
    lab.app.snapshot = lambda: None
    call = await lab.call(NUMBER)
    assert lab.fake.ended[call.caller_id].hangup_reason == "34"
    assert lab.vars_of(call.caller_id)["ROUTER_STATUS"] == "ERROR"


async def test_late_stasis_start_is_awaited_before_dialling(lab: Lab) -> None:
    lab.carriers("a200")
    lab.fake.stasis_delay = 0.1
    caller = lab.fake.new_caller(NUMBER)
    await lab.started(caller)
    await answered(lab, caller)
    dial_replies = [p for p in lab.fake.paths("POST") if p.endswith("/dial")]
    assert len(dial_replies) == 1
    await hang_up_answered(lab, caller)


async def test_the_setup_timer_counts_from_the_dial_not_from_a_slow_channel_creation(
    lab: Lab,
) -> None:
    # setup_timeout is 0.5 s: a busy Asterisk taking 0.3 s to put the new channel in Stasis
    # must not eat into the trunk's time to answer the INVITE.
    lab.carriers("a-unreachable_b200")
    lab.fake.stasis_delay = 0.3
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await answered(lab, caller)
    first = call.legs[0]
    assert first.setup_timeout
    assert first.ended is not None and first.ended - first.started >= 0.3 + 0.5 - 0.05
    await hang_up_answered(lab, caller)


async def test_a_hangup_asterisk_does_not_answer_is_sent_again(lab: Lab) -> None:
    # On the lab (the router resumed after a freeze, Asterisk past its HTTP sessionlimit) a
    # DELETE closed unanswered left a channel never dialled up for good: nothing else ends it.
    lab.carriers("a-unreachable_b200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: bool(call.legs))
    first = call.legs[0].channel_id
    # The setup timer's hangup, and the pool's own second try on a new connection
    lab.fake.dropping[f"DELETE /channels/{first}"] = 2
    await answered(lab, caller)  # carrier-b
    assert first not in lab.fake.channels and lab.fake.dropping[f"DELETE /channels/{first}"] == 0
    await hang_up_answered(lab, caller)


@pytest.mark.parametrize(("fault", "case", "dials"), [
    # Carried out, its reply never came (a busy Asterisk's timeout, a connection closed): the
    # call ended on an ARI error (503) while carrier-a rang, and dialling again could ring the
    # callee twice. The leg's events tell what happens: here carrier-a answers.
    ("lost_replies", "a200", (1, 0)),
    # Its connection closed before Asterisk took it: the leg stays undialled (no INVITE), its
    # setup timer takes it for an unreachable trunk, and carrier-b answers.
    ("dropping", "a503_b200", (0, 1)),
])
async def test_a_dial_without_a_reply_follows_the_attempt_s_events(
        lab: Lab, fault: str, case: str, dials: tuple[int, int]) -> None:
    lab.carriers(case)
    faults = getattr(lab.fake, fault)
    faults["POST /channels/ora-*/dial"] = 2  # (the pool's resend too)
    caller = lab.fake.new_caller(NUMBER)
    await answered(lab, caller)
    assert (lab.fake.dials["carrier-a"], lab.fake.dials["carrier-b"]) == dials
    assert faults["POST /channels/ora-*/dial"] < 2
    assert (await lab.started(caller)).legs[0].setup_timeout == (dials == (0, 1))
    await hang_up_answered(lab, caller)


async def first_attempt_ended_before_it_entered_the_app(lab: Lab) -> tuple[str, Call]:
    """A call whose first attempt channel Asterisk ends before its StasisStart."""
    lab.carriers("a200")
    lab.fake.stasis_delay = 0.2
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: bool(call.legs) and call.legs[0].created)
    lab.fake.destroy(call.legs[0].channel_id)
    return caller, call


async def test_an_attempt_channel_ended_before_it_entered_the_app_is_made_once_more(
        lab: Lab) -> None:
    # On the lab, during a websocket cut, Asterisk could not put a new attempt channel in the
    # app ("Stasis app not active") and ended it: its trunk, which got no INVITE, was taken
    # for a failed one and skipped (carrier-a:congestion::, then the next carrier).
    caller, call = await first_attempt_ended_before_it_entered_the_app(lab)
    await answered(lab, caller)
    assert len(call.legs) == 2 and call.legs[1].attempt.trunk == "carrier-a"
    assert lab.fake.dials == {"carrier-a": 1}
    assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == "carrier-a:answered:16:200"
    await hang_up_answered(lab, caller)


@pytest.mark.parametrize("stasis_after", [0.0, 0.6], ids=["before-the-timeout", "after-it"])
async def test_a_channel_created_by_a_create_that_timed_out_is_hung_up(
        lab: Lab, stasis_after: float) -> None:
    # Asterisk made carrier-a's channel but its reply to the create came after the app had
    # given the request up (an overloaded Asterisk): the channel entered the app, before or
    # after the timeout, was never dialled, and stayed there until the call ended (carrier-b
    # answered: for the whole conversation).
    lab.ari.http._timeout = 0.3
    lab.carriers("a503_b200")
    lab.fake.stasis_delay_for["carrier-a"] = stasis_after
    reply = lab.fake.held_replies["POST /channels/create"] = asyncio.Event()
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: bool(call.legs) and call.legs[0].state is AttemptState.FAILED)
    late = call.legs[0].channel_id
    reply.set()  # (carrier-b's create, sent meanwhile, is answered now)
    await answered(lab, caller)  # carrier-b
    await wait_for(lambda: late in lab.fake.ended)  # before the call's end
    assert lab.fake.dials == {"carrier-b": 1}
    await hang_up_answered(lab, caller)


async def test_a_hangup_that_times_out_is_not_sent_again(lab: Lab) -> None:
    # Sent again after a timeout too, the hangup held the failover up three times the request
    # timeout (31 s with the default 10 s) while the caller heard silence. A request that
    # timed out was most likely delivered: only one closed unanswered is sent again at once.
    # (The channel still there 2 s later gets one more, which holds the next attempt up
    # 0.5 s at most: see test_timer_races.)
    lab.ari.http._timeout = 0.3
    lab.carriers("a-unreachable_b200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: bool(call.legs))
    first = call.legs[0].channel_id
    gate = lab.fake.gates[f"DELETE /channels/{first}"] = asyncio.Event()  # never answered
    try:
        await answered(lab, caller)  # carrier-b, after one timed-out hangup
        assert lab.fake.paths("DELETE").count(f"/channels/{first}") == 2
    finally:
        gate.set()
    await hang_up_answered(lab, caller)


async def test_a_late_timer_waits_for_late_events_once_however_many_come(lab: Lab) -> None:
    # Each event read during the grace (a repeated 180) earned another grace: the timer was
    # put off as long as events kept coming less than 2 s apart.
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 2")))
    lab.carriers("a480-noanswer_b200")  # rings until Asterisk's /dial timeout: 4.5 s
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is AttemptState.RINGING)
    leg = lab.fake.channels[call.legs[0].channel_id]

    async def ringing_again_and_again() -> None:
        while leg.id in lab.fake.channels:
            lab.fake._emit({"type": "Dial", "dialstatus": "RINGING", "peer": leg.json()})
            await asyncio.sleep(0.2)

    time.sleep(2.7)  # noqa: ASYNC251  (the loop stalls: the ring timer fires 0.7 s late)
    again = asyncio.create_task(ringing_again_and_again())
    try:
        await lab.finished(caller)
    finally:
        again.cancel()
    # Ended by its own ring timer, 0.7 s later, not by Asterisk's /dial timeout (1.8 s later)
    assert call.legs[0].ring_timeout and lab.fake.ended[caller].hangup_reason == "19"


async def test_no_second_channel_for_an_attempt_when_the_caller_has_hung_up_meanwhile(
        lab: Lab) -> None:
    caller, _ = await first_attempt_ended_before_it_entered_the_app(lab)
    lab.fake.caller_hangup(caller)  # the caller gone right behind it
    await lab.finished(caller)
    assert lab.fake.paths("POST").count("/channels/create") == 1
    no_leftovers(lab)


async def test_a_hot_update_applies_to_the_next_call(lab: Lab) -> None:
    lab.carriers("a200", **{"carrier-b": Behaviour.recorded("a503_b200", "carrier-b")})
    lab.snapshots.append(snapshot_of(_routes_with(first="bravo"), "v2"))
    caller = lab.fake.new_caller(NUMBER)
    await lab.started(caller)
    await answered(lab, caller)
    assert lab.vars_of(caller)["ROUTER_TRUNK"] == "carrier-b"
    assert lab.vars_of(caller)["ROUTER_VERSION"] == "v2"
    await hang_up_answered(lab, caller)


@pytest.mark.parametrize("status", [500, 409, 400])
async def test_a_bridge_that_cannot_be_created_fails_the_call_and_leaves_nothing(
    lab: Lab, status: int,
) -> None:
    # The bridge is created while the first attempt's channel is: its failure must still
    # hang the caller up (503) and the attempt channel too. (A 409 or 400 was taken for the
    # leg's own trouble: every attempt waited out its setup timer, the carriers blamed.)
    lab.carriers("a200")
    lab.fake.failing["POST /bridges"] = status
    call = await lab.call(NUMBER)
    assert call.result is not None and call.result.status is Status.ERROR
    assert lab.fake.ended[call.caller_id].hangup_reason == "34"
    assert lab.fake.dials["carrier-a"] == 0  # never dialled without a bridge to join
    # Its attempt's ROUTER_ATTEMPTS_ABANDONED was written: the h extension must not take
    # the error for the caller's hangup ("carrier-a:cancelled::" in the CDR).
    variables = lab.vars_of(call.caller_id)
    assert "ROUTER_ATTEMPTS_ABANDONED" in variables
    assert not h_copies_the_abandoned_trace(variables)
    # ROUTER_STATUS=OK went on the caller before the first attempt: the error replaces it
    # (the CDR said OK, with no attempt).
    assert (variables["ROUTER_STATUS"], variables["CDR(ROUTER_STATUS)"]) == ("ERROR", "ERROR")
    no_leftovers(lab)


async def test_a_slow_call_does_not_hold_up_another(lab: Lab) -> None:
    lab.carriers("a486_b200")
    slow = lab.fake.new_caller(NUMBER)
    gate = asyncio.Event()
    lab.fake.gates[f"POST /channels/{slow}/variable"] = gate  # held before it hangs up
    await lab.started(slow)
    fast = await lab.call(NUMBER)
    assert fast.result is not None and fast.result.outcome is Outcome.BUSY
    assert slow not in [c.caller_id for c in lab.app.finished]
    gate.set()
    await lab.finished(slow)
    no_leftovers(lab)


async def test_twenty_simultaneous_calls_all_route(lab: Lab) -> None:
    lab.carriers("a503_b200")
    callers = [lab.fake.new_caller(NUMBER) for _ in range(20)]
    for caller in callers:
        await answered(lab, caller)
    assert lab.fake.dials == {"carrier-a": 20, "carrier-b": 20}
    for caller in callers:
        lab.fake.caller_hangup(caller)
    for caller in callers:
        call = await lab.finished(caller)
        assert call.result is not None and call.result.outcome is Outcome.ANSWERED
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


def _routes_with(alpha: str = "", *, ring_timeout: float = 0.5, first: str = "alpha") -> str:
    text = ROUTES.replace("ring_timeout: 0.5", f"ring_timeout: {ring_timeout}")
    if alpha:
        text = text.replace("alpha: {trunks: [carrier-a]}", alpha)
    if first != "alpha":
        text = text.replace("carrier: alpha, priority: 1", f"carrier: {first}, priority: 1")
        text = text.replace("carrier: bravo, priority: 2", "carrier: alpha, priority: 2")
    return text


async def test_a_caller_dialling_the_attempt_marker_is_just_an_invalid_number(lab: Lab) -> None:
    lab.carriers("a200")
    call = await lab.call("router-attempt", "acme")
    assert lab.fake.ended[call.caller_id].hangup_reason == "28"
    assert lab.vars_of(call.caller_id)["ROUTER_STATUS"] == "INVALID"


async def test_a_caller_gone_before_its_attempt_joins_the_bridge_is_a_hangup_not_an_error(
    lab: Lab, caplog: pytest.LogCaptureFixture,
) -> None:
    # Seen on the lab with a phone CANCELling at once: the caller left Stasis after its first
    # attempt was created, before the app had its hangup events, and addChannel answered 422
    # "Channel not in Stasis application". That is the caller hanging up (no ERROR line, no
    # 503 outcome, no dial), and nothing is left behind.
    lab.carriers("a200")
    lab.fake.stasis_delay = 0.1  # time to leave Stasis between the leg's creation and its join
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: bool(call.legs))
    lab.fake.channels[caller].in_stasis = False  # gone from Stasis; its events come later
    await wait_for(lambda: any(p.endswith("/addChannel") for p in lab.fake.paths("POST")))
    lab.fake.caller_hangup(caller)
    done = await lab.finished(caller)
    assert done.result is not None
    assert (done.result.status, done.result.caller_cause) == (Status.OK, None)
    assert lab.fake.dials["carrier-a"] == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_caller_who_hung_up_is_no_warning_when_its_outcome_cannot_be_written(
    lab: Lab, caplog: pytest.LogCaptureFixture,
) -> None:
    # Seen in a soak run: the caller hung up as its attempt ended, and writing the outcome on
    # it answered 400 "Failed to execute function" (its CDR closed): a WARNING per such call.
    caller, _ = await ringing_for_long(lab)
    lab.fake.failing[f"POST /channels/{caller}/variable"] = 400
    lab.fake.caller_hangup(caller)
    await lab.finished(caller)
    assert f"/channels/{caller}/variable" in lab.fake.paths("POST")[-3:]  # it was tried
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_caller_hanging_up_while_it_rings_keeps_the_routing_for_its_cdr(
    lab: Lab, caplog: pytest.LogCaptureFixture,
) -> None:
    # A caller who hangs up has left Stasis before the app hears of it: writing the outcome
    # then gets 409 (seen on the lab). What was known before the attempt is on it already.
    caller, _ = await ringing_for_long(lab)
    lab.fake.caller_leaves(caller)
    await lab.finished(caller)
    variables = lab.vars_of(caller)
    assert variables["ROUTER_STATUS"] == variables["CDR(ROUTER_STATUS)"] == "OK"
    assert variables["ROUTER_NUMBER"] == variables["CDR(ROUTER_NUMBER)"] == "+34911234567"
    assert variables["ROUTER_VERSION"] == variables["CDR(ROUTER_VERSION)"]
    assert "ROUTER_ATTEMPTS" not in variables  # the first attempt: none failed before it
    # For the dialplan's h extension, which puts it on the CDR: the caller left during it.
    assert variables["ROUTER_ATTEMPTS_ABANDONED"] == "carrier-a:cancelled::"
    assert h_copies_the_abandoned_trace(variables)
    assert "CDR(ROUTER_ATTEMPTS_ABANDONED)" not in variables
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and "eventFilter" not in r.getMessage()] == []
    lab.fake.destroy(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_an_attempt_created_after_its_request_timed_out_is_hung_up(
    lab: Lab, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An overloaded Asterisk can create the channel after the app gave up waiting for the
    # answer (seen on the lab past the knee: "creating ... failed: TimeoutError"). The call
    # goes on with the next trunk, and the channel does not outlive the call.
    lab.carriers("a200", **{"carrier-b": Behaviour.recorded("a503_b200", "carrier-b")})
    create = lab.ari.create_channel
    timed_out: list[str] = []

    async def create_then_time_out(endpoint: str, **kwargs: Any) -> Any:
        if not timed_out:
            await create(endpoint, **kwargs)
            timed_out.append(kwargs["channel_id"])
            raise AriUnavailable("POST /channels/create: TimeoutError")
        return await create(endpoint, **kwargs)

    monkeypatch.setattr(lab.ari, "create_channel", create_then_time_out)
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await answered(lab, caller)
    assert [leg.channel_id for leg in call.legs][0] == timed_out[0]
    assert len(call.legs) == 2  # the next trunk was tried
    await hang_up_answered(lab, caller)
    assert f"/channels/{timed_out[0]}" in lab.fake.paths("DELETE")
    no_leftovers(lab)


async def test_the_outcome_of_a_call_of_sixty_attempts_lands_on_the_caller(
    lab: Lab, caplog: pytest.LogCaptureFixture,
) -> None:
    # 59 trunks that are no endpoint (each create fails at once), then carrier-a answers.
    # Its ROUTER_ATTEMPTS and their CDR copies, some 5 KB, went in the request line, which
    # Asterisk refuses past 4,096 bytes (seen on the lab: 400, the CDR kept no outcome).
    dead = [f"trunk-{i:02}-of-a-carrier-with-a-long-name" for i in range(1, 60)]
    lab.snapshots.append(snapshot_of("\n".join([
        'defaults: {country_code: "34", setup_timeout: 0.5, ring_timeout: 0.5, '
        'max_attempts: 60}',
        "carriers:",
        *(f"  c{i:02}: {{trunks: [{trunk}]}}" for i, trunk in enumerate(dead, 1)),
        "  alpha: {trunks: [carrier-a]}",
        "target_patterns:",
        '  spain: {prefix: "+34"}',
        "outgoing_routes:",
        *(f"  - {{pattern: spain, carrier: c{i:02}, priority: {i}}}" for i in range(1, 60)),
        "  - {pattern: spain, carrier: alpha, priority: 60}",
    ]) + "\n"))
    lab.carriers("a200")
    caller = lab.fake.new_caller(NUMBER)
    await lab.started(caller)
    await answered(lab, caller)  # ROUTER_ATTEMPTS is there before: the failed attempts
    await wait_for(lambda: "ROUTER_CARRIER" in lab.vars_of(caller))
    variables = lab.vars_of(caller)
    assert (variables["ROUTER_CARRIER"], variables["ROUTER_TRUNK"]) == ("alpha", "carrier-a")
    attempts = parse_trace(variables["ROUTER_ATTEMPTS"])
    assert [a.trunk for a in attempts] == [*dead, "carrier-a"]
    assert variables["CDR(ROUTER_ATTEMPTS)"] == variables["ROUTER_ATTEMPTS"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and "eventFilter" not in r.getMessage()
            and "Allocation failed" not in r.getMessage()] == []  # the 59 dead trunks'
    await hang_up_answered(lab, caller)


async def test_a_timer_that_fires_late_lets_the_events_that_came_in_time_count_first(
        lab: Lab) -> None:
    # On the lab, with the ari service frozen (SIGSTOP) for some seconds: the answers and 503s
    # that came meanwhile waited unread in the websocket, and the timers that expired fired
    # first. An answered callee was hung up as "no answer" in mid-conversation.
    lab.carriers("a480-noanswer_b200")  # ring_timeout 0.5 s
    caller = lab.fake.new_caller("911234567")
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is AttemptState.RINGING)
    lab.fake.answer(call.legs[0].channel_id)  # in time...
    # ...but the whole event loop stalls (deliberately blocking): the answer is unread, and
    # the ring timer expires
    time.sleep(1.5)  # noqa: ASYNC251
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert call.legs[0].state is AttemptState.ANSWERED and lab.fake.dials == {"carrier-a": 1}
    lab.fake.caller_hangup(caller)
    await lab.finished(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def hung_up_behind(lab: Lab, trunk: str, phase: str) -> Call:
    """A call (carrier-a 503, carrier-b 200) whose caller hangs up right behind ``trunk``'s
    events of ``phase`` (``create``: up to its StasisStart; ``dial``: its replies)."""
    lab.carriers("a503_b200")
    caller = lab.fake.new_caller(NUMBER)

    def hang_up(channel: Any, replayed: str) -> None:
        if replayed == phase and channel.name.startswith(f"PJSIP/{trunk}-"):
            lab.fake.caller_hangup(caller)

    lab.fake.after_replay = hang_up
    call = await lab.finished(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))
    return call


async def test_a_caller_who_hangs_up_as_the_next_attempt_enters_stasis_gets_no_invite_there(
        lab: Lab) -> None:
    # The loop waiting for the attempt's StasisStart stopped at it; the caller's hangup queued
    # right behind was not looked at before /dial: carrier-b got an INVITE, then a CANCEL.
    call = await hung_up_behind(lab, "carrier-b", "create")
    assert lab.fake.dials == {"carrier-a": 1}
    assert call.result is not None and call.result.caller_cause is None


async def test_a_caller_who_hangs_up_as_an_attempt_fails_gets_no_further_attempt(
        lab: Lab) -> None:
    # The caller's hangup queued right behind carrier-a's ChannelDestroyed: a channel was
    # created on carrier-b all the same, and the trace ended with a phantom
    # "carrier-b:cancelled" attempt.
    call = await hung_up_behind(lab, "carrier-a", "dial")
    assert lab.fake.paths("POST").count("/channels/create") == 1
    assert call.result is not None and call.result.trace == "carrier-a:congestion:34:503"


async def test_a_final_answer_is_not_overridden_by_a_timer_firing_before_its_destroy(
        lab: Lab) -> None:
    # The carrier's 486 comes (ChannelHangupRequest), its ChannelDestroyed only after the setup
    # deadline (a busy Asterisk): the timer judged the attempt, a busy callee was taken for
    # a dead trunk ("carrier-a:unreachable:17:") and rung again on carrier-b.
    lab.carriers("a-unreachable_b200")  # carrier-a silent until we make it answer
    caller = lab.fake.new_caller(NUMBER)
    loop = asyncio.get_running_loop()

    def busy_now_destroyed_late(channel: Any, phase: str) -> None:
        if phase == "dial" and channel.name.startswith("PJSIP/carrier-a-"):
            lab.fake._emit({"type": "ChannelHangupRequest", "cause": 17, "tech_cause": 486,
                            "channel": channel.json()})
            loop.call_later(1.0, lab.fake._destroy, channel, 17, 486)  # setup_timeout: 0.5

    lab.fake.after_replay = busy_now_destroyed_late
    call = await lab.finished(caller)
    assert call.result is not None and call.result.trace == "carrier-a:busy:17:486"
    assert lab.fake.ended[caller].hangup_reason == "17"
    assert lab.fake.dials == {"carrier-a": 1}
    await wait_for(lambda: lab.fake.leftovers() == ([], []))



@pytest.mark.parametrize(("case", "phase"), [
    ("a480-noanswer_b200", AttemptState.RINGING),  # the ring timer fires
    ("a-unreachable_b200", AttemptState.DIALLING),  # the setup timer fires
])
async def test_an_answer_whose_events_are_still_on_their_way_when_the_timer_fires_connects(
        lab: Lab, case: str, phase: AttemptState) -> None:
    # On the lab a 200 that reached Asterisk 1 to 3 ms before the router's timer fired: the
    # bridge had answered the caller with it, and the router hung the callee up ("no answer":
    # the phone got 200 then BYE) or dialled the next trunk to a caller sitting answered.
    lab.carriers(case)
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is phase)
    leg = call.legs[0].channel_id
    lab.fake.answer_unheard(leg)  # the timer (0.5 s) fires before any event of it comes
    await wait_for(lambda: lab.vars_of(caller).get("ROUTER_CARRIER") == "alpha")
    assert lab.fake.dials == {"carrier-a": 1}
    (bridge,) = lab.fake.bridges.values()
    assert sorted(bridge["channels"]) == sorted([caller, leg])
    await hang_up_answered(lab, caller)
    assert call.result is not None and call.result.outcome is Outcome.ANSWERED


async def test_finished_calls_let_their_routing_versions_go(lab: Lab) -> None:
    # The app keeps its last 1,000 finished calls; each held the snapshot it was routed with,
    # so every version seeded since the oldest stayed in memory (some 50 MB per 100,000
    # routes), whatever the reader let go (a code review).
    import gc

    from routing.snapshot import Snapshot

    lab.carriers("a200")
    for version in ("v2", "v3", "v4"):
        lab.snapshots[:] = [snapshot_of(ROUTES, version)]  # a re-seed: the reader swaps
        await hang_up_answered(lab, lab.fake.new_caller(NUMBER))
    lab.snapshots[:] = [snapshot_of(ROUTES, "v5")]  # the reader holds v5 only
    gc.collect()
    alive = {o.version for o in gc.get_objects() if isinstance(o, Snapshot)}
    assert "v5" in alive and not alive & {"v2", "v3", "v4"}  # (other tests' v1 may be about)
    assert len(lab.app.finished) == 3


async def test_a_bug_in_a_call_ends_it_cleanly(lab: Lab, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    # Only ARI errors were caught: any other exception killed the call's task with the caller
    # in silence in its bridge, and the attempt and bridge left behind (a code review).
    lab.carriers("a480-noanswer_b200")
    original = Call._record

    def broken(self: Call, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        raise RuntimeError("a bug")

    monkeypatch.setattr(Call, "_record", broken)
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 0.2")))
    call = await lab.call(NUMBER)
    assert call.result is not None and call.result.status is Status.ERROR
    assert lab.fake.ended[call.caller_id].hangup_reason == "34"
    assert "call failed" in caplog.text and "RuntimeError: a bug" in caplog.text
    no_leftovers(lab)


async def held_in_the_setup_timer_s_check(lab: Lab) -> tuple[str, Call, str, asyncio.Event]:
    """A call whose carrier-a attempt got no provisional reply, held where the setup timer
    took it out of the bridge to read its state; (caller, call, attempt, the gate that lets
    the check go on)."""
    fake = lab.fake
    lab.carriers("a-unreachable_b200")  # carrier-a silent until the test makes it answer
    caller = fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: bool(call.legs) and call.legs[0].state is AttemptState.DIALLING)
    gate = fake.gates[f"POST /bridges/{call.bridge_id}/removeChannel"] = asyncio.Event()
    await wait_for(lambda: any(p.endswith("/removeChannel") for p in fake.paths("POST")))
    return caller, call, call.legs[0].channel_id, gate


async def test_a_busy_that_comes_while_the_setup_timer_checks_the_attempt_stops_the_call(
        lab: Lab) -> None:
    # As the setup timer fires, the attempt leaves the bridge and its state is read (two
    # requests); a 486 that came meanwhile was overridden: judged a dead trunk, and the next
    # carrier rang the busy callee (a code review). A 486 queued before the timer counted.
    fake = lab.fake
    caller, call, leg, gate = await held_in_the_setup_timer_s_check(lab)
    fake.carrier_fails(leg, 17, 486)  # the callee is busy
    await wait_for(lambda: call.queue.qsize() > 0)  # its events are in, unread
    gate.set()
    await lab.finished(caller)
    assert fake.dials == {"carrier-a": 1}
    assert call.result is not None and call.result.trace == "carrier-a:busy:17:486"
    assert fake.ended[caller].hangup_reason == "17"
    no_leftovers(lab)


@pytest.mark.parametrize("provisional", ["180", "183"])
async def test_a_provisional_reply_that_comes_while_the_setup_timer_checks_the_attempt_rings_on(
        lab: Lab, provisional: str) -> None:
    # It was judged a ring timeout, though the ring timer never ran: "no answer", the phone
    # got 480 at the setup time, the rest of the plan was never tried, and the callee about
    # to pick up was CANCELled. The same 180 a moment earlier rang the full ring timeout.
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 5")))
    fake = lab.fake
    caller, call, leg, gate = await held_in_the_setup_timer_s_check(lab)
    fake.ring(leg) if provisional == "180" else fake.early_media(leg)
    await wait_for(lambda: call.queue.qsize() > 0)
    add = f"/bridges/{call.bridge_id}/addChannel"
    added = fake.paths("POST").count(add)
    gate.set()
    await wait_for(lambda: fake.paths("POST").count(add) > added or not call.legs[0].live)
    # back in the bridge (ringback or early media reach the caller again), ringing on
    assert list(fake.bridges.values())[0]["channels"] == [caller, leg]
    assert call.legs[0].live and not call.legs[0].setup_timeout
    fake.answer(leg)  # within the ring timeout
    await answered(lab, caller)
    assert fake.dials == {"carrier-a": 1}
    await hang_up_answered(lab, caller)


async def test_an_answer_that_crosses_the_setup_timer_s_hangup_stops_the_call(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # The check found the attempt not up, and the carrier's 200 reached Asterisk just before
    # the app's DELETE: the callee picked up and got a BYE. Its answer events, seen while the
    # app waited for the attempt's end, were ignored: judged a dead trunk, and carrier-b rang
    # the callee again.
    fake = lab.fake
    lab.carriers("a-unreachable_b200")
    answer_before_each_hangup(lab, monkeypatch)
    call = await lab.call(NUMBER)
    assert fake.dials == {"carrier-a": 1}
    assert call.result is not None and call.result.trace == "carrier-a:answered:16:200"
    assert fake.ended[call.caller_id].hangup_reason == "16"
    no_leftovers(lab)


async def test_an_answer_that_comes_while_the_setup_timer_checks_the_attempt_connects(
        lab: Lab) -> None:
    # The same window with the carrier's 200 in it: the attempt is back in the bridge.
    fake = lab.fake
    caller, call, leg, gate = await held_in_the_setup_timer_s_check(lab)
    fake.answer(leg)
    await wait_for(lambda: call.queue.qsize() > 0)
    gate.set()
    await answered(lab, caller)
    (bridge,) = fake.bridges.values()
    assert bridge["channels"] == [caller, leg]
    assert fake.dials == {"carrier-a": 1}
    await hang_up_answered(lab, caller)


async def second_attempt_late_into_the_app(lab: Lab, monkeypatch: pytest.MonkeyPatch,
                                           delay: float) -> tuple[str, Call, str]:
    """carrier-a 503, then carrier-b, whose channel enters the app ``delay`` s after its
    creation, the wait for it bounded by setup_timeout (0.5 s): the caller, the call and that
    late channel (its StasisStart still to come)."""
    monkeypatch.setattr("ari_app.call.STASIS_START_WAIT", 0.0)  # the wait: setup_timeout
    lab.carriers("a503_b200")
    lab.fake.stasis_delay_for["carrier-b"] = delay
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: len(call.legs) == 2 and call.legs[1].created)
    return caller, call, call.legs[1].channel_id


async def failed_over_and_answered(lab: Lab, caller: str, call: Call, legs: int) -> None:
    """carrier-a's 503, then carrier-b's answer, on ``legs`` channels: one INVITE per
    carrier, no trunk judged dead."""
    await answered(lab, caller)
    assert len(call.legs) == legs and lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == (
        "carrier-a:congestion:34:503|carrier-b:answered:16:200")
    await hang_up_answered(lab, caller)


async def test_an_attempt_not_in_the_app_in_time_is_made_once_more(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # On the lab, after the router stalled 5 s (SIGSTOP) under 30 calls/s, Asterisk's events
    # ran seconds behind: the StasisStart of carrier-a's channel (the plan's last trunk) came
    # after its setup timer, which took carrier-a for unreachable although it never got an
    # INVITE, and the caller got 503 (carrier-d:congestion:34:503|carrier-a:unreachable::).
    caller, call, late = await second_attempt_late_into_the_app(lab, monkeypatch, 0.8)
    del lab.fake.stasis_delay_for["carrier-b"]
    await failed_over_and_answered(lab, caller, call, legs=3)
    assert late in lab.fake.ended  # hung up undialled, not left up


async def test_the_failed_attempt_s_cdr_record_has_its_outcome_before_the_next_one_joins(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # The caller's CDR record of attempt 1 closes as attempt 2 joins the bridge. The trace
    # with attempt 1's outcome goes on the caller in the write made as attempt 2 is created;
    # a slow write let attempt 2 join first (1 call in 20 of a failover burst on the lab:
    # an empty ROUTER_ATTEMPTS on the first record).
    monkeypatch.setattr("ari_app.call.VARS_WAIT_BEFORE_JOIN", 30.0)
    lab.snapshots.append(snapshot_of(_routes_with(ring_timeout=30)))
    # carrier-a rings until the test turns it down (503), once the writes are held
    lab.carriers("a503_b200", **{"carrier-a": Behaviour.recorded("a480-noanswer_b200",
                                                                  "carrier-a")})
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is AttemptState.RINGING)
    gate = lab.fake.gates[f"POST /channels/{caller}/variable"] = asyncio.Event()
    lab.fake.carrier_fails(call.legs[0].channel_id, 34, 503)
    await wait_for(lambda: len(call.legs) == 2 and call.legs[1].in_stasis)
    with pytest.raises(AssertionError):  # attempt 2 waits for the write
        await wait_for(lambda: len(lab.fake.at_join) == 2, within=0.3)
    gate.set()
    await answered(lab, caller)
    [(first, _), (second, in_bridge)] = lab.fake.at_join
    assert first == [caller, call.legs[0].channel_id] and second == [call.legs[1].channel_id]
    assert in_bridge[caller]["CDR(ROUTER_ATTEMPTS)"] == "carrier-a:congestion:34:503"
    await hang_up_answered(lab, caller)


@pytest.mark.parametrize("status", [409, 500])
async def test_a_caller_answer_refused_after_the_bridge_answered_it_is_no_warning(
    lab: Lab, caplog: pytest.LogCaptureFixture, status: int,
) -> None:
    # Asterisk answers the caller itself as the leg's answer passes their bridge. Under load
    # the app's own answer reached Asterisk after the caller had talked and hung up: 409 (not
    # in Stasis) or 500 ("Failed to answer channel"), a WARNING "answer caller failed" for a
    # third of 15,000 answered calls on the lab, none of them unanswered.
    lab.carriers("a200")
    caller = lab.fake.new_caller(NUMBER)
    lab.fake.failing[f"POST /channels/{caller}/answer"] = status
    call = await lab.started(caller)
    await wait_for(lambda: "ROUTER_ATTEMPTS" in lab.fake.channels[caller].variables)
    assert f"/channels/{caller}/answer" in lab.fake.paths("POST")  # it was asked
    lab.fake.caller_hangup(caller)
    done = await lab.finished(caller)
    assert done is call and call.result is not None
    assert call.result.outcome is Outcome.ANSWERED
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_channel_entering_the_app_after_the_setup_timeout_is_dialled(lab: Lab) -> None:
    # A busy Asterisk's StasisStart seconds late is Asterisk's time, not the trunk's: the
    # channel is dialled when it comes (no second channel, one more load on that Asterisk),
    # and the trunk gets its whole setup_timeout from the dial.
    lab.carriers("a503_b200")
    lab.fake.stasis_delay_for["carrier-b"] = 0.8  # setup_timeout is 0.5 s
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: len(call.legs) == 2 and lab.fake.dials["carrier-b"] == 1)
    assert not call.legs[1].setup_timeout
    await failed_over_and_answered(lab, caller, call, legs=2)


async def test_a_channel_entering_the_app_as_its_wait_ends_is_made_once_more(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both paths loaded at 50 calls/s on the lab: the StasisStart of the plan's last trunk came
    # while the hangup of its setup timer was on its way. It was taken for "in the app", so
    # the attempt was judged a dead trunk although it never got an INVITE: the phone got 503
    # (carrier-a:congestion:34:503|carrier-b:unreachable::), 7 and 8 calls of 500.
    caller, call, late = await second_attempt_late_into_the_app(lab, monkeypatch, 0.7)
    gate = lab.fake.gates[f"DELETE /channels/{late}"] = asyncio.Event()
    await wait_for(lambda: lab.fake.channels[late].in_stasis)  # sent while the DELETE waits
    del lab.fake.stasis_delay_for["carrier-b"]
    gate.set()
    await failed_over_and_answered(lab, caller, call, legs=3)
    assert late in lab.fake.ended  # hung up undialled, not left up
