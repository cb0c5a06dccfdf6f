"""The outcome policy (SPEC section 3) as a table, with the causes real Asterisk 22 reports."""

from __future__ import annotations

import pytest

from routing.model import FailoverPolicy
from routing.policy import (
    Observation,
    Outcome,
    Verdict,
    caller_cause,
    judge,
    sip_response,
    unwatched,
)

O = Observation  # noqa: E741  (short alias keeps the table readable)


@pytest.mark.parametrize(
    ("obs", "outcome", "verdict", "cause"),
    [
        (O(answered=True), Outcome.ANSWERED, Verdict.DONE, 16),
        # answered while no router listened, and gone: nothing to connect, and no other trunk
        (O(answered=True, unconnected=True), Outcome.ANSWERED, Verdict.STOP, 16),
        # ChannelDestroyed cause / tech_cause as recorded in shared/reference
        (O(17, 486), Outcome.BUSY, Verdict.STOP, 17),
        (O(17, 600), Outcome.BUSY, Verdict.STOP, 17),
        (O(17, None), Outcome.BUSY, Verdict.STOP, 17),
        (O(19, 480, provisional=True), Outcome.NO_ANSWER, Verdict.STOP, 19),
        (O(19, 480, provisional=True, ring_timeout=True), Outcome.NO_ANSWER, Verdict.STOP, 19),
        (O(19, None), Outcome.UNREACHABLE, Verdict.RETRY, 34),  # dead trunk, Asterisk's timer
        # the carrier's own 480 before any ringing (the callee unavailable): the next trunk,
        # and 480 to the caller should it be the last (it was 503, congestion)
        (O(19, 480), Outcome.REJECTED, Verdict.RETRY, 19),
        (O(16, None, setup_timeout=True), Outcome.UNREACHABLE, Verdict.RETRY, 34),
        # 487 the caller did not cause: the carrier ended the INVITE itself. SPEC section 3:
        # 487 (127) stops; the caller gets 127 (SIP 500)
        (O(127, 487), Outcome.CANCELLED, Verdict.STOP, 127),
        (O(127, 487, provisional=True), Outcome.CANCELLED, Verdict.STOP, 127),
        (O(127, None), Outcome.CONGESTION, Verdict.RETRY, 34),  # not known to be a 487
        (O(127, 487, caller_gone=True), Outcome.CANCELLED, Verdict.STOP, 16),
        (O(16, None, caller_gone=True), Outcome.CANCELLED, Verdict.STOP, 16),
        (O(18, 408), Outcome.CONGESTION, Verdict.RETRY, 34),
        (O(34, 503), Outcome.CONGESTION, Verdict.RETRY, 34),
        (O(38, 500), Outcome.CONGESTION, Verdict.RETRY, 34),
        (O(27, 502), Outcome.CONGESTION, Verdict.RETRY, 34),
        (O(102, 504), Outcome.CONGESTION, Verdict.RETRY, 34),
        (O(3, None), Outcome.CONGESTION, Verdict.RETRY, 34),
        (O(20, None), Outcome.CONGESTION, Verdict.RETRY, 34),
        (O(66, None), Outcome.CONGESTION, Verdict.RETRY, 34),
        (O(21, 403), Outcome.REJECTED, Verdict.RETRY, 21),
        (O(21, 401), Outcome.REJECTED, Verdict.RETRY, 21),
        (O(21, 407), Outcome.REJECTED, Verdict.RETRY, 21),
        (O(21, 603), Outcome.REJECTED, Verdict.RETRY, 21),
        # SPEC section 3 lists 603 as a rejection, ringing or not: the next trunk. A carrier
        # whose 603 means the callee declined says `failover: {stop: [603]}`.
        (O(21, 603, provisional=True), Outcome.REJECTED, Verdict.RETRY, 21),
        (O(21, 603, provisional=True, early_media=True), Outcome.REJECTED, Verdict.RETRY, 21),
        (O(1, 404), Outcome.REJECTED, Verdict.RETRY, 1),
        (O(1, 485), Outcome.REJECTED, Verdict.RETRY, 1),
        (O(1, 604), Outcome.REJECTED, Verdict.RETRY, 1),
        (O(28, 484), Outcome.REJECTED, Verdict.RETRY, 28),
        (O(22, 410), Outcome.REJECTED, Verdict.RETRY, 22),
        (O(58, 488), Outcome.REJECTED, Verdict.RETRY, 58),
        (O(58, 606), Outcome.REJECTED, Verdict.RETRY, 58),
        (O(1, None), Outcome.REJECTED, Verdict.RETRY, 1),
        (O(16, None), Outcome.CONGESTION, Verdict.RETRY, 34),  # BYE before answer
        (O(34, 503, provisional=True, early_media=True), Outcome.CONGESTION, Verdict.RETRY, 34),
    ],
)
def test_default_policy(obs, outcome, verdict, cause) -> None:
    j = judge(obs)
    assert (j.outcome, j.verdict, j.cause) == (outcome, verdict, cause)


