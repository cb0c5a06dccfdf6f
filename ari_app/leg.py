"""One trunk attempt of a call (:class:`AttemptLeg`): the channel the app created, and what
its events showed, as the outcome policy reads it (routing.policy.Observation)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

from ari_app import events as ev
from ari_app.events import Event, EventType
from routing.plan import Attempt
from routing.policy import Observation


class AttemptState(StrEnum):
    CREATING = "creating"  # POST /channels/create sent, waiting for the leg's StasisStart
    DIALLING = "dialling"  # /dial sent, no provisional reply yet: the setup timer runs
    RINGING = "ringing"  # 180 seen: the ring timer runs
    EARLY_MEDIA = "early-media"  # 183 seen: the ring timer runs
    ANSWERED = "answered"
    FAILED = "failed"
    ABANDONED = "abandoned"  # the caller hung up while this attempt was in progress


_LIVE = frozenset(
    {AttemptState.CREATING, AttemptState.DIALLING, AttemptState.RINGING, AttemptState.EARLY_MEDIA}
)


@dataclass
class AttemptLeg:
    """One trunk attempt: the channel we created and everything it showed."""

    attempt: Attempt
    channel_id: str
    started: float
    state: AttemptState = AttemptState.CREATING
    in_stasis: bool = False
    #: Asterisk has it: its create was answered (or its StasisStart came).
    created: bool = False
    #: Its channel's name (``PJSIP/carrier-a-0000002a``), from the create's answer.
    name: str | None = None
    #: Its /dial request, once sent (it outlives a stop of the service: see _settle_dial).
    dial_request: asyncio.Future[None] | None = None
    #: Gone while its events were lost (a websocket cut): how it ended is read afterwards.
    vanished: bool = False
    #: It answered while nobody listened, and is gone: there is nothing to connect.
    answered_unseen: bool = False
    #: A timer's check took it out of the call's bridge (or may have: no reply) and has not
    #: put it back: it goes back before it rings on or is connected.
    out_of_bridge: bool = False
    #: Set once a timer's check found ARI away: until when it waits before checking again.
    ari_wait_until: float | None = None
    #: The deadline whose timer fired late, and until when it waits for late events.
    graced: float | None = None
    grace_until: float = 0.0
    provisional: bool = False
    early_media: bool = False
    setup_timeout: bool = False
    ring_timeout: bool = False
    caller_gone: bool = False
    destroyed: bool = False
    hangup_sent: bool = False
    #: Asterisk is hanging it up (a non-soft ChannelHangupRequest): no hangup of ours needed.
    ending: bool = False
    #: A soft ChannelHangupRequest came (our hangup, or Asterisk's /dial timeout).
    soft_hangup_seen: bool = False
    cause: int | None = None
    sip_code: int | None = None
    ring_started: float | None = None
    ended: float | None = None

    @property
    def live(self) -> bool:
        return self.state in _LIVE

    @property
    def timer_hung_it_up(self) -> bool:
        """One of our timers failed it and hung it up, and its channel is not gone yet: what
        comes from it now crossed that hangup."""
        return (self.state is AttemptState.FAILED and (self.setup_timeout or self.ring_timeout)
                and not self.destroyed)

    # -- transitions -----------------------------------------------------------------

    def entered_stasis(self) -> None:
        self.in_stasis = self.created = True

    def dialled(self) -> None:
        if self.state is AttemptState.CREATING:
            self.state = AttemptState.DIALLING

    def alerted(self, now: float, *, media: bool) -> None:
        """A provisional reply: 180 (ringing) or 183 (early media)."""
        self.provisional = True
        self.early_media = self.early_media or media
        if self.ring_started is None:
            self.ring_started = now
        if self.state in (AttemptState.DIALLING, AttemptState.RINGING):
            self.state = AttemptState.EARLY_MEDIA if media else AttemptState.RINGING

    def answered(self) -> None:
        if self.live:
            self.state = AttemptState.ANSWERED

    def timed_out(self, now: float, *, ring: bool) -> None:
        """Our own timer fired: ``ring`` (rang, no answer), else setup (no provisional
        reply). Which one is the deadline's, not what came in since it fired."""
        if ring:
            self.ring_timeout = True
        else:
            self.setup_timeout = True
        self.fail(now)

    def abandon(self, now: float) -> None:
        self.caller_gone = True
        if self.live:
            self.state = AttemptState.ABANDONED
            self.ended = now

    def fail(self, now: float, cause: int | None = None, sip_code: int | None = None) -> None:
        if cause is not None:
            self.cause = cause
        if sip_code is not None:
            self.sip_code = sip_code
        if self.live:
            self.state = AttemptState.FAILED
            self.ended = now

    def gone(self, now: float, cause: int | None, sip_code: int | None) -> None:
        """ChannelDestroyed (or the channel vanished while we were not listening)."""
        self.destroyed = True
        self._ended(now, cause, sip_code)

    def _ended(self, now: float, cause: int | None, sip_code: int | None) -> None:
        """The channel ends with ``cause`` and ``sip_code``: the carrier's final answer,
        unless our own timer hung it up (then they are our hangup's, not the carrier's)."""
        if not (self.setup_timeout or self.ring_timeout):
            if self.cause is None:
                self.cause = cause
            if self.sip_code is None:
                self.sip_code = sip_code
        if self.live:
            self.state = AttemptState.FAILED
            self.ended = now

    def vanish(self, now: float) -> None:
        """The channel is gone and its end's events were lost (a websocket cut). Not gone()
        with no cause (congestion: a busy callee was rung again): the call reads how it
        ended (its last SIP response) before judging it."""
        self.vanished = True
        if self.live:
            self.state = AttemptState.FAILED
            self.ended = now

    def learn(self, obs: Observation) -> None:
        """What the caller's hangup-cause hash told of this vanished attempt
        (:func:`routing.policy.unwatched`), with what the attempt itself saw before."""
        self.sip_code, self.cause = obs.sip_code, obs.cause
        self.answered_unseen = obs.answered
        if obs.provisional:
            self.provisional = True
            self.early_media = self.early_media or obs.early_media
        self.setup_timeout = obs.setup_timeout and not self.provisional
        self.ring_timeout = obs.ring_timeout or (obs.setup_timeout and self.provisional)

    def observation(self) -> Observation:
        return Observation(
            cause=self.cause,
            sip_code=self.sip_code,
            provisional=self.provisional,
            early_media=self.early_media,
            answered=self.state is AttemptState.ANSWERED or self.answered_unseen,
            unconnected=self.answered_unseen,
            setup_timeout=self.setup_timeout,
            ring_timeout=self.ring_timeout,
            caller_gone=self.caller_gone,
        )

    def on_event(self, event: Event, now: float) -> None:
        if event.type == EventType.STASIS_START:
            self.entered_stasis()
        elif event.answered:
            if self.timer_hung_it_up:
                # The 200 crossed our timer's hangup: the callee picked up and gets a BYE.
                # Nothing to connect, and no next trunk (it would ring them again: a carrier
                # may retry on no answer), whichever timer it was.
                self.answered_unseen = True
            self.answered()
        elif event.provisional:
            self.alerted(now, media=event.early_media)
        elif event.type == EventType.CHANNEL_HANGUP_REQUEST and not event.soft:
            # The channel is ending, with the carrier's final answer (ChannelDestroyed repeats
            # it): the attempt failed now. A timer firing before its ChannelDestroyed came
            # judged it instead (a 486 taken for a dead trunk, the next carrier rang a busy
            # callee; a 503 after ringing for no answer).
            self.ending = True
            if (self.timer_hung_it_up and not self.soft_hangup_seen
                    and (event.cause is not None or event.tech_cause is not None)):
                # Our timer's hangup shows first as a soft request (and the channel's end may
                # then bring a request of its own: 16/603 on the lab). Before any, this is the
                # carrier's final answer, which reached Asterisk before our hangup, its events
                # trailing the timer's check (the channel was gone when the check asked for
                # it): it counts (a 486 taken for a dead trunk rang the busy callee again).
                self.setup_timeout = self.ring_timeout = False
            self._ended(now, event.cause, event.tech_cause)
        elif event.type == EventType.CHANNEL_HANGUP_REQUEST:
            self.soft_hangup_seen = True  # ours, or Asterisk's /dial timeout
        elif event.type == EventType.CHANNEL_DESTROYED:
            self.gone(now, event.cause, event.tech_cause)
        elif event.type == EventType.RECONCILED:
            if event.in_app and not self.in_stasis:
                self.entered_stasis()  # its StasisStart was lost in the cut
            if event.channel_state is None:
                self.vanish(now)
            elif event.channel_state == ev.ChannelState.UP:
                self.answered()
            elif event.channel_state == ev.ChannelState.RINGING:
                self.alerted(now, media=False)
