"""Websocket drops: the app reconnects, reconciles what it missed, leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from ari_support import ROUTES, Lab, answer_resumed, hang_up_answered, snapshot_of, wait_for
from fake_ari import Behaviour, FakeAsterisk

from ari_app.app import RouterApp
from ari_app.call import Call
from ari_app.client import AriClient, AriUnavailable, Backoff
from ari_app.leg import AttemptState
from ari_app.resume import RESUME_MAX, parse_resume, resume_data
from routing.model import Carrier, FailoverPolicy, Route
from routing.plan import Attempt

NUMBER = "911234567"


async def cut(lab: Lab) -> int:
    """Drop the events websocket and refuse new ones; returns the connection count."""
    lab.fake.accepting = False
    await lab.fake.drop_websockets()
    await wait_for(lambda: not lab.ari.connected.is_set())
    return lab.fake.ws_connections


async def restore(lab: Lab, before: int) -> None:
    lab.app.reconciled.clear()
    lab.fake.accepting = True
    await wait_for(lambda: lab.fake.ws_connections > before)
    await lab.app.reconciled.wait()


async def ringing_call(lab: Lab, ring_timeout: str = "30") -> tuple[str, str]:
    """A call whose first attempt (carrier-a) rings; (caller, that attempt's channel)."""
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5",
                                                    f"ring_timeout: {ring_timeout}")))
    lab.carriers("a480-noanswer_b200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is AttemptState.RINGING)
    return caller, call.legs[0].channel_id


async def test_answer_missed_during_a_drop_is_picked_up_after_reconnect(lab: Lab) -> None:
    caller, leg = await ringing_call(lab)
    before = await cut(lab)
    lab.fake.answer_silently(leg)
    await restore(lab, before)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert lab.fake.bridges and list(lab.fake.bridges.values())[0]["channels"] == [caller, leg]
    lab.fake.caller_hangup(caller)
    await lab.finished(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_caller_gone_during_a_drop_tears_down_the_attempt(lab: Lab) -> None:
    caller, leg = await ringing_call(lab)
    before = await cut(lab)
    lab.fake.caller_hangup(caller)
    await restore(lab, before)
    await lab.finished(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))
    assert lab.fake.ended[leg].cancelled
    assert lab.fake.dials["carrier-b"] == 0


def hold_the_channel_list(lab: Lab) -> int:
    """From now on GET /channels replies only when ``lab.fake.hold_channel_list`` is set;
    returns how many lists were taken so far."""
    lab.fake.hold_channel_list = asyncio.Event()
    lists: int = lab.fake.channel_lists
    return lists


async def test_a_call_begun_while_the_channel_list_was_on_its_way_goes_on(lab: Lab) -> None:
    # On the lab, under load, after a websocket cut: a call whose StasisStart came while the
    # reconcile's GET /channels was on its way was missing from the reply and taken for gone.
    # Its attempt was torn down and its caller left with no answer at all.
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")))
    lab.carriers("a480-noanswer_b200")
    before = await cut(lab)
    lists = hold_the_channel_list(lab)
    lab.app.reconciled.clear()
    lab.fake.accepting = True
    await wait_for(lambda: lab.fake.channel_lists > lists)  # taken, not sent yet
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is AttemptState.RINGING)
    assert lab.fake.hold_channel_list is not None and lab.fake.ws_connections > before
    lab.fake.hold_channel_list.set()
    await lab.app.reconciled.wait()
    lab.fake.answer(call.legs[0].channel_id)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert not call.caller_gone and lab.fake.dials == {"carrier-a": 1}
    lab.fake.caller_hangup(caller)
    await lab.finished(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_an_attempt_created_while_the_channel_list_was_on_its_way_goes_on(
        lab: Lab) -> None:
    # The same race for the next attempt of a call in progress: taken for gone, it was never
    # hung up; on the lab it rang on, answered after the next trunk had, and leaked.
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")))
    rings = Behaviour.recorded("a480-noanswer_b200", "carrier-a")
    lab.carriers("a480-noanswer_b200", **{"carrier-b": rings})
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is AttemptState.RINGING)
    before = await cut(lab)
    lists = hold_the_channel_list(lab)
    lab.app.reconciled.clear()
    lab.fake.accepting = True
    await wait_for(lambda: lab.fake.channel_lists > lists and lab.fake.ws_connections > before)
    lab.fake.carrier_fails(call.legs[0].channel_id, 34, 503)
    await wait_for(lambda: len(call.legs) == 2 and call.legs[1].state is AttemptState.RINGING)
    assert lab.fake.hold_channel_list is not None
    lab.fake.hold_channel_list.set()
    await lab.app.reconciled.wait()
    second = call.legs[1].channel_id
    lab.fake.answer(second)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    lab.fake.caller_hangup(caller)
    await lab.finished(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_busy_answer_lost_in_a_cut_is_read_from_the_callers_hangup_causes(
        lab: Lab) -> None:
    # The attempt's events were lost with the websocket: it was taken for gone with no cause
    # (congestion) and the next carrier rang the busy callee again. The caller's hangup-cause
    # hash holds the carrier's last SIP response.
    caller, leg = await ringing_call(lab)
    before = await cut(lab)
    lab.fake.carrier_fails(leg, 17, 486)
    await restore(lab, before)
    call = await lab.finished(caller)
    assert call.result is not None and call.result.trace == "carrier-a:busy:17:486"
    assert lab.fake.ended[caller].hangup_reason == "17"
    assert lab.fake.dials == {"carrier-a": 1}
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_early_media_lost_in_a_cut_is_read_from_the_attempts_last_response(
        lab: Lab) -> None:
    # chan_pjsip sets no channel state for a 183: after a cut that lost its Dial PROGRESS,
    # GET /channels shows the attempt Down. It was left to the setup timer, judged a dead
    # trunk, and the next carrier rang the callee who was already hearing early media.
    lab.snapshots.append(snapshot_of(ROUTES.replace("setup_timeout: 0.5", "setup_timeout: 3")
                                     .replace("ring_timeout: 0.5", "ring_timeout: 30")))
    lab.carriers("a-unreachable_b200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is AttemptState.DIALLING)
    leg = call.legs[0]
    before = await cut(lab)
    lab.fake.early_media(leg.channel_id)
    await restore(lab, before)
    await wait_for(lambda: leg.state is AttemptState.EARLY_MEDIA)  # not left to the timer
    lab.fake.answer(leg.channel_id)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert lab.fake.dials == {"carrier-a": 1}
    await hang_up_answered(lab, caller)


async def test_the_next_call_routes_after_a_reconnect(lab: Lab) -> None:
    lab.carriers("a200")
    await restore(lab, await cut(lab))
    await hang_up_answered(lab, lab.fake.new_caller(NUMBER))


async def test_bridged_calls_go_on_through_a_drop(lab: Lab) -> None:
    lab.carriers("a200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    await restore(lab, await cut(lab))
    assert caller in lab.fake.channels and call.legs[0].channel_id in lab.fake.channels
    lab.fake.far_end_hangup(call.legs[0].channel_id)
    await lab.finished(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_call_that_ends_while_the_lists_are_on_their_way_is_not_adopted(
        lab: Lab) -> None:
    # The lists still showed the bridged call that had ended meanwhile: it was adopted, and
    # its task and two registry entries waited for events of gone channels until the next
    # reconnect.
    lab.carriers("a200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    before = await cut(lab)
    lists = hold_the_channel_list(lab)
    lab.app.reconciled.clear()
    lab.fake.accepting = True
    await wait_for(lambda: lab.fake.channel_lists > lists and lab.fake.ws_connections > before)
    lab.fake.far_end_hangup(call.legs[0].channel_id)
    await lab.finished(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))
    assert lab.fake.hold_channel_list is not None
    lab.fake.hold_channel_list.set()
    await lab.app.reconciled.wait()
    assert lab.app.owners == {}
    assert not [t.get_name() for t in lab.app.tasks if t.get_name().startswith("adopted-")]


async def test_leftovers_of_an_earlier_run_are_cleaned_or_adopted(lab: Lab) -> None:
    lab.carriers("a200")
    before = await cut(lab)
    fake = lab.fake
    # An attempt channel nobody owns; a half-built bridge; a bridged call; a missed caller.
    stray = fake.add_leftover_channel("router-attempt,gone-caller", state="Down")
    half_caller = fake.add_leftover_channel(NUMBER, state="Ring")
    half_leg = fake.add_leftover_channel("router-attempt,x", state="Ringing")
    half = fake.add_leftover_bridge([half_caller, half_leg])
    up_caller = fake.add_leftover_channel(NUMBER, state="Up")
    up_leg = fake.add_leftover_channel("router-attempt,y", state="Up")
    adopted = fake.add_leftover_bridge([up_caller, up_leg])
    missed = fake.add_leftover_channel(NUMBER, state="Ring")
    await restore(lab, before)
    await wait_for(lambda: stray not in fake.channels and half not in fake.bridges
                   and half_caller not in fake.channels and half_leg not in fake.channels)
    assert adopted in fake.bridges and up_caller in fake.channels
    await wait_for(lambda: fake.channels[missed].state == "Up")  # routed like a new call
    fake.far_end_hangup(up_leg)
    await wait_for(lambda: up_caller not in fake.channels and adopted not in fake.bridges)
    fake.caller_hangup(missed)
    await wait_for(lambda: fake.leftovers() == ([], []))


async def test_a_failed_call_then_an_answered_one_leave_nothing_behind(lab: Lab) -> None:
    # Both trunks fail on the first call, the second call is answered: nothing is left.
    lab.carriers("a503_b503")
    failed = await lab.call(NUMBER)
    assert failed.result is not None and failed.result.caller_cause == 34
    lab.carriers("a503_b200", **{"carrier-a": Behaviour.recorded("a200", "carrier-a")})
    await hang_up_answered(lab, lab.fake.new_caller(NUMBER))


async def test_an_adopted_call_destroys_its_bridge_even_when_a_hangup_fails(lab: Lab) -> None:
    before = await cut(lab)
    fake = lab.fake
    caller = fake.add_leftover_channel(NUMBER, state="Up")
    leg = fake.add_leftover_channel("router-attempt,y", state="Up")
    bridge = fake.add_leftover_bridge([caller, leg])
    # As an earlier instance left it; the leg has no ROUTER_RESUME to record the answer from.
    fake.channels[caller].variables["ROUTER_ATTEMPTS_ABANDONED"] = "carrier-a:cancelled::"
    fake.failing[f"DELETE /channels/{caller}"] = 500
    await restore(lab, before)
    # The answer cannot be recorded; the h extension must not record a cancel instead.
    await wait_for(lambda: fake.channels[caller].variables["ROUTER_ATTEMPTS_ABANDONED"] == "")
    fake.far_end_hangup(leg)
    await wait_for(lambda: bridge not in fake.bridges)  # the 500 did not stop the clean-up
    del fake.failing[f"DELETE /channels/{caller}"]
    fake.caller_hangup(caller)
    await wait_for(lambda: fake.leftovers() == ([], []))


@contextlib.asynccontextmanager
async def a_new_instance(lab: Lab, *, reconciled: bool = True,
                         routing: bool = True) -> AsyncIterator[RouterApp]:
    """A second instance of the app on the same Asterisk, as after a restart of the service
    (given once it has reconciled, unless ``reconciled=False``); stopped on leaving.
    ``routing=False``: it has no routing table (Redis down or empty when it started)."""
    url = f"http://127.0.0.1:{lab.fake.server.port}"  # type: ignore[union-attr]
    ari = AriClient(url, lab.fake.username, lab.fake.password, lab.fake.app, heartbeat=1.0,
                    backoff=Backoff(initial=0.05, maximum=0.2))
    app = RouterApp(ari, (lambda: lab.snapshots[-1]) if routing else (lambda: None),
                    rng=random.Random(7))
    runner = asyncio.create_task(app.run())
    try:
        if reconciled:
            await app.reconciled.wait()
        yield app
    finally:
        await stop(runner, ari)


async def stop(runner: asyncio.Task[None], ari: AriClient) -> None:
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await ari.close()


async def stop_begun(lab: Lab) -> asyncio.Task[None]:
    """Stop the service (as SIGTERM does) and return once its calls are being stopped, or
    already were: a reply held meanwhile comes while a call handles its stop."""
    stopping = asyncio.create_task(stop(lab.runner, lab.ari))
    await wait_for(lambda: lab.runner.done()
                   or any(task.cancelling() for task in lab.app.tasks))
    return stopping


@contextlib.asynccontextmanager
async def restarted_while_ringing(lab: Lab) -> AsyncIterator[tuple[str, str, RouterApp]]:
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)  # the service stopped: its calls were cancelled
    assert leg in lab.fake.channels and not lab.fake.channels[leg].cancelled
    assert [b["channels"] for b in lab.fake.bridges.values()] == [[caller, leg]]
    async with a_new_instance(lab) as app:
        call = app.owners[caller]
        assert app.owners[leg] is call and isinstance(call, Call)
        await wait_for(lambda: bool(call.legs))  # it read the leg's ROUTER_RESUME
        assert (call.legs[0].channel_id, call.legs[0].state) == (leg, AttemptState.RINGING)
        yield caller, leg, app


async def test_a_ringing_attempt_goes_on_across_a_restart_and_is_not_rung_twice(
        lab: Lab) -> None:
    async with restarted_while_ringing(lab) as (caller, leg, app):
        lab.fake.answer(leg)
        await wait_for(lambda: lab.fake.channels[caller].state == "Up")
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: any(c.caller_id == caller for c in app.finished))
        call = next(c for c in app.finished if c.caller_id == caller)
        assert call.result is not None and call.result.trace == "carrier-a:answered:16:200"
        assert lab.vars_of(caller)["ROUTER_CARRIER"] == "alpha"
        assert lab.fake.dials == {"carrier-a": 1}  # the callee rang once
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_caller_answered_beside_a_ringing_attempt_is_resumed_not_removed(
        lab: Lab) -> None:
    # In a chaos run the carrier answered as the new instance listed the channels: the bridge
    # had answered the caller, the attempt's state still said Ringing, and the pair was taken
    # for a leftover: the callee was hung up 60 ms after the phone's 200.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    lab.fake.channels[caller].state = "Up"  # the answer, as far as the list shows it
    async with a_new_instance(lab) as app:
        assert isinstance(app.owners.get(caller), Call)
        lab.fake.answer(leg)
        await wait_for(lambda: "ROUTER_CARRIER" in lab.fake.channels[caller].variables)
        assert lab.vars_of(caller)["ROUTER_CARRIER"] == "alpha"
        assert leg in lab.fake.channels and lab.fake.dials == {"carrier-a": 1}
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_an_answer_that_comes_while_the_next_instance_lists_channels_is_not_lost(
        lab: Lab) -> None:
    # On the lab the callee answered while the new instance's GET /channels was on its way:
    # the reply still said Ringing, the answer's events found no owner and were dropped, and
    # the resumed call waited out its timer, hung up the answered callee and rang another.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    lists = hold_the_channel_list(lab)
    async with a_new_instance(lab, reconciled=False) as app:
        await wait_for(lambda: lab.fake.channel_lists > lists)
        lab.fake.answer(leg)
        assert lab.fake.hold_channel_list is not None
        lab.fake.hold_channel_list.set()
        await app.reconciled.wait()
        await wait_for(lambda: lab.fake.channels[caller].state == "Up")
        assert leg in lab.fake.channels and lab.fake.dials == {"carrier-a": 1}
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


@pytest.mark.parametrize(("cause", "sip", "trace"), [
    (34, 503, "carrier-a:congestion:34:503|carrier-b:answered:16:200"),
    (17, 486, "carrier-a:busy:17:486"),
])
async def test_an_attempt_that_ends_while_the_next_instance_lists_channels_is_judged(
        lab: Lab, cause: int, sip: int, trace: str) -> None:
    # On the lab the attempt ended just after the new instance's GET /channels listed it:
    # reading its ROUTER_RESUME got 404, the call was ended as "nothing to resume" (503 to the
    # phone) and the trunks after it were never tried.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    lists = hold_the_channel_list(lab)
    async with a_new_instance(lab, reconciled=False) as app:
        await wait_for(lambda: lab.fake.channel_lists > lists)
        lab.fake.carrier_fails(leg, cause, sip)
        assert lab.fake.hold_channel_list is not None
        lab.fake.hold_channel_list.set()
        # (the busy caller's channel may be gone before the app lists the call as finished)
        await wait_for(lambda: any(c.caller_id == caller for c in app.finished)
                       or caller not in lab.fake.channels
                       or lab.fake.channels[caller].state == "Up")
        if sip == 503:
            assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
            lab.fake.caller_hangup(caller)
        await wait_for(lambda: any(c.caller_id == caller for c in app.finished))
        # Judged from its ChannelDestroyed (cause and SIP code) or, when the new instance got
        # to the channel first and found it gone, from the caller's record of its last SIP
        # response (which of the two comes first is a race): the same trace either way.
        assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == trace
        if sip == 486:
            assert lab.fake.ended[caller].hangup_reason == "17"
            assert lab.fake.dials == {"carrier-a": 1}
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def fails_over_to_carrier_b(lab: Lab, caller: str, leg: str, app: RouterApp) -> None:
    """carrier-a's resumed attempt fails with 503: the rest of the plan, carrier-b, answers."""
    lab.fake.carrier_fails(leg, 34, 503)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")  # carrier-b answered
    assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    lab.fake.caller_hangup(caller)
    await wait_for(lambda: any(c.caller_id == caller for c in app.finished))
    assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == (
        "carrier-a:congestion:34:503|carrier-b:answered:16:200")
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_resumed_call_fails_over_to_the_rest_of_its_plan(lab: Lab) -> None:
    async with restarted_while_ringing(lab) as (caller, leg, app):
        await fails_over_to_carrier_b(lab, caller, leg, app)


@pytest.mark.parametrize(("old", "new"), [
    # alpha stops on 503 in the new version: the call was routed when it failed over.
    pytest.param("alpha: {trunks: [carrier-a]}",
                 "alpha: {trunks: [carrier-a], failover: {stop: [503]}}", id="policy"),
    # The route that chose alpha is renamed: the call's attempt is still the call's.
    pytest.param("{name: first,", "{name: first-renamed,", id="route-renamed"),
    # bravo's route is gone: the call's plan still has it.
    pytest.param("  - {name: second, pattern: spain, carrier: bravo, priority: 2}\n", "",
                 id="fallback-gone"),
])
async def test_a_resumed_call_goes_on_with_the_plan_of_the_version_it_was_routed_with(
        lab: Lab, old: str, new: str) -> None:
    # A seed between the routing and the restart: the next instance rebuilt the attempts
    # from the new version, so it judged alpha's 503 by alpha's new policy, ended the call
    # whose route was renamed ("nothing to resume") and skipped the removed fallback.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    routes = ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")
    assert old in routes
    lab.snapshots.append(snapshot_of(routes.replace(old, new), "v2"))
    async with a_new_instance(lab) as app:
        call = app.owners[caller]
        assert isinstance(call, Call)
        await wait_for(lambda: bool(call.legs))
        await fails_over_to_carrier_b(lab, caller, leg, app)


async def test_an_attempt_answered_while_no_instance_listened_is_connected_by_the_next(
        lab: Lab) -> None:
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    lab.fake.answer_silently(leg)  # the callee picks up between the two instances
    async with a_new_instance(lab):
        await wait_for(lambda: lab.fake.channels[caller].state == "Up")
        assert [b["channels"] for b in lab.fake.bridges.values()] == [[caller, leg]]
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))
        assert lab.fake.dials == {"carrier-a": 1}