def test_carrier_can_stop_on_a_code_that_normally_retries() -> None:
    policy = FailoverPolicy(stop=frozenset({404}))
    assert judge(O(1, 404), policy).verdict is Verdict.STOP
    assert judge(O(34, 503), policy).verdict is Verdict.RETRY


def test_a_carrier_whose_603_is_the_callee_declining_can_stop_on_it() -> None:
    policy = FailoverPolicy(stop=frozenset({603}))
    j = judge(O(21, 603, provisional=True), policy)
    assert (j.verdict, j.cause) == (Verdict.STOP, 21)


def test_carrier_can_retry_on_busy_and_on_ring_timeout() -> None:
    policy = FailoverPolicy(retry=frozenset({17, 480}))
    assert judge(O(17, 486), policy).verdict is Verdict.RETRY
    assert judge(O(19, 480, provisional=True, ring_timeout=True), policy).verdict is Verdict.RETRY


def test_override_never_retries_a_call_the_caller_abandoned() -> None:
    policy = FailoverPolicy(retry=frozenset({16, 127, 487}))
    assert judge(O(127, 487, caller_gone=True), policy).verdict is Verdict.STOP
    assert judge(O(16, None, caller_gone=True), policy).verdict is Verdict.STOP


def test_a_carrier_may_retry_after_its_own_487() -> None:
    policy = FailoverPolicy(retry=frozenset({487}))
    assert judge(O(127, 487), policy).verdict is Verdict.RETRY
    assert judge(O(127, 487)).verdict is Verdict.STOP


def test_no_retry_after_early_media_when_the_carrier_says_so() -> None:
    policy = FailoverPolicy(retry_after_early_media=False)
    assert judge(O(34, 503, provisional=True, early_media=True), policy).verdict is Verdict.STOP
    assert judge(O(34, 503, provisional=True), policy).verdict is Verdict.RETRY


@pytest.mark.parametrize(
    ("observations", "expected"),
    [
        ([O(34, 503), O(17, 486)], 17),  # busy beats congestion
        ([O(17, 486), O(34, 503)], 17),
        ([O(34, 503), O(1, 404)], 1),  # the number does not exist: more telling than 503
        ([O(34, 503), O(34, 503)], 34),
        ([O(16, None, setup_timeout=True), O(34, 503)], 34),  # a dead trunk: congestion
        ([O(34, 503), O(19, 480)], 19),  # the callee unavailable: more telling than 503
        ([O(34, 503), O(19, 480, provisional=True)], 19),
        ([O(21, 403), O(1, 404)], 21),  # equal rank: the first one
        ([O(1, 404), O(21, 603, provisional=True)], 1),  # equal rank: the first one
        ([O(34, 503), O(127, 487)], 34),  # a carrier's own 487 ranks below the others
        ([O(127, 487)], 127),
        # the callee picked up, and nothing could connect it: a normal clearing, whatever
        # failed before (a 503 would invite the phone to retry and ring the callee again)
        ([O(34, 503), O(answered=True, unconnected=True)], 16),
        ([O(1, 404), O(19, 480), O(answered=True, unconnected=True)], 16),
        ([], 34),
    ],
)
def test_caller_gets_the_most_meaningful_cause(observations, expected) -> None:
    assert caller_cause([judge(o) for o in observations]) == expected


