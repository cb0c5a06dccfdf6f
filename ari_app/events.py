"""ARI wire names and event parsing, in one place.

Everything the app reads from Asterisk's events websocket goes through :func:`parse_event`,
which keeps only what the call flow needs. Field meanings come from real Asterisk 22
recordings (``shared/reference/ari-events``):

* ``ChannelDestroyed.cause`` is the Q.850 cause of the leg, ``tech_cause`` the carrier's SIP
  code when there was one (Asterisk reports 19/480 for both a dial timeout and a trunk that
  never answered).
* ``ChannelHangupRequest`` with ``soft: true`` carries an ``AST_SOFTHANGUP_*`` flag in
  ``cause`` (32 explicit, 16 left Stasis), not a Q.850 cause: :attr:`Event.cause` is None then.
* ``Dial`` names the dialled channel in ``peer``, not ``channel``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from routing.numbers import all_digits


class EventType(StrEnum):
    STASIS_START = "StasisStart"
    STASIS_END = "StasisEnd"
    DIAL = "Dial"
    CHANNEL_STATE_CHANGE = "ChannelStateChange"
    CHANNEL_HANGUP_REQUEST = "ChannelHangupRequest"
    CHANNEL_DESTROYED = "ChannelDestroyed"
    # Sent to a websocket of the app when a newer one connects for the same app: from then on
    # Asterisk sends the app's events to the newer one only.
    APPLICATION_REPLACED = "ApplicationReplaced"
    # Not sent by Asterisk: made by the app when it reconciles after a websocket drop.
    RECONCILED = "RouterReconciled"


#: The event types the call flow and the reconcile act on: the app asks Asterisk for these only.
NEEDED_EVENTS: tuple[str, ...] = (
    EventType.STASIS_START,
    EventType.STASIS_END,
    EventType.DIAL,
    EventType.CHANNEL_STATE_CHANGE,
    EventType.CHANNEL_HANGUP_REQUEST,
    EventType.CHANNEL_DESTROYED,
    EventType.APPLICATION_REPLACED,  # the event filter would drop it too
)


class DialStatus(StrEnum):
    """``Dial.dialstatus`` values the call flow looks at (it never decides on failures)."""

    RINGING = "RINGING"
    PROGRESS = "PROGRESS"
    ANSWER = "ANSWER"


class ChannelState(StrEnum):
    DOWN = "Down"
    RING = "Ring"
    RINGING = "Ringing"
    UP = "Up"


#: A channel not answered yet (a caller whose StasisStart was missed, in the reconcile).
NOT_UP = frozenset({ChannelState.DOWN, ChannelState.RING, ChannelState.RINGING})


#: StasisStart args of an outbound leg the app created (``appArgs`` of ``/channels/create``).
#: Never a valid number, so a leg can not be taken for a new caller even if its id is unknown.
ATTEMPT_ARG = "router-attempt"
#: Ids of the channels and bridges the router creates (``ora-<hex>``, ``orb-<hex>``); a caller's
#: id is Asterisk's uniqueid (``1795706795.58``), which can not look like these.
ATTEMPT_ID_PREFIX = "ora-"
BRIDGE_ID_PREFIX = "orb-"


@dataclass(frozen=True, slots=True)
class Event:
    """One ARI event, reduced to what the router uses.

    ``channel_id`` is the channel the event is about (``peer`` for ``Dial``), or None for
    bridge-only events.
    """

    type: str
    channel_id: str | None = None
    channel_state: str | None = None
    args: tuple[str, ...] = ()
    cause: int | None = None
    tech_cause: int | None = None
    soft: bool = False
    dialstatus: str | None = None
    bridge_id: str | None = None
    application: str | None = None
    #: RECONCILED: ``GET /channels`` shows the channel in this app's Stasis.
    in_app: bool = False

    @property
    def provisional(self) -> bool:
        """A provisional reply from the far end (180/183) shows in this event."""
        if self.type == EventType.DIAL:
            return self.dialstatus in (DialStatus.RINGING, DialStatus.PROGRESS)
        return (
            self.type == EventType.CHANNEL_STATE_CHANGE
            and self.channel_state == ChannelState.RINGING
        )

    @property
    def early_media(self) -> bool:
        return self.type == EventType.DIAL and self.dialstatus == DialStatus.PROGRESS

    @property
    def answered(self) -> bool:
        if self.type == EventType.DIAL:
            return self.dialstatus == DialStatus.ANSWER
        return (
            self.type in (EventType.CHANNEL_STATE_CHANGE, EventType.RECONCILED)
            and self.channel_state == ChannelState.UP
        )

    @property
    def hangup(self) -> bool:
        """The channel is going away (or is gone)."""
        return self.type in (
            EventType.CHANNEL_HANGUP_REQUEST,
            EventType.STASIS_END,
            EventType.CHANNEL_DESTROYED,
        ) or (self.type == EventType.RECONCILED and self.channel_state is None)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and all_digits(value):
        return int(value)
    return None


def _channel(raw: Mapping[str, Any], key: str) -> tuple[str | None, str | None]:
    ch = raw.get(key)
    if isinstance(ch, Mapping):
        cid = ch.get("id")
        state = ch.get("state")
        return (cid if isinstance(cid, str) else None, state if isinstance(state, str) else None)
    return None, None


def parse_event(raw: Mapping[str, Any]) -> Event:
    """Turn one decoded websocket message into an :class:`Event`.

    Unknown event types parse too (with the channel if there is one): the dispatcher decides
    what to do with them. Raises ValueError only when ``type`` is missing.
    """
    etype = raw.get("type")
    if not isinstance(etype, str):
        raise ValueError("ARI event without a type")
    key = "peer" if etype == EventType.DIAL else "channel"
    channel_id, state = _channel(raw, key)
    soft = raw.get("soft") is True
    cause = None if soft else _int_or_none(raw.get("cause"))
    args_raw = raw.get("args")
    args: tuple[str, ...] = ()
    if isinstance(args_raw, Sequence) and not isinstance(args_raw, str):
        args = tuple(str(a) for a in args_raw)
    bridge = raw.get("bridge")
    bridge_id = bridge.get("id") if isinstance(bridge, Mapping) else None
    dialstatus = raw.get("dialstatus") if etype == EventType.DIAL else None
    app = raw.get("application")
    return Event(
        type=etype,
        channel_id=channel_id,
        channel_state=state,
        args=args,
        cause=cause,
        tech_cause=None if soft else _int_or_none(raw.get("tech_cause")),
        soft=soft,
        dialstatus=dialstatus if isinstance(dialstatus, str) else None,
        bridge_id=bridge_id if isinstance(bridge_id, str) else None,
        application=app if isinstance(app, str) else None,
    )


def creation_time(value: Any) -> float | None:
    """A channel's ``creationtime`` (``2026-11-26T12:00:00.123+0000``) as Unix time."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return None


