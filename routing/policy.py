"""Outcome policy: after a failed attempt, try the next trunk or stop (SPEC section 3).

A pure function of the attempt's hangup cause (Q.850), its SIP code when known, and what the
attempt saw before failing (a provisional reply, early media, our own timers). Both the ARI app
and the FastAGI ``outcome`` script call :func:`judge`; the judgement never rests on
``DIALSTATUS``. (The ``outcome`` script reads it to fill in the observation where Dial hides
what happened: which of Dial's timers fired, whether the caller cancelled, and whether a
BUSY or CONGESTION without a SIP code renewed ``HANGUPCAUSE``; see agi/scripts.py.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from routing.causes import (
    CALL_REJECTED,
    CONGESTION,
    INTERWORKING,
    NO_ANSWER,
    NO_USER_RESPONSE,
    NORMAL_CLEARING,
    SIP_CAUSES,
    USER_BUSY,
)
from routing.model import DEFAULT_FAILOVER, FailoverPolicy


class Outcome(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    UNREACHABLE = "unreachable"  # no provisional reply in time: a dead trunk
    CANCELLED = "cancelled"  # the caller hung up, or the carrier ended the INVITE (487)
    CONGESTION = "congestion"  # unreachable, congestion, server error
    REJECTED = "rejected"  # the carrier refused this number or this call


class Verdict(StrEnum):
    DONE = "done"
    RETRY = "retry"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Observation:
    """What happened to one attempt."""

    cause: int | None = None  # ChannelDestroyed.cause / HANGUPCAUSE
    sip_code: int | None = None  # tech_cause / HANGUPCAUSE(chan,tech)
    provisional: bool = False  # 180/183 (RINGING / PROGRESS) seen
    early_media: bool = False  # 183 seen (with or without SDP: Asterisk does not tell)
    answered: bool = False
    #: Answered, but gone before anyone could connect it (it answered while no router
    #: listened): nothing to connect, and another trunk would ring the callee who picked up.
    unconnected: bool = False
    setup_timeout: bool = False  # our setup timer fired before any provisional reply
    ring_timeout: bool = False  # our ring timer fired after ringing started
    caller_gone: bool = False  # the caller hung up while this attempt was in progress


@dataclass(frozen=True, slots=True)
class Judgement:
    outcome: Outcome
    verdict: Verdict
    cause: int  # the Q.850 cause this attempt would give the caller


_BUSY_SIP = frozenset({486, 600})
_NO_ANSWER_SIP = frozenset({480})
_CANCELLED_SIP = frozenset({487})
#: SPEC section 3's "server error" is every 5xx, not only the ones its table names (501, 505,
#: 513, 580... are the far end's failure too, never a refusal of this call: a 403 to the
#: caller, outranking another trunk's 503, would be wrong).
_CONGESTION_SIP = frozenset({408, *range(500, 600)})
#: SIP code -> the Q.850 cause a rejection gives the caller (Asterisk's own mapping). 480 is
#: a rejection without ringing before it (with ringing: no answer).
_REJECTED_SIP = {code: SIP_CAUSES[code]
                 for code in (401, 403, 407, 603, 404, 485, 604, 484, 410, 480, 488, 606)}
_REJECTED_CAUSES = frozenset({1, 21, 22, 28, 58})
_CONGESTION_CAUSES = frozenset({3, 18, 20, 27, 34, 38, 41, 42, 44, 47, 66, 102})

#: When everything failed, the caller hears the most meaningful outcome (busy beats congestion).
#: An answer in that list is one nothing could connect: the callee picked up, so the caller
#: hears a normal clearing, never a code that invites a retry that would ring them again.
_RANK = {
    Outcome.ANSWERED: 6,
    Outcome.BUSY: 5,
    Outcome.NO_ANSWER: 4,
    Outcome.REJECTED: 3,
    Outcome.CONGESTION: 2,
    Outcome.UNREACHABLE: 2,
    Outcome.CANCELLED: 1,
}


def classify(obs: Observation) -> Outcome:
    """The outcome of an attempt, before any carrier override."""
    if obs.answered:
        return Outcome.ANSWERED
    if obs.caller_gone:
        return Outcome.CANCELLED
    if obs.setup_timeout:
        return Outcome.UNREACHABLE
    if obs.ring_timeout:
        return Outcome.NO_ANSWER
    sip, cause = obs.sip_code, obs.cause
    if sip in _BUSY_SIP or (sip is None and cause == USER_BUSY):
        return Outcome.BUSY
    if sip in _CANCELLED_SIP:
        # 487 with the caller still there: the carrier ended the INVITE itself (its own
        # downstream cancelled). SPEC section 3 lists 487 (127) as "stop"; a carrier whose 487
        # means something else says `failover: {retry: [487]}`. A 127 without a SIP code is
        # any interworking failure, not known to be a 487: it goes on (below), lest a
        # failover stop on a guess.
        return Outcome.CANCELLED
    if sip in _NO_ANSWER_SIP or (sip is None and cause == NO_ANSWER):
        # Asterisk reports its own dial timeout and a trunk that never answered alike
        # (19/480): only whether a provisional reply came tells them apart. Our own timers
        # were judged above; a 480 with no ringing before it is the carrier's own answer
        # (the callee is unavailable: a mobile switched off): a rejection, the next trunk, and
        # 480 to the caller should it be the last, not congestion (503), which tells a proxy
        # upstream to try another server.
        if obs.provisional:
            return Outcome.NO_ANSWER
        return Outcome.REJECTED if sip is not None else Outcome.UNREACHABLE
    if sip in _CONGESTION_SIP:
        return Outcome.CONGESTION
    if sip in _REJECTED_SIP:
        return Outcome.REJECTED
    if sip is None or sip < 300:
        if cause in _REJECTED_CAUSES:
            return Outcome.REJECTED
        if cause == USER_BUSY:
            return Outcome.BUSY
    if cause in _CONGESTION_CAUSES:
        return Outcome.CONGESTION
    if sip is not None and 400 <= sip < 700:
        return Outcome.REJECTED
    # Anything else (a BYE before answer, an unknown cause): the trunk did not carry the
    # call, so another one may.
    return Outcome.CONGESTION


def _caller_cause(outcome: Outcome, obs: Observation) -> int:
    if outcome is Outcome.BUSY:
        return USER_BUSY
    if outcome is Outcome.NO_ANSWER:
        return NO_ANSWER
    if outcome is Outcome.REJECTED:
        if obs.sip_code in _REJECTED_SIP:
            return _REJECTED_SIP[obs.sip_code]
        if obs.cause in _REJECTED_CAUSES:
            return obs.cause
        return CALL_REJECTED
    if outcome is Outcome.CANCELLED and not obs.caller_gone:
        return INTERWORKING  # the carrier's 487: SIP 500 to the caller (Asterisk's mapping)
    if outcome is Outcome.ANSWERED or outcome is Outcome.CANCELLED:
        return NORMAL_CLEARING
    return CONGESTION


def _codes(obs: Observation) -> tuple[int | None, int | None]:
    """The (cause, SIP code) a carrier override is checked against."""
    if obs.setup_timeout:
        return NO_USER_RESPONSE, 408
    if obs.ring_timeout:
        return NO_ANSWER, 480
    return obs.cause, obs.sip_code


_DEFAULT_VERDICT = {
    Outcome.ANSWERED: Verdict.DONE,
    Outcome.BUSY: Verdict.STOP,
    Outcome.NO_ANSWER: Verdict.STOP,
    Outcome.CANCELLED: Verdict.STOP,
    Outcome.UNREACHABLE: Verdict.RETRY,
    Outcome.CONGESTION: Verdict.RETRY,
    Outcome.REJECTED: Verdict.RETRY,
}


_TECH_RE = re.compile(r"^\s*SIP\s+([1-6][0-9]{2})\b")


def sip_response(tech: str) -> int | None:
    """The SIP code in ``HANGUPCAUSE(<channel>,tech)`` ("SIP 486 Busy Here" -> 486, "SIP 180
    Ringing" -> 180): the last SIP response Asterisk recorded for that channel."""
    m = _TECH_RE.match(tech)
    return int(m.group(1)) if m else None


def unwatched(tech: str) -> Observation | None:
    """What can be known of an attempt whose end nobody watched (the ARI app was down, or its
    events were lost in a websocket cut), from the last SIP response Asterisk recorded for its
    channel (``tech``, as read with ``HANGUPCAUSE(<channel>,tech)``; "" when none):

    - a final answer (300-699) is judged as such, with the cause Asterisk gives it
      (``causes.SIP_CAUSES``); whether a 180/183 came before it is lost;
    - 2xx: the callee answered, and the call ended before anyone connected it (answered,
      unconnected);
    - a 180 or 183 with nothing after it: Asterisk's own dial timeout ended the ringing
      (its CANCEL's 487 comes after the channel is gone): no answer;
    - nothing, or only 100/181/182: the trunk never alerted, as after our setup timer;
    - anything else (a ``Reason:`` header of a BYE overwrites the entry with its own text):
      unknown, None.
    """
    if not tech.strip():
        return Observation(setup_timeout=True)
    code = sip_response(tech)
    if code is None:
        return None
    if code in (180, 183):
        return Observation(provisional=True, early_media=code == 183, ring_timeout=True)
    if 200 <= code < 300:
        return Observation(answered=True, unconnected=True)
    if code < 300:
        return Observation(setup_timeout=True)
    return Observation(sip_code=code, cause=SIP_CAUSES.get(code))


def judge(obs: Observation, failover: FailoverPolicy = DEFAULT_FAILOVER) -> Judgement:
    """Decide what to do after an attempt ended (SPEC section 3)."""
    outcome = classify(obs)
    verdict = _DEFAULT_VERDICT[outcome]
    if outcome is Outcome.ANSWERED and obs.unconnected:
        verdict = Verdict.STOP
    if outcome is not Outcome.ANSWERED and not obs.caller_gone:
        cause, sip = _codes(obs)
        if sip in failover.stop or cause in failover.stop:
            verdict = Verdict.STOP
        elif sip in failover.retry or cause in failover.retry:
            verdict = Verdict.RETRY
        if (verdict is Verdict.RETRY and obs.early_media
                and not failover.retry_after_early_media):
            verdict = Verdict.STOP
    return Judgement(outcome, verdict, _caller_cause(outcome, obs))


def caller_cause(judgements: Sequence[Judgement]) -> int:
    """The cause to hang the caller up with when no attempt answered.

    The most meaningful outcome wins (an answer nothing could connect, busy, then no answer,
    then a rejection, then congestion); among equals, the earliest attempt's.
    """
    best: Judgement | None = None
    for j in judgements:
        if best is None or _RANK[j.outcome] > _RANK[best.outcome]:
            best = j
    return best.cause if best is not None else CONGESTION
