"""One outbound call through ARI: plan, dial trunk after trunk, bridge the winner, clean up.

A :class:`Call` runs as one asyncio task fed by its own event queue (the dispatcher in
``ari_app.app`` routes every event of the caller channel and of the call's attempt channels
there). Each trunk attempt is an :class:`AttemptLeg` whose :class:`AttemptState` moves

    creating -> dialling -> ringing | early-media -> answered
                      \\-> failed / abandoned (from any state before answered)

The leg only records what it saw; what to do next is ``routing.policy.judge``'s call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ari_app import events as ev
from ari_app.client import (
    AriClient,
    AriConflict,
    AriError,
    AriNotFound,
    AriRefused,
    AriUnavailable,
    quietly,
)
from ari_app.events import Event, EventType
from ari_app.http import STALL_GRACE, HttpError, NotConnected, NotSent, stall_extended
from ari_app.leg import AttemptLeg, AttemptState
from ari_app.resume import Resume, ResumeLeg, channel_sequence, read_resume, resume_data
from routing import causes
from routing import variables as var
from routing.plan import Attempt, Status, plan
from routing.policy import (
    Judgement,
    Outcome,
    Verdict,
    caller_cause,
    judge,
    sip_response,
    unwatched,
)
from routing.snapshot import Snapshot
from routing.trace import (
    UNJUDGED,
    TraceEntry,
    abandoned_trace,
    attempt_entry,
    entry_count,
    format_trace,
)

log = logging.getLogger(__name__)

#: Extra seconds given to Asterisk's own /dial timeout, a backstop behind our timers.
DIAL_TIMEOUT_MARGIN = 2.0
#: How long the call waits for a hung-up leg's ChannelDestroyed before moving on.
DESTROY_WAIT = 2.0
#: How long a create that found no connection waits for ARI to be back (see Call._try).
ARI_AWAY_WAIT = 60.0
#: How often a timer whose check ARI did not answer checks again, as long as ARI stays away
#: (see Call._wait_for_ari). It is not judged before ARI answers: a judgement made blind
#: cannot be carried out while ARI is away, and was carried out as it came back, cutting a
#: callee who had answered meanwhile. Asterisk's own /dial timeout ends an attempt nobody
#: answers.
ARI_AWAY_RECHECK = 5.0
#: How long a new attempt channel may take to enter the app (its StasisStart) before it is
#: made once more, at least its setup_timeout: Asterisk's time, not the trunk's, which gets
#: its setup_timeout from the /dial on (see Call._try). Bounded by the setup_timeout alone, a
#: busy Asterisk's events, a few seconds behind, had a trunk that got no INVITE judged dead:
#: its failover skipped, or the phone answered 503 untried (lab, both paths at 50 calls/s).
STASIS_START_WAIT = 10.0


def stasis_start_wait(setup_timeout: float) -> float:
    """How long an attempt with that setup_timeout waits for its channel's StasisStart."""
    return max(setup_timeout, STASIS_START_WAIT)

#: How long a stopping service lets a call's last ROUTER_* write land.
VARS_WAIT_AT_STOP = 0.5
#: How long the next attempt waits, before it joins the caller's bridge, for the write made
#: as it was created (see Call._try). It lands in milliseconds on an Asterisk keeping up; with
#: both paths failing over at 50 calls/s on a slow VM, 0.25 s left 9 to 18 failed-attempt CDR
#: records of 500 with an empty ROUTER_ATTEMPTS, 1 s left 2 (and no phone waited longer).
VARS_WAIT_BEFORE_JOIN = 1.0
#: How long a stopping service waits for the reply to a /dial it sent.
DIAL_WAIT_AT_STOP = 2.0
#: Seconds before each new try of an attempt's hangup that Asterisk did not answer.
HANGUP_RETRIES = (0.2, 1.0)
#: How long the hangup sent again to an attempt still there DESTROY_WAIT after its first may
#: hold the next attempt up.
HANGUP_AGAIN_WAIT = 0.5


class CallLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Puts the call id in front of every line of a call."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['call_id']}] {msg}", kwargs  # type: ignore[index]


class Registry(Protocol):
    """What a call needs from the dispatcher: route a channel's events to it, and hang up a
    caller, or destroy a bridge, once Asterisk takes requests again (the call ended while it
    did not)."""

    def register(self, channel_id: str, call: Call) -> None: ...
    def unregister(self, channel_id: str) -> None: ...
    def owe_hangup(self, channel_id: str, cause: int | None) -> None: ...
    def owe_bridge(self, bridge_id: str) -> None: ...