async def test_a_call_bridged_while_no_instance_listened_gets_its_outcome_recorded(
        lab: Lab) -> None:
    # On the lab Asterisk answered the caller itself when the callee picked up between the
    # two instances: the next one adopted the call, and nobody wrote its outcome (the CDRs of
    # such calls had no carrier, trunk or trace). It is read from the leg's ROUTER_RESUME.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    lab.fake.answer_silently(leg)
    lab.fake.channels[caller].state = "Up"
    async with a_new_instance(lab):
        await wait_for(lambda: "ROUTER_CARRIER" in lab.vars_of(caller))
        variables = lab.vars_of(caller)
        assert (variables["ROUTER_CARRIER"], variables["ROUTER_TRUNK"]) == ("alpha", "carrier-a")
        assert variables["ROUTER_ATTEMPTS"] == "carrier-a:answered:16:200"
        assert variables["CDR(ROUTER_CARRIER)"] == "alpha"
        assert variables["ROUTER_STATUS"] == "OK"
        lab.fake.far_end_hangup(leg)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))
        assert lab.fake.dials == {"carrier-a": 1}


async def test_an_attempt_that_failed_while_no_instance_listened_fails_over_with_the_next(
        lab: Lab) -> None:
    # Between the two instances carrier-a turns the call down: the bridge holds the caller
    # alone. It was taken for a leftover: the caller was hung up (503) and carrier-b, the rest
    # of the plan, never tried. The caller's own ROUTER_RESUME says what that rest is, and its
    # hangup-cause hash how carrier-a ended.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    lab.fake.carrier_fails(leg, 34, 503)
    assert [b["channels"] for b in lab.fake.bridges.values()] == [[caller]]
    async with a_new_instance(lab):
        await wait_for(lambda: lab.fake.channels[caller].state == "Up")  # carrier-b answered
        assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
        (bridge,) = lab.fake.bridges.values()
        assert bridge["channels"][0] == caller and len(bridge["channels"]) == 2
        await wait_for(lambda: lab.vars_of(caller).get("ROUTER_CARRIER") == "bravo")
        assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == (
            "carrier-a:congestion:34:503|carrier-b:answered:16:200")
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


