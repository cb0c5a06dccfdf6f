"""ROUTER_RESUME: what a restarted ARI app needs to go on with a call an earlier instance left.

Every attempt channel is created with it (and the caller gets a copy): the call's E.164
number, routing version, trace so far, and this attempt and the rest of the plan, each whole.
The next instance's reconcile finds the call (:class:`ResumeLeg`) and goes on with the plan of
the version the call was routed with, whatever was seeded since (docs/ari.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ari_app.client import AriClient
from routing import variables as var
from routing.model import TIMEOUT_MAX, TIMEOUT_MIN, TRUNK_NAME_RE, Carrier, Route
from routing.plan import Attempt, Status
from routing.trace import TraceEntry, parse_trace


@dataclass(frozen=True, slots=True)
class ResumeLeg:
    """An attempt an earlier instance of the app left ringing when it stopped, found by the
    reconcile of this one: the call goes on from it (the callee is not rung twice)."""

    channel_id: str  # the attempt's, or the caller's when the attempt is gone
    channel_state: str | None  # as GET /channels showed it
    bridge_id: str
    #: The attempt ended while no instance listened (the bridge holds the caller alone): how,
    #: the caller's HANGUPCAUSE tells; the rest of the plan is in its ROUTER_RESUME.
    attempt_gone: bool = False
    #: The attempt channel's name (``PJSIP/carrier-a-0000002a``), for its HANGUPCAUSE.
    channel_name: str | None = None
    #: When Asterisk created the attempt channel (Unix time), from its ``creationtime``.
    created: float | None = None


def channel_sequence(name: str) -> int:
    """The number Asterisk ends a channel name with (``PJSIP/carrier-a-0000002a`` -> 42):
    the later channel has the larger one."""
    try:
        return int(name.rpartition("-")[2], 16)
    except ValueError:
        return -1


#: Bytes of ROUTER_RESUME at most. It goes into request bodies (each attempt's create, the
#: caller's variables), which Asterisk's HTTP server refuses past 40,960 bytes (413, measured
#: on Asterisk 22.10), escaped there for ARRAY() and JSON to up to twice its size. A plan of
#: 100 attempts to carriers of long names and failover lists made 108 KB, and every attempt's
#: create failed: the plan it carries is cut at its end to fit (only a restarted instance
#: reads it: it goes on with fewer attempts).
RESUME_MAX = 12_000


def resume_data(number: str, version: str, trace: str,
                attempts: Sequence[Attempt], *, untried: bool = False) -> str:
    """The ROUTER_RESUME value put on an attempt's channel when it is created: the call's
    number, routing version and trace so far, this attempt and the ones after it, each whole
    (dial number, timeouts, its carrier's failover policy): the next instance goes on with
    the plan of the version the call was routed with, whatever was seeded since.
    ``untried``: this attempt was never dialled (the service stopped before): the next
    instance tries it rather than judging it."""
    data: dict[str, Any] = {
        "number": number, "version": version, "trace": trace,
        "attempts": [[a.index, a.route.name, a.carrier.name, a.trunk, a.dial_number,
                      a.setup_timeout, a.ring_timeout, var.format_failover(a.carrier.failover)]
                     for a in attempts],
    }
    if untried:
        data["untried"] = True
    text = json.dumps(data, separators=(",", ":"))  # (ASCII: characters are bytes)
    while len(text) > RESUME_MAX and len(data["attempts"]) > 1:
        data["attempts"].pop()  # (the next ones are kept: they are tried first)
        text = json.dumps(data, separators=(",", ":"))
    return text


#: What a dial number of ROUTER_RESUME may hold (a carrier's technical prefix and a
#: formatted number): it goes into a dial string.
_DIAL_NUMBER_RE = re.compile(r"[0-9*#+]{1,40}")


@dataclass(frozen=True, slots=True)
class Resume:
    """A ROUTER_RESUME value read back (:func:`parse_resume`)."""

    number: str
    version: str
    trace: list[TraceEntry]
    #: the attempt it was written with, then the rest, each whole
    attempts: list[Attempt]
    #: The first of them was never dialled.
    untried: bool = False

    def base_vars(self) -> dict[str, str]:
        return {var.STATUS: str(Status.OK), var.VERSION: self.version, var.NUMBER: self.number}


async def read_resume(ari: AriClient, channel_id: str) -> Resume:
    """The ROUTER_RESUME a channel holds; AriError when it cannot be read, ValueError when
    it is not one."""
    return parse_resume(await ari.get_variable(channel_id, var.RESUME))


def parse_resume(text: str) -> Resume:
    """The inverse of :func:`resume_data`; ValueError when ``text`` is not one, or names a
    carrier or trunk that could not have been validated (they go into the trace)."""
    try:
        data = json.loads(text)
        attempts = [_resume_attempt(a) for a in data["attempts"]]
        resume = Resume(str(data["number"]), str(data["version"]),
                        parse_trace(str(data["trace"])), attempts,
                        untried=data.get("untried") is True)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not ROUTER_RESUME data: {exc!r}") from None
    if not attempts:
        raise ValueError("ROUTER_RESUME names no attempt")
    return resume


def _resume_attempt(item: Sequence[Any]) -> Attempt:
    index, route, carrier, trunk, dial_number, setup, ring, failover = item
    index, route, carrier, trunk = int(index), str(route), str(carrier), str(trunk)
    if not (TRUNK_NAME_RE.match(carrier) and TRUNK_NAME_RE.match(trunk)):
        raise ValueError(f"not a carrier and trunk: {carrier!r}, {trunk!r}")
    if not (isinstance(dial_number, str) and _DIAL_NUMBER_RE.fullmatch(dial_number)):
        raise ValueError(f"not a dial number: {dial_number!r}")
    setup, ring = float(setup), float(ring)
    if not (TIMEOUT_MIN <= setup <= TIMEOUT_MAX and TIMEOUT_MIN <= ring <= TIMEOUT_MAX):
        raise ValueError(f"not timeouts: {setup!r}, {ring!r}")
    return Attempt(index, Route(route, 0, carrier),
                   Carrier(carrier, (trunk,), failover=var.parse_failover(str(failover))),
                   trunk, dial_number, setup, ring)