async def destroy_bridge(ari: AriClient, bridge_id: str, registry: Registry,
                         logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Destroy a bridge of ours; when Asterisk does not take it (a request closed unanswered
    or timed out under load), it is owed: a later reconcile destroys it. Bridges outlive
    their channels in ARI, so one given up on stayed for good (hundreds after an overload)."""
    try:
        await ari.destroy_bridge(bridge_id)
    except AriNotFound:
        pass
    except (AriError, AriUnavailable) as exc:
        logger.warning("destroy bridge %s failed: %s; again later", bridge_id, exc)
        registry.owe_bridge(bridge_id)


@dataclass(frozen=True, slots=True)
class CallResult:
    status: Status
    outcome: Outcome | None = None  # the last attempt's outcome (ANSWERED when connected)
    caller_cause: int | None = None  # cause the caller was hung up with (None: it left)
    trace: str = ""


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(6)}"


@dataclass
class Call:
    """The state of one call; :meth:`run` is the whole call flow."""

    ari: AriClient
    registry: Registry
    caller_id: str
    args: Sequence[str]
    snapshot: Snapshot | None
    rng: random.Random
    clock: Callable[[], float] = field(default=lambda: asyncio.get_running_loop().time())
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    caller_gone: bool = False
    #: The router hung the caller up (its hangup request is sent): the call is over.
    caller_hung_up: bool = False
    bridge_id: str | None = None
    _bridge_created: asyncio.Future[Any] | None = None
    #: The last write of ROUTER_* to the caller, still in flight (see _record_progress).
    _vars_written: asyncio.Future[None] | None = None
    #: What the caller's ROUTER_* already hold: a later write sends only what changed.
    _vars_on_caller: dict[str, str] = field(default_factory=dict)
    legs: list[AttemptLeg] = field(default_factory=list)
    trace: list[TraceEntry] = field(default_factory=list)
    result: CallResult | None = None
    #: The attempt that answered: caller and it are bridged.
    answered_leg: AttemptLeg | None = None
    #: The caller joined the call's bridge (with the first attempt that got as far).
    caller_in_bridge: bool = False
    #: Set when the call is resumed from an attempt an earlier instance left ringing.
    resume_leg: ResumeLeg | None = None
    #: What the last attempt's ROUTER_RESUME was made of (number, version, trace, attempts).
    _resume_args: tuple[str, str, str, tuple[Attempt, ...]] | None = None
    #: Another instance took the application over (and the call): see :meth:`detach`.
    detached: bool = False
    #: Attempts whose create got no reply, by channel id: Asterisk may create the channel all
    #: the same, later. Its StasisStart, when it comes, gets it hung up at once.
    _unanswered_creates: dict[str, AttemptLeg] = field(default_factory=dict)
    #: Those hangups, in flight (the cleanup waits for them).
    _late_hangups: set[asyncio.Future[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.log = CallLogger(log, {"call_id": self.caller_id})

    # -- plumbing ----------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        """Called by the dispatcher, never blocks."""
        if self._unanswered_creates and event.type == EventType.STASIS_START:
            leg = self._unanswered_creates.pop(event.channel_id or "", None)
            if leg is not None and not leg.hangup_sent:
                # Made after the app gave its create up: never dialled, it would sit in the
                # app, undialled, until the call's end (hours for a call answered meanwhile).
                # Not taken by Asterisk, it is owed, as any leg's hangup (the cleanup skips a
                # leg whose hangup was sent).
                leg.hangup_sent = True
                self.log.info("hanging up %s, created after its request timed out",
                              leg.channel_id)
                hangup = asyncio.ensure_future(self._hang_up_attempt(leg.channel_id))
                self._late_hangups.add(hangup)
                hangup.add_done_callback(self._late_hangups.discard)
        self.queue.put_nowait(event)

    def channel_ids(self) -> list[str]:
        return [self.caller_id, *(leg.channel_id for leg in self.legs)]

    def _unregister(self) -> None:
        """The call's channels are no longer routed to it (its end, or left to another)."""
        for cid in self.channel_ids():
            self.registry.unregister(cid)

    def detach(self) -> None:
        """Another instance of the app took the call over (ApplicationReplaced): once its task
        is cancelled, the call ends here without a request to Asterisk."""
        self.detached = True

    async def _next(self, deadline: float | None) -> Event | None:
        """The next event, or None when ``deadline`` (loop time) passed first."""
        if deadline is None:
            return await self.queue.get()
        if not self.queue.empty():
            return self.queue.get_nowait()
        timeout = deadline - self.clock()
        if timeout <= 0:
            return None
        try:
            async with asyncio.timeout(timeout):  # no extra task, unlike wait_for()
                return await self.queue.get()
        except TimeoutError:
            return None

    def _caller_event(self, event: Event) -> None:
        if event.hangup and not self.caller_gone:
            self.caller_gone = True
            # (debug: the attempt's line, or the end of the bridged call, says it at info)
            self.log.debug("caller hung up (%s)", event.type)

    async def _quietly(self, what: str, request: Any) -> bool:
        return await quietly(what, request, self.log)

    async def _set_variables(self, values: dict[str, str]) -> None:
        """On the caller channel, and the outcome on its CDR too (one request), after any
        earlier write still in flight."""
        earlier, self._vars_written = self._vars_written, None
        await self._write_variables(values, earlier)

    async def _write_variables(self, values: dict[str, str],
                               earlier: asyncio.Future[None] | None) -> None:
        if earlier is not None:
            await earlier
        values = {k: v for k, v in values.items() if self._vars_on_caller.get(k) != v}
        if not values:
            return
        try:
            await self.ari.set_variables(self.caller_id, var.with_cdr(values))
        except (AriError, AriUnavailable) as exc:
            # 404: the caller is gone; 409: it hung up and left Stasis, its dialplan ends it;
            # any answer once it hung up (400 "Failed to execute function": its CDR closed).
            if not (self.caller_gone or isinstance(exc, (AriNotFound, AriConflict))):
                self.log.warning("set %s failed: %s", ",".join(values), exc)
            return
        self._vars_on_caller.update(values)

    def _record_progress(self, base_vars: dict[str, str], trace: str, resume: str,
                         attempt: Attempt) -> None:
        """Put what is known before an attempt on the caller now, without waiting for it: a
        caller who hangs up while the attempt rings has left Stasis before its outcome could be
        written (409), and its CDR keeps this instead (the routing status, number and version,
        and the attempts that failed before this one), and the dialplan's h extension adds this
        attempt, "cancelled", from ROUTER_ATTEMPTS_ABANDONED (or "answered", with
        ROUTER_ATTEMPT_CARRIER, when the caller was answered). ROUTER_RESUME too (as on the
        attempt's channel): should the attempt end while no instance of the app runs, the next
        one goes on with the rest of the plan from the caller alone."""
        values = {**base_vars, var.ATTEMPTS: trace} if trace else dict(base_vars)
        values[var.RESUME] = resume
        values[var.ATTEMPTS_ABANDONED] = abandoned_trace(trace, attempt.trunk)
        values[var.ATTEMPT_CARRIER] = attempt.carrier.name
        earlier = self._vars_written
        self._vars_written = asyncio.ensure_future(self._write_variables(values, earlier))

    async def _write_landed(self, within: float) -> bool:
        """Whether the write to the caller in flight, if any, landed within ``within`` s. The
        write goes on when the wait ends first (shielded); a failed one logs itself."""
        if self._vars_written is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self._vars_written), within)
        except Exception:  # noqa: BLE001 (timed out, or failed: not landed)
            return False
        return True

    async def _end_in_error(self) -> CallResult:
        """The router cannot go on with the call: ROUTER_STATUS ERROR on the caller (and its
        CDR: it said OK, written before the first attempt), hung up with congestion (503)."""
        await self._set_variables({var.STATUS: Status.ERROR})
        await self._hangup_caller(causes.CONGESTION)
        return CallResult(Status.ERROR, caller_cause=causes.CONGESTION,
                          trace=format_trace(self.trace))

    async def _hangup_caller(self, cause: int) -> None:
        self.caller_hung_up = True
        if not self.caller_gone:
            await self._settle_abandoned()
            if not await self._deliver_hangup("the caller", self.caller_id, cause):
                # Asterisk did not take it (away, or refusing our credentials): the caller
                # waits in Stasis. The next reconcile hangs it up with this cause; it took the
                # caller for one whose StasisStart was missed and routed it again, from the
                # first trunk (a trunk tried before rang twice; lab acceptance run).
                self.log.warning("the caller is hung up (cause %d) once ARI takes requests "
                                 "again", cause)
                self.registry.owe_hangup(self.caller_id, cause)

    async def _settle_abandoned(self) -> None:
        """The router ends the call. The caller's h extension copies ROUTER_ATTEMPTS_ABANDONED
        (the attempt in progress "cancelled") to the CDR when it has more entries than
        ROUTER_ATTEMPTS: after an outcome write (every normal end) it has not, but an error
        (an ARI request failed, nothing to resume) ends the call with none. Then the trace
        judged so far goes on both, so that the CDR does not say the caller cancelled. (After
        an outcome write no write is pending, and this is one comparison.)"""
        if not await self._write_landed(VARS_WAIT_AT_STOP):
            return  # what the caller holds is not known
        with contextlib.suppress(TimeoutError):  # (the write logs its own ARI errors)
            on_caller = self._vars_on_caller
            if (entry_count(on_caller.get(var.ATTEMPTS_ABANDONED, ""))
                    > entry_count(on_caller.get(var.ATTEMPTS, ""))):
                trace = format_trace(self.trace)
                await asyncio.wait_for(self._set_variables(
                    {var.ATTEMPTS: trace, var.ATTEMPTS_ABANDONED: trace}), VARS_WAIT_AT_STOP)

    async def _hangup_leg(self, leg: AttemptLeg) -> None:
        if leg.destroyed or leg.hangup_sent:
            return
        leg.hangup_sent = True
        await self._hang_up_attempt(leg.channel_id)

    async def _hang_up_attempt(self, channel_id: str) -> None:
        # Tried again when Asterisk did not answer: a channel never dialled has no /dial
        # timeout to end it. Not taken at all, it is owed: the next reconcile hangs it up (it
        # went on ringing, in the call's bridge if the timer's check could not take it out:
        # a late answer there met the caller, whatever the next trunk did).
        if not await self._deliver_hangup(channel_id, channel_id):
            self.registry.owe_hangup(channel_id, None)

    async def _hang_up_resumed(self, resume: ResumeLeg) -> None:
        """The attempt an earlier instance left, not taken over (it would ring on until
        Asterisk's /dial timeout, and an answer meet nobody)."""
        await self._hang_up_attempt(resume.channel_id)
        self.registry.unregister(resume.channel_id)

    async def _deliver_hangup(self, what: str, channel_id: str, cause: int | None = None
                              ) -> bool:
        """Hang a channel up; False when Asterisk did not take the request (away, or refusing
        it: 401/403). Gone already (404) or another error answer: True, nothing to do."""
        for delay in (*HANGUP_RETRIES, None):
            try:
                await self.ari.hangup(channel_id, cause)
                return True
            except AriNotFound:
                return True
            except AriUnavailable as exc:
                # A request that timed out was most likely delivered: only a connection closed
                # unanswered or refused (Asterisk past its sessionlimit) is tried again, and
                # the failover waits for no timeout more.
                # One not sent for want of a free connection already waited a whole timeout:
                # owed at once (the owed reconcile sends it), or the failover would wait a
                # timeout more at each try.
                undelivered = isinstance(exc.__cause__, HttpError)
                pool_full = (isinstance(exc.__cause__, NotSent)
                             and not isinstance(exc.__cause__, NotConnected))
                if delay is None or not undelivered or pool_full:
                    self.log.warning("hang up %s failed: %s", what, exc)
                    return not undelivered
                self.log.info("hang up %s failed: %s; again in %g s", what, exc, delay)
            except AriError as exc:
                self.log.warning("hang up %s failed: %s", what, exc)
                return not isinstance(exc, AriRefused)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last try returns")

    # -- the flow ----------------------------------------------------------------------

    async def run(self) -> CallResult:
        self.registry.register(self.caller_id, self)
        try:
            self.result = await self._route()
        except Exception as exc:
            if isinstance(exc, (AriError, AriUnavailable)):
                self.log.error("call failed on an ARI error: %s", exc)
            else:  # a bug: the caller must not be left in silence, nor a channel or bridge
                self.log.exception("call failed")
            await self._drop_unadopted_resume()
            self.result = await self._end_in_error()
        except asyncio.CancelledError:
            if self.detached:  # another instance has it: nothing in Asterisk is ours to touch
                self.log.info("left to the instance that took the application over")
                for pending in (self._vars_written, self._bridge_created,
                                *(leg.dial_request for leg in self.legs)):
                    if pending is not None and not pending.done():
                        pending.cancel()
                self._unregister()
                raise
            await self._settle_dial()
            # The app is shutting down. A bridged call goes on in Asterisk without us (the
            # next instance adopts it after its reconcile). So does a dialled attempt: hanging
            # it up would ring the callee twice, as the next instance would route the caller
            # again; it resumes the call from the attempt's ROUTER_RESUME instead. Anything
            # else loses its attempt and bridge, and the next instance routes its caller.
            if self.answered_leg is not None and not self.caller_gone:
                self.log.info("shutting down: the bridged call goes on without the router")
            elif (ringing := self._ringing_leg()) is not None:
                self.log.info("shutting down: attempt %d on %s goes on for the next instance",
                              ringing.attempt.index, ringing.attempt.trunk)
            elif self.resume_leg is not None and not self.legs:
                # Still reading what an earlier instance left: left as found, for the next.
                self.log.info("shutting down while resuming: the call is left for the next "
                              "instance")
            elif self._between_attempts():
                await self._leave_between_attempts()
            else:
                await self._cleanup()
                raise
            if self._vars_written is not None:
                # The caller's ROUTER_RESUME names the attempt in progress: let it land, or
                # the next instance would resume the attempt before and ring it again.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._vars_written, VARS_WAIT_AT_STOP)
            self._unregister()
            raise
        await self._cleanup()
        return self.result

    async def _drop_unadopted_resume(self) -> None:
        """An attempt an earlier instance left, which this call failed before taking over:
        hung up, as the call ends (it rang on, and an answer met nobody)."""
        resume = self.resume_leg
        if resume is None or resume.attempt_gone:
            return
        if any(leg.channel_id == resume.channel_id for leg in self.legs):
            return  # taken over: _cleanup() hangs it up
        await self._hang_up_resumed(resume)

    async def _settle_dial(self) -> None:
        """Stopped while an attempt's /dial was on its way: Asterisk may have sent the INVITE
        already. The reply gets a moment, and the attempt then counts as dialled, left ringing
        for the next instance. (It was hung up as never dialled: the trunk got a CANCEL right
        after its INVITE, and the next instance INVITEd it again.) With no reply in time it
        counts as dialled all the same: one that was not is judged a dead trunk by the next
        instance, which moves on, where the other way round a callee may ring twice."""
        leg = self._last_leg()
        if leg is None or leg.dial_request is None or leg.state is not AttemptState.CREATING:
            return
        request = leg.dial_request
        with contextlib.suppress(Exception):  # its error (or none in time) changes nothing
            await asyncio.wait_for(asyncio.shield(request), DIAL_WAIT_AT_STOP)
        if not request.done():  # its late error is nobody's business: not logged as unread
            request.add_done_callback(lambda f: f.cancelled() or f.exception())
        leg.dialled()

    def _last_leg(self) -> AttemptLeg | None:
        """The attempt in progress, or the last one made."""
        return self.legs[-1] if self.legs else None

    def _bridge_ready(self) -> bool:
        """The call's bridge was created (by this instance or an earlier one)."""
        created = self._bridge_created
        return (created is not None and created.done() and not created.cancelled()
                and created.exception() is None)

    def _between_attempts(self) -> bool:
        """The caller waits in the call's bridge, nothing answered, no attempt dialled."""
        return (self.caller_in_bridge and not self.caller_gone and not self.caller_hung_up
                and self.answered_leg is None
                and self._resume_args is not None and self._bridge_ready())

    async def _leave_between_attempts(self) -> None:
        """Stopping between two attempts: the caller is left in the call's bridge for the
        next instance, which goes on with the rest of the plan from the caller's
        ROUTER_RESUME. An attempt not dialled yet is hung up and marked untried there, so the
        next instance tries it. (Destroying the bridge instead made the next instance route
        the caller again from the start: the trunks already tried rang again.)"""
        untried = self._last_leg()
        if untried is not None and untried.state is not AttemptState.CREATING:
            untried = None  # dialled, or over (a CREATING leg is live)
        self.log.info("shutting down between attempts: the caller waits for the next "
                      "instance%s", f" (attempt {untried.attempt.index} untried)"
                      if untried is not None else "")
        # Should the caller hang up before the next instance goes on, its CDR gets the
        # attempts judged so far: none is in progress.
        values = {var.ATTEMPTS_ABANDONED: format_trace(self.trace)}
        if untried is not None:
            await self._hangup_leg(untried)
            assert self._resume_args is not None
            number, version, trace, attempts = self._resume_args
            values[var.RESUME] = resume_data(number, version, trace, attempts, untried=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._set_variables(values), VARS_WAIT_AT_STOP * 2)

    def _ringing_leg(self) -> AttemptLeg | None:
        """The attempt in progress, dialled and in the call's bridge, if the caller is there."""
        leg = self._last_leg()
        if (leg is None or self.caller_gone or not leg.in_stasis or not self.caller_in_bridge
                or leg.state not in (AttemptState.DIALLING, AttemptState.RINGING,
                                     AttemptState.EARLY_MEDIA)
                or not self._bridge_ready()):
            return None
        return leg

    async def _route(self) -> CallResult:
        if self.resume_leg is not None:
            return await self._resume(self.resume_leg)
        match list(self.args):
            case [number]:
                tenant = None
            case [number, tenant, *_]:
                tenant = tenant or None
            case _:
                number, tenant = "", None
        if self.snapshot is None:
            self.log.error("no routing table loaded (is the routes file seeded into Redis?)")
            return await self._end_in_error()
        the_plan = plan(self.snapshot, number, tenant, rng=self.rng)
        base_vars = {var.STATUS: str(the_plan.status), var.VERSION: self.snapshot.version}
        if the_plan.number:
            base_vars[var.NUMBER] = the_plan.number
        if the_plan.status is not Status.OK:
            cause = the_plan.caller_cause
            self.log.info(
                "number %r tenant %r: %s (%s), hanging up with cause %d (version %s)",
                number, tenant, the_plan.status, the_plan.reason, cause, self.snapshot.version,
            )
            await self._set_variables(base_vars)
            await self._hangup_caller(cause)
            return CallResult(the_plan.status, caller_cause=cause)
        self.log.info(
            "number %s tenant %s: %d attempt(s) %s (version %s)",
            the_plan.number, tenant, len(the_plan.attempts),
            ",".join(a.trunk for a in the_plan.attempts), self.snapshot.version,
        )
        return await self._attempts(the_plan.attempts, base_vars)

    async def _resume(self, resume: ResumeLeg) -> CallResult:
        """Go on with a call from the attempt an earlier instance left ringing."""
        self.bridge_id = resume.bridge_id
        self._bridge_created = asyncio.get_running_loop().create_future()
        self._bridge_created.set_result(None)  # it exists: _cleanup destroys it
        self.caller_in_bridge = True  # reconcile resumes a caller and an attempt in a bridge
        data: Resume | None = None
        try:
            data = await read_resume(self.ari, resume.channel_id)
        except AriNotFound:
            if resume.attempt_gone:
                self.log.warning("cannot resume caller %s: it is gone", resume.channel_id)
            else:
                # The attempt ended after GET /channels listed it: its ChannelDestroyed is on
                # its way to this call, which judges it as usual. The caller holds the same
                # ROUTER_RESUME (written with each attempt).
                data = await self._caller_resume_data()
        except (AriError, AriUnavailable, ValueError) as exc:
            self.log.warning("cannot resume attempt %s: %s", resume.channel_id, exc)
        if resume.attempt_gone:
            return await self._resume_after_lost_attempt(data)
        attempts = data.attempts if data is not None else []
        if not attempts:
            # Nothing to go on with: no resume data (unreadable, or none).
            self.log.warning("ending the call left by an earlier instance: nothing to resume")
            await self._hang_up_resumed(resume)
            return await self._end_in_error()
        assert data is not None
        current = attempts[0]
        leg = AttemptLeg(current, resume.channel_id, self.clock(), state=AttemptState.DIALLING,
                         in_stasis=True, created=True, name=resume.channel_name)
        if resume.channel_state == ev.ChannelState.UP:
            leg.answered()  # while no instance was listening
        else:
            # The channel's state says Ringing after a 180, but nothing after a 183: its last
            # SIP response does (a callee hearing early media is not left to the setup timer).
            code = await self._provisional_response(leg.channel_id, resume.channel_name)
            if code is not None or resume.channel_state == ev.ChannelState.RINGING:
                leg.alerted(self.clock(), media=code == 183)
                await self._cap_ring_timer(leg, resume)
        self.legs.append(leg)
        self.registry.register(leg.channel_id, self)
        self.trace = data.trace
        self.log.info("resumed attempt %d on %s (%s) left by an earlier instance",
                      current.index, current.trunk, resume.channel_state)
        later = [a for a in attempts[1:] if a is not None]
        return await self._attempts((current, *later), data.base_vars(), resumed=leg)

    async def _last_response(self, channel_id: str, name: str) -> str | None:
        """``HANGUPCAUSE(name,tech)`` as ``channel_id`` holds it ("SIP 486 Busy Here", or
        "" when Asterisk recorded no response); None when it cannot be read."""
        try:
            return await self.ari.get_variable(channel_id, f"HANGUPCAUSE({name},tech)")
        except (AriError, AriUnavailable) as exc:
            self.log.info("cannot read the last SIP response of %s: %s", name, exc)
            return None

    async def _provisional_response(self, channel_id: str, name: str | None) -> int | None:
        """180 or 183 when that is the last SIP response of the attempt channel ``name`` (a
        183 sets no channel state); None otherwise, or when it cannot be read."""
        if name is None:
            return None
        code = sip_response(await self._last_response(channel_id, name) or "")
        return code if code in (180, 183) else None

    async def _lost_attempt_response(self, trunk: str) -> str | None:
        """The last SIP response of the caller's latest attempt on ``trunk``: Asterisk records
        each response of a channel bridged with the caller on the caller too, and keeps it
        after that channel is gone. "" when none was recorded; None when it cannot be read."""
        try:
            keys = await self.ari.get_variable(self.caller_id, "HANGUPCAUSE_KEYS()")
        except (AriError, AriUnavailable) as exc:
            self.log.info("cannot read the caller's hangup causes: %s", exc)
            return None
        mine = re.compile(rf"PJSIP/{re.escape(trunk)}-[0-9a-f]{{8,}}")
        names = [k for k in keys.split(",") if mine.fullmatch(k)]
        if not names:
            return ""
        return await self._last_response(self.caller_id, max(names, key=channel_sequence))

    async def _caller_resume_data(self) -> Resume | None:
        try:
            return await read_resume(self.ari, self.caller_id)
        except (AriError, AriUnavailable, ValueError) as exc:
            self.log.warning("cannot resume from caller %s either: %s", self.caller_id, exc)
            return None

    async def _cap_ring_timer(self, leg: AttemptLeg, resume: ResumeLeg) -> None:
        """A resumed attempt's ring timer ends by the latest it could have ended had nobody
        stopped: the channel's creation, the wait for its StasisStart (STASIS_START_WAIT, at
        least setup_timeout) and for a provisional reply (setup_timeout), each with its
        stall grace, then ring_timeout. It restarted at
        each resume: an instance restarted again and again left the ringing to Asterisk's
        /dial timeout. The channel's age is read on Asterisk's clock (``EPOCH``), not the
        router's; an age no ringing channel can have is ignored."""
        if resume.created is None or leg.ring_started is None:
            return
        try:
            epoch = float(await self.ari.get_variable(leg.channel_id, "EPOCH"))
        except (AriError, AriUnavailable, ValueError):
            return
        age = epoch - resume.created
        setup, ring = leg.attempt.setup_timeout, leg.attempt.ring_timeout
        before_ringing = stasis_start_wait(setup) + setup + 2 * STALL_GRACE
        if not 0 <= age <= before_ringing + ring + DIAL_TIMEOUT_MARGIN:
            return
        leg.ring_started = min(leg.ring_started, self.clock() - max(0.0, age - before_ringing))

    async def _attempts(self, attempts: Sequence[Attempt], base_vars: dict[str, str],
                        resumed: AttemptLeg | None = None, *, prepared: bool = False,
                        judged: Sequence[Judgement] = ()) -> CallResult:
        """``prepared``: the call's bridge exists already, with the caller in it. ``judged``:
        attempts judged before these (they count for the caller's cause)."""
        judgements: list[Judgement] = list(judged)
        if resumed is None and not prepared:
            self._prepare_caller()
        last: Judgement | None = None
        for i, attempt in enumerate(attempts):
            if resumed is not None and i == 0:
                leg = await self._follow(resumed)
            else:
                self._drain()  # a caller's hangup queued behind the last attempt's end counts
                if self.caller_gone:
                    break
                leg = await self._try(attempt, attempts[i + 1:], base_vars)
            last = judge(leg.observation(), attempt.carrier.failover)
            self._record(leg, last, last_one=i == len(attempts) - 1)
            if last.verdict is Verdict.DONE:
                return await self._connected(leg, base_vars)
            judgements.append(last)
            if last.verdict is Verdict.STOP or self.caller_gone:
                break
        self._drain()
        values = {**base_vars, var.ATTEMPTS: format_trace(self.trace)}
        if self.caller_gone:
            self.log.info("caller hung up after %d attempt(s): no further attempt",
                          len(self.trace))
            await self._set_variables(values)
            return CallResult(Status.OK, last.outcome if last else None, None,
                              format_trace(self.trace))
        cause = caller_cause(judgements)
        self.log.info("no attempt answered: hanging up the caller with cause %d", cause)
        await self._set_variables(values)
        await self._hangup_caller(cause)
        return CallResult(Status.OK, last.outcome if last else None, cause,
                          format_trace(self.trace))

    async def _resume_after_lost_attempt(self, data: Resume | None) -> CallResult:
        """The caller waits alone in the call's bridge: its attempt ended while no instance
        listened, and how it ended is lost with its channel. Go on with the rest of the plan
        (the trace says ``unjudged`` for it), as the FastAGI dialplan does when it cannot ask
        the router."""
        if data is None:
            self.log.warning("ending a caller left alone by an earlier instance: no resume data")
            return await self._end_in_error()
        lost_index, lost_trunk = data.attempts[0].index, data.attempts[0].trunk
        if data.untried:  # the earlier instance stopped before dialling it: try it now
            self.trace = list(data.trace)
            self.log.info("resuming with attempt %d on %s, which an earlier instance never "
                          "dialled", lost_index, lost_trunk)
            return await self._attempts(data.attempts, data.base_vars(), prepared=True)
        later = data.attempts[1:]
        tech = await self._lost_attempt_response(lost_trunk)
        obs = unwatched(tech) if tech is not None else None
        if obs is None:
            self.trace = [*data.trace, TraceEntry(lost_trunk, UNJUDGED, None, None)]
            self.log.warning("attempt %d on %s ended while no router listened, how is unknown; "
                             "going on with %d more attempt(s)", lost_index, lost_trunk,
                             len(later))
            return await self._attempts(later, data.base_vars(), prepared=True)
        judgement = judge(obs, data.attempts[0].carrier.failover)
        self.trace = [*data.trace, attempt_entry(lost_trunk, judgement, obs)]
        self.log.info("attempt %d on %s ended while no router listened (last response %r): "
                      "%s, %s", lost_index, lost_trunk, tech, judgement.outcome,
                      judgement.verdict)
        return await self._attempts(later if judgement.verdict is Verdict.RETRY else [],
                                    data.base_vars(), prepared=True, judged=[judgement])

    def _dispatch(self, event: Event, leg: AttemptLeg | None) -> None:
        """An event of the caller, or of ``leg``; any other is stale and dropped."""
        if event.channel_id == self.caller_id:
            self._caller_event(event)
        elif leg is not None and event.channel_id == leg.channel_id:
            leg.on_event(event, self.clock())

    def _drain(self, leg: AttemptLeg | None = None) -> None:
        """The events already queued, without waiting: the caller's, and ``leg``'s."""
        while not self.queue.empty():
            self._dispatch(self.queue.get_nowait(), leg)

    def _prepare_caller(self) -> None:
        """One mixing bridge for the whole call. The phone hears what each trunk sends through
        it: 180 when the trunk rings, 183 and its media, no ringing of our own before that.
        It is created while the first attempt's channel is (one round trip less before the
        INVITE); the attempt waits for it before joining it."""
        self.bridge_id = new_id(ev.BRIDGE_ID_PREFIX)
        self._bridge_created = asyncio.ensure_future(
            self.ari.create_bridge(self.bridge_id, name=self.ari.app))

    async def _await_bridge(self) -> str:
        """The call's bridge, created. Its request may have found no connection to ARI (away
        as the call began: certainly not sent, and the first attempt's create, which failed
        the same way, was made again once ARI was back): made once more. Before, the call
        ended in ERROR there, 503 to the phone, no trunk tried."""
        assert self.bridge_id is not None and self._bridge_created is not None
        try:
            await self._bridge_created
        except AriUnavailable as exc:
            if not isinstance(exc.__cause__, NotConnected):
                raise
            self.log.info("the call's bridge could not be created (ARI away): once more")
            self._prepare_caller()
            assert self.bridge_id is not None and self._bridge_created is not None
            await self._bridge_created
        return self.bridge_id

    def _record(self, leg: AttemptLeg, judgement: Judgement, *, last_one: bool) -> None:
        """The attempt's trace entry and log line. ``last_one``: the plan has no attempt after
        it, so a retry verdict says there is none left (as the FastAGI log says "stop")."""
        self.trace.append(attempt_entry(leg.attempt.trunk, judgement, leg.observation()))
        elapsed = (leg.ended or self.clock()) - leg.started
        self.log.info(
            "attempt %d trunk=%s carrier=%s state=%s outcome=%s cause=%s sip=%s "
            "provisional=%s early_media=%s verdict=%s %.2fs",
            leg.attempt.index, leg.attempt.trunk, leg.attempt.carrier.name, leg.state,
            judgement.outcome, leg.cause, leg.sip_code, leg.provisional, leg.early_media,
            f"{judgement.verdict}, none left" if last_one and judgement.verdict is Verdict.RETRY
            else judgement.verdict, elapsed,
        )

    async def _try(self, attempt: Attempt, later: Sequence[Attempt],
                   base_vars: dict[str, str], *, again: bool = True) -> AttemptLeg:
        """``again``: an attempt channel Asterisk ends before it enters the app is made once
        more (its trunk got no INVITE)."""
        now = self.clock()
        leg = AttemptLeg(attempt, new_id(ev.ATTEMPT_ID_PREFIX), now)
        self.legs.append(leg)
        self.registry.register(leg.channel_id, self)
        stasis_deadline = now + stasis_start_wait(attempt.setup_timeout)
        trace = format_trace(self.trace)
        self._resume_args = (base_vars.get(var.NUMBER, ""), base_vars.get(var.VERSION, ""),
                             trace, (attempt, *later))
        resume = resume_data(*self._resume_args)
        self._record_progress(base_vars, trace, resume, attempt)
        try:
            created = await self.ari.create_channel(
                attempt.endpoint,
                channel_id=leg.channel_id,
                app_args=(ev.ATTEMPT_ARG, self.caller_id),
                originator=self.caller_id,
                variables={var.RESUME: resume, var.NO_CDR: "1"},
            )
        except (AriError, AriUnavailable) as exc:
            # An error answer, or a request not sent (no connection at all, or none free in
            # time), leaves nothing to hang up. No answer (a timeout of an overloaded
            # Asterisk) may leave the channel created all the same: hung up when it enters
            # the app (see deliver), else by the cleanup.
            not_connected = isinstance(exc.__cause__, NotConnected)
            leg.hangup_sent = isinstance(exc, AriError) or isinstance(exc.__cause__, NotSent)
            if isinstance(exc, AriRefused):
                raise  # our credentials, not the trunk: the call ends (ERROR, 503)
            if not_connected and again:
                # ARI away (nothing was sent), not the trunk: once it is back (at most
                # ARI_AWAY_WAIT s), the same attempt is made again. Taken for the trunk's
                # failure, every trunk of the plan failed in turn, and the call with them
                # (lab acceptance run).
                leg.fail(self.clock())
                if await self._ari_back():
                    self.log.info("attempt %d: ARI could not be reached to create %s; it is "
                                  "back: once more", attempt.index, attempt.endpoint)
                    return await self._try(attempt, later, base_vars, again=False)
            self.log.warning("attempt %d: creating %s failed: %s",
                             attempt.index, attempt.endpoint, exc)
            if not leg.hangup_sent:
                self._drain(leg)  # its StasisStart may have come while the request waited
                if leg.in_stasis:
                    await self._hangup_leg(leg)
                else:
                    self._unanswered_creates[leg.channel_id] = leg
            leg.fail(self.clock())
            return leg
        leg.created = True
        leg.name = created.name if created is not None else None
        # Dialling before the leg is in Stasis gets 409: wait for its StasisStart.
        while not leg.in_stasis and leg.live:
            if not await self._step(leg, stasis_deadline):
                break
        if not leg.live and not leg.in_stasis:
            self._drain(leg)  # a caller's hangup queued behind it counts first
        if again and not self.caller_gone and (
                leg.setup_timeout  # (its StasisStart may have come since: it was not dialled)
                or not (leg.in_stasis or leg.live or leg.hangup_sent)):
            # Never dialled: its trunk got no INVITE and is no failed trunk. Asterisk ended it
            # before it entered the app (the app was not connected at that moment: a
            # websocket cut), or it was not in the app by the wait's end (Asterisk's events
            # far behind, a stall). Judged, a plan's last trunk went untried, 503 to the
            # phone. Made once more.
            self.log.info("attempt %d: the channel on %s %s, no INVITE sent: once more",
                          attempt.index, attempt.trunk,
                          "was not in the app in time" if leg.setup_timeout
                          else "ended before it entered the app")
            await self._hangup_leg(leg)  # (gone: 404, quietly; after the timer's: nothing)
            return await self._try(attempt, later, base_vars, again=False)
        # Not in the app from here on only when it is over: the loop above ends on the
        # StasisStart, the leg's end, or its setup timer (which fails and hangs it up).
        if not leg.live:
            return await self._finish(leg)
        if await self._caller_left(leg):
            return await self._finish(leg)
        bridge_id = await self._await_bridge()  # an error creating it fails the call (ERROR)
        try:
            # The caller joins with the first attempt that gets this far: not with the first
            # attempt, whose channel may have failed to be created (an unknown endpoint).
            members = [leg.channel_id]
            if not self.caller_in_bridge:
                members.insert(0, self.caller_id)
            if self.caller_in_bridge:
                # The caller's CDR record of the attempt before closes as this one joins: the
                # write made as this one was created (the trace with that attempt's outcome)
                # goes on it first (without the wait, about 1 failed-over call in 20 of a
                # burst had an empty ROUTER_ATTEMPTS there). Bounded: a slow Asterisk delays
                # the next trunk a little, never for long.
                await self._write_landed(VARS_WAIT_BEFORE_JOIN)
            await self.ari.add_channel(bridge_id, members)  # all of them, or none
            self.caller_in_bridge = True
            if await self._caller_left(leg):
                return await self._finish(leg)
            backstop = attempt.setup_timeout + attempt.ring_timeout + DIAL_TIMEOUT_MARGIN
            # Shielded: stopping the service must not lose its reply (see _settle_dial).
            leg.dial_request = asyncio.ensure_future(self.ari.dial(
                leg.channel_id, caller=self.caller_id, dial_timeout=round(backstop)))
            await asyncio.shield(leg.dial_request)
        except AriError as exc:
            # The leg or the caller went away under us (its events tell the rest): /dial
            # answers 404 or 409, addChannel 400 (no such channel) or 422 (not in Stasis).
            if not isinstance(exc, AriNotFound | AriConflict) and exc.status not in (400, 422):
                raise
            self.log.info("attempt %d: %s", attempt.index, exc)
        except AriUnavailable as exc:
            if leg.dial_request is None:
                raise  # addChannel: the call cannot go on without its bridge (ERROR, 503)
            # No reply to /dial (a busy Asterisk's timeout, a connection closed): it may have
            # sent its INVITE. Ending the call would drop a callee being rung, dialling again
            # could ring them twice: the leg's events tell (ringing, answer, failure), and a
            # leg never dialled is left to its setup timer (judged unreachable: no INVITE).
            self.log.warning("attempt %d: no reply to dialling %s (%s): following its events",
                             attempt.index, attempt.trunk, exc)
        leg.dialled()
        return await self._follow(leg)

    async def _caller_left(self, leg: AttemptLeg) -> bool:
        """Before the leg is dialled: the events queued meanwhile, without waiting. True when
        the caller has gone; the leg is then hung up, never dialled (the loop waiting for its
        StasisStart stops at it, and the caller's hangup may be queued right behind it: the
        trunk got an INVITE and a CANCEL for a caller already gone)."""
        self._drain(leg)
        if not self.caller_gone:
            return False
        leg.abandon(self.clock())
        await self._hangup_leg(leg)
        return True

    async def _follow(self, leg: AttemptLeg) -> AttemptLeg:
        """Wait for the dialled attempt's answer, failure or timer."""
        attempt = leg.attempt
        # setup_timeout is the trunk's time to answer the INVITE, which leaves now: the time
        # Asterisk took to create the channel (long when it is busy) is not the trunk's.
        setup_deadline = self.clock() + attempt.setup_timeout
        while leg.live:
            deadline = (
                setup_deadline
                if leg.ring_started is None
                else leg.ring_started + attempt.ring_timeout
            )
            await self._step(leg, deadline)
        return await self._finish(leg)

    async def _step(self, leg: AttemptLeg, deadline: float) -> bool:
        """Handle one event of the attempt, or its timer. False when the timer fired."""
        event = await self._next(deadline)
        now = self.clock()
        if event is None:
            # A timer that fires late found the loop stalled (the process frozen, the machine
            # swapping): events that came in time may still wait unread in the websocket (an
            # answer, a 503). The reader gets a moment before the timer counts: one grace per
            # deadline, however many events come meanwhile.
            if leg.graced != deadline:
                leg.graced, leg.grace_until = deadline, stall_extended(deadline, now)
            if now < leg.grace_until:
                event = await self._next(leg.grace_until)
                now = self.clock()
        if event is None:
            ring_timer = leg.ring_started is not None
            checked = await self._answered_as_the_timer_fired(leg)
            while checked is None:
                event = await self._wait_for_ari(leg, "ring" if ring_timer else "setup")
                now = self.clock()
                if event is not None:
                    break  # (the reconnect's reconcile among them): handled below
                # ARI may answer requests again before its websocket is back, and the
                # callee may have answered meanwhile.
                checked = await self._answered_as_the_timer_fired(leg)
            if checked is True:
                self.log.info("attempt %d: %s answered as its timer fired%s", leg.attempt.index,
                              leg.attempt.trunk, "" if leg.ari_wait_until is None
                              else " (ARI away meanwhile)")
                leg.answered()
                return True
        if event is None:
            # The carrier's own final answer may have come during that check (a 486 just as
            # the setup timer fired): it counts, not the timer (a busy callee was rung again
            # on the next trunk, a 503 crossing the ring timer taken for no answer).
            self._drain(leg)
            if not leg.live:
                return True
            if not ring_timer and leg.provisional:
                # Its 180/183 came during the check: the trunk is alive and rings on, under
                # the ring timer from now (else a ring timeout without any ringing time: the
                # call stopped with "no answer" at the setup time, the rest of the plan
                # untried).
                self.log.info("attempt %d: %s alerted as its setup timer fired: it rings on",
                              leg.attempt.index, leg.attempt.trunk)
                await self._rejoin(leg)
                return True
            leg.timed_out(now, ring=ring_timer)
            self.log.info(
                "attempt %d: %s timer fired", leg.attempt.index,
                "ring" if leg.ring_timeout else "setup",
            )
            await self._hangup_leg(leg)
            return False
        if event.channel_id == self.caller_id:
            self._caller_event(event)
            if self.caller_gone and leg.live:
                leg.abandon(now)
                await self._hangup_leg(leg)
        elif event.channel_id == leg.channel_id:
            leg.on_event(event, now)
            if (event.type == EventType.RECONCILED and event.channel_state is not None
                    and leg.state is AttemptState.DIALLING):
                await self._missed_provisional(leg)
        if leg.out_of_bridge and (leg.live or leg.state is AttemptState.ANSWERED):
            # A timer's check ARI did not answer in full took it out, and its 180 or its
            # answer came meanwhile: back in, or the caller heard no ringback and, answered,
            # talked to nobody (both sides up, in silence).
            await self._rejoin(leg)
        return True

    async def _ari_back(self) -> bool:
        """Whether the events websocket is (back) up within ARI_AWAY_WAIT s, the caller still
        there: requests reach Asterisk again."""
        try:
            async with asyncio.timeout(ARI_AWAY_WAIT):
                await self.ari.connected.wait()
        except TimeoutError:
            return False
        self._drain()  # (the caller's hangup, meanwhile, counts)
        return not self.caller_gone

    async def _wait_for_ari(self, leg: AttemptLeg, timer: str) -> Event | None:
        """ARI did not answer the check made as ``leg``'s timer fired (away: a network cut,
        its HTTP server down, our credentials refused): how the leg stands is unknown, and
        Asterisk goes on without us. Judged now, a carrier's 503 during the cut was taken for
        no answer (the failover lost), and a callee who answered meanwhile (Asterisk connects
        the bridge by itself) was cut mid-conversation at the reconnect (lab acceptance runs).
        So was one judged at the end of a bounded wait (60 s), whose hangups were tried again
        just as ARI came back. The judgement waits for the next event of the call (the
        reconnect's reconcile among them), or ARI_AWAY_RECHECK s, after which the caller
        checks again: for as long as ARI stays away. Nothing else could be done meanwhile:
        creating the next attempt, or hanging anything up, needs ARI too."""
        now = self.clock()
        if leg.ari_wait_until is None:
            self.log.warning("attempt %d: ARI did not answer as the %s timer fired: judged "
                             "once it does", leg.attempt.index, timer)
        if leg.ari_wait_until is None or now >= leg.ari_wait_until:
            leg.ari_wait_until = now + ARI_AWAY_RECHECK
        return await self._next(leg.ari_wait_until)

    async def _answered_as_the_timer_fired(self, leg: AttemptLeg) -> bool | None:
        """The carrier's 200 may have reached Asterisk just before the timer fired, its events
        not here yet; and a channel in a bridge answers when its peer does: the caller was
        answered, then hung up for "no answer" (ring timer), or left in silence while the next
        trunk was dialled (setup timer). The leg leaves the call's bridge first, so that no
        answer from now on reaches the caller, then its state tells: answered, it goes back
        in (connected); else it is hung up, a 200 crossing that getting ACK and BYE. Two
        requests, only when a timer fires on a dialled leg. None: ARI did not answer them."""
        if leg.state is AttemptState.CREATING or self.bridge_id is None:
            return False
        try:
            leg.out_of_bridge = True  # (from the request on: it may be out without a reply)
            try:
                await self.ari.remove_channel(self.bridge_id, leg.channel_id)
            except AriError as exc:
                if exc.status not in (400, 422):  # the bridge's trouble, not the leg's
                    raise
                # 400 no such channel, 422 not in the bridge: gone, or going (below)
            state = (await self.ari.get_channel(leg.channel_id)).state
            self._drain(leg)  # what came during these two requests (an answer, a 486, a 180)
            if state == ev.ChannelState.RINGING and not leg.provisional and leg.live:
                leg.alerted(self.clock(), media=False)  # its event is still on its way
            if state != ev.ChannelState.UP and leg.state is not AttemptState.ANSWERED:
                return False
            await self.ari.add_channel(self.bridge_id, [leg.channel_id])
            leg.out_of_bridge = False
            return True
        except AriNotFound:
            # It ended by itself before the timer fired. Its events tell how, unless they
            # were lost (a websocket cut as the carrier answered 503): then the timer judged
            # it (a ring timeout stopped the call, the 503's failover lost), and the caller's
            # hash has its last SIP response, read before judging it (_finish).
            self._drain(leg)
            if leg.live:
                self.log.info("attempt %d: %s ended before its timer fired, unseen: judged on "
                              "its last SIP response", leg.attempt.index, leg.attempt.trunk)
                leg.vanish(self.clock())
            return False
        except (AriError, AriUnavailable) as exc:
            # An error answer: gone meanwhile, its events tell the rest. No answer (ARI away,
            # or refusing our credentials): unknown, while the wait for ARI lasts.
            self.log.info("attempt %d: checking it as its timer fired: %s",
                          leg.attempt.index, exc)
            return None if isinstance(exc, (AriRefused, AriUnavailable)) else False

    async def _rejoin(self, leg: AttemptLeg) -> None:
        """Put a leg that :meth:`_answered_as_the_timer_fired` took out back in the call's
        bridge (its ringback and early media reach the caller again)."""
        if self.bridge_id is None:
            return
        try:
            await self.ari.add_channel(self.bridge_id, [leg.channel_id])
            leg.out_of_bridge = False
        except (AriError, AriUnavailable) as exc:  # gone meanwhile: its events tell the rest
            self.log.info("attempt %d: back into the bridge: %s", leg.attempt.index, exc)
            # An answer (gone, already in the bridge): nothing more to do. None, or refused:
            # again at the leg's next event (see _step).
            leg.out_of_bridge = isinstance(exc, (AriRefused, AriUnavailable))

    async def _missed_provisional(self, leg: AttemptLeg) -> None:
        """A reconcile found the dialled leg there, neither up nor ringing. A 183 sets no
        channel state, and its event may have been lost in the cut: the leg's last SIP
        response tells (as when resuming). Missed, the setup timer took a callee hearing
        early media for a dead trunk, and the next carrier rang them again."""
        code = await self._provisional_response(leg.channel_id, leg.name)
        if code is not None and leg.state is AttemptState.DIALLING:
            self.log.info("attempt %d: %s had answered %d while the events were lost",
                          leg.attempt.index, leg.attempt.trunk, code)
            leg.alerted(self.clock(), media=code == 183)

    async def _finish(self, leg: AttemptLeg) -> AttemptLeg:
        """The attempt is over: make sure its channel goes, and get its hangup cause."""
        if leg.state is AttemptState.ANSWERED:
            return leg
        if not leg.destroyed and not leg.hangup_sent and not leg.ending:
            await self._hangup_leg(leg)  # (a vanished one: 404, quietly)
        if leg.vanished and not leg.destroyed:
            # Its events were lost; what it ended with, the caller's hash has.
            self._drain(leg)
            if not leg.destroyed and leg.name is not None:
                tech = await self._last_response(self.caller_id, leg.name)
                obs = unwatched(tech) if tech is not None else None
                if obs is not None:
                    leg.learn(obs)
            return leg
        if not leg.destroyed and not leg.caller_gone:
            # The carrier's cause comes with ChannelDestroyed: wait for it briefly. After our
            # own timer's hangup too, so that the next trunk's INVITE does not leave before
            # this one's CANCEL (seen on the lab: 2 ms of two carriers ringing).
            deadline = self.clock() + DESTROY_WAIT
            while not leg.destroyed:
                event = await self._next(deadline)
                if event is None:
                    break
                self._dispatch(event, leg)
            if not leg.destroyed and leg.hangup_sent:
                # Still there: our hangup may never have reached Asterisk (one that timed out
                # is taken as delivered, and one refused three times is given up). Once more
                # before the next trunk rings, or both ring for the call (404 if it is gone).
                self.log.warning("attempt %d: no end of %s heard %g s after its hangup "
                                 "(lost, or not done): hanging it up again", leg.attempt.index,
                                 leg.channel_id, DESTROY_WAIT)
                with contextlib.suppress(TimeoutError):  # (an Asterisk that answers nothing
                    await asyncio.wait_for(  # must not hold the failover up any longer)
                        self._quietly("hang up again", self.ari.hangup(leg.channel_id)),
                        HANGUP_AGAIN_WAIT)
        if (leg.destroyed and leg.name is not None
                and not (leg.caller_gone or leg.setup_timeout or leg.ring_timeout)):
            await self._answered_before_its_end(leg, leg.name)
        return leg

    async def _answered_before_its_end(self, leg: AttemptLeg, name: str) -> None:
        """An attempt that ended by itself may have answered just before: the carrier's 200
        and its BYE at once, a 200 without SDP or with no codec in common, which Asterisk
        ACKs and BYEs itself. Its end can come before its answer reached the bridge (no
        ChannelStateChange Up): ChannelDestroyed says 16, or 127/406, 58/488, and the next
        trunk rang the callee who had picked up (9 of 12 such calls on the lab). The
        caller's hangup-cause hash holds the attempt's last INVITE response (the leg was in
        the call's bridge): a 2xx there is an answer nothing could connect. One request per
        attempt that failed by itself; none for our timers' hangups, whose leg had left the
        bridge (a 200 crossing their CANCEL is seen by nobody: docs/ari.md)."""
        tech = await self._last_response(self.caller_id, name)
        said = unwatched(tech) if tech is not None else None
        if said is not None and said.answered:
            self.log.info("attempt %d: %s answered (%s) and ended before it could be "
                          "connected (cause %s): no further attempt", leg.attempt.index,
                          leg.attempt.trunk, tech, leg.cause)
            leg.answered_unseen = True

    async def _connected(self, leg: AttemptLeg, base_vars: dict[str, str]) -> CallResult:
        """The leg answered: answer the caller, keep the bridge until either side hangs up."""
        self.log.info("answered by %s (%s)", leg.attempt.trunk, leg.attempt.carrier.name)
        self.answered_leg = leg
        rejoined = leg.out_of_bridge
        if rejoined:
            await self._rejoin(leg)  # (its last try, at the answer, got no reply)
        trace = format_trace(self.trace)
        if not self.caller_gone:
            await asyncio.gather(
                self._answer_caller(only_answer=rejoined),
                self._set_variables({
                    **base_vars,
                    var.CARRIER: leg.attempt.carrier.name,
                    var.TRUNK: leg.attempt.trunk,
                    var.ATTEMPTS: trace,
                }),
            )
        while not self.caller_gone:
            event = await self.queue.get()
            if event.channel_id == self.caller_id:
                self._caller_event(event)
            elif event.channel_id == leg.channel_id and event.hangup:
                break
        if self.caller_gone:
            self.log.info("caller hung up: hanging up %s", leg.attempt.trunk)
            await self._hangup_leg(leg)
        else:
            self.log.info("%s hung up: hanging up the caller", leg.attempt.trunk)
            leg.hangup_sent = True  # it is going away by itself
            await self._hangup_caller(causes.NORMAL_CLEARING)
        return CallResult(Status.OK, Outcome.ANSWERED, None, trace)

    async def _answer_caller(self, *, only_answer: bool) -> None:
        """Asterisk answers the caller itself as the leg's answer passes the bridge they
        share (bridge_channel.c, AST_CONTROL_ANSWER); this request makes sure of it, and is
        the only answer for a leg that joined the bridge after it answered (``only_answer``).
        Under load it can reach Asterisk after the caller has hung up: 404, 409 (it left
        Stasis) or 500 (it hung up while the command waited) then say only that, not that
        the caller went unanswered (a lab run at 100 calls/s logged 5,468 such WARNINGs for
        15,000 calls answered)."""
        try:
            await self.ari.answer(self.caller_id)
        except (AriNotFound, AriConflict):
            pass  # gone from Stasis: its StasisEnd follows
        except AriError as exc:
            if only_answer:
                self.log.warning("answer caller failed: %s", exc)
            else:
                self.log.info("answer caller: %s (the bridge answered it, or it hung up)", exc)
        except AriUnavailable as exc:
            self.log.warning("answer caller failed: %s", exc)

    async def _cleanup(self) -> None:
        """Whatever happened: no attempt channel and no bridge of this call survives it."""
        if self._vars_written is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._vars_written  # (it logs its own failure)
        if self.detached:  # taken over meanwhile (its cancellation went into the await above)
            self._unregister()
            return
        for leg in self.legs:
            if not leg.destroyed and not leg.hangup_sent:
                await self._hangup_leg(leg)
        if self._late_hangups:
            await asyncio.gather(*self._late_hangups, return_exceptions=True)
        if self._bridge_created is not None:
            if not self._bridge_created.done():
                self._bridge_created.cancel()  # it may exist all the same: destroyed below
            with contextlib.suppress(asyncio.CancelledError, AriError, AriUnavailable):
                await self._bridge_created  # (its error, if any, was the call's or is moot)
        if self.bridge_id is not None:
            await destroy_bridge(self.ari, self.bridge_id, self.registry, self.log)
        self._unregister()

    # -- after a websocket reconnect --------------------------------------------------

    def confirmed_channels(self) -> list[str]:
        """The call's channels known to exist before a ``GET /channels`` is sent: the caller
        (its StasisStart came) and the attempts whose create was answered. An attempt still
        being created may be missing from the reply without being gone."""
        return [self.caller_id, *(leg.channel_id for leg in self.legs if leg.created)]

    def reconcile(self, present: Mapping[str, ev.Channel], confirmed: Container[str]) -> None:
        """Tell the call what ``GET /channels`` shows of its channels (events may be lost).
        Only a channel in ``confirmed`` (:meth:`confirmed_channels` as the request was sent)
        is gone when the reply lacks it."""
        for cid in self.channel_ids():
            channel = present.get(cid)
            if channel is None and cid not in confirmed:
                continue
            state = channel.state if channel is not None else None
            in_app = channel is not None and channel.stasis_args(self.ari.app) is not None
            self.deliver(ev.reconciled(cid, state, in_app=in_app))