@pytest.mark.parametrize(("end", "trace", "cause"), [
    ("busy", "carrier-a:busy:17:486", "17"),
    # Asterisk's own /dial timeout ended the ringing: the last response it recorded is the
    # 180 (the CANCEL's 487 comes after the channel is gone; seen on the lab).
    ("dial timeout", "carrier-a:no-answer::", "19"),
])
async def test_an_attempt_that_stopped_the_call_while_no_instance_listened_stops_it(
        lab: Lab, end: str, trace: str, cause: str) -> None:
    # It was always taken for a failure to retry: on the lab a callee who was busy, or who let
    # it ring out, was rung again through the next carrier.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    if end == "busy":
        lab.fake.carrier_fails(leg, 17, 486)
    else:
        lab.fake.destroy(leg)
    async with a_new_instance(lab) as app:
        await wait_for(lambda: any(c.caller_id == caller for c in app.finished))
        assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == trace
        assert lab.fake.ended[caller].hangup_reason == cause
        assert lab.fake.dials == {"carrier-a": 1}
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_callee_who_answered_and_hung_up_while_no_instance_listened_is_not_rung_again(
        lab: Lab) -> None:
    # Nobody connected the caller; the callee heard silence and hung up. "SIP 200 OK" was
    # taken for a trunk that never alerted, and the next carrier rang them again.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    lab.fake.answer(leg)
    lab.fake.far_end_hangup(leg)
    async with a_new_instance(lab) as app:
        await wait_for(lambda: any(c.caller_id == caller for c in app.finished))
        assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == "carrier-a:answered:16:200"
        assert lab.fake.ended[caller].hangup_reason == "16"
        assert lab.fake.dials == {"carrier-a": 1}
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_callee_who_answered_and_hung_up_during_a_drop_after_a_failover_hears_16(
        lab: Lab) -> None:
    # carrier-a turned the call down (503), carrier-b rang, and during a websocket cut its
    # callee picked up and hung up. Nothing is left to connect and nothing more is tried; the
    # caller was hung up with the 503's cause (a SIP 503, which a phone or proxy may retry,
    # ringing the callee again), not a normal clearing.
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")))
    lab.carriers("a503_b200", **{"carrier-b": Behaviour.recorded("a480-noanswer_b200",
                                                                 "carrier-a")})
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: len(call.legs) == 2 and call.legs[1].state is AttemptState.RINGING)
    leg = call.legs[1].channel_id
    before = await cut(lab)
    lab.fake.answer(leg)
    lab.fake.far_end_hangup(leg)
    await restore(lab, before)
    await lab.finished(caller)
    assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == (
        "carrier-a:congestion:34:503|carrier-b:answered:16:200")
    assert lab.fake.ended[caller].hangup_reason == "16"
    assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_an_attempt_whose_stasis_start_was_lost_in_a_cut_is_dialled(lab: Lab) -> None:
    # The attempt's channel entered Stasis as the websocket dropped: the reconcile lists it
    # in the app, but the call waited on for its StasisStart, and the setup timer judged the
    # trunk, which never got an INVITE, unreachable: the call went on to carrier-b.
    fake = lab.fake
    lab.snapshots.append(snapshot_of(ROUTES.replace("setup_timeout: 0.5", "setup_timeout: 1")))
    lab.carriers("a200", **{"carrier-b": Behaviour.recorded("a503_b200", "carrier-b")})
    emit, lost = fake._emit, []

    def lose_the_stasis_start(event: dict[str, Any]) -> None:
        name = str((event.get("channel") or {}).get("name", ""))
        if event.get("type") == "StasisStart" and name.startswith("PJSIP/carrier-a-") \
                and not lost:
            lost.append(name)
            asyncio.get_running_loop().create_task(fake.drop_websockets())
            return
        emit(event)

    fake._emit = lose_the_stasis_start  # type: ignore[method-assign]
    caller = fake.new_caller(NUMBER)
    await wait_for(lambda: caller in fake.channels and fake.channels[caller].state == "Up")
    assert lost and fake.dials == {"carrier-a": 1}
    assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == "carrier-a:answered:16:200"
    fake.caller_hangup(caller)
    await lab.finished(caller)
    await wait_for(lambda: fake.leftovers() == ([], []))


