"""Races between the app's timers or a restart and what the carrier did meanwhile, each played
against the fake Asterisk: an answer or a busy crossing a timer's hangup, our own hangup's
request, a callee who hung up while no instance ran."""

from __future__ import annotations

from typing import Any

import pytest
from ari_support import ROUTES, Lab, answer_before_each_hangup, snapshot_of, wait_for
from test_reconnect import cut, restore

NUMBER = "911234567"

#: carrier-a's carrier tries the next one after a no-answer (480) too.
RETRY_ON_NO_ANSWER = ROUTES.replace("alpha: {trunks: [carrier-a]}",
                                    "alpha: {trunks: [carrier-a], failover: {retry: [480]}}")


async def test_an_answer_that_crosses_the_ring_timer_s_hangup_does_not_ring_the_callee_again(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # carrier-a rings past ring_timeout; its callee picks up just as the app's DELETE leaves
    # (the 200 crosses the CANCEL: ACK and BYE). The carrier retries on no-answer (480), as
    # a carrier whose "no answer" is often a dead leg is configured; but this callee did
    # answer: carrier-b must not ring them again (as after the setup timer).
    fake = lab.fake
    lab.snapshots.append(snapshot_of(RETRY_ON_NO_ANSWER))
    lab.carriers("a480-noanswer_b200")
    answer_before_each_hangup(lab, monkeypatch)
    caller = fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call in lab.app.finished or fake.dials["carrier-b"])
    assert fake.dials == {"carrier-a": 1}  # the callee who picked up is not rung again
    await lab.finished(caller)
    assert call.result is not None and call.result.trace == "carrier-a:answered:16:200"
    assert fake.ended[call.caller_id].hangup_reason == "16"
    await wait_for(lambda: fake.leftovers() == ([], []))


async def test_a_busy_whose_events_trail_the_setup_timer_s_check_still_stops_the_call(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # carrier-a's 486 reaches Asterisk just as the setup timer fires: the channel is gone when
    # the check asks for it (400/404), and its ChannelHangupRequest 17/486 is still on its way
    # on the websocket (another connection than the REST reply). The busy must count, not the
    # timer: judged a dead trunk, the next carrier rang the busy callee.
    fake = lab.fake
    lab.carriers("a-unreachable_b200")  # carrier-a silent until it turns the call down
    remove = lab.ari.remove_channel

    async def busy_first(bridge_id: str, channel_id: str) -> None:
        held: list[dict[str, object]] = []
        emit = fake._emit
        monkeypatch.setattr(fake, "_emit", held.append)
        fake.carrier_fails(channel_id, 17, 486)  # gone in Asterisk, its events not sent yet
        monkeypatch.setattr(fake, "_emit", emit)
        try:
            await remove(bridge_id, channel_id)
        finally:
            for event in held:  # they follow the REST reply
                emit(event)

    monkeypatch.setattr(lab.ari, "remove_channel", busy_first)
    caller = fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call in lab.app.finished or fake.dials["carrier-b"])
    assert fake.dials == {"carrier-a": 1}  # the busy callee is not rung through carrier-b
    await lab.finished(caller)
    assert call.result is not None and call.result.trace == "carrier-a:busy:17:486"
    assert fake.ended[caller].hangup_reason == "17"
    await wait_for(lambda: fake.leftovers() == ([], []))


async def test_the_hangup_request_our_own_hangup_brings_does_not_override_the_setup_timer(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Recorded on the lab (races/create-then-dial-409-not-in-stasis): a channel the app hangs
    # up shows a soft request (32), then, as it ends, a request of its own, 16/603. That one
    # is our hangup's, not the carrier's: the dead trunk is still failed over.
    fake = lab.fake
    lab.carriers("a-unreachable_b200")
    destroy = fake._destroy

    def with_own_request(ch: Any, cause: int, tech_cause: int | None) -> None:
        if ch.name.startswith("PJSIP/carrier-a-") and ch.id in fake.channels:
            fake._emit({"type": "ChannelHangupRequest", "cause": 16, "tech_cause": 603,
                        "channel": ch.json()})
        destroy(ch, cause, tech_cause)

    monkeypatch.setattr(fake, "_destroy", with_own_request)
    caller = fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: fake.channels.get(caller) is not None
                   and fake.channels[caller].state == "Up")
    assert fake.dials == {"carrier-a": 1, "carrier-b": 1}
    assert call.trace[0].outcome == "unreachable"
    fake.caller_hangup(caller)
    await lab.finished(caller)
    await wait_for(lambda: fake.leftovers() == ([], []))


async def test_a_connected_caller_whose_callee_hung_up_while_no_instance_ran_is_cleared_normally(
        lab: Lab) -> None:
    # An earlier instance stopped with the call bridged (it goes on without the router); the
    # callee hung up before the next instance came: the bridge holds the answered caller
    # alone. It is a finished conversation, not a failed call: hung up with 16, not 34 (a
    # CDR with hangupcause 34, "congestion", for a call that was talked through).
    fake = lab.fake
    before = await cut(lab)
    caller = fake.add_leftover_channel(NUMBER, state="Up")
    fake.add_leftover_bridge([caller])
    await restore(lab, before)
    await wait_for(lambda: caller not in fake.channels)
    assert fake.ended[caller].hangup_reason == "16"


LONG_RING = ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")


async def test_an_attempt_whose_hangup_never_reached_asterisk_is_hung_up_before_the_next(
        lab: Lab) -> None:
    # carrier-a sends nothing: its setup timer hangs it up, and Asterisk closes every DELETE
    # unanswered (past its session limit) until the app gives up: carrier-b was dialled while
    # carrier-a's INVITE went on (until /dial's own timeout), and nothing hung carrier-a up.
    fake = lab.fake
    lab.snapshots.append(snapshot_of(LONG_RING))  # /dial's own timeout: 33 s
    lab.carriers("a-unreachable_b200")
    fake.dropping["DELETE /channels/ora-*"] = 100
    caller = fake.new_caller(NUMBER)
    call = await lab.started(caller)
    # three hangups, each resent once by the connection pool, then given up
    await wait_for(lambda: sum(r[0] == "DELETE" for r in fake.requests) == 6)
    fake.dropping.clear()  # Asterisk answers again
    await wait_for(lambda: len(call.legs) == 2, within=10)
    first = call.legs[0].channel_id
    assert first in fake.ended  # before the next trunk was dialled
    await wait_for(lambda: caller in fake.channels and fake.channels[caller].state == "Up")
    assert fake.dials == {"carrier-a": 1, "carrier-b": 1}
    fake.far_end_hangup(caller)
    await lab.finished(caller)
