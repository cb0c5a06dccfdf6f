"""The FastAGI scripts: thin translators between channel variables and the routing core.

``route``   ``AGI(agi://127.0.0.1:4573/route,<number>[,<tenant>])``
            plans the call (``routing.plan.plan``) and sets ``ROUTER_*`` (SPEC section 4).
``outcome`` ``AGI(agi://127.0.0.1:4573/outcome,<n>,${HANGUPCAUSE},${DIALSTATUS},
            ${RINGTIME_MS},${PROGRESSTIME_MS},<HANGUPCAUSE_KEYS() before the Dial>)``
            judges failed attempt n (``routing.policy.judge``) on its hangup cause and the SIP
            code of the channel that attempt created (``HANGUPCAUSE(<channel>,tech)``, read
            here), sets whether to try the next one, and when stopping, the cause to hang the
            caller up with (``routing.policy.caller_cause`` over every attempt of the call).

Every variable name comes from ``routing.variables``. No routing rule lives here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agi.server import AgiSession, Handler
from routing import causes
from routing import variables as V
from routing.model import DEFAULT_FAILOVER, FailoverPolicy
from routing.numbers import all_digits
from routing.plan import Plan, Status, plan
from routing.policy import (
    Judgement,
    Observation,
    Outcome,
    Verdict,
    caller_cause,
    judge,
    sip_response,
    unwatched,
)
from routing.snapshot import Snapshot
from routing.trace import attempt_entry

log = logging.getLogger(__name__)

SnapshotSource = Callable[[], Snapshot | None]



# -- pure translations (unit-tested on their own) ---------------------------------------------


def route_variables(p: Plan, version: str | None) -> list[tuple[str, str]]:
    """The variables ``route`` sets, in order; ``ROUTER_STATUS`` last, so that a session cut
    short never leaves a channel that looks routed."""
    out: list[tuple[str, str]] = []
    for a in p.attempts:
        out += [
            (V.dial(a.index), a.endpoint),
            (V.carrier(a.index), a.carrier.name),
            (V.trunk(a.index), a.trunk),
            (V.timeout(a.index), f"{a.ring_timeout:g}"),
            (V.setup_timeout(a.index), f"{a.setup_timeout:g}"),
            (V.failover(a.index), V.format_failover(a.carrier.failover)),
        ]
    out.append((V.NUMBER, p.number or ""))
    out.append((V.COUNT, str(len(p.attempts))))
    if version is not None:
        out.append((V.VERSION, version))
    if p.status is not Status.OK:
        out.append((V.CALLER_CAUSE, str(p.caller_cause)))
    # The same on the CDR now, so that the record of every Dial() has them, not only the
    # record the h extension completes at the end (a failed attempt's record closes as the
    # dialplan goes on after its Dial()).
    status = str(p.status)
    return [*V.with_cdr(dict(out)).items(), (V.cdr(V.STATUS), status), (V.STATUS, status)]


def error_variables() -> list[tuple[str, str]]:
    return [(V.COUNT, "0"), (V.CALLER_CAUSE, str(causes.ROUTER_ERROR)),
            (V.STATUS, str(Status.ERROR))]


def parse_sip_code(tech: str) -> int | None:
    """The final SIP code in ``HANGUPCAUSE(<chan>,tech)`` ("SIP 503 Service Unavailable" ->
    503). That is the channel's last SIP response: after a ring timeout it is "SIP 180
    Ringing", which is no final answer, so provisional codes give None."""
    code = sip_response(tech)
    return code if code is not None and 300 <= code < 700 else None


def _int_or_none(text: str) -> int | None:
    """A positive number written in ASCII digits, else None (``str.isdigit`` alone takes
    "²", which ``int`` refuses, and "١", which it reads as 1)."""
    text = text.strip()
    return int(text) if all_digits(text) and int(text) > 0 else None