async def test_a_failed_reconcile_is_tried_again(lab: Lab) -> None:
    # It was logged and never tried again: a caller left ringing by the earlier instance got
    # no answer until the phone gave up.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    lab.fake.failing["GET /channels"] = 500
    asked = lab.fake.paths("GET").count("/channels")
    async with a_new_instance(lab, reconciled=False) as app:
        await wait_for(lambda: lab.fake.paths("GET").count("/channels") > asked)
        del lab.fake.failing["GET /channels"]
        await app.reconciled.wait()
        assert app.owners.get(leg) is app.owners.get(caller) is not None
        lab.fake.answer(leg)
        await wait_for(lambda: lab.fake.channels[caller].state == "Up")
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))
        assert lab.fake.dials == {"carrier-a": 1}


async def test_an_instance_stopped_while_resuming_leaves_the_call_for_the_next(
        lab: Lab) -> None:
    # Stopped while it read the attempt's ROUTER_RESUME, it destroyed the bridge and left the
    # attempt ringing outside it: the next instance hung the attempt up as a leftover and
    # routed the caller again (the callee rang twice).
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    gate = lab.fake.gates[f"GET /channels/{leg}/variable"] = asyncio.Event()
    async with a_new_instance(lab) as app:
        await wait_for(lambda: f"/channels/{leg}/variable" in lab.fake.paths("GET"))
    del lab.fake.gates[f"GET /channels/{leg}/variable"]
    gate.set()
    assert [b["channels"] for b in lab.fake.bridges.values()] == [[caller, leg]]
    async with a_new_instance(lab) as app:
        call = app.owners[caller]
        assert isinstance(call, Call)
        await wait_for(lambda: bool(call.legs))
        await answer_resumed(lab, caller, leg)


