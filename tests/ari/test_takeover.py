"""Another instance takes the application over (ApplicationReplaced): Asterisk sends the app's
events to the newest websocket only, the newer instance adopts or resumes the calls, and the
older one must leave them without a single request to Asterisk (docs/ari.md)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from ari_support import ROUTES, Lab, answer_resumed, snapshot_of, wait_for
from fake_ari import Behaviour
from test_reconnect import NUMBER, a_new_instance, ringing_call

from ari_app.call import Call
from ari_app.leg import AttemptState


def record_requests(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every REST request the old instance's client makes from now on."""
    requests: list[tuple[str, str]] = []
    request = lab.ari._request

    async def recorded(method: str, path: str, *args: object, **kwargs: object) -> object:
        requests.append((method, path))
        return await request(method, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lab.ari, "_request", recorded)
    return requests


async def test_an_instance_whose_application_is_taken_over_leaves_its_calls_to_the_other(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two instances on one Asterisk with one ARI_APP (a deploy that starts the new service
    # before it stops the old): Asterisk sends the app's events to the newest websocket only,
    # and ApplicationReplaced to the older. On the lab the older one went on acting on its
    # calls without their events: its ring timer hung up an attempt the newer one had
    # resumed (which judged that hang-up a congestion failure and went on to the next trunk),
    # and it created the next attempt of the plan too.
    caller, leg = await ringing_call(lab)
    old_requests = record_requests(lab, monkeypatch)
    async with a_new_instance(lab) as app:
        await wait_for(lab.runner.done)  # the older instance stopped by itself
        assert lab.runner.exception() is None and lab.app.owners == {}
        assert old_requests == []  # and did nothing to the call on its way out
        resumed = app.owners[caller]
        assert isinstance(resumed, Call)
        await wait_for(lambda: bool(resumed.legs))
        assert resumed.legs[0].channel_id == leg
        await answer_resumed(lab, caller, leg)


# -- a timer due while the replaced websocket closes -------------------------------------------

async def test_a_ring_timer_due_while_the_replaced_websocket_closes_sends_nothing(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # The old instance's events websocket takes a while to close after ApplicationReplaced (a
    # closing handshake answered late, a send buffer that drains slowly: stood in for by a
    # close() held 3 s). The ring timer (1.5 s) falls due meanwhile. The old instance must
    # not act on it: the call is the new instance's.
    await ringing_call(lab, ring_timeout="1.5")
    old_ws = lab.ari._ws
    assert old_ws is not None
    real_close = aiohttp.ClientWebSocketResponse.close

    async def slow_close(self: aiohttp.ClientWebSocketResponse, **kw: object) -> bool:
        if self is old_ws:
            await asyncio.sleep(3.0)
        return await real_close(self, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "close", slow_close)
    old_requests = record_requests(lab, monkeypatch)
    async with a_new_instance(lab):
        await wait_for(lab.runner.done, within=8)  # after the ring timer's due time
        assert lab.runner.exception() is None
        assert old_requests == []


# -- requests started outside the call's task: a queued ROUTER_* write, a /dial -------------

async def test_a_progress_write_queued_behind_a_slow_one_is_not_sent_after_the_takeover(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Attempt 1's ROUTER_* write to the caller is slow (a busy Asterisk). Attempt 1 fails
    # (503), attempt 2's write queues behind it (Call._vars_written, a future of its own that
    # cancelling the call does not cancel) and carrier-b rings. The new instance takes over,
    # resumes attempt 2, carrier-b answers and the new instance writes the outcome. When the
    # slow write came back, the old instance sent attempt 2's: ROUTER_ATTEMPTS without the
    # answer, and an ABANDONED trace the h extension would have put on the answered call's CDR.
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")))
    rings = Behaviour.recorded("a480-noanswer_b200", "carrier-a")
    lab.carriers("a503_b200", **{"carrier-b": rings})
    caller = lab.fake.new_caller(NUMBER)
    key = f"POST /channels/{caller}/variable"
    slow = lab.fake.gates[key] = asyncio.Event()
    call = await lab.started(caller)
    await wait_for(lambda: f"/channels/{caller}/variable" in lab.fake.paths("POST"))
    del lab.fake.gates[key]  # only the first write is slow
    await wait_for(lambda: len(call.legs) == 2 and call.legs[1].state is AttemptState.RINGING)
    queued = call._vars_written
    assert queued is not None and not queued.done()
    old_requests = record_requests(lab, monkeypatch)
    async with a_new_instance(lab) as app:
        await wait_for(lab.runner.done)
        resumed = app.owners[caller]
        assert isinstance(resumed, Call)
        await wait_for(lambda: bool(resumed.legs))
        lab.fake.answer(call.legs[1].channel_id)
        answered = "carrier-a:congestion:34:503|carrier-b:answered:16:200"
        await wait_for(lambda: lab.vars_of(caller).get("ROUTER_ATTEMPTS") == answered)
        slow.set()  # the old instance's slow write comes back
        await wait_for(queued.done)  # and the one queued behind it is over, one way or another
        assert old_requests == []
        assert lab.vars_of(caller)["ROUTER_ATTEMPTS"] == answered
        lab.fake.caller_hangup(caller)
        await wait_for(lambda: lab.fake.leftovers() == ([], []))


async def test_a_dial_waiting_for_a_connection_is_not_sent_after_the_takeover(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pool is saturated (one connection here; 64 busy ones under load): the attempt's
    # /dial (leg.dial_request, shielded, a future of its own) waits for a connection when the
    # takeover comes. Cancelling the call did not cancel it: the connection freed by the
    # cancelled tasks went to it, and the old instance INVITEd the trunk after it had left.
    lab.snapshots.append(snapshot_of(ROUTES.replace("ring_timeout: 0.5", "ring_timeout: 30")))
    lab.carriers("a480-noanswer_b200")
    lab.ari.http._limit = 1
    await wait_for(lambda: lab.ari.http._open == len(lab.ari.http._idle))  # none in use
    await lab.ari.http.close()  # its idle connections: from now on one at a time
    assert lab.ari.http._open == 0
    hold_add = lab.fake.held_replies["POST /bridges/*/addChannel"] = asyncio.Event()
    hold_endpoints = lab.fake.gates["GET /endpoints/PJSIP"] = asyncio.Event()
    caller = lab.fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: any(p.endswith("/addChannel") for p in lab.fake.paths("POST")))
    lab.app.routing_changed()  # check-trunks: waits for the pool's one connection
    await wait_for(lambda: len(lab.ari.http._waiters) == 1)
    hold_add.set()
    await wait_for(lambda: call.legs and call.legs[0].dial_request is not None)
    dial = call.legs[0].dial_request
    assert dial is not None
    await wait_for(lambda: "/endpoints/PJSIP" in lab.fake.paths("GET"))  # it has the connection
    assert not any(p.endswith("/dial") for p in lab.fake.paths("POST"))  # the /dial waits
    old_requests = record_requests(lab, monkeypatch)
    async with a_new_instance(lab):
        await wait_for(lab.runner.done)  # the old instance has left
        hold_endpoints.set()  # the one connection is free again
        await wait_for(dial.done)
        assert not any(p.endswith("/dial") for p in lab.fake.paths("POST"))
        assert lab.fake.dials == {}
        assert old_requests == []


# -- SIGTERM together with the takeover: still a stop ------------------------------------------

async def test_a_sigterm_coming_with_the_takeover_is_still_a_cancellation(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    await ringing_call(lab)
    leave = lab.app._leave_to_the_new_owner

    def leave_then_sigterm() -> None:
        leave()
        lab.runner.cancel()  # SIGTERM handled in the same iteration

    monkeypatch.setattr(lab.app, "_leave_to_the_new_owner", leave_then_sigterm)
    old_requests = record_requests(lab, monkeypatch)
    async with a_new_instance(lab):
        await asyncio.gather(lab.runner, return_exceptions=True)
        assert lab.runner.cancelled()  # re-raised: serve() suppresses it, exit 0 either way
        assert old_requests == []  # the calls were left, not stopped


async def test_a_sigterm_during_the_leaving_is_still_a_cancellation(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Taken over, then SIGTERM while run() waits for the websocket task to end.
    await ringing_call(lab)
    old_ws = lab.ari._ws
    real_close = aiohttp.ClientWebSocketResponse.close
    closing = asyncio.Event()

    async def slow_close(self: aiohttp.ClientWebSocketResponse, **kw: object) -> bool:
        if self is old_ws:
            closing.set()
            await asyncio.sleep(1.0)  # a closing handshake answered late
        return await real_close(self, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "close", slow_close)
    old_requests = record_requests(lab, monkeypatch)
    async with a_new_instance(lab):
        await closing.wait()  # taken over, and its websocket closing
        assert lab.app.replaced.is_set() and not lab.runner.done()
        lab.runner.cancel()
        await asyncio.gather(lab.runner, return_exceptions=True)
        assert lab.runner.cancelled()
        assert old_requests == []


# -- the same instance reconnecting is never taken for another ---------------------------------

async def test_reconnects_of_the_same_instance_are_never_taken_for_a_takeover(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client gives its websocket up (as after a heartbeat timeout) while the server still
    # holds it (Asterisk has not noticed the dead TCP yet), and opens a new one: Asterisk
    # sends ApplicationReplaced to the old socket, which the client no longer reads.
    from aiohttp._websocket.models import WS_CLOSED_MESSAGE
    caller, _ = await ringing_call(lab)
    abandoned: set[object] = set()
    real_close = aiohttp.ClientWebSocketResponse.close

    async def close(self: aiohttp.ClientWebSocketResponse, **kw: object) -> bool:
        if self in abandoned:
            return True  # given up without a word: the server keeps it open
        return await real_close(self, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "close", close)
    replaced_sent = 0
    for _ in range(5):
        before = lab.fake.ws_connections
        ws = lab.ari._ws
        assert ws is not None
        abandoned.add(ws)
        ws._reader.feed_data(WS_CLOSED_MESSAGE, 0)  # the reader stops: "heartbeat timed out"
        await wait_for(lambda before=before: lab.fake.ws_connections > before
                       and lab.ari.connected.is_set())
        await lab.app.reconciled.wait()
        replaced_sent = len(lab.fake.replaced)  # old sockets still open, sent it
    assert replaced_sent == 5
    assert not lab.app.replaced.is_set() and not lab.runner.done()
    assert isinstance(lab.app.owners.get(caller), Call)
    lab.fake.caller_hangup(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))
    for old in abandoned:  # (their connections, closed for good)
        old._response.close()  # type: ignore[attr-defined]
