"""REST requests that Asterisk does not answer (closed unanswered past its HTTP sessionlimit,
a timeout under load, ARI away) while the call goes on; mostly with the events websocket up,
so that no reconnect's reconcile comes to put things right. From a review of the ARI app's
behaviour when ARI misbehaves: each test failed before its fix."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from ari_support import ROUTES, Lab, hang_up_answered, snapshot_of, wait_for
from test_reconnect import add_unresumable_ringing_call, cut, restore

from ari_app import events as ev
from ari_app.call import Call
from ari_app.client import AriUnavailable
from ari_app.http import NotSent
from ari_app.leg import AttemptState

NUMBER = "911234567"
LONG_RING = ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")


@pytest.fixture
def owed_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ari_app.app.OWED_RETRY", 0.2, raising=False)


async def answered_call(lab: Lab) -> tuple[str, Call]:
    """A call carrier-a answered: (its caller, the call)."""
    lab.carriers("a200")
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    return caller, call


def deletes_of(lab: Lab, channel_id: str) -> int:
    return lab.fake.paths("DELETE").count(f"/channels/{channel_id}")


@pytest.mark.parametrize("rings_first", [False, True])
async def test_a_leg_whose_timer_check_got_no_reply_goes_back_into_the_bridge(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, rings_first: bool) -> None:
    # The setup timer's check took the leg out of the bridge, then its GET got no reply (a
    # busy Asterisk's timeout): the call waits for ARI, the websocket up. The leg's 180 and
    # 200 came as events: the caller heard no ringback, and was answered into a bridge
    # without the callee (both up, in silence).
    lab.snapshots.append(snapshot_of(LONG_RING))
    lab.carriers("a-unreachable_b200")
    failed: list[str] = []
    get = lab.ari.get_channel

    async def no_reply_once(channel_id: str) -> Any:
        if not failed:
            failed.append(channel_id)
            raise AriUnavailable(f"GET /channels/{channel_id}: TimeoutError: no answer in time")
        return await get(channel_id)

    monkeypatch.setattr(lab.ari, "get_channel", no_reply_once)
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: failed and call.legs[0].ari_wait_until is not None)
    leg = call.legs[0].channel_id
    members = lab.fake.bridges[call.bridge_id]["channels"]
    assert leg not in members
    if rings_first:
        lab.fake.ring(leg)
        await wait_for(lambda: leg in members)  # ringback
    lab.fake.answer(leg)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    await wait_for(lambda: sorted(members) == sorted([caller, leg]))
    assert lab.fake.dials == {"carrier-a": 1}
    await hang_up_answered(lab, caller)


async def test_an_owed_caller_hangup_that_fails_again_at_the_reconcile_is_still_owed(
        lab: Lab) -> None:
    # Every attempt failed while Asterisk took no DELETE of the caller: its hangup is owed.
    # The reconnect's reconcile sent it and Asterisk did not take that one either: the debt
    # was forgotten, and the next reconcile took the caller for one whose StasisStart was
    # missed and routed it again: carrier-a and carrier-b got a second INVITE.
    lab.carriers("a503_b503")
    caller = lab.fake.new_caller(NUMBER)
    lab.fake.dropping[f"DELETE /channels/{caller}"] = 100
    await lab.finished(caller)
    assert caller in lab.fake.channels and lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}
    for _ in range(2):  # the first reconnect's hangup is dropped too
        tried = deletes_of(lab, caller)
        lab.app.reconciled.clear()
        await lab.fake.drop_websockets()
        await lab.app.reconciled.wait()
        await wait_for(lambda n=tried: deletes_of(lab, caller) > n
                       or sum(lab.fake.dials.values()) > 2)
        lab.fake.dropping.clear()
    await wait_for(lambda: caller in lab.fake.ended)
    assert lab.fake.dials == {"carrier-a": 1, "carrier-b": 1}, "the trunks rang twice"
    assert lab.fake.ended[caller].hangup_reason == "34"


async def test_an_owed_caller_hangup_is_paid_with_the_websocket_up(
        lab: Lab, owed_retry: None) -> None:
    # Asterisk closed every try of the caller's hangup unanswered, the websocket up: the
    # debt waited for a reconnect that never came, the phone in Stasis in silence.
    lab.carriers("a503_b503")
    caller = lab.fake.new_caller(NUMBER)
    lab.fake.dropping[f"DELETE /channels/{caller}"] = 100
    await lab.finished(caller)
    lab.fake.dropping.clear()  # Asterisk answers again a moment later
    assert lab.ari.connected.is_set() and caller in lab.fake.channels
    await wait_for(lambda: caller in lab.fake.ended)
    assert lab.fake.ended[caller].hangup_reason == "34"


async def test_an_owed_attempt_hangup_is_paid_with_the_websocket_up(
        lab: Lab, owed_retry: None) -> None:
    # carrier-a is silent; its setup timer's hangup and the one sent again were closed
    # unanswered, the websocket up. The call went on and carrier-b answered; carrier-a's
    # channel rang on and, answered late, sat up in Stasis connected to nobody past the
    # call's end (/dial's timeout no longer applies once answered).
    fake = lab.fake
    lab.snapshots.append(snapshot_of(LONG_RING))
    lab.carriers("a-unreachable_b200")
    fake.dropping["DELETE /channels/ora-*"] = 100
    caller = fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: len(call.legs) == 2, within=10)
    fake.dropping.clear()
    await wait_for(lambda: fake.channels[caller].state == "Up")
    first = call.legs[0].channel_id
    assert lab.ari.connected.is_set() and fake.dials == {"carrier-a": 1, "carrier-b": 1}
    await wait_for(lambda: first not in fake.channels)
    assert fake.channels[caller].state == "Up"  # the answered call goes on
    await hang_up_answered(lab, caller)


async def test_a_caller_whose_callee_hung_up_is_hung_up_with_the_websocket_up(
        lab: Lab, owed_retry: None) -> None:
    # A bridged call: the callee hung up, and every try of the caller's hangup was closed
    # unanswered, the websocket up: the phone stayed answered, alone, until its user hung up.
    caller, call = await answered_call(lab)
    lab.fake.dropping[f"DELETE /channels/{caller}"] = 100
    lab.fake.far_end_hangup(call.legs[0].channel_id)
    await lab.finished(caller)
    lab.fake.dropping.clear()
    assert lab.ari.connected.is_set() and caller in lab.fake.channels
    await wait_for(lambda: lab.fake.leftovers() == ([], []))
    assert lab.fake.ended[caller].hangup_reason == "16"


async def test_a_first_attempt_ari_could_not_be_reached_to_create_is_made_once_it_is_back(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # As test_reconnect's test for a later attempt, for a call's first: its bridge is created
    # alongside it, and found no connection either. The create was made again once ARI was
    # back, and the call ended in ERROR (503 to the phone) on the bridge's error: no trunk
    # tried.
    from ari_app.http import NotConnected

    lab.carriers("a200")
    create, create_bridge = lab.ari.create_channel, lab.ari.create_bridge
    before: list[int] = []

    async def bridge_during_an_outage(bridge_id: str, **kwargs: Any) -> Any:
        if not before:
            raise AriUnavailable("POST /bridges: cannot connect") from NotConnected()
        return await create_bridge(bridge_id, **kwargs)

    async def create_during_an_outage(endpoint: str, **kwargs: Any) -> Any:
        if not before:
            before.append(await cut(lab))
            raise AriUnavailable("POST /channels/create: cannot connect") from NotConnected()
        return await create(endpoint, **kwargs)

    monkeypatch.setattr(lab.ari, "create_bridge", bridge_during_an_outage)
    monkeypatch.setattr(lab.ari, "create_channel", create_during_an_outage)
    caller = lab.fake.new_caller(NUMBER)
    await wait_for(lambda: before)
    await restore(lab, before[0])
    await wait_for(lambda: caller in lab.fake.ended
                   or lab.fake.channels[caller].state == "Up")
    assert caller not in lab.fake.ended, lab.vars_of(caller)
    assert lab.fake.dials == {"carrier-a": 1}
    await hang_up_answered(lab, caller)


async def test_a_create_carried_out_whose_reply_was_lost_goes_on(lab: Lab) -> None:
    # Asterisk carried out POST /channels/create and the reply was lost (the connection
    # closed unanswered); the HTTP pool sent it again (a kept-alive connection closed with no
    # answer looks like one Asterisk closed while idle): 409, our id exists. Taken for the
    # trunk's failure: carrier-a was never dialled, carrier-b was, and carrier-a's channel
    # sat in Stasis past the call's end.
    lab.carriers("a503_b200")
    await hang_up_answered(lab, lab.fake.new_caller(NUMBER))  # a connection to reuse
    lab.fake.lost_replies["POST /channels/create"] = 1
    caller = lab.fake.new_caller(NUMBER)
    await lab.started(caller)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert lab.fake.dials == {"carrier-a": 2, "carrier-b": 2}  # (the first call's too)
    await hang_up_answered(lab, caller)


async def test_a_bridge_created_whose_reply_was_lost_goes_on(lab: Lab) -> None:
    # As for the create of an attempt: a kept-alive connection closed with no answer after
    # Asterisk made the call's bridge, the pool sent POST /bridges again, 409 "Bridge with id
    # ... already exists": the call ended in ERROR (503 to the phone, no trunk tried) and
    # the bridge stayed in Asterisk until the next reconcile.
    lab.carriers("a200")
    await asyncio.gather(*(lab.ari.list_bridges() for _ in range(4)))  # kept-alive connections
    lab.fake.lost_replies["POST /bridges"] = 1
    caller = lab.fake.new_caller(NUMBER)
    await lab.started(caller)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert lab.fake.paths("POST").count("/bridges") == 2  # the fault did happen
    assert lab.fake.dials == {"carrier-a": 1}
    await hang_up_answered(lab, caller)


@pytest.mark.parametrize("how", ["closed-unanswered", "500"])
async def test_a_bridge_whose_destruction_asterisk_did_not_take_is_destroyed_later(
        lab: Lab, owed_retry: None, how: str) -> None:
    # An answered call ended while Asterisk closed the DELETE of its bridge unanswered (or
    # failed it), the websocket up: ARI keeps a bridge after its channels leave, so it
    # stayed for good. A bench past the lab's capacity left 230 such bridges.
    caller, call = await answered_call(lab)
    faults = lab.fake.dropping if how == "closed-unanswered" else lab.fake.failing
    faults[f"DELETE /bridges/{call.bridge_id}"] = 100 if how == "closed-unanswered" else 500
    lab.fake.caller_hangup(caller)
    await lab.finished(caller)
    assert lab.fake.leftovers() == ([], [call.bridge_id])
    faults.clear()  # Asterisk takes requests again
    assert lab.ari.connected.is_set()
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_an_owed_bridge_gone_meanwhile_is_not_destroyed_again(
        lab: Lab, owed_retry: None) -> None:
    # The DELETE went through but its reply was lost (twice: a request that a reused
    # connection answered with nothing is sent again once, on a new one): the bridge is
    # owed, and the next reconcile finds it gone. It sends no DELETE more (nor goes on
    # listing for ever).
    caller, call = await answered_call(lab)
    delete = f"DELETE /bridges/{call.bridge_id}"
    lab.fake.lost_replies[delete] = 2
    await hang_up_answered(lab, caller)
    assert lab.fake.leftovers() == ([], [])
    listed = lab.fake.paths("GET").count("/bridges")
    await wait_for(lambda: lab.fake.paths("GET").count("/bridges") > listed)
    await asyncio.sleep(0)  # (the reconcile acts on the lists it got)
    assert lab.fake.paths("DELETE").count(f"/bridges/{call.bridge_id}") == 2
    assert lab.app._paying is not None
    await asyncio.wait_for(lab.app._paying, 5)  # nothing owed any more: the payer ends


async def test_a_late_created_channel_whose_hangup_asterisk_did_not_take_is_owed(
        lab: Lab, owed_retry: None) -> None:
    # carrier-a's create got its reply after the app had given it up; the channel's
    # StasisStart came later still, and its hangup was closed unanswered (an overloaded
    # Asterisk), the websocket up. Marked as hung up, the channel was left out of the call's
    # cleanup too: it stayed in the app, never dialled, past the call's end.
    lab.ari.http._timeout = 0.3
    lab.carriers("a503_b200")
    lab.fake.stasis_delay_for["carrier-a"] = 0.6
    reply = lab.fake.held_replies["POST /channels/create"] = asyncio.Event()
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: bool(call.legs) and call.legs[0].state is AttemptState.FAILED)
    late = call.legs[0].channel_id
    lab.fake.dropping[f"DELETE /channels/{late}"] = 100
    reply.set()  # (carrier-b's create, sent meanwhile, is answered now)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")  # carrier-b
    await wait_for(lambda: lab.fake.paths("DELETE").count(f"/channels/{late}") >= 2)
    lab.fake.dropping.clear()  # Asterisk takes requests again
    assert lab.ari.connected.is_set()
    await wait_for(lambda: late in lab.fake.ended)  # before the call's end
    assert lab.fake.dials == {"carrier-b": 1}
    await hang_up_answered(lab, caller)


async def test_a_leftover_attempt_whose_hangup_asterisk_did_not_take_is_owed(
        lab: Lab, owed_retry: None) -> None:
    # An attempt channel entered the app after its call had ended (it raced with the call's
    # end), and its hangup was closed unanswered, the websocket up: sent once and
    # forgotten, it left the channel in the app for good.
    stray = f"{ev.ATTEMPT_ID_PREFIX}0123456789ab"
    lab.fake.dropping[f"DELETE /channels/{stray}"] = 100
    lab.fake.new_caller(ev.ATTEMPT_ARG, channel_id=stray)
    await wait_for(lambda: lab.fake.paths("DELETE").count(f"/channels/{stray}") >= 2)
    lab.fake.dropping.clear()  # Asterisk takes requests again
    assert lab.ari.connected.is_set()
    await wait_for(lambda: stray in lab.fake.ended)
    assert lab.fake.dials == {}


async def test_the_other_side_of_an_adopted_call_is_hung_up_once_asterisk_takes_it(
        lab: Lab, owed_retry: None) -> None:
    # A bridged call adopted after a restart: the callee hung up, and the caller's hangup
    # was closed unanswered, the websocket up. Sent once and forgotten, it left the phone
    # answered, alone, until its user hung up.
    before = await cut(lab)
    fake = lab.fake
    caller = fake.add_leftover_channel(NUMBER, state="Up")
    leg = fake.add_leftover_channel("router-attempt,y", state="Up")
    bridge = fake.add_leftover_bridge([caller, leg])
    await restore(lab, before)
    await wait_for(lambda: any(t.get_name() == f"adopted-{bridge}" for t in lab.app.tasks))
    fake.dropping[f"DELETE /channels/{caller}"] = 100
    fake.far_end_hangup(leg)
    await wait_for(lambda: fake.paths("DELETE").count(f"/channels/{caller}") >= 2)
    fake.dropping.clear()  # Asterisk takes requests again
    assert lab.ari.connected.is_set()
    await wait_for(lambda: fake.leftovers() == ([], []))
    assert fake.ended[caller].hangup_reason == "16"


async def test_a_resumed_attempt_whose_hangup_asterisk_did_not_take_is_owed(
        lab: Lab, owed_retry: None) -> None:
    # A ringing attempt left by an earlier instance, with resume data that cannot be used:
    # the call is ended, and the attempt's hangup was closed unanswered, the websocket up.
    # Sent once and forgotten, it left the attempt ringing until Asterisk's /dial timeout
    # (and, answered meanwhile, up in Stasis connected to nobody).
    before = await cut(lab)
    fake = lab.fake
    caller, leg = add_unresumable_ringing_call(fake)
    fake.dropping[f"DELETE /channels/{leg}"] = 100
    await restore(lab, before)
    await wait_for(lambda: fake.paths("DELETE").count(f"/channels/{leg}") >= 2)
    await wait_for(lambda: caller in fake.ended)
    fake.dropping.clear()  # Asterisk takes requests again
    assert lab.ari.connected.is_set()
    await wait_for(lambda: fake.leftovers() == ([], []))


async def test_a_leg_hangup_not_sent_for_want_of_a_connection_is_owed_not_retried_inline(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, owed_retry: None,
        caplog: pytest.LogCaptureFixture) -> None:
    # The pool was full for a whole request timeout: sent again at once, it waited another
    # timeout each time while the next trunk waited too. It is owed, and paid later.
    caplog.set_level(logging.INFO, logger="ari_app.call")
    lab.snapshots.append(snapshot_of(LONG_RING))
    lab.carriers("a-unreachable_b200")
    hangup = lab.ari.hangup
    tries: list[str] = []

    async def pool_full_once(channel_id: str, reason: int | None = None) -> Any:
        tries.append(channel_id)
        if channel_id.startswith(ev.ATTEMPT_ID_PREFIX) and tries.count(channel_id) == 1:
            raise AriUnavailable(f"DELETE /channels/{channel_id}: NotSent: not sent") \
                from NotSent("not sent: no connection free within 10 s")
        return await hangup(channel_id, reason)

    monkeypatch.setattr(lab.ari, "hangup", pool_full_once)
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: len(call.legs) == 2, within=10)
    first = call.legs[0].channel_id
    await wait_for(lambda: first not in lab.fake.channels)  # the owed hangup, paid
    assert not [m for r in caplog.records if "again in" in (m := r.getMessage())]
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    await hang_up_answered(lab, caller)