def observe(hangupcause: str, dialstatus: str, ringtime_ms: str, progresstime_ms: str,
            tech: str, *, before_setup_timer: bool = False,
            cause_before: str | None = None) -> Observation:
    """What the dialplan saw of one failed ``Dial()``, as the core's Observation.

    ``tech`` is ``HANGUPCAUSE(<channel>,tech)`` of the channel this attempt created. The
    decision rests on the carrier's final SIP code and ``HANGUPCAUSE``. Measured on Asterisk
    22: ``HANGUPCAUSE`` is only renewed by a final failure from the far end; after one of
    Dial's own timers it still holds the previous attempt's cause, so it is used only with a
    final SIP code, or with ``DIALSTATUS`` BUSY or CONGESTION (the far end's answer renewed it).
    ``RINGTIME_MS`` / ``PROGRESSTIME_MS`` (renewed by every Dial) say whether a 180 / 183 came.
    ``DIALSTATUS`` is otherwise a hint for one thing only, when the far end gave no final
    answer: which of Dial's timers fired (``NOANSWER`` the ring timeout, ``CHANUNAVAIL`` the
    ``^SETUP`` timeout or no channel at all). ``before_setup_timer``: the Dial ended before its
    ``^SETUP`` timer could fire (see :func:`setup_timer_ruled_out`). ``cause_before``:
    ``HANGUPCAUSE`` before the Dial (``ROUTER_CAUSE_BEFORE``; None: not noted): BUSY or
    CONGESTION without a final SIP code counts its cause only when it changed, since Dial's
    ``i`` option reports a carrier's 3xx as BUSY and leaves the cause of an earlier attempt.
    """
    status = dialstatus.strip()
    sip = parse_sip_code(tech)
    provisional = bool(ringtime_ms.strip() or progresstime_ms.strip())
    said = unwatched(tech)
    if said is not None and said.answered:
        # The carrier's 200 to the INVITE (chan_pjsip records only INVITE responses there: a
        # CANCEL's 200 is not one) crossed one of Dial's timers, or came with its own BYE:
        # the callee picked up and got a BYE. Nothing to connect, and the next trunk would
        # ring them again (seen on the lab: 'CHANUNAVAIL tech=SIP 200 OK -> unreachable,
        # next'). The ARI path judges an answer it saw too late alike.
        return Observation(provisional=provisional, early_media=bool(progresstime_ms.strip()),
                           answered=True, unconnected=True, caller_gone=status == "CANCEL")
    # Which of Dial's timers fired: the ring timeout gives NOANSWER; the ^SETUP timeout
    # CHANUNAVAIL, and only while no 180/183 has come (one stops it). A 487 then only answers
    # the CANCEL that Dial sent. CHANUNAVAIL with a 487 after a 180 is the carrier ending the
    # INVITE by itself: its own answer, judged as such.
    own_timer = sip in (None, 487) and (
        status == "NOANSWER"
        or (status == "CHANUNAVAIL" and not provisional and not before_setup_timer))
    final = sip is not None and not own_timer
    # No SIP code (the channel this Dial created could not be told from HANGUPCAUSE_KEYS()):
    # BUSY and CONGESTION still mean the far end's answer renewed HANGUPCAUSE, so it holds,
    # unless it is the one from before the Dial (a 3xx that Dial's `i` option made BUSY).
    renewed = cause_before is None or hangupcause.strip() != cause_before.strip()
    fresh = final or (cause_from_far_end(dialstatus, tech) and renewed)
    return Observation(
        cause=_int_or_none(hangupcause) if fresh else None,
        sip_code=sip if final else None,
        provisional=provisional,
        early_media=bool(progresstime_ms.strip()),
        setup_timeout=own_timer and not provisional,
        ring_timeout=own_timer and provisional,
        caller_gone=status == "CANCEL",
    )


def cause_from_far_end(dialstatus: str, tech: str) -> bool:
    """BUSY or CONGESTION with no final SIP code: ``HANGUPCAUSE`` is the far end's answer,
    if the Dial changed it (``ROUTER_CAUSE_BEFORE``, see :func:`observe`)."""
    return parse_sip_code(tech) is None and dialstatus.strip() in ("BUSY", "CONGESTION")


#: A Dial that its ^SETUP timer ended lasted at least the timeout; a carrier's own 487 this
#: long before it cannot be the answer to that timer's CANCEL. (Dial sets no DIALEDTIME_MS on
#: CHANUNAVAIL: the dialplan notes ROUTER_DIAL_START.)
SETUP_TIMER_MARGIN_MS = 100


def is_unavailable_without_reply(dialstatus: str, ringtime_ms: str,
                                 progresstime_ms: str) -> bool:
    """CHANUNAVAIL with no 180/183: Dial's ^SETUP timer, or a trunk it could not call at all
    (with no channel: only the Dial's duration tells them apart)."""
    return (dialstatus.strip() == "CHANUNAVAIL"
            and not (ringtime_ms.strip() or progresstime_ms.strip()))


