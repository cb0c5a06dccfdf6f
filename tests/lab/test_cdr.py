"""The router's outcome lands in the CDR (SPEC section 4), on both paths: the lab's cdr_custom
writes every CDR record with its ROUTER_* CDR variables to a CSV (asterisk_conf/cdr_custom.conf).
Those calls also leave no WARNING in Asterisk's log."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from outbound_router import lab as lab_mod

from .observer import logged_since, wait_for
from .routes import E164, NUMBER, tiers_routes

pytestmark = pytest.mark.lab

#: The columns of asterisk_conf/cdr_custom.conf.
COLUMNS = ("start", "src", "dst", "channel", "dstchannel", "disposition", "billsec", "uniqueid",
           "status", "number", "carrier", "trunk", "attempts", "version")


def cdr_csv() -> Path:
    return lab_mod.paths().cdr_csv


def records_since(offset: int, count: int) -> list[dict[str, str]]:
    """The CDR records written after byte ``offset``, once there are ``count`` of them
    (Asterisk's CDR thread writes a record just after the hangup)."""
    def enough() -> list[list[str]]:
        rows = lab_mod.cdr_rows_since(offset)
        return rows if len(rows) >= count else []

    found = wait_for(f"{count} CDR records", enough, timeout=5)
    return [dict(zip(COLUMNS, row, strict=True)) for row in found]


@pytest.mark.parametrize("via", ["ari", "agi"])
def test_the_outcome_lands_in_the_cdr(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    version = lab.seed(tiers_routes(ring_timeout=4))
    carrier("a", "unavailable")
    carrier("b", "unavailable")
    carrier("c", "answer")
    cdr_at, log_at = lab_mod.file_size(cdr_csv()), lab_mod.file_size(Path(lab.asterisk_log))
    caller = phone(via)
    assert caller.call(NUMBER).final_code == 200  # carrier-a 503, carrier-b 503, c answers
    assert caller.call("905123456").final_code == 403  # premium: blocked
    failed_a, failed_b, answered, blocked = records_since(cdr_at, 4)

    a_trace, b_trace = "carrier-a:congestion:34:503", "carrier-b:congestion:34:503"
    for record, trunk in ((failed_a, "carrier-a"), (failed_b, "carrier-b")):
        assert (record["disposition"], record["dstchannel"].split("-0")[0]) == (
            "CONGESTION", f"PJSIP/{trunk}")
        assert (record["status"], record["number"], record["carrier"], record["trunk"],
                record["version"]) == ("OK", E164, "", "", version)
    # A failed attempt's record has the attempts up to its own on the ARI path. On the AGI
    # path it closes as the dialplan goes on after Dial(), before the outcome script runs:
    # it has the attempts before its own.
    if via == "ari":
        assert (failed_a["attempts"], failed_b["attempts"]) == (a_trace, f"{a_trace}|{b_trace}")
    else:
        assert (failed_a["attempts"], failed_b["attempts"]) == ("", a_trace)
    assert answered["disposition"] == "ANSWERED"
    assert answered["dstchannel"].startswith("PJSIP/carrier-c-")
    assert {k: answered[k] for k in COLUMNS[8:]} == {
        "status": "OK", "number": E164, "carrier": "third", "trunk": "carrier-c",
        "attempts": f"{a_trace}|{b_trace}|carrier-c:answered:16:200", "version": version}
    assert (blocked["dst"], blocked["status"], blocked["number"], blocked["carrier"]) == (
        "905123456", "BLOCKED", "+34905123456", "")
    warnings = [line for line in logged_since(lab.asterisk_log, log_at).splitlines()
                if "WARNING[" in line or "ERROR[" in line]
    assert warnings == []


def test_in_a_failover_burst_every_failed_attempt_s_record_has_its_outcome(  # type: ignore[no-untyped-def]
        lab, carrier, phone) -> None:
    # ARI path: the caller's record of attempt 1 closes as attempt 2 joins the bridge. Before
    # attempt 2 waited for the write made as it was created, 5 of 300 first records of a
    # burst at 80 calls/s had an empty ROUTER_ATTEMPTS.
    lab.seed(tiers_routes(ring_timeout=4))
    carrier("a", "unavailable")
    carrier("b", "answer")
    cdr_at = lab_mod.file_size(cdr_csv())
    calls = 150
    result = phone("ari").load(NUMBER, calls=calls, rate=80, talk=0.2)
    assert result.successful == calls, result.final_codes
    first = [r for r in records_since(cdr_at, 2 * calls) if "carrier-a" in r["dstchannel"]]
    assert len(first) == calls
    assert [r["attempts"] for r in first] == ["carrier-a:congestion:34:503"] * calls


@pytest.mark.parametrize("via", ["ari", "agi"])
def test_a_caller_hanging_up_while_a_trunk_rings_keeps_the_routing_in_its_cdr(  # type: ignore[no-untyped-def]
        lab, carrier, phone, via) -> None:
    # On the ARI path the caller has left Stasis before the app hears of the hangup (its
    # outcome can no longer be written): what was known when the ringing attempt started is,
    # and the h extension adds that attempt, "cancelled" (ROUTER_ATTEMPTS_ABANDONED). On the
    # AGI path the h extension adds it too. Each attempt is in the trace (SPEC section 4).
    version = lab.seed(tiers_routes(ring_timeout=30))
    carrier("a", "unavailable")
    carrier("b", "ring")
    cdr_at, log_at = lab_mod.file_size(cdr_csv()), lab_mod.file_size(Path(lab.asterisk_log))
    result = phone(via).call(NUMBER, cancel_after=1.5)
    assert result.final_code == 487
    failed, abandoned = records_since(cdr_at, 2)
    assert failed["disposition"] == "CONGESTION"
    assert (failed["status"], failed["number"], failed["version"]) == ("OK", E164, version)
    assert abandoned["dstchannel"].startswith("PJSIP/carrier-b-")
    assert abandoned["disposition"] == "NO ANSWER"
    assert (abandoned["status"], abandoned["number"], abandoned["version"]) == (
        "OK", E164, version)
    assert abandoned["attempts"] == "carrier-a:congestion:34:503|carrier-b:cancelled::"
    warnings = [line for line in logged_since(lab.asterisk_log, log_at).splitlines()
                if "WARNING[" in line or "ERROR[" in line]
    assert warnings == []


@pytest.mark.parametrize("via", ["ari", "agi"])
def test_a_caller_hanging_up_during_the_first_attempt_gets_it_in_the_cdr(  # type: ignore[no-untyped-def]
        lab, carrier, phone, via) -> None:
    # No ROUTER_ATTEMPTS at all yet (FIELDQTY 0 in the ARI phones' h extension).
    lab.seed(tiers_routes(ring_timeout=30))
    carrier("a", "ring")
    cdr_at = lab_mod.file_size(cdr_csv())
    assert phone(via).call(NUMBER, cancel_after=1).final_code == 487
    (abandoned,) = records_since(cdr_at, 1)
    assert (abandoned["disposition"], abandoned["attempts"]) == (
        "NO ANSWER", "carrier-a:cancelled::")


def test_a_call_answered_while_the_ari_service_is_down_gets_its_outcome_in_the_cdr(  # type: ignore[no-untyped-def]
        lab, carrier, phone) -> None:
    # carrier-a answers while no instance of the app runs: Asterisk bridges the call by
    # itself, and the next instance adopts it. Nobody wrote its outcome: the CDR had no
    # carrier, trunk or trace (all 10 calls of a black-box audit).
    lab.seed(tiers_routes(ring_timeout=30))
    a = carrier("a", "answer_after:1.5")
    cdr_at = lab_mod.file_size(cdr_csv())
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(phone("ari").call, NUMBER, hangup_after=3)
        wait_for("carrier-a's INVITE", a.invites)
        with lab.service_stopped("ari"):
            wait_for("carrier-a's 200", lambda: any(m.sent and m.status == 200
                                                    for m in a.messages()))
        assert call.result().final_code == 200
    (record,) = records_since(cdr_at, 1)
    assert record["disposition"] == "ANSWERED"
    assert (record["carrier"], record["trunk"]) == ("first", "carrier-a")
    assert record["attempts"] == "carrier-a:answered:16:200"


def test_a_call_answered_and_ended_while_the_ari_service_is_down_gets_its_outcome_in_the_cdr(  # type: ignore[no-untyped-def]
        lab, carrier, phone) -> None:
    # The same, but the phone hangs up before any instance of the app is back: the h
    # extension took the attempt for one the caller cancelled ("carrier-a:cancelled::", no
    # carrier, an ANSWERED record: 9 to 16 calls of 450 in a chaos audit's 5 s stall).
    lab.seed(tiers_routes(ring_timeout=30))
    carrier("a", "unavailable")
    b = carrier("b", "answer_after:1.5")
    cdr_at = lab_mod.file_size(cdr_csv())
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(phone("ari").call, NUMBER, hangup_after=0.5)
        wait_for("carrier-b's INVITE", b.invites)
        with lab.service_stopped("ari"):
            assert call.result().final_code == 200
            failed, answered = records_since(cdr_at, 2)
    assert failed["attempts"] == "carrier-a:congestion:34:503"
    assert answered["disposition"] == "ANSWERED"
    assert (answered["carrier"], answered["trunk"]) == ("second", "carrier-b")
    assert answered["attempts"] == "carrier-a:congestion:34:503|carrier-b:answered:16:200"


def test_a_call_that_comes_while_the_ari_service_is_down_says_so_in_its_cdr(  # type: ignore[no-untyped-def]
        lab, phone) -> None:
    # Stasis() cannot hand the call over (STASISSTATUS=FAILED): the phone gets 503, and the
    # CDR had no ROUTER_* at all (about a fifth of the calls of a chaos audit's restarts).
    cdr_at = lab_mod.file_size(cdr_csv())
    with lab.service_stopped("ari"):
        assert phone("ari").call(NUMBER).final_code == 503
    (record,) = records_since(cdr_at, 1)
    assert (record["disposition"], record["status"], record["carrier"]) == ("FAILED", "ERROR", "")