def reconciled(channel_id: str, state: str | None, *, in_app: bool = False) -> Event:
    """A made-up event telling a call what ``GET /channels`` showed after a reconnect:
    the channel's current state, or ``state=None`` when the channel is gone, and whether it
    is in this app's Stasis (``in_app``)."""
    return Event(type=EventType.RECONCILED, channel_id=channel_id, channel_state=state,
                 in_app=in_app)


def split_app_data(app_data: str) -> list[str]:
    """Split dialplan application data like Asterisk does: commas separate arguments except
    inside double quotes (the dialplan passes the number through ``QUOTE()``); quotes are
    removed and a backslash escapes the next character."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in app_data:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def stasis_args_from_app_data(app: str, app_data: str) -> tuple[str, ...] | None:
    """The Stasis args of a channel seen in ``GET /channels`` (``dialplan.app_data`` is
    ``<app>,<arg>,<arg>``), or None when the channel is not in ``app``."""
    parts = split_app_data(app_data)
    if parts[0] != app:
        return None
    return tuple(parts[1:])


# -- what ARI lists: channels, bridges, endpoints ----------------------------------------------


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel as ARI describes it (``GET /channels``, ``GET /channels/{id}``, the answer to
    ``POST /channels/create``), reduced to what the router reads."""

    id: str
    state: str | None = None
    name: str | None = None  # PJSIP/carrier-a-00000012
    created: float | None = None  # creationtime, as Unix time
    dialplan_app: str | None = None  # the dialplan application it runs: Stasis
    dialplan_data: str = ""  # its data: <app>,<arg>,<arg>

    def stasis_args(self, app: str) -> tuple[str, ...] | None:
        """Its Stasis args, or None when it is not in ``app``'s Stasis (its dialplan
        application is another, or Stasis of another app)."""
        if self.dialplan_app != "Stasis":
            return None
        return stasis_args_from_app_data(app, self.dialplan_data)


def channel(raw: Any) -> Channel | None:
    """One channel of ARI's JSON; None when it is no channel (no id)."""
    if not isinstance(raw, Mapping) or (cid := _text(raw, "id")) is None:
        return None
    dialplan = raw.get("dialplan")
    if not isinstance(dialplan, Mapping):
        dialplan = {}
    data = dialplan.get("app_data")
    return Channel(cid, _text(raw, "state"), _text(raw, "name"),
                   creation_time(raw.get("creationtime")), _text(dialplan, "app_name"),
                   "" if data is None else str(data))


def channels(raw: Any) -> dict[str, Channel]:
    """``GET /channels``, by channel id."""
    listed = (channel(item) for item in raw) if isinstance(raw, list) else ()
    return {c.id: c for c in listed if c is not None}


@dataclass(frozen=True, slots=True)
class Bridge:
    """A bridge of ``GET /bridges``, reduced to what the reconcile reads."""

    id: str
    name: str | None  # the router names its bridges after its Stasis app
    channels: tuple[str, ...]


def bridges(raw: Any) -> list[Bridge]:
    """``GET /bridges``; items that are no bridge (no id) left out."""
    found = []
    for item in raw if isinstance(raw, list) else ():
        if isinstance(item, Mapping) and (bid := _text(item, "id")) is not None:
            members = item.get("channels")
            found.append(Bridge(bid, _text(item, "name"), tuple(
                m for m in (members if isinstance(members, list) else ())
                if isinstance(m, str))))
    return found


def endpoint_names(raw: Any) -> set[str]:
    """``GET /endpoints/{tech}``: the endpoints' names (``resource``)."""
    return {name for item in (raw if isinstance(raw, list) else ())
            if isinstance(item, Mapping) and (name := _text(item, "resource")) is not None}


def is_attempt(channel_id: str, args: Sequence[str]) -> bool:
    """A channel the router created for a trunk attempt (not a caller)."""
    return channel_id.startswith(ATTEMPT_ID_PREFIX) and args[:1] == (ATTEMPT_ARG,)