async def test_a_resumed_ring_timer_ends_by_the_attempts_creation_plus_setup_plus_ring(
        lab: Lab) -> None:
    # It started again at each resume: with the service restarted every few seconds the ring
    # timer never fired, and the ringing went on to Asterisk's /dial timeout (a chaos audit).
    caller, leg = await ringing_call(lab)  # ring_timeout 30, setup_timeout 0.5
    await stop(lab.runner, lab.ari)
    # Created 43.5 s ago: ringing began by 14.5 s after (the wait for its StasisStart, 10 s,
    # then its setup timer, each with its stall grace), so the ring timer ends about 1 s from
    # now.
    lab.fake.channels[leg].created -= timedelta(seconds=43.5)
    async with a_new_instance(lab) as app:
        await wait_for(lambda: any(c.caller_id == caller for c in app.finished), within=5)
        assert lab.fake.ended[caller].hangup_reason == "19"  # no answer, well before 30 s
        assert lab.fake.dials == {"carrier-a": 1}
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


@pytest.mark.parametrize("offset", [-120.0, 120.0])
async def test_the_ring_timer_cap_reads_the_channels_age_on_asterisks_clock(
        lab: Lab, offset: float) -> None:
    # It compared the router's clock with Asterisk's creationtime: an Asterisk 2 minutes
    # behind cut a callee who had just begun to ring and told the caller "no answer".
    lab.fake.clock_offset = offset
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    async with a_new_instance(lab) as app:
        resumed = app.owners[caller]
        assert isinstance(resumed, Call)
        await wait_for(lambda: bool(resumed.legs))
        ring_started = resumed.legs[0].ring_started
        assert ring_started is not None and resumed.clock() - ring_started < 1.0  # 30 s to go
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_call_stopped_between_two_attempts_goes_on_with_the_untried_one(
        lab: Lab) -> None:
    # On the lab a SIGTERM came as carrier-c's 503 was judged and carrier-a's channel was
    # being created: the bridge was destroyed, and the next instance routed the caller again
    # from the start (carrier-b and carrier-c rang again for the same call).
    lab.carriers("a503_b200")
    lab.fake.stasis_delay_for["carrier-b"] = 0.4  # the second attempt waits for its StasisStart
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: len(call.legs) == 2 and call.legs[1].created)
    await stop(lab.runner, lab.ari)
    assert [b["channels"] for b in lab.fake.bridges.values()] == [[caller]]
    del lab.fake.stasis_delay_for["carrier-b"]
    async with a_new_instance(lab) as app:
        await wait_for(lambda: lab.fake.channels[caller].state == "Up")  # carrier-b answered
        assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
        await wait_for(lambda: lab.vars_of(caller).get("ROUTER_CARRIER") == "bravo")
        assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == (
            "carrier-a:congestion:34:503|carrier-b:answered:16:200")
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: any(c.caller_id == caller for c in app.finished))
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_call_stopped_while_its_caller_is_hung_up_leaves_nothing(lab: Lab) -> None:
    # A SIGTERM came as the caller of a busy callee was being hung up: the call was taken for
    # one between two attempts, and its bridge was left for the next instance to find.
    lab.carriers("a486_b200")
    caller = lab.fake.new_caller(NUMBER)
    held = lab.fake.held_replies[f"DELETE /channels/{caller}"] = asyncio.Event()
    await lab.started(caller)
    await wait_for(lambda: f"/channels/{caller}" in lab.fake.paths("DELETE"))
    stopping = await stop_begun(lab)
    held.set()
    await stopping
    await wait_for(lambda: lab.fake.leftovers() == ([], []))
    assert lab.fake.ended[caller].hangup_reason == "17"


@pytest.mark.parametrize("reply", ["in time", "too late"])
async def test_a_call_stopped_while_its_dial_is_answered_does_not_ring_the_trunk_twice(
        lab: Lab, reply: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A SIGTERM came while an attempt's /dial was on its way (Asterisk had sent the INVITE):
    # the attempt was hung up as never dialled, a CANCEL right behind its INVITE, and the next
    # instance INVITEd the same trunk again for the same call. A reply that does not come in
    # time leaves the attempt dialled all the same.
    monkeypatch.setattr("ari_app.call.DIAL_WAIT_AT_STOP", 0.2)
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")))
    lab.carriers("a480-noanswer_b200")
    held = lab.fake.held_replies["POST /channels/*/dial"] = asyncio.Event()
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: lab.fake.dials == {"carrier-a": 1})  # the INVITE is out
    leg = call.legs[0].channel_id
    stopping = await stop_begun(lab)
    if reply == "in time":
        held.set()  # the reply comes while the call is being stopped
    await stopping
    held.set()
    del lab.fake.held_replies["POST /channels/*/dial"]
    assert leg in lab.fake.channels and not lab.fake.channels[leg].cancelled
    assert [b["channels"] for b in lab.fake.bridges.values()] == [[caller, leg]]
    async with a_new_instance(lab) as app:
        resumed = app.owners[caller]
        assert isinstance(resumed, Call)
        await wait_for(lambda: bool(resumed.legs))
        assert resumed.legs[0].channel_id == leg
        await answer_resumed(lab, caller, leg)


