"""The Stasis application: a thin translator between ARI events and the call flow.

It routes every event by channel id to the owning call's queue (one task per call, so a slow
call never stalls another), starts a :class:`~ari_app.call.Call` for each caller's
``StasisStart`` with args ``[number]`` or ``[number, tenant]``, and after every websocket
(re)connect reconciles what it may have missed from ``GET /channels`` and ``GET /bridges``:
calls in progress learn the current state of their channels, bridged calls left by an earlier
run are adopted (they go on; the other side is hung up when one leaves), and attempt channels
and bridges nobody owns any more are removed.

Asterisk sends an application's events to the websocket that connected for it last. When
another one connects for the same app (a second ``outbound-router ari`` on this Asterisk, as a
deploy that starts the new service before it stops the old does), this one gets
``ApplicationReplaced`` and no event after it, while the other has already adopted or resumed
its calls in its own reconcile. Acting on them without their events (a ring timer that
fires, the next attempt dialled) would ring callees twice: the app leaves them alone, touches
nothing in Asterisk, and :meth:`RouterApp.run` returns (the service exits with 0).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Container, Coroutine, Mapping
from typing import Any

from ari_app import events as ev
from ari_app.call import Call, CallLogger, destroy_bridge
from ari_app.client import AriClient, AriError, AriNotFound, AriRefused, AriUnavailable, quietly
from ari_app.events import Event, EventType, parse_event
from ari_app.resume import ResumeLeg, read_resume
from routing import causes
from routing import variables as var
from routing.policy import Outcome
from routing.snapshot import Snapshot
from routing.trace import TraceEntry, format_trace

log = logging.getLogger(__name__)

SnapshotSource = Callable[[], Snapshot | None]
#: At most this many events held during a reconcile (a few seconds of a busy Asterisk).
HELD_EVENTS = 20_000
#: Channels kept at most whose hangup Asterisk did not take (see RouterApp.owe_hangup), and
#: bridges whose destruction it did not take (RouterApp.owe_bridge).
OWED_HANGUPS = 10_000
#: How often hangups (and bridge destructions) Asterisk did not take are tried again while
#: the websocket stays up.
OWED_RETRY = 5.0
#: A failed reconcile is tried again after this many seconds, doubling up to the maximum.
RECONCILE_RETRY = 0.5
RECONCILE_RETRY_MAX = 5.0


class AdoptedCall:
    """A bridged call found after a reconnect that no running call owns (e.g. the router was
    restarted mid-call): it goes on, and when one side leaves the other is hung up."""

    def __init__(self, router: RouterApp, bridge_id: str, channel_ids: list[str],
                 caller_and_attempt: tuple[str, str] | None = None) -> None:
        self.router = router
        self.ari = router.ari
        self.bridge_id = bridge_id
        self.channel_ids = channel_ids
        #: (caller, attempt) when the members are ours: the outcome goes on the caller
        self.caller_and_attempt = caller_and_attempt
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.log = CallLogger(log, {"call_id": channel_ids[0]})

    def deliver(self, event: Event) -> None:
        self.queue.put_nowait(event)

    def confirmed_channels(self) -> list[str]:
        return self.channel_ids

    def reconcile(self, present: Mapping[str, ev.Channel], confirmed: Container[str]) -> None:
        for cid in self.channel_ids:
            if cid not in present and cid in confirmed:
                self.deliver(ev.reconciled(cid, None))

    async def run(self) -> None:
        self.log.info("adopted bridged call %s", ",".join(self.channel_ids))
        if self.caller_and_attempt is not None:
            await self._record_answer(*self.caller_and_attempt)
        while True:
            event = await self.queue.get()
            if event.hangup:
                break
        for cid in self.channel_ids:
            if cid != event.channel_id:
                # owed when Asterisk does not take it: the phone would stay up, alone
                await self.router.hang_up_or_owe(cid, causes.NORMAL_CLEARING)
        await destroy_bridge(self.ari, self.bridge_id, self.router, self.log)

    async def _record_answer(self, caller_id: str, attempt_id: str) -> None:
        """The outcome on the caller and its CDR: the attempt may have been answered while no
        instance listened (Asterisk bridged it by itself), and nobody wrote it then. Read from
        the attempt's ROUTER_RESUME: the trace before it, and who it is."""
        try:
            data = await read_resume(self.ari, attempt_id)
        except (AriError, AriUnavailable, ValueError) as exc:
            self.log.warning("adopted call: its outcome cannot be recorded: %s", exc)
            # Nor would the h extension take the answered attempt for one the caller abandoned.
            await quietly("clear the abandoned trace", self.ari.set_variables(
                caller_id, {var.ATTEMPTS_ABANDONED: ""}), self.log)
            return
        carrier, trunk = data.attempts[0].carrier.name, data.attempts[0].trunk
        trace = [*data.trace, TraceEntry(trunk, str(Outcome.ANSWERED), causes.NORMAL_CLEARING, 200)]
        values = {**data.base_vars(), var.CARRIER: carrier, var.TRUNK: trunk,
                  var.ATTEMPTS: format_trace(trace)}
        await quietly("record the outcome", self.ari.set_variables(caller_id,
                                                                   var.with_cdr(values)),
                      self.log)