def needs_dial_time(dialstatus: str, ringtime_ms: str, progresstime_ms: str,
                    tech: str) -> bool:
    """CHANUNAVAIL with a 487 and no 180/183: either Dial's ^SETUP timer CANCELled a trunk
    that sent only 100 Trying (the 487 answers that CANCEL), or the carrier ended the INVITE
    with 487 by itself, before the timer. Only the Dial's duration tells them apart."""
    return (is_unavailable_without_reply(dialstatus, ringtime_ms, progresstime_ms)
            and parse_sip_code(tech) == 487)


def setup_timer_ruled_out(start_ms: str, end_ms: str, setup_timeout: str) -> bool:
    """The Dial that started at ``start_ms`` (``ROUTER_DIAL_START``) and ended at ``end_ms``
    (``ROUTER_DIAL_END``, both Asterisk's clock) lasted less than its ^SETUP timeout
    (seconds): that timer did not end it. Not known (a dialplan of one's own without
    ROUTER_DIAL_START): the timer, as before."""
    try:
        elapsed = float(end_ms) - float(start_ms)
        limit = float(setup_timeout) * 1000 - SETUP_TIMER_MARGIN_MS
    except ValueError:
        return False
    return 0 <= elapsed < limit  # (negative: the clock was set back meanwhile, not known)


def new_channel(before: str, after: str) -> str | None:
    """The channel a Dial() created: the one key of ``HANGUPCAUSE_KEYS()`` that was not there
    before it (the keys come in no fixed order). None when Dial created no channel."""
    seen = set(filter(None, before.split(",")))
    new = [k for k in filter(None, after.split(",")) if k not in seen]
    return new[0] if len(new) == 1 else None


def parse_result(text: str | None) -> Judgement | None:
    """A ``ROUTER_RESULT_n`` value (``outcome:cause``) back into a Judgement."""
    if not text:
        return None
    outcome, _, cause = text.partition(":")
    try:
        return Judgement(Outcome(outcome), Verdict.STOP, int(cause))
    except ValueError:
        return None


#: Earlier verdicts read per GET FULL VARIABLE: an AGI command line holds 2,047 bytes.
RESULTS_PER_READ = 50


async def _earlier_results(session: AgiSession, n: int) -> list[Judgement]:
    """The verdicts of attempts 1..n-1 (``ROUTER_RESULT_k``, "outcome:cause": no "|" in
    them), RESULTS_PER_READ to a round trip rather than one each."""
    found: list[Judgement] = []
    for first in range(1, n, RESULTS_PER_READ):
        names = range(first, min(first + RESULTS_PER_READ, n))
        text = await session.expand("|".join("${" + V.result(k) + "}" for k in names))
        found += [j for t in text.split("|") if (j := parse_result(t)) is not None]
    return found


def format_result(j: Judgement) -> str:
    return f"{j.outcome}:{j.cause}"


# -- the scripts -----------------------------------------------------------------------------