async def test_an_attempt_with_early_media_is_resumed_under_its_ring_timer(lab: Lab) -> None:
    # A channel's state says Ringing after a 180 but nothing after a 183: the attempt was
    # resumed under the setup timer, which cut the callee's early media after a few seconds
    # and rang the next carrier (29 calls of a chaos audit on the lab).
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")))
    lab.carriers("a183-noanswer_b200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call.legs and call.legs[0].state is AttemptState.EARLY_MEDIA)
    leg = call.legs[0].channel_id
    await stop(lab.runner, lab.ari)
    assert lab.fake.channels[leg].state != "Ringing"
    async with a_new_instance(lab) as app:
        resumed = app.owners[caller]
        assert isinstance(resumed, Call)
        await wait_for(lambda: bool(resumed.legs))
        # (its deadline is ring_started + ring_timeout: 30 s, not the setup timer's 0.5 s)
        assert resumed.legs[0].state is AttemptState.EARLY_MEDIA and resumed.legs[0].early_media
        assert resumed.legs[0].ring_started is not None
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


def test_resume_data_of_a_long_plan_fits_asterisk_s_body_limit() -> None:
    # 100 attempts to carriers of long names and failover lists made 108 KB of ROUTER_RESUME:
    # every attempt's create (and the caller's variables) got 413 from Asterisk, whose HTTP
    # server takes 40,960 bytes of body at most. The plan is cut at its end to fit.
    policy = FailoverPolicy(retry=frozenset(range(400, 600)))
    attempts = [Attempt(i, Route(f"r{i:03d}", i, f"c{i:03d}" + "y" * 76),
                        Carrier(f"c{i:03d}" + "y" * 76, (f"t{i:03d}" + "x" * 76,),
                                failover=policy),
                        f"t{i:03d}" + "x" * 76, "+34911234567", 5.0, 45.0)
                for i in range(1, 101)]
    text = resume_data("+34911234567", "v1", "", attempts)
    assert len(text.encode()) <= RESUME_MAX
    resumed = parse_resume(text).attempts
    assert resumed and [a.index for a in resumed] == list(range(1, len(resumed) + 1))
    assert resumed[0].trunk == attempts[0].trunk and resumed[0].carrier.failover == policy


@pytest.mark.parametrize(("setup", "ring"), [(0.1, 0.1), (3600.0, 86400.0), (86400.0, 45.0)])
def test_resume_data_holds_every_timeout_a_routes_file_may_give(setup: float, ring: float) -> None:
    # A setup timeout of an hour or more, or a ring timeout of a whole day, passed validation
    # but not the resume check: a call left ringing across a restart was hung up (cause 34).
    attempt = Attempt(2, Route("r", 1, "alpha"), Carrier("alpha", ("carrier-a",)), "carrier-a",
                      "+34911234567", setup, ring)
    (resumed,) = parse_resume(resume_data("+34911234567", "v1", "", [attempt])).attempts
    assert (resumed.setup_timeout, resumed.ring_timeout) == (setup, ring)


@pytest.mark.parametrize(("setup", "ring"), [(0.0, 45.0), (5.0, 86401.0), (float("nan"), 45.0)])
def test_resume_data_with_timeouts_no_routes_file_gives_is_refused(setup: float,
                                                                   ring: float) -> None:
    attempt = Attempt(1, Route("r", 1, "alpha"), Carrier("alpha", ("carrier-a",)), "carrier-a",
                      "+34911234567", setup, ring)
    with pytest.raises(ValueError, match="not timeouts"):
        parse_resume(resume_data("+34911234567", "v1", "", [attempt]))


def add_unresumable_ringing_call(fake: FakeAsterisk) -> tuple[str, str]:
    """A caller and its ringing attempt in a bridge, as an earlier instance left them, with
    resume data that cannot be used; (caller, attempt)."""
    caller = fake.add_leftover_channel(NUMBER, state="Ring")
    leg = fake.add_leftover_channel("router-attempt,x", state="Ringing")
    fake.channels[leg].variables["ROUTER_RESUME"] = (  # all there, but the trace is broken
        '{"number":"+34911234567","version":"v1","trace":"a:b",'
        '"attempts":[[1,"first","alpha","carrier-a"]]}')
    fake.add_leftover_bridge([caller, leg])
    return caller, leg


async def test_a_ringing_attempt_with_unreadable_resume_data_is_ended_cleanly(lab: Lab) -> None:
    before = await cut(lab)
    fake = lab.fake
    caller, _ = add_unresumable_ringing_call(fake)
    await restore(lab, before)
    await wait_for(lambda: fake.leftovers() == ([], []))  # leg, caller (cause 34) and bridge
    assert fake.ended[caller].hangup_reason == "34"


@pytest.mark.parametrize("resume", [
    None,  # left by a version that did not put it on the caller
    '{"number":"+34911234567","version":"v1","trace":"","attempts":[]}',
    '{"number":"+34911234567","version":"v1","trace":"",'
    '"attempts":[[1,"first","alpha","carrier-a|forged"]]}',
    # What goes into a dial string is checked as the plan made it.
    '{"number":"+34911234567","version":"v1","trace":"","untried":true,'
    '"attempts":[[1,"first","alpha","carrier-a","91&PJSIP/forged",5,30,""]]}',
    '{"number":"+34911234567","version":"v1","trace":"","untried":true,'
    '"attempts":[[1,"first","alpha","carrier-a","+34911234567",5,-1,""]]}',
    '{"number":"+34911234567","version":"v1","trace":"","untried":true,'
    '"attempts":[[1,"first","alpha","carrier-a","+34911234567",5,30,"stop=forged"]]}',
])
async def test_a_caller_left_alone_without_usable_resume_data_is_ended_cleanly(
        lab: Lab, resume: str | None) -> None:
    before = await cut(lab)
    fake = lab.fake
    caller = fake.add_leftover_channel(NUMBER, state="Ring")
    if resume is not None:
        fake.channels[caller].variables["ROUTER_RESUME"] = resume
    fake.add_leftover_bridge([caller])
    await restore(lab, before)
    await wait_for(lambda: fake.leftovers() == ([], []))  # caller (cause 34) and bridge
    assert fake.ended[caller].hangup_reason == "34"
    assert fake.dials == {}
    assert "forged" not in fake.ended[caller].variables.get("ROUTER_ATTEMPTS", "")


async def test_resume_data_without_the_whole_attempt_is_not_resumed(lab: Lab) -> None:
    # Index, route, carrier and trunk only (an app before the data held the whole plan):
    # unreadable, not rebuilt from the table of the day.
    before = await cut(lab)
    fake = lab.fake
    lab.carriers("a503_b200")
    caller = fake.add_leftover_channel(NUMBER, state="Ring")
    fake.channels[caller].variables["ROUTER_RESUME"] = (
        '{"number":"+34911234567","version":"v1","trace":"","untried":true,'
        '"attempts":[[2,"second","bravo","carrier-b"]]}')
    fake.add_leftover_bridge([caller])
    await restore(lab, before)
    await wait_for(lambda: fake.leftovers() == ([], []))
    assert fake.ended[caller].hangup_reason == "34"
    assert fake.dials == {}


async def test_trunks_that_are_no_endpoint_are_warned_about_once_per_version(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    # A typo in a carrier's `trunks` passes `validate` (it cannot know Asterisk's endpoints);
    # its attempts failed at once on every call, with an ERROR per call and no other hint.
    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "no PJSIP endpoint" in r.getMessage()]

    await lab.app.check_trunks()
    assert warnings() == []  # the fixture's routes name carrier-a and carrier-b
    lab.snapshots.append(snapshot_of(ROUTES.replace("[carrier-b]", "[carrier-x, carrier-b]"),
                                     version="v9"))
    lab.app.routing_changed()
    await wait_for(lambda: len(warnings()) == 1)
    assert warnings()[0].startswith("routing version v9 names trunks that are no PJSIP "
                                    "endpoint of this Asterisk: carrier-x;")
    await lab.fake.drop_websockets()  # a reconnect checks again: the same, not said twice
    await wait_for(lambda: lab.fake.ws_connections == 2)
    await lab.app.check_trunks()
    assert len(warnings()) == 1


async def test_a_resume_whose_data_cannot_be_read_hangs_the_attempt_up(lab: Lab) -> None:
    # The new instance's read of the leg's ROUTER_RESUME got no reply (AriUnavailable): the
    # call ended in ERROR, but the attempt rang on, owned by the ended call, so no later
    # reconcile hung it up either; an answer met nobody (a code review).
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    lab.fake.dropping[f"GET /channels/{leg}/variable"] = 2  # (the pool retries once)
    async with a_new_instance(lab) as app:
        await wait_for(lambda: leg not in lab.fake.channels and not lab.fake.bridges)
        assert lab.fake.ended[caller].hangup_reason == "34"
        # the call's end unregisters its channels last
        await wait_for(lambda: any(c.caller_id == caller for c in app.finished))
        assert leg not in app.owners and caller not in app.owners


async def test_with_no_routing_table_a_caller_left_alone_goes_on_with_its_plan(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    # An instance started while Redis was down: the call task died on an IndexError and the
    # caller waited in silence in its bridge. The plan is in the caller's ROUTER_RESUME.
    caller, leg = await ringing_call(lab)  # carrier-a rings; carrier-b would answer
    await stop(lab.runner, lab.ari)
    lab.fake.carrier_fails(leg, 34, 503)  # ends while no instance runs
    async with a_new_instance(lab, routing=False):
        await wait_for(lambda: lab.fake.channels[caller].state == "Up")  # carrier-b
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))
    assert "crashed" not in caplog.text and "call failed" not in caplog.text