Owner = Call | AdoptedCall


class RouterApp:
    """Wires the ARI client, the routing snapshot and the call flow together."""

    def __init__(
        self,
        ari: AriClient,
        snapshot: SnapshotSource,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.ari = ari
        self.snapshot = snapshot
        self.rng = rng or random.Random()
        self.owners: dict[str, Owner] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Results of finished calls, newest last (bounded; for tests and metrics).
        self.finished: list[Call] = []
        self.reconciled = asyncio.Event()
        #: From a (re)connect to the end of its reconcile: the events of channels nobody owns
        #: yet. A call the reconcile resumes or adopts gets those of its channels (an answer
        #: that came while GET /channels was on its way), the rest are dropped.
        self._held: deque[Event] | None = None
        self._held_dropped = 0
        #: (routing version, its trunks that are no endpoint) last warned about
        self._trunks_warned: tuple[str, tuple[str, ...]] | None = None
        #: One set per reconcile whose lists are on their way: the channels whose call ended
        #: meanwhile. The lists may still show them; they are nobody's to adopt or resume.
        self._ended_meanwhile: list[set[str]] = []
        #: Channels whose hangup Asterisk did not take (away, or refusing our credentials),
        #: with the cause to hang them up with: callers whose call ended, attempts given up
        #: on. The next reconcile hangs them up (a caller is not routed again): the
        #: reconnect's, or one of their own while the websocket stays up (_pay_owed).
        self._owed_hangups: dict[str, int | None] = {}
        #: Bridges of calls that ended whose destruction Asterisk did not take (an ordered
        #: set): the next reconcile destroys them, or deals with what they still hold.
        self._owed_bridges: dict[str, None] = {}
        self._paying: asyncio.Task[None] | None = None
        #: Set when another websocket took the application over (ApplicationReplaced).
        self.replaced = asyncio.Event()
        self._events: asyncio.Task[None] | None = None  # run()'s events websocket

    # -- Registry (used by Call) --------------------------------------------------------

    def register(self, channel_id: str, call: Call) -> None:
        self.owners[channel_id] = call

    def unregister(self, channel_id: str) -> None:
        self.owners.pop(channel_id, None)
        for ended in self._ended_meanwhile:
            ended.add(channel_id)

    def owe_hangup(self, channel_id: str, cause: int | None) -> None:
        self._owed_hangups[channel_id] = cause
        if len(self._owed_hangups) > OWED_HANGUPS:
            del self._owed_hangups[next(iter(self._owed_hangups))]  # the oldest
        self._start_paying()

    def owe_bridge(self, bridge_id: str) -> None:
        self._owed_bridges[bridge_id] = None
        if len(self._owed_bridges) > OWED_HANGUPS:
            del self._owed_bridges[next(iter(self._owed_bridges))]  # the oldest
        self._start_paying()

    def _owes(self) -> bool:
        return bool(self._owed_hangups or self._owed_bridges)

    def _start_paying(self) -> None:
        if self._paying is None or self._paying.done():
            self._paying = self._spawn(self._pay_owed(), "owed-hangups")

    async def _pay_owed(self) -> None:
        """Owed hangups were paid only by a reconnect's reconcile. But Asterisk may close a
        few requests unanswered (past its HTTP sessionlimit in a burst) while the websocket
        stays up: the phone whose call had ended sat in Stasis in silence, an attempt given
        up on rang on, and, answered, stayed up in Stasis connected to nobody. So, as long as
        hangups are owed, a reconcile of the owed channels alone every OWED_RETRY s while
        the websocket is up (while it is down, its reconnect's reconcile comes first). The
        same for owed bridges."""
        while self._owes():
            await asyncio.sleep(OWED_RETRY)
            if not self.ari.connected.is_set() or not self._owes():
                continue
            try:
                await self.reconcile(owed_only=True)
            except (AriError, AriUnavailable) as exc:
                log.info("listing channels to pay owed hangups failed: %s; again in %g s",
                         exc, OWED_RETRY)

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled, then stop the calls in progress; or until another websocket
        takes the application over, then leave them to it (see the module's docstring)."""
        events = self._events = asyncio.create_task(
            self.ari.run_events(self.on_event, self.on_connected), name="ari-events")
        try:
            await events  # it ends only by an error or by being cancelled
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.replaced.is_set() or (task is not None and task.cancelling()):
                raise  # stopped (SIGTERM): not taken over
        finally:
            await self.stop()

    async def stop(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        if self.replaced.is_set():  # (a reconcile still on its way): nothing is ours to do
            task.cancel()
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s crashed", task.get_name(), exc_info=task.exception())

    def on_event(self, raw: Mapping[str, Any]) -> None:
        """Websocket callback: route, never block."""
        try:
            event = parse_event(raw)
        except ValueError as exc:
            log.warning("ignored an ARI message: %s", exc)
            return
        if event.application not in (None, self.ari.app) or self.replaced.is_set():
            return  # (after ApplicationReplaced: nothing is ours, not even a new caller)
        if event.type == EventType.APPLICATION_REPLACED:
            self._leave_to_the_new_owner()
            return
        owner = self.owners.get(event.channel_id or "")
        if owner is not None:
            owner.deliver(event)
            return
        if event.type != EventType.STASIS_START or event.channel_id is None:
            if self._held is not None and event.channel_id and event.type in ev.NEEDED_EVENTS:
                if len(self._held) == HELD_EVENTS:
                    self._held_dropped += 1
                self._held.append(event)
            return
        if ev.is_attempt(event.channel_id, event.args):
            # An attempt channel whose call is over (it raced with the call's end).
            log.info("hanging up leftover attempt channel %s", event.channel_id)
            self._spawn(self.hang_up_or_owe(event.channel_id, None),
                        f"hangup-{event.channel_id}")
            return
        self.start_call(event.channel_id, event.args)

    def _leave_to_the_new_owner(self) -> None:
        """ApplicationReplaced (once: on_event ignores every event after it): the calls are the
        other websocket's now; stop."""
        owners = self._distinct_owners()
        log.warning(
            "another connection took over the ARI application %r (a second `outbound-router "
            "ari` with this ARI_APP on this Asterisk; Asterisk sends the app's events to the "
            "newest only): leaving its %d call(s) to it and stopping. Run one `outbound-router "
            "ari` per Asterisk and ARI_APP", self.ari.app, len(owners))
        self.ari.retire()  # the one gate every request passes, orphaned futures' included
        for owner in owners:
            if isinstance(owner, Call):
                owner.detach()
        self.replaced.set()
        # At once, not after the websocket's closing handshake: a timer firing meanwhile
        # would act on a call that is the other instance's now.
        for task in self.tasks:
            task.cancel()
        if self._events is not None:
            self._events.cancel()  # run() returns, and the websocket is not made again

    def start_call(self, caller_id: str, args: tuple[str, ...],
                   resume: ResumeLeg | None = None) -> Call:
        call = Call(self.ari, self, caller_id, args, self.snapshot(), self.rng,
                    resume_leg=resume)
        self.owners[caller_id] = call  # before any await: later events go to its queue
        self._spawn(self._run_call(call), f"call-{caller_id}")
        return call

    async def _run_call(self, call: Call) -> None:
        await call.run()
        # A finished call lets its routing version go: the last 1,000 calls held every
        # version seeded since the oldest of them (some 50 MB each for 100,000 routes).
        call.snapshot = None
        self.finished.append(call)
        del self.finished[:-1000]

    # -- reconciliation ------------------------------------------------------------------

    def on_connected(self) -> Coroutine[Any, Any, None]:
        """Called as the events websocket opens, before its first event is read: events of
        channels nobody owns are held from here until the reconcile is done."""
        held = self._held = deque(maxlen=HELD_EVENTS)
        self._held_dropped = 0
        return self._after_connect(held)

    async def _after_connect(self, held: deque[Event]) -> None:
        try:
            try:
                await self.ari.set_event_filter(ev.NEEDED_EVENTS)
            except AriRefused:
                pass  # the client said so (once) and closes this connection
            except (AriError, AriUnavailable) as exc:  # older Asterisk: all events, still fine
                log.warning("setting the ARI event filter failed: %s", exc)
            # Until one reconcile succeeds, callers the reconcile would resume or take over
            # wait with no answer: try again while the connection lasts.
            delay = RECONCILE_RETRY
            while True:
                try:
                    await self.reconcile()
                    break
                except (AriError, AriUnavailable) as exc:
                    log.warning("reconciling after connect failed: %s; again in %g s",
                                exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONCILE_RETRY_MAX)
        finally:
            if self._held is held:  # not a later connection's
                self._release_held()
            self.reconciled.set()
        await self.check_trunks()

    def routing_changed(self) -> None:
        """A new routing version is in use (the reader's on_change): check its trunks."""
        self._spawn(self.check_trunks(), "check-trunks")

    async def check_trunks(self) -> None:
        """Warn (once per version) about trunks of the routing table that are no PJSIP
        endpoint of this Asterisk: a typo in a carrier's `trunks`, which `validate` cannot
        see. Their attempts fail at once (the next trunk is tried), with no INVITE."""
        snapshot = self.snapshot()
        if snapshot is None:
            return
        try:
            known = await self.ari.endpoint_names("PJSIP")
        except (AriError, AriUnavailable) as exc:
            log.info("cannot list the PJSIP endpoints to check the trunks: %s", exc)
            return
        trunks = {t for carrier in snapshot.carriers.values() for t in carrier.trunks}
        missing = tuple(sorted(trunks - known))
        if missing and self._trunks_warned != (snapshot.version, missing):
            self._trunks_warned = (snapshot.version, missing)
            log.warning("routing version %s names trunks that are no PJSIP endpoint of this "
                        "Asterisk: %s; their attempts fail at once and the next trunk is tried "
                        "(compare the carriers' `trunks` with `pjsip show endpoints`)",
                        snapshot.version, ", ".join(missing))

    def _release_held(self) -> None:
        """The held events to the calls that own their channels now; the rest are dropped."""
        held, self._held = self._held, None
        if self._held_dropped:
            log.warning("%d events of channels nobody owned were dropped during the reconcile "
                        "(more than %d held)", self._held_dropped, HELD_EVENTS)
        for event in held or ():
            owner = self.owners.get(event.channel_id or "")
            if owner is not None:
                owner.deliver(event)

    async def reconcile(self, *, owed_only: bool = False) -> None:
        """Bring the calls in line with what Asterisk has now (events may have been lost).
        ``owed_only``: only the channels whose hangup is owed, their bridges and the bridges
        owed (the websocket stayed up: nothing else may have been missed)."""
        # The reply may be older than the events read while it was on its way: calls started
        # meanwhile, attempts created meanwhile are missing from it without being gone. Only
        # the channels known to exist as it is asked for are taken for gone when missing.
        confirmed = {cid for owner in self._distinct_owners()
                     for cid in owner.confirmed_channels()} if not owed_only else set()
        ended: set[str] = set()
        self._ended_meanwhile.append(ended)
        try:
            channels, bridges = await asyncio.gather(
                self.ari.list_channels(), self.ari.list_bridges()
            )
        finally:
            self._ended_meanwhile.remove(ended)
        if self.replaced.is_set():
            return  # taken over while the lists were on their way
        # Nothing awaits from here on: no event can slip in between reading and acting.
        present = channels
        for cid in [c for c in self._owed_hangups if c not in present]:
            del self._owed_hangups[cid]  # gone meanwhile (its phone hung up)
        for cid in [c for c in self._owed_hangups if c in self.owners]:
            self._hang_up_owed(cid)  # an attempt a call in progress gave up on: it goes on
        listed = {bridge.id for bridge in bridges}
        for bid in [b for b in self._owed_bridges if b not in listed]:
            del self._owed_bridges[bid]  # gone meanwhile (a request that timed out did it)
        if not owed_only:
            for owner in self._distinct_owners():
                owner.reconcile(present, confirmed)
        for cid in ended:
            present.pop(cid, None)
        handled: set[str] = set()
        app = self.ari.app
        for bridge in bridges:
            bid = bridge.id
            if bridge.name != app:
                continue
            members = list(bridge.channels)
            if any(m in self.owners for m in members) or self._owns_bridge(bid):
                continue
            if members and all(m in ended for m in members):
                continue  # its call ended while the lists came: it cleaned up after itself
            handled.update(members)
            live = [m for m in members if m in present]
            conversation = len(live) == 2 and all(
                present[m].state == ev.ChannelState.UP for m in live)
            owed = [m for m in live if m in self._owed_hangups]
            if owed_only and not owed and bid not in self._owed_bridges:
                continue  # (not owed now: another reconcile may have dealt with it meanwhile)
            self._owed_bridges.pop(bid, None)  # dealt with below, whatever it holds
            if owed and conversation:
                # The callee answered after the router gave the call up (its judgement and
                # hangups made while Asterisk took no request): a conversation, adopted below.
                for m in owed:
                    del self._owed_hangups[m]
            elif owed:
                causes_owed = [self._owed_hangups.pop(m) for m in owed]
                log.info("removing bridge %s and its channels %s: their call ended while "
                         "Asterisk did not take its hangup", bid, live)
                cause = next((c for c in causes_owed if c is not None), causes.CONGESTION)
                self._spawn(self._remove(bid, live, cause), f"remove-{bid}")
                continue
            if conversation:
                adopted = AdoptedCall(self, bid, live, self._caller_and_attempt(live, present))
                for m in live:
                    self.owners[m] = adopted
                self._spawn(self._run_adopted(adopted), f"adopted-{bid}")
            elif (ringing := self._ringing_call(bid, live, present)) is not None:
                caller_id, caller_args, resume = ringing
                log.info("resuming caller %s, whose attempt %s an earlier instance left %s",
                         caller_id, resume.channel_id, resume.channel_state)
                call = self.start_call(caller_id, caller_args, resume)
                self.owners[resume.channel_id] = call
            elif (waiting := self._waiting_caller(live, present)) is not None:
                caller_id, caller_args = waiting
                log.info("resuming caller %s, whose attempt ended while no instance listened",
                         caller_id)
                self.start_call(caller_id, caller_args, ResumeLeg(
                    caller_id, present[caller_id].state, bid, attempt_gone=True))
            else:
                log.info("removing leftover bridge %s and its channels %s", bid, live)
                # Answered channels alone (a conversation whose other side left while no
                # instance ran): a normal clearing, not congestion, in their CDR.
                cause = (causes.NORMAL_CLEARING
                         if live and all(present[m].state == ev.ChannelState.UP for m in live)
                         else causes.CONGESTION)
                self._spawn(self._remove(bid, live, cause), f"remove-{bid}")
        for cid, channel in present.items():
            if cid in self.owners or cid in handled:
                continue
            if owed_only and cid not in self._owed_hangups:
                continue
            args = channel.stasis_args(app)
            if args is None:
                continue
            if cid in self._owed_hangups:
                self._hang_up_owed(cid)
            elif ev.is_attempt(cid, args):
                log.info("hanging up leftover attempt channel %s", cid)
                self._spawn(self.hang_up_or_owe(cid, None), f"hangup-{cid}")
            elif channel.state in ev.NOT_UP:
                log.info("taking over caller %s whose StasisStart was missed", cid)
                self.start_call(cid, args)
            else:
                log.info("hanging up caller %s left without a call", cid)
                self._spawn(self.hang_up_or_owe(cid, causes.NORMAL_CLEARING),
                            f"hangup-{cid}")

    def _hang_up_owed(self, channel_id: str) -> None:
        cause = self._owed_hangups.pop(channel_id)
        log.info("hanging up %s (cause %s), whose hangup Asterisk did not take", channel_id,
                 cause)
        self._spawn(self.hang_up_or_owe(channel_id, cause), f"hangup-{channel_id}")

    async def hang_up_or_owe(self, channel_id: str, cause: int | None) -> None:
        """Hang a channel up; owed again when Asterisk does not take it (forgotten, a caller
        was taken at the next reconcile for one whose StasisStart was missed and routed
        again: its trunks rang twice). Paid meanwhile, it is nobody's to adopt or resume for
        a reconcile whose lists are on their way."""
        for ended in self._ended_meanwhile:
            ended.add(channel_id)
        try:
            await self.ari.hangup(channel_id, cause)
        except AriNotFound:
            pass
        except (AriRefused, AriUnavailable) as exc:
            log.warning("hanging up %s failed: %s; again later", channel_id, exc)
            self.owe_hangup(channel_id, cause)
        except AriError as exc:
            log.warning("hanging up %s failed: %s", channel_id, exc)

    def _distinct_owners(self) -> list[Owner]:
        """Each call or adopted call once (``owners`` maps every channel to its owner)."""
        return list({id(o): o for o in self.owners.values()}.values())

    def _args(self, channel_id: str, present: Mapping[str, ev.Channel]) -> tuple[str, ...] | None:
        """The Stasis args of a channel in this app (None: not in it)."""
        return present[channel_id].stasis_args(self.ari.app)

    def _caller_and_attempt(self, members: list[str], present: Mapping[str, ev.Channel],
                            ) -> tuple[str, str] | None:
        """(caller, attempt) when ``members`` are a caller of this app and one of its attempts."""
        found: dict[bool, str] = {}
        for cid in members:
            args = self._args(cid, present)
            if args is None:
                return None
            found[ev.is_attempt(cid, args)] = cid
        return (found[False], found[True]) if set(found) == {True, False} else None

    def _ringing_call(self, bridge_id: str, members: list[str], present: Mapping[str, ev.Channel],
                      ) -> tuple[str, tuple[str, ...], ResumeLeg] | None:
        """(caller, its Stasis args, the attempt) when ``members`` are a caller and one of our
        attempts, not both answered: a call an earlier instance left ringing (or dialling)
        when it stopped (the attempt may have been answered since). A caller answered beside
        an attempt that is not (yet) is one too: the carrier answered as the lists were made,
        and the bridge answered the caller before the attempt's state showed it (removed as a
        leftover, the callee was hung up 60 ms after the answer; seen in a chaos run)."""
        pair = self._caller_and_attempt(members, present) if len(members) == 2 else None
        if pair is None:
            return None
        caller_id, leg_id = pair
        leg = present[leg_id]
        return caller_id, self._args(caller_id, present) or (), ResumeLeg(
            leg_id, leg.state, bridge_id, channel_name=leg.name, created=leg.created)

    def _waiting_caller(self, members: list[str], present: Mapping[str, ev.Channel],
                        ) -> tuple[str, tuple[str, ...]] | None:
        """(caller, its Stasis args) when the call's bridge holds a caller not answered yet and
        no attempt: the attempt ended while no instance of the app listened."""
        if len(members) != 1 or present[members[0]].state == ev.ChannelState.UP:
            return None
        args = self._args(members[0], present)
        if args is None or ev.is_attempt(members[0], args):
            return None
        return members[0], args

    def _owns_bridge(self, bridge_id: str) -> bool:
        return any(
            isinstance(o, Call) and o.bridge_id == bridge_id for o in self.owners.values()
        )

    async def _run_adopted(self, adopted: AdoptedCall) -> None:
        try:
            await adopted.run()
        finally:
            for cid in adopted.channel_ids:
                if self.owners.get(cid) is adopted:
                    self.unregister(cid)

    async def _remove(self, bridge_id: str, channel_ids: list[str], cause: int) -> None:
        for cid in channel_ids:
            await self.hang_up_or_owe(cid, cause)
        await destroy_bridge(self.ari, bridge_id, self, log)
