"""The compact attempt trace stored in ROUTER_ATTEMPTS for the CDR.

One entry per attempt, ``trunk:outcome:cause:sip`` joined by ``|``; e.g.
``carrier-b:congestion:34:503|carrier-a:answered:16:200``. Only validated names go in
(trunk names match routing.model.TRUNK_NAME_RE), so the separators cannot be forged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from routing.causes import NORMAL_CLEARING
from routing.policy import Judgement, Observation, Outcome

#: The outcome of an attempt the router could not judge: the FastAGI dialplan when it cannot
#: ask the router, the ARI app when an attempt ended while no instance of it listened.
UNJUDGED = "unjudged"


@dataclass(frozen=True, slots=True)
class TraceEntry:
    trunk: str
    outcome: str
    cause: int | None = None
    sip_code: int | None = None

    def __str__(self) -> str:
        cause = "" if self.cause is None else str(self.cause)
        sip = "" if self.sip_code is None else str(self.sip_code)
        return f"{self.trunk}:{self.outcome}:{cause}:{sip}"


def attempt_entry(trunk: str, judgement: Judgement, obs: Observation) -> TraceEntry:
    """A judged attempt's entry, the same on both paths: an answer (also one nothing could
    connect) reads ``answered:16:200``; after our setup timer, no SIP code."""
    if obs.answered:
        return TraceEntry(trunk, str(judgement.outcome), NORMAL_CLEARING, 200)
    return TraceEntry(trunk, str(judgement.outcome), obs.cause,
                      None if obs.setup_timeout else obs.sip_code)


def format_trace(entries: Iterable[TraceEntry]) -> str:
    return "|".join(str(e) for e in entries)


def abandoned_trace(trace: str, trunk: str) -> str:
    """``trace`` (formatted) should the caller hang up during the attempt on ``trunk``: that
    attempt "cancelled", with no cause and no SIP code (the router did not see it end)."""
    entry = str(TraceEntry(trunk, str(Outcome.CANCELLED)))
    return f"{trace}|{entry}" if trace else entry


def entry_count(trace: str) -> int:
    """How many entries a formatted trace has: what the dialplan's ``FIELDQTY(VAR,|)`` says."""
    return trace.count("|") + 1 if trace else 0


def parse_trace(text: str) -> list[TraceEntry]:
    entries = []
    for item in filter(None, text.split("|")):
        trunk, outcome, cause, sip = item.split(":")
        entries.append(TraceEntry(trunk, outcome, int(cause) if cause else None,
                                  int(sip) if sip else None))
    return entries