async def test_with_no_routing_table_a_ringing_attempt_rings_on(lab: Lab) -> None:
    # It was hung up ("nothing to resume") and the caller got 503.
    caller, leg = await ringing_call(lab)
    await stop(lab.runner, lab.ari)
    async with a_new_instance(lab, routing=False) as app:
        call = app.owners[caller]
        await wait_for(lambda: bool(call.legs))  # it read the leg's ROUTER_RESUME
        assert leg in lab.fake.channels and caller in lab.fake.channels
        lab.fake.answer(leg)
        await wait_for(lambda: lab.fake.channels[caller].state == "Up")
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


@pytest.mark.parametrize(("cause", "sip", "dials", "trace"), [
    (34, 503, {"carrier-a": 1, "carrier-b": 1},
     "carrier-a:congestion:34:503|carrier-b:answered:16:200"),
    (17, 486, {"carrier-a": 1}, "carrier-a:busy:17:486"),
])
async def test_an_attempt_gone_unseen_when_its_timer_fires_is_judged_on_its_answer(
        lab: Lab, cause: int, sip: int, dials: dict[str, int], trace: str) -> None:
    # The carrier answered 503 while the websocket was down; the ring timer fired before it
    # came back and judged a channel already gone: "no answer", the call stopped, the
    # failover lost (a lab acceptance run, 8 of 8). A 486 so ended stops it as busy.
    caller, leg = await ringing_call(lab, ring_timeout="1")
    before = await cut(lab)
    lab.fake.carrier_fails(leg, cause, sip)
    call = lab.app.owners[caller]
    assert isinstance(call, Call)
    await wait_for(lambda: call.legs[0].state is AttemptState.FAILED)
    await restore(lab, before)
    if cause == 17:
        await wait_for(lambda: caller in lab.fake.ended)
        assert lab.fake.ended[caller].hangup_reason == "17"
    else:
        await wait_for(lambda: lab.fake.channels[caller].state == "Up")
        lab.fake.caller_hangup(caller)
    # (judged on the hash: the cause Asterisk gives that SIP response, as for any attempt)
    await wait_for(lambda: lab.vars_of(caller).get("ROUTER_ATTEMPTS") == trace)
    assert lab.fake.dials == dials
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_credentials_refused_while_connected_end_the_calls_once_they_work_again(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    # Asterisk checks credentials only at the websocket's handshake: after a password change
    # (module reload res_ari) the websocket stayed up and every request got 401. Calls then
    # waited in Stasis, their phones in silence, and the carrier of a bridged call was never
    # hung up (lab acceptance run). Now the app disconnects (Stasis() fails: 503), and once
    # the credentials work again its reconcile ends what was left.
    lab.carriers("a200")
    bridged = await lab.started(lab.fake.new_caller(NUMBER))
    await wait_for(lambda: lab.fake.channels[bridged.caller_id].state == "Up"
                   and "ROUTER_ATTEMPTS" in lab.fake.channels[bridged.caller_id].variables)
    carrier_leg = bridged.legs[0].channel_id
    before = lab.fake.ws_connections
    password, lab.fake.password = lab.fake.password, "changed"
    caller = lab.fake.new_caller(NUMBER)  # its StasisStart comes on the open websocket
    await wait_for(lambda: not lab.ari.connected.is_set())
    lab.fake.caller_hangup(bridged.caller_id)  # while nothing can reach Asterisk
    refused = [r for r in caplog.records if r.getMessage().startswith("ARI refused a request")]
    assert len(refused) == 1 and "ARI_USERNAME/ARI_PASSWORD" in refused[0].getMessage()
    lab.app.reconciled.clear()
    lab.fake.password = password
    await wait_for(lambda: lab.fake.ws_connections > before)
    await lab.app.reconciled.wait()
    await wait_for(lambda: caller in lab.fake.ended)
    assert lab.fake.ended[caller].hangup_reason == "34"  # the router's decision: 503
    assert lab.fake.dials == {"carrier-a": 1}  # the refused call's trunk was never dialled
    await wait_for(lambda: lab.fake.leftovers() == ([], []))
    assert carrier_leg not in lab.fake.channels


async def test_a_caller_whose_hangup_asterisk_did_not_take_is_hung_up_not_routed_again(
        lab: Lab) -> None:
    # Every attempt failed while Asterisk took no request (its HTTP server away): the call
    # ended, the caller's hangup undelivered. The next reconcile took the caller for one whose
    # StasisStart was missed and routed it again from the first trunk, which got a second
    # INVITE (lab acceptance run, 5 of 5). The router's decision stands: hung up, 503.
    lab.carriers("a503_b503")
    caller = lab.fake.new_caller(NUMBER)
    lab.fake.dropping[f"DELETE /channels/{caller}"] = 100  # no answer, however often asked
    await lab.finished(caller)
    assert caller in lab.fake.channels and lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    lab.fake.dropping.clear()
    lab.app.reconciled.clear()
    await lab.fake.drop_websockets()  # the connection comes back: a reconcile
    await lab.app.reconciled.wait()
    await wait_for(lambda: caller in lab.fake.ended)
    assert lab.fake.ended[caller].hangup_reason == "34"
    assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_an_attempt_whose_hangup_asterisk_did_not_take_is_hung_up_at_the_reconnect(
        lab: Lab) -> None:
    # The setup timer's hangup of a silent trunk was never taken (connections refused): the
    # call went on to the next trunk, and the silent one went on ringing, until Asterisk's
    # own /dial timeout. The reconnect's reconcile hangs it up; the call goes on.
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")))
    lab.carriers("a-unreachable_b200")
    lab.fake.dropping["DELETE /channels/ora-*"] = 100
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up", within=10)
    silent = call.legs[0].channel_id
    assert silent in lab.fake.channels and lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    lab.fake.dropping.clear()
    lab.app.reconciled.clear()
    await lab.fake.drop_websockets()
    await lab.app.reconciled.wait()
    await wait_for(lambda: silent not in lab.fake.channels, within=1)
    assert lab.fake.channels[caller].state == "Up"  # the answered call goes on
    await hang_up_answered(lab, caller)


async def outage_at_the_ring_timer(lab: Lab, meanwhile: Callable[[str], None]) -> tuple[str, str]:
    """A ringing call (ring timer 1 s) loses ARI altogether (no websocket, every request
    unanswered); ``meanwhile(leg)`` happens at the carrier; once the ring timer has fired,
    ARI comes back. (caller, leg)."""
    caller, leg = await ringing_call(lab, ring_timeout="1")
    call = lab.app.owners[caller]
    assert isinstance(call, Call)
    before = await cut(lab)
    lab.fake.dropping["*"] = 1_000_000
    meanwhile(leg)
    await wait_for(lambda: call.legs[0].ari_wait_until is not None
                   or call.legs[0].state is AttemptState.FAILED)
    lab.fake.dropping.clear()
    await restore(lab, before)
    return caller, leg


async def test_a_503_during_an_ari_outage_at_the_ring_timer_fails_over(lab: Lab) -> None:
    # The timer's check got no answer from ARI; judged then, the carrier's 503 was taken for
    # no answer: the phone got 480, the next trunk untried (lab acceptance run, 8 of 8).
    caller, _ = await outage_at_the_ring_timer(
        lab, lambda leg: lab.fake.carrier_fails(leg, 34, 503))
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    await hang_up_answered(lab, caller)
    assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == (
        "carrier-a:congestion:34:503|carrier-b:answered:16:200")


async def test_a_callee_who_answers_during_an_ari_outage_at_the_ring_timer_stays_connected(
        lab: Lab) -> None:
    # Asterisk connected the callee through the call's bridge while ARI was away; judged at
    # the timer, the call took the answer for one crossing its hangup and cut the
    # conversation once ARI was back (lab acceptance run, 3 of 3).
    caller, leg = await outage_at_the_ring_timer(lab, lab.fake.answer_unheard)
    await wait_for(lambda: lab.vars_of(caller).get("ROUTER_ATTEMPTS")
                   == "carrier-a:answered:16:200")
    assert leg in lab.fake.channels and lab.fake.channels[caller].state == "Up"
    assert caller not in lab.fake.ended and lab.fake.dials == {"carrier-a": 1}
    await hang_up_answered(lab, caller)


async def test_an_attempt_ari_could_not_be_reached_to_create_is_made_once_it_is_back(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # A failover during an ARI outage: the next trunk's create found no connection (nothing
    # sent). Taken for that trunk's failure, the call failed with every trunk untried.
    from ari_app.http import NotConnected

    lab.carriers("a503_b200")
    create = lab.ari.create_channel
    before: list[int] = []

    async def create_during_an_outage(endpoint: str, **kwargs: Any) -> Any:
        if endpoint.endswith("@carrier-b") and not before:
            before.append(await cut(lab))
            raise AriUnavailable("POST /channels/create: cannot connect") from NotConnected()
        return await create(endpoint, **kwargs)

    monkeypatch.setattr(lab.ari, "create_channel", create_during_an_outage)
    caller = lab.fake.new_caller(NUMBER)
    await wait_for(lambda: before)
    await restore(lab, before[0])
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    await hang_up_answered(lab, caller)


async def test_a_read_only_ari_user_is_said_once_not_at_every_reconnect(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    # read_only = yes: the websocket's handshake (a GET) passes, every write gets 403. The app
    # connects, is refused, disconnects, again and again: one ERROR says it, not three lines
    # a cycle (28 cycles in three 20 s outages on the lab).
    key = f"PUT /applications/{lab.fake.app}/eventFilter"
    before = lab.fake.ws_connections
    lab.fake.failing[key] = 403
    await lab.fake.drop_websockets()
    await wait_for(lambda: lab.fake.ws_connections >= before + 3)
    del lab.fake.failing[key]
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= 30]
    refused = [m for level, m in lines if m.startswith("ARI refused a request")]
    assert len(refused) == 1 and "read_only = no" in refused[0]
    assert not [m for _, m in lines if "event filter failed" in m or "closed (code" in m][1:]


async def answer_while_ari_is_away(lab: Lab, away_long_enough: Callable[[Call, str], bool]
                                   ) -> None:
    """A ringing call (ring timer 1 s) loses ARI altogether and its callee answers; once
    ``away_long_enough(call, leg)``, ARI takes requests again, its websocket still away: the
    callee stays connected, rung once, and the timer's check records the answer."""
    caller, leg = await ringing_call(lab, ring_timeout="1")
    call = lab.app.owners[caller]
    assert isinstance(call, Call)
    before = await cut(lab)
    lab.fake.dropping["*"] = 1_000_000
    lab.fake.answer_unheard(leg)
    await wait_for(lambda: away_long_enough(call, leg))
    lab.fake.dropping.clear()  # requests reach Asterisk again; the websocket stays away
    await wait_for(lambda: lab.vars_of(caller).get("ROUTER_ATTEMPTS")
                   == "carrier-a:answered:16:200")
    assert leg in lab.fake.channels and caller not in lab.fake.ended
    assert lab.fake.dials == {"carrier-a": 1}
    await restore(lab, before)
    await hang_up_answered(lab, caller)


async def test_the_timer_checks_once_more_when_its_wait_for_ari_ends(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # ARI answered requests again just before the end of the wait, its websocket not back:
    # the timer judged without checking again, hung up a callee who had answered during the
    # outage and the caller with "no answer" (lab review run, 2 of 2).
    monkeypatch.setattr("ari_app.call.ARI_AWAY_RECHECK", 0.5)
    await answer_while_ari_is_away(lab, lambda call, _: call.legs[0].ari_wait_until is not None)


async def test_a_timer_is_not_judged_before_ari_answers_however_long_it_stays_away(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Judged blind at the end of a bounded wait for ARI, the attempt's hangup was tried again
    # and reached Asterisk as ARI came back (its websocket later): the callee who had
    # answered during the outage was cut, and the caller with "no answer".
    monkeypatch.setattr("ari_app.call.ARI_AWAY_WAIT", 0.3)  # the bound it had
    monkeypatch.setattr("ari_app.call.ARI_AWAY_RECHECK", 0.1)

    def blind_hangup_or_away_long(call: Call, leg: str) -> bool:
        asked = [f"{m} {p}" for m, p, _ in lab.fake.requests]
        checks = asked.count(f"POST /bridges/{call.bridge_id}/removeChannel")
        return f"DELETE /channels/{leg}" in asked or checks >= 6

    await answer_while_ari_is_away(lab, blind_hangup_or_away_long)
