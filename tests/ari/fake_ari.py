"""A fake Asterisk ARI server (aiohttp) whose carriers replay real Asterisk 22 recordings.

Each trunk behaves like one recorded attempt from ``shared/reference/ari-events/create/``:
``POST /channels/create`` replays the events the real channel sent before dialling
(``ChannelDialplan``, ``StasisStart``...), ``/dial`` replays the rest (``Dial``, state changes,
``ChannelHangupRequest`` -> ``StasisEnd`` -> ``ChannelDestroyed`` with the recorded ``cause`` and
``tech_cause``). The recorded events are sent as they were, with only the channel id, the
application and the Stasis args rewritten. Where the recording ends in Asterisk's own dial
timeout (the carrier rang forever or never answered) the fake holds the channel until the app
hangs it up, or until the ``timeout`` given to ``/dial`` runs out (then it replays the recorded
timeout). Where the recording ends in an answer, the channel stays up until a side hangs up.

Like Asterisk, it answers 409 to a ``/dial`` of a channel that has not entered Stasis, drops
events while no websocket is connected, and keeps ``GET /channels`` / ``GET /bridges`` true.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import fnmatch
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.asterisk_args import assign

#: Real Asterisk 22 recordings (a copy of the shared reference, see recordings/README.md).
RECORDINGS = Path(__file__).resolve().parent / "recordings"

Raw = dict[str, Any]


def _load(case: str) -> list[Raw]:
    path = RECORDINGS / case / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _subject(raw: Raw) -> Raw | None:
    ch = raw.get("peer") if raw.get("type") == "Dial" else raw.get("channel")
    return ch if isinstance(ch, dict) else None


#: A pseudo event of a Behaviour: a SIP response Asterisk records in the hangup-cause
#: hashes without any event reaching the app.
UNSEEN_RESPONSE = "_UnseenSipResponse"
#: A key of a recorded event: its tech_cause is Asterisk's own, not a SIP response received.
NOT_A_RESPONSE = "_not_a_response"


@dataclass(frozen=True)
class Behaviour:
    """How one trunk answers: recorded events before dialling, after dialling, and how the
    dial phase ends (``failed``: the recording's hangup is included; ``hold``: rings or stays
    silent until hung up; ``answered``: up until a side hangs up)."""

    create: tuple[Raw, ...]
    dial: tuple[Raw, ...]
    end: str  # "failed" | "hold" | "answered"
    timeout_tail: tuple[Raw, ...] = ()  # replayed when the /dial timeout runs out (hold)

    @classmethod
    def recorded(cls, case: str, trunk: str) -> Behaviour:
        """The attempt on ``trunk`` in recording ``case`` (e.g. ``create/a503_b200``)."""
        if "/" not in case:
            case = f"create/{case}"
        events = [
            e for e in _load(case)
            if "type" in e and e["type"] != "ChannelVarset"
            and (s := _subject(e)) is not None and s.get("name", "").startswith(f"PJSIP/{trunk}-")
        ]
        if not events:
            raise ValueError(f"no events of {trunk} in {case}")
        first_dial = next(i for i, e in enumerate(events) if e["type"] == "Dial")
        create, rest = events[:first_dial], events[first_dial:]
        dial: list[Raw] = []
        for i, e in enumerate(rest):
            if e["type"] == "ChannelHangupRequest" and e.get("soft"):
                return cls(tuple(create), tuple(dial), "hold", tuple(rest[i:]))
            dial.append(e)
            if e["type"] == "Dial" and e.get("dialstatus") == "ANSWER":
                return cls(tuple(create), tuple(dial), "answered")
            if e["type"] == "ChannelDestroyed":
                return cls(tuple(create), tuple(dial), "failed")
        raise ValueError(f"recording of {trunk} in {case} has no end")

    def answered_then_ended(self, cause: int, tech_cause: int | None = None) -> Behaviour:
        """This failure's events, after a 200 that Asterisk recorded in the hangup-cause hash
        but whose answer never reached the app: the carrier's BYE sent with its 200, or a
        200 Asterisk ACKed and BYEd itself (no SDP), ending the channel before its answer
        was read. The channel ends with ``cause`` (and ``tech_cause``)."""
        ending = []
        for e in self.dial:
            if e["type"] in ("ChannelHangupRequest", "ChannelDestroyed"):
                e = {k: v for k, v in e.items() if k != "tech_cause"}
                e["cause"] = cause
                if tech_cause is not None:  # Asterisk's own (406 for no SDP): no response
                    e["tech_cause"], e[NOT_A_RESPONSE] = tech_cause, True
            ending.append(e)
        first_end = next(i for i, e in enumerate(ending) if e["type"] == "ChannelHangupRequest")
        answer = {"type": UNSEEN_RESPONSE, "tech": "SIP 200 OK"}
        return replace(self, dial=(*ending[:first_end], answer, *ending[first_end:]))

    def then(self, failure: Behaviour) -> Behaviour:
        """This behaviour's provisional replies, then ``failure``'s final answer (e.g. 183 with
        media, then 503)."""
        tail: list[Raw] = []
        for e in failure.dial:
            if e["type"] == "ChannelHangupRequest" or tail:
                tail.append(e)
        return Behaviour(self.create, self.dial + tuple(tail), failure.end)


def _caller_template() -> Raw:
    return json.loads((RECORDINGS / "raw-examples/create-inbound-StasisStart.json").read_text())


@dataclass
class Channel:
    id: str
    name: str
    state: str
    app_data: str
    behaviour: Behaviour | None = None
    in_stasis: bool = False
    dialled: bool = False
    variables: dict[str, str] = field(default_factory=dict)
    hangup_reason: str | None = None
    #: Asterisk's hangup-cause hash: channel name -> its last SIP response ("SIP 486 Busy
    #: Here"), of this channel and of those bridged with it (HANGUPCAUSE_KEYS(), HANGUPCAUSE())
    causes: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False
    timer: asyncio.TimerHandle | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def json(self) -> Raw:
        return {
            "id": self.id, "name": self.name, "state": self.state,
            "protocol_id": "", "caller": {"name": "", "number": ""},
            "connected": {"name": "", "number": ""}, "accountcode": "",
            "dialplan": {"context": "default", "exten": "s", "priority": 1,
                         "app_name": "Stasis" if self.in_stasis else "",
                         "app_data": self.app_data if self.in_stasis else ""},
            "creationtime": self.created.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000",
            "language": "en",
        }


#: Asterisk's HTTP server reads the request line into a buffer of 4,096 bytes (main/http.c,
#: MAX_HTTP_LINE_LENGTH); a longer one gets 400 "Request line too long" (seen on the lab).
HTTP_LINE_MAX = 4095
HTTP_BODY_MAX = 40_960


class FakeAsterisk:
    def __init__(self, app: str = "outbound-router", username: str = "router",
                 password: str = "s3cret-pw") -> None:
        self.app = app
        self.username = username
        self.password = password
        self.trunks: dict[str, Behaviour] = {}
        #: GET /endpoints/PJSIP: the lab's endpoints (a trunk may have no behaviour today)
        self.endpoints = ["phone-ari", "phone-agi", "phone-baseline",
                          "carrier-a", "carrier-b", "carrier-c", "carrier-d"]
        self.channels: dict[str, Channel] = {}
        self.bridges: dict[str, dict[str, Any]] = {}
        self.sockets: dict[web.WebSocketResponse, asyncio.Queue[str]] = {}
        #: Older websockets of the app, sent ApplicationReplaced: they get no event any more.
        self.replaced: set[web.WebSocketResponse] = set()
        #: PUT /applications/APP/eventFilter "allowed" types (None: all), per app as in
        #: Asterisk: applied to every message it sends the app, ApplicationReplaced included
        #: (ari_websocket_send_event -> stasis_app_event_allowed).
        self.event_filter: set[str] | None = None
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.dials: Counter[str] = Counter()  # trunk -> INVITEs sent
        self.ended: dict[str, Channel] = {}  # destroyed channels, by id (their "CDR")
        self.stasis_delay = 0.0
        self.stasis_delay_for: dict[str, float] = {}  # trunk -> its own stasis_delay
        self.gates: dict[str, asyncio.Event] = {}  # "POST /channels/ID/answer" -> hold request
        #: "POST /channels/*/dial" (fnmatch) -> the request is carried out (a /dial sends its
        #: INVITE), then its reply waits for this (still on its way when the app stops)
        self.held_replies: dict[str, asyncio.Event] = {}
        self.failing: dict[str, int] = {}  # "POST /bridges" -> answer with this status instead
        #: "DELETE /channels/ID" (fnmatch) -> close the connection unanswered, this many times
        self.dropping: Counter[str] = Counter()
        #: "POST /channels/*/dial" (fnmatch) -> the request is carried out, then its
        #: connection closed unanswered, this many times (a reply lost on its way)
        self.lost_replies: Counter[str] = Counter()
        #: Set: GET /channels takes its list, then waits for this before it replies (a reply
        #: older than the events sent meanwhile, as on a busy Asterisk).
        self.hold_channel_list: asyncio.Event | None = None
        self.channel_lists = 0  # GET /channels replies taken
        #: Each addChannel: the channels added, and the variables of those already in the
        #: bridge then (their CDR records close as a new party joins)
        self.at_join: list[tuple[list[str], dict[str, dict[str, str]]]] = []
        #: Asterisk's clock minus the test's (creationtime, EPOCH): another host's clock
        self.clock_offset = 0.0
        self.connected = asyncio.Event()
        self.ws_connections = 0
        self.accepting = True  # False: the events websocket is refused (Asterisk is "down")
        #: Called after a channel's events of one phase were sent (create: up to its
        #: StasisStart; dial: its replies): the channel and ``"create"`` or ``"dial"``.
        self.after_replay: Callable[[Channel, str], None] | None = None
        self._ids = itertools.count(1)
        self._names = itertools.count(0x100)
        self.server: TestServer | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> str:
        web_app = web.Application(middlewares=[self._auth])
        r = web_app.router
        r.add_get("/ari/events", self._events)
        r.add_get("/ari/channels", self._list_channels)
        r.add_post("/ari/channels/create", self._create)
        r.add_post("/ari/channels/{id}/dial", self._dial)
        r.add_post("/ari/channels/{id}/answer", self._answer)
        r.add_post("/ari/channels/{id}/variable", self._variable)
        r.add_get("/ari/channels/{id}/variable", self._get_variable)
        r.add_get("/ari/channels/{id}", self._get_channel)
        r.add_delete("/ari/channels/{id}", self._delete_channel)
        r.add_get("/ari/bridges", self._list_bridges)
        r.add_post("/ari/bridges", self._create_bridge)
        r.add_get("/ari/bridges/{id}", self._get_bridge)
        r.add_post("/ari/bridges/{id}/addChannel", self._add_channel)
        r.add_post("/ari/bridges/{id}/removeChannel", self._remove_channel)
        r.add_delete("/ari/bridges/{id}", self._destroy_bridge)
        r.add_get("/ari/applications/{app}", self._application)
        r.add_put("/ari/applications/{app}/eventFilter", self._set_event_filter)
        r.add_get("/ari/endpoints/{tech}", self._endpoints)
        self.server = TestServer(web_app, host="127.0.0.1")
        await self.server.start_server()
        return f"http://127.0.0.1:{self.server.port}"

    async def close(self) -> None:
        for ch in self.channels.values():
            if ch.timer:
                ch.timer.cancel()
        await self.drop_websockets()
        if self.server is not None:
            await self.server.close()

    async def drop_websockets(self) -> None:
        sockets, self.sockets = list(self.sockets), {}
        self.connected.clear()
        for ws in sockets:
            await ws.close()

    # -- helpers for tests -------------------------------------------------------------

    def now(self) -> datetime:
        """Asterisk's clock."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset)

    def leftovers(self) -> tuple[list[str], list[str]]:
        return list(self.channels), list(self.bridges)

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.requests if method in (None, m)]

    def new_caller(self, *args: str, channel_id: str | None = None) -> str:
        """A channel entering the app with Stasis ``args`` (a caller, unless ``channel_id``
        and the args make it look like something else)."""
        cid = channel_id or f"1795706{next(self._ids):03d}.{next(self._ids)}"
        ch = Channel(cid, f"PJSIP/phone-{next(self._names):08x}", "Ring",
                     ",".join((self.app, *args)), in_stasis=True, created=self.now())
        self.channels[cid] = ch
        raw = _caller_template()
        raw["args"] = list(args)
        self._emit(self._rewrite(raw, ch))
        return cid

    def caller_hangup(self, cid: str) -> None:
        ch = self.channels[cid]
        self._emit({"type": "ChannelHangupRequest", "channel": ch.json()})
        self._destroy(ch, 16, None)

    def caller_leaves(self, cid: str) -> None:
        """The caller hangs up and leaves Stasis, but its channel lives on a moment in the
        dialplan (the ``h`` extension): REST calls on it get 409 until :meth:`destroy`."""
        ch = self.channels[cid]
        ch.in_stasis = False
        self._emit({"type": "ChannelHangupRequest", "channel": ch.json()})
        self._emit({"type": "StasisEnd", "channel": ch.json()})

    def destroy(self, cid: str) -> None:
        self._destroy(self.channels[cid], 16, None)

    def far_end_hangup(self, cid: str) -> None:
        ch = self.channels[cid]
        self._emit({"type": "ChannelHangupRequest", "cause": 16, "channel": ch.json()})
        self._destroy(ch, 16, None)

    def answer(self, cid: str) -> None:
        """The carrier answers a ringing attempt now (its own Dial and state events)."""
        ch = self.channels[cid]
        if ch.timer:
            ch.timer.cancel()
        ch.state = "Up"
        self._record_response(ch, "SIP 200 OK")
        self._emit({"type": "Dial", "dialstatus": "ANSWER", "peer": ch.json()})
        self._emit({"type": "ChannelStateChange", "channel": ch.json()})

    def carrier_fails(self, cid: str, cause: int, sip_code: int) -> None:
        """The carrier turns a ringing attempt down now (e.g. 34 and 503)."""
        ch = self.channels[cid]
        self._emit({"type": "ChannelHangupRequest", "cause": cause, "tech_cause": sip_code,
                    "channel": ch.json()})
        self._destroy(ch, cause, sip_code)

    def ring(self, cid: str) -> None:
        """The carrier sends 180 now (a Dial RINGING and the channel's state Ringing)."""
        ch = self.channels[cid]
        ch.state = "Ringing"
        self._record_response(ch, "SIP 180 Ringing")
        self._emit({"type": "Dial", "dialstatus": "RINGING", "peer": ch.json()})
        self._emit({"type": "ChannelStateChange", "channel": ch.json()})

    def early_media(self, cid: str) -> None:
        """The carrier sends 183 with media now: chan_pjsip sets no channel state for it."""
        ch = self.channels[cid]
        self._record_response(ch, "SIP 183 Session Progress")
        self._emit({"type": "Dial", "dialstatus": "PROGRESS", "peer": ch.json()})

    def answer_unheard(self, cid: str) -> None:
        """The carrier answers now, its events still on their way: Asterisk shows the
        channel Up (and answers the caller bridged with it), the app has heard nothing yet."""
        ch = self.channels[cid]
        if ch.timer:
            ch.timer.cancel()
        ch.state = "Up"
        self._record_response(ch, "SIP 200 OK")
        for bridge in self.bridges.values():
            if cid in bridge["channels"]:
                for member in bridge["channels"]:
                    if member in self.channels:
                        self.channels[member].state = "Up"

    def answer_silently(self, cid: str) -> None:
        """The carrier answers while no websocket is connected (its events are lost)."""
        ch = self.channels[cid]
        if ch.timer:
            ch.timer.cancel()
        ch.state = "Up"
        self._emit({"type": "ChannelStateChange", "channel": ch.json()})

    def add_leftover_channel(self, args: str, state: str = "Up") -> str:
        cid = f"{'ora-' if args.startswith('router-attempt') else ''}leftover-{next(self._ids)}"
        self.channels[cid] = Channel(cid, f"PJSIP/x-{next(self._names):08x}", state,
                                     f"{self.app},{args}", in_stasis=True, created=self.now())
        return cid

    def add_leftover_bridge(self, members: Iterable[str]) -> str:
        bid = f"leftover-br-{next(self._ids)}"
        self.bridges[bid] = {"name": self.app, "channels": list(members)}
        return bid

    # -- machinery ---------------------------------------------------------------------

    def _rewrite(self, raw: Raw, ch: Channel) -> Raw:
        event = copy.deepcopy(raw)
        for key in ("_rx", "_label", NOT_A_RESPONSE):
            event.pop(key, None)
        event["application"] = self.app
        key = "peer" if event["type"] == "Dial" else "channel"
        state = event[key].get("state")
        if state:
            ch.state = state
        event[key] = {**ch.json(), "state": ch.state}
        return event

    def _emit(self, event: Raw) -> None:
        # As Asterisk does: the app's events go to the websocket that connected last, and to
        # none once that one is gone (an older one stays replaced).
        if self.event_filter is not None and event.get("type") not in self.event_filter:
            return
        if self.sockets and (ws := list(self.sockets)[-1]) not in self.replaced:
            self.sockets[ws].put_nowait(json.dumps(event))  # a sender per socket keeps order

    def _record_response(self, ch: Channel, tech: str) -> None:
        """As chan_pjsip does: a SIP response of ``ch`` goes into its hangup-cause hash and
        into those of the channels bridged with it, which keep it after ``ch`` is gone."""
        ch.causes[ch.name] = tech
        for bridge in self.bridges.values():
            if ch.id in bridge["channels"]:
                for member in bridge["channels"]:
                    if member in self.channels:
                        self.channels[member].causes[ch.name] = tech

    def _response_of(self, event: Raw) -> str | None:
        """The SIP response an event of an attempt channel stands for, if any."""
        if event["type"] == "Dial":
            return {"RINGING": "SIP 180 Ringing", "PROGRESS": "SIP 183 Session Progress",
                    "ANSWER": "SIP 200 OK"}.get(event.get("dialstatus", ""))
        if event["type"] == "ChannelHangupRequest" and event.get("tech_cause"):
            return f"SIP {event['tech_cause']} Whatever"
        return None

    def _destroy(self, ch: Channel, cause: int, tech_cause: int | None) -> None:
        if ch.id not in self.channels:
            return
        if ch.timer:
            ch.timer.cancel()
        if tech_cause is not None:
            self._record_response(ch, f"SIP {tech_cause} Whatever")
        for bridge in self.bridges.values():
            if ch.id in bridge["channels"]:
                bridge["channels"].remove(ch.id)
        if ch.in_stasis:
            self._emit({"type": "StasisEnd", "channel": ch.json()})
        destroyed: Raw = {"type": "ChannelDestroyed", "cause": cause, "cause_txt": "",
                          "channel": ch.json()}
        if tech_cause is not None:
            destroyed["tech_cause"] = tech_cause
        self._emit(destroyed)
        del self.channels[ch.id]
        self.ended[ch.id] = ch

    def _replay(self, ch: Channel, events: Iterable[Raw], phase: str = "") -> None:
        self._replay_events(ch, events)
        if self.after_replay is not None and phase:
            self.after_replay(ch, phase)

    def _replay_events(self, ch: Channel, events: Iterable[Raw]) -> None:
        for raw in events:
            if ch.id not in self.channels:
                return
            if raw["type"] == UNSEEN_RESPONSE:
                self._record_response(ch, raw["tech"])  # in the hash, no event: see below
                continue
            event = self._rewrite(raw, ch)
            if event["type"] == "StasisStart":
                ch.in_stasis = True
                event["args"] = ch.app_data.split(",")[1:]
                event["channel"] = ch.json()
            if event["type"] == "StasisEnd":
                ch.in_stasis = False
            if not raw.get(NOT_A_RESPONSE) and (tech := self._response_of(event)) is not None:
                self._record_response(ch, tech)
            if event["type"] == "ChannelDestroyed":
                for bridge in self.bridges.values():
                    if ch.id in bridge["channels"]:
                        bridge["channels"].remove(ch.id)
                del self.channels[ch.id]
                self.ended[ch.id] = ch
            self._emit(event)

    # -- HTTP --------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(
            f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"message": "Authentication required"}, status=401)
        if (request.content_length or 0) > HTTP_BODY_MAX:
            # (Asterisk 22.10: "Excessively long HTTP content", measured on the lab)
            return web.json_response({"message": "Request body too large"}, status=413)
        if len(f"{request.method} {request.raw_path} HTTP/1.1\r\n") > HTTP_LINE_MAX:
            # Asterisk's HTTP server, before ARI sees the request (an HTML page, not JSON)
            return web.Response(status=400, text="<p>Request line too long</p>",
                                content_type="text/html")
        if request.path != "/ari/events":
            self.requests.append((request.method, request.path[4:], dict(request.query)))
            gate = self.gates.get(f"{request.method} {request.path[4:]}")
            if gate is not None:
                await gate.wait()
            key = f"{request.method} {request.path[4:]}"
            if self._take(self.dropping, key):
                assert request.transport is not None
                request.transport.close()  # as Asterisk past its sessionlimit: no answer
                return web.Response(status=500)
            status = self.failing.get(f"{request.method} {request.path[4:]}")
            if status is not None:
                return web.json_response({"message": "injected failure"}, status=status)
            response = await handler(request)
            if self._take(self.lost_replies, key):
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            for pattern, held in self.held_replies.items():
                if fnmatch.fnmatchcase(key, pattern):
                    await held.wait()
            return response
        return await handler(request)

    @staticmethod
    def _take(counts: Counter[str], key: str) -> bool:
        """Count one down for the first pattern of ``counts`` left that matches ``key``."""
        for pattern, left in counts.items():
            if left > 0 and fnmatch.fnmatchcase(key, pattern):
                counts[pattern] -= 1
                return True
        return False

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("app") != self.app:
            return web.json_response({"message": "bad app"}, status=400)
        if not self.accepting:
            return web.json_response({"message": "unavailable"}, status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for older, older_queue in self.sockets.items():  # the newest websocket takes the app
            if older not in self.replaced:
                self.replaced.add(older)
                if self.event_filter is not None and \
                        "ApplicationReplaced" not in self.event_filter:
                    continue  # dropped by the app's filter, as on the lab before 8be11a6
                older_queue.put_nowait(json.dumps({
                    "type": "ApplicationReplaced", "application": self.app,
                    "timestamp": self.now().isoformat()}))
        self.sockets[ws] = queue
        self.ws_connections += 1
        self.connected.set()

        async def send() -> None:
            while True:
                text = await queue.get()
                await ws.send_str(text)

        sender = asyncio.create_task(send())
        try:
            async for _ in ws:
                pass
        finally:
            sender.cancel()
            self.sockets.pop(ws, None)
            self.replaced.discard(ws)
            if not self.sockets:
                self.connected.clear()
        return ws

    def _channel(self, request: web.Request) -> Channel:
        ch = self.channels.get(request.match_info["id"])
        if ch is None:
            raise web.HTTPNotFound(text='{"message":"Channel not found"}',
                                   content_type="application/json")
        return ch

    async def _list_channels(self, request: web.Request) -> web.Response:
        listed = [c.json() for c in self.channels.values()]
        self.channel_lists += 1
        if self.hold_channel_list is not None:
            await self.hold_channel_list.wait()
        return web.json_response(listed)

    async def _create(self, request: web.Request) -> web.Response:
        q = request.query
        endpoint = q["endpoint"]
        trunk = endpoint.rpartition("@")[2]
        behaviour = self.trunks.get(trunk)
        if not endpoint.startswith("PJSIP/") or behaviour is None:
            return web.json_response({"error": "Allocation failed"}, status=500)
        cid = q.get("channelId") or f"{next(self._ids)}"
        if cid in self.channels:
            return web.json_response({"message": "Channel with given unique ID already exists"},
                                     status=409)
        app_data = ",".join((q["app"], *filter(None, q.get("appArgs", "").split(","))))
        ch = Channel(cid, f"PJSIP/{trunk}-{next(self._names):08x}", "Down", app_data,
                     behaviour=behaviour, created=self.now())
        if request.can_read_body:
            ch.variables.update((await request.json()).get("variables") or {})
        self.channels[cid] = ch
        loop = asyncio.get_running_loop()
        if delay := self.stasis_delay_for.get(trunk, self.stasis_delay):
            loop.call_later(delay, self._replay, ch, behaviour.create, "create")
        else:
            loop.call_soon(self._replay, ch, behaviour.create, "create")
        return web.json_response(ch.json())

    async def _dial(self, request: web.Request) -> web.Response:
        ch = self._channel(request)
        if not ch.in_stasis:
            return web.json_response({"message": "Channel not in Stasis application"},
                                     status=409)
        if ch.dialled or ch.state != "Down":
            return web.json_response({"message": "Channel is not in the 'Down' state"},
                                     status=409)
        ch.dialled = True
        assert ch.behaviour is not None
        self.dials[ch.name.split("/")[1].rsplit("-", 1)[0]] += 1
        loop = asyncio.get_running_loop()
        loop.call_soon(self._replay, ch, ch.behaviour.dial, "dial")
        if ch.behaviour.end == "hold" and "timeout" in request.query:
            ch.timer = loop.call_later(float(request.query["timeout"]), self._replay, ch,
                                       ch.behaviour.timeout_tail)
        return web.Response(status=204)

    async def _answer(self, request: web.Request) -> web.Response:
        ch = self._channel(request)
        if ch.state != "Up":
            ch.state = "Up"
            self._emit({"type": "ChannelStateChange", "channel": ch.json()})
        return web.Response(status=204)

    async def _variable(self, request: web.Request) -> web.Response:
        ch = self._channel(request)
        if not ch.in_stasis:
            return web.json_response({"message": "Channel not in Stasis application"},
                                     status=409)
        # ARI takes a request's parameters from the query string or from a JSON body.
        params = {**request.query, **(await request.json() if request.can_read_body else {})}
        assign(ch.variables, params["variable"], params.get("value", ""))
        return web.Response(status=204)

    async def _get_variable(self, request: web.Request) -> web.Response:
        ch, name = self._channel(request), request.query["variable"]
        if name == "EPOCH":
            return web.json_response({"value": str(int(self.now().timestamp()))})
        if name == "HANGUPCAUSE_KEYS()":
            return web.json_response({"value": ",".join(ch.causes)})
        if m := re.fullmatch(r"HANGUPCAUSE\((.+),tech\)", name):
            return web.json_response({"value": ch.causes.get(m.group(1), "")})
        value = ch.variables.get(name)
        if value is None:
            return web.json_response({"message": "Provided variable was not found"}, status=404)
        return web.json_response({"value": value})

    async def _delete_channel(self, request: web.Request) -> web.Response:
        ch = self._channel(request)
        ch.hangup_reason = request.query.get("reason_code") or request.query.get("reason")
        if ch.dialled and ch.state != "Up":
            ch.cancelled = True  # Asterisk sends CANCEL to the carrier
        self._emit({"type": "ChannelHangupRequest", "cause": 32, "soft": True,
                    "channel": ch.json()})
        code = int(ch.hangup_reason) if (ch.hangup_reason or "").isdigit() else 16
        asyncio.get_running_loop().call_soon(self._destroy, ch, code, None)
        return web.Response(status=204)

    async def _list_bridges(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"id": bid, "technology": "simple_bridge", "bridge_type": "mixing",
             "bridge_class": "stasis", "creator": "Stasis", "name": b["name"],
             "channels": list(b["channels"])}
            for bid, b in self.bridges.items()
        ])

    async def _create_bridge(self, request: web.Request) -> web.Response:
        bid = request.query.get("bridgeId") or f"br-{next(self._ids)}"
        if bid in self.bridges:  # as Asterisk 22's ast_ari_bridges_create
            return web.json_response({"message": f"Bridge with id '{bid}' already exists"},
                                     status=409)
        self.bridges[bid] = {"name": request.query.get("name", ""), "channels": []}
        return web.json_response({"id": bid, "name": self.bridges[bid]["name"], "channels": []})

    async def _get_bridge(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        if bid not in self.bridges:
            return web.json_response({"message": "Bridge not found"}, status=404)
        return web.json_response({"id": bid, "name": self.bridges[bid]["name"],
                                  "channels": self.bridges[bid]["channels"]})

    async def _add_channel(self, request: web.Request) -> web.Response:
        bridge = self.bridges.get(request.match_info["id"])
        if bridge is None:
            return web.json_response({"message": "Bridge not found"}, status=404)
        # All or nothing, as Asterisk's control_list_create: one channel gone, none added.
        cids = request.query["channel"].split(",")
        for cid in cids:
            ch = self.channels.get(cid)
            if ch is None:
                return web.json_response({"message": "Channel not found"}, status=400)
            if not ch.in_stasis:
                return web.json_response({"message": "Channel not in Stasis application"},
                                         status=422)
        # A new party joining closes the CDR records of those in the bridge: what they hold
        self.at_join.append((cids, {cid: dict(self.channels[cid].variables)
                                    for cid in bridge["channels"] if cid in self.channels}))
        bridge["channels"].extend(cids)
        return web.Response(status=204)

    async def _remove_channel(self, request: web.Request) -> web.Response:
        bridge = self.bridges.get(request.match_info["id"])
        if bridge is None:
            return web.json_response({"message": "Bridge not found"}, status=404)
        cid = request.query["channel"]
        if cid not in self.channels:
            return web.json_response({"message": "Channel not found"}, status=400)
        if cid not in bridge["channels"]:
            return web.json_response({"message": "Channel not in this bridge"}, status=422)
        bridge["channels"].remove(cid)
        return web.Response(status=204)

    async def _get_channel(self, request: web.Request) -> web.Response:
        return web.json_response(self._channel(request).json())

    async def _destroy_bridge(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        if self.bridges.pop(bid, None) is None:
            return web.json_response({"message": "Bridge not found"}, status=404)
        self._emit({"type": "BridgeDestroyed", "bridge": {"id": bid}})
        return web.Response(status=204)

    async def _endpoints(self, request: web.Request) -> web.Response:
        if request.match_info["tech"] != "PJSIP":
            return web.json_response([])
        return web.json_response([{"technology": "PJSIP", "resource": name, "state": "online",
                                   "channel_ids": []} for name in self.endpoints])

    async def _set_event_filter(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.event_filter = {a["type"] for a in body.get("allowed", [])} or None
        return web.json_response({"name": request.match_info["app"],
                                  "events_allowed": body.get("allowed", [])})

    async def _application(self, request: web.Request) -> web.Response:
        return web.json_response({"name": request.match_info["app"]})