# -- an attempt nobody watched end (the ARI app was down): its last recorded SIP response ------


@pytest.mark.parametrize(("tech", "code"), [
    ("SIP 486 Busy Here", 486), ("SIP 180 Ringing", 180), (" SIP 503 Service Unavailable", 503),
    ("", None), ("Normal Clearing", None), ("SIP 4 x", None),
])
def test_sip_response_reads_the_code_of_hangupcause_tech(tech: str, code: int | None) -> None:
    assert sip_response(tech) == code


@pytest.mark.parametrize(("tech", "outcome", "verdict"), [
    ("SIP 486 Busy Here", Outcome.BUSY, Verdict.STOP),
    ("SIP 503 Service Unavailable", Outcome.CONGESTION, Verdict.RETRY),
    ("SIP 404 Not Found", Outcome.REJECTED, Verdict.RETRY),
    # rang, and nothing after: Asterisk's dial timeout (its CANCEL's 487 is not recorded)
    ("SIP 180 Ringing", Outcome.NO_ANSWER, Verdict.STOP),
    ("SIP 183 Session Progress", Outcome.NO_ANSWER, Verdict.STOP),
    # never alerted: a dead trunk, as after the setup timer
    ("", Outcome.UNREACHABLE, Verdict.RETRY),
    ("SIP 100 Trying", Outcome.UNREACHABLE, Verdict.RETRY),
    ("SIP 182 Queued", Outcome.UNREACHABLE, Verdict.RETRY),
    # answered, and ended before anyone connected the caller: another trunk would ring the
    # callee who just picked up
    ("SIP 200 OK", Outcome.ANSWERED, Verdict.STOP),
])
def test_an_unwatched_attempt_is_judged_on_its_last_response(
        tech: str, outcome: Outcome, verdict: Verdict) -> None:
    obs = unwatched(tech)
    assert obs is not None
    j = judge(obs)
    assert (j.outcome, j.verdict) == (outcome, verdict)


def test_an_unwatched_final_answer_has_the_cause_asterisk_gives_it() -> None:
    # Its trace read "congestion::503" where the same 503 watched read "congestion:34:503",
    # and a carrier's override by Q.850 cause did not apply to it.
    obs = unwatched("SIP 503 Service Unavailable")
    assert obs is not None and (obs.cause, obs.sip_code) == (34, 503)
    stop_on_34 = FailoverPolicy(stop=frozenset({34}))
    assert judge(obs, stop_on_34).verdict is Verdict.STOP
    assert judge(obs, stop_on_34) == judge(Observation(cause=34, sip_code=503), stop_on_34)


@pytest.mark.parametrize("tech", ["SIP cause=16;text=\"Normal Clearing\"", "Q.850;cause=16"])
def test_an_unwatched_attempt_with_an_entry_that_is_no_sip_response_is_unknown(tech: str) -> None:
    assert unwatched(tech) is None


@pytest.mark.parametrize(("obs"), [
    O(29, 501), O(127, 505), O(34, 513), O(None, 580), O(None, 555),
])
def test_an_unlisted_5xx_is_a_server_error_not_a_rejection(obs: Observation) -> None:
    # SPEC section 3: "unreachable, congestion, server error" -> next trunk, and the caller
    # hears congestion (34, SIP 503), not "call rejected" (21, SIP 403); nor may it outrank
    # another trunk's 503 in the caller's final cause.
    j = judge(obs)
    assert (j.outcome, j.verdict, j.cause) == (Outcome.CONGESTION, Verdict.RETRY, 34)
    assert caller_cause([judge(O(34, 503)), j]) == 34
    assert judge(unwatched(f"SIP {obs.sip_code} Whatever")).cause == 34