@dataclass
class Scripts:
    """The ``route`` and ``outcome`` handlers over the current routing snapshot."""

    snapshots: SnapshotSource
    rng: random.Random

    def handlers(self) -> dict[str, Handler]:
        return {"route": self.route, "outcome": self.outcome}

    async def route(self, session: AgiSession) -> None:
        req = session.request
        number = req.arg(1) or req.query.get("number", "")
        tenant = req.arg(2) or req.query.get("tenant") or None
        snapshot = self.snapshots()
        pairs: Sequence[tuple[str, str]]
        if snapshot is None:
            session.log.error("route %r: no routing table loaded yet (is the seed in Redis?)",
                              number)
            pairs = error_variables()
        else:
            try:
                p = plan(snapshot, number, tenant, rng=self.rng)
            except Exception:
                # A bug: ERROR now. Left to the server, the session would end without
                # ROUTER_STATUS, which the dialplan takes for a router it could not reach:
                # asked again 12 times over 3 s, a traceback each, the caller in silence.
                session.log.exception("route %r: planning failed", number)
                pairs = error_variables()
            else:
                if session.log.isEnabledFor(logging.INFO):
                    session.log.info("route %r tenant=%r: %s %s, %d attempts (%s), version %s",
                                     number, tenant, p.status, p.number, len(p.attempts),
                                     ",".join(a.trunk for a in p.attempts) or p.reason,
                                     snapshot.version)
                pairs = route_variables(p, snapshot.version)
        await session.set_variables(pairs)

    async def _failover(self, session: AgiSession, n: int) -> FailoverPolicy:
        """The policy of attempt n's carrier in the version the call was routed with (a
        seed while the attempt rang must not change how it is judged); "" or nothing: the
        default. Unreadable (a dialplan of one's own wrote it): the carrier's policy now."""
        # GET FULL VARIABLE: GET VARIABLE answers 1,023 characters at most, and a long
        # policy cut there still parses (its stop list lost without a word).
        text = await session.get_full_variable(V.failover(n))
        try:
            return V.parse_failover(text)
        except ValueError:
            name = await session.get_variable(V.carrier(n)) or ""
            snapshot = self.snapshots()
            carrier = snapshot.carriers.get(name) if snapshot is not None else None
            session.log.warning("outcome %d: %s=%r is no failover policy: judged by carrier "
                                "%r's current one", n, V.failover(n), text, name)
            return carrier.failover if carrier is not None else DEFAULT_FAILOVER

    async def outcome(self, session: AgiSession) -> None:
        req = session.request
        n = _int_or_none(req.arg(1))
        count = _int_or_none(await session.get_variable(V.COUNT) or "") or 0
        if n is None or n > count:
            # Not from the shipped dialplan: stop the call as a router error rather than
            # judge an attempt that was not planned.
            session.log.error("outcome: attempt index %r is not one of 1..%d (ROUTER_COUNT)",
                              req.arg(1), count)
            await session.set_variables([(V.HANGUP_CAUSE, str(causes.ROUTER_ERROR)),
                                         (V.NEXT, "0")])
            return
        # The keys may arrive split over several args when the dialplan did not QUOTE() them.
        before = ",".join(req.args[5:])
        tech = ""
        # In full: after some forty attempts the list passes GET VARIABLE's 1,023 characters.
        peer = new_channel(before, await session.get_full_variable("HANGUPCAUSE_KEYS()"))
        if peer is not None:
            tech = await session.get_variable(f"HANGUPCAUSE({peer},tech)") or ""
        early = False
        no_channel = peer is None and is_unavailable_without_reply(req.arg(3), req.arg(4),
                                                                   req.arg(5))
        if no_channel or needs_dial_time(req.arg(3), req.arg(4), req.arg(5), tech):
            # Rare, one more read: the Dial's end, or failing that (a dialplan that does not
            # note it) now.
            start, end, now, setup = (await session.expand(
                f"${{{V.DIAL_START}}}|${{{V.DIAL_END}}}|${{STRFTIME(,,%s%3q)}}|"
                f"${{{V.setup_timeout(n)}}}") + "|||").split("|")[:4]
            early = setup_timer_ruled_out(start, end or now, setup)
        cause_before = None
        if cause_from_far_end(req.arg(3), tech):
            # Rare (a 3xx, or a busy whose channel could not be told apart): one more read.
            cause_before = await session.get_variable(V.CAUSE_BEFORE)
        obs = observe(req.arg(2), req.arg(3), req.arg(4), req.arg(5), tech,
                      before_setup_timer=early, cause_before=cause_before)
        trunk = await session.get_variable(V.trunk(n)) or ""
        if no_channel and early:
            # No channel, and at once: not the setup timer of a silent trunk but a trunk that
            # cannot be dialled at all. The ARI app warns about those once per version.
            session.log.warning("outcome %d/%d: Dial could not call %s at all (no PJSIP "
                                "endpoint of that name, or one its qualify finds unreachable)",
                                n, count, trunk)
        j = judge(obs, await self._failover(session, n))
        go_on = j.verdict is Verdict.RETRY and n < count
        session.log.info("outcome %d/%d %s %s: dialstatus=%s tech=%r cause=%s sip=%s rang=%s "
                         "-> %s, %s", n, count, trunk, peer, req.arg(3), tech, obs.cause,
                         obs.sip_code, obs.provisional, j.outcome, "next" if go_on else "stop")

        # The dialplan appends this attempt's entry to ROUTER_ATTEMPTS (and its CDR copy): a
        # trace of some twenty attempts is past what GET VARIABLE answers (1,023 characters),
        # and of some forty past what one AGI command can set.
        entry = attempt_entry(trunk, j, obs)
        pairs = [(V.result(n), format_result(j)), (V.LAST_ATTEMPT, str(entry))]
        if not go_on:
            judgements = [*await _earlier_results(session, n), j]
            pairs.append((V.HANGUP_CAUSE, str(caller_cause(judgements))))
        pairs.append((V.NEXT, "1" if go_on else "0"))
        await session.set_variables(pairs)
