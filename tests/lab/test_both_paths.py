"""Lab tests that are the same on both router paths (SPEC sections 2 and 3): one test each,
run through the ARI phones (127.0.0.10) and the FastAGI phones (127.0.0.20)."""

from __future__ import annotations

import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from outbound_router import lab as lab_mod
from outbound_router import sipp, topology

from .observer import AriObserver, logged_since, wait_for
from .routes import (
    FIRST_TRUNK_OUTCOMES,
    NUMBER,
    WEIGHTED,
    WEIGHTED_CALLS,
    assert_shares_one_to_two,
    tiers_routes,
)

pytestmark = [pytest.mark.lab, pytest.mark.parametrize("via", ["ari", "agi"])]


@pytest.mark.parametrize(("behaviours", "code", "invites"), FIRST_TRUNK_OUTCOMES)
def test_the_first_trunk_s_answer_decides(lab, carrier, phone, via, behaviours, code,
                                          invites) -> None:  # type: ignore[no-untyped-def]
    lab.seed(tiers_routes(ring_timeout=4))
    a, b = (carrier(name, how) for name, how in zip("ab", behaviours, strict=True))
    assert phone(via).call(NUMBER).final_code == code
    assert (a.invites(), b.invites()) == invites


def test_a_tier_is_exhausted_before_the_next(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    lab.seed(WEIGHTED)
    a, b, c = carrier("a", "unavailable"), carrier("b", "unavailable"), carrier("c", "answer")
    assert phone(via).call(NUMBER).final_code == 200
    assert (a.invites(), b.invites(), c.invites()) == (1, 1, 1)


def test_metrics_1_and_2_share_the_first_attempts_1_to_2(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    lab.seed(WEIGHTED)
    a, b = carrier("a", "answer"), carrier("b", "answer")
    result = phone(via).load(NUMBER, calls=WEIGHTED_CALLS, rate=40, concurrent=40, talk=0.2)
    assert result.successful == WEIGHTED_CALLS, result.final_codes
    assert_shares_one_to_two(a, b, WEIGHTED_CALLS)


def test_the_tenant_comes_from_the_x_tenant_header(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    lab.seed(tiers_routes(ring_timeout=4))  # +44 routes for tenant acme only
    c = carrier("c", "answer")
    assert phone(via).call("00441234567890", tenant="acme").final_code == 200
    assert phone(via).call("00441234567890", tenant="other").final_code == 404
    assert c.invites() == 1


def _local_call(lab, via: str, number: str, variables: dict[str, str], trunk) -> None:  # type: ignore[no-untyped-def]
    """A Local channel into the phones' context of ``via``, answered through ``trunk``
    (a SIPp carrier); then hung up. Asterisk logged no complaint of PJSIP_HEADER() meanwhile,
    which a channel that is no PJSIP one gets."""
    offset = lab.asterisk_log.stat().st_size
    with AriObserver(lab.ari_url, lab.ari_auth):  # the Local channel's other half enters it
        endpoint = urllib.parse.quote(f"Local/{number}@from-{via}-phones")
        status, local = lab.ari("POST", f"/channels?endpoint={endpoint}", {
            "app": AriObserver.APP, "formats": "ulaw", "variables": variables})
        assert status == 200
        wait_for(f"{trunk.trunk.endpoint}'s INVITE", trunk.invites)
        wait_for("the call to be answered", lambda: lab.ari(
            "GET", f"/channels/{local['id']}")[1].get("state") == "Up")
        lab.ari("DELETE", f"/channels/{local['id']}")
    assert trunk.invites() == 1
    # (the observer's websocket closing may log a WARNING of its own)
    assert "requires a PJSIP channel" not in logged_since(lab.asterisk_log, offset)


def test_a_tenant_the_channel_has_wins_over_the_x_tenant_header(lab, carrier, via) -> None:  # type: ignore[no-untyped-def]
    # ROUTER_TENANT, set per endpoint (pjsip set_var) or by a dialplan that sends the call to
    # the phones' context, is the tenant: the header is for the lab's unauthenticated phones,
    # with which any phone can name any tenant. A Local channel into that context, with the
    # variable, stands for such a caller (it has no SIP header at all).
    lab.seed(tiers_routes(ring_timeout=4))  # +44 routes for tenant acme only
    _local_call(lab, via, "00441234567890", {"__ROUTER_TENANT": "acme"}, carrier("c", "answer"))


def test_a_caller_that_is_no_pjsip_channel_is_routed_without_a_complaint(lab, carrier, via) -> None:  # type: ignore[no-untyped-def]
    # A Local channel, an Originate, a call file: no tenant of its own, and no SIP header to
    # read one from. PJSIP_HEADER(read,X-Tenant) logged an ERROR for each such call.
    lab.seed(tiers_routes(ring_timeout=4))
    _local_call(lab, via, NUMBER, {}, carrier("a", "answer"))


def test_a_tenant_header_with_a_quote_is_passed_on_without_a_dialplan_warning(
        lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    # The header is the phone's, so anything: `$["${TENANT}" != ""]` was a syntax error
    # (ast_expr2 WARNING) with a '"' in it.
    lab.seed(tiers_routes(ring_timeout=4))
    carrier("c", "answer")
    offset = lab.asterisk_log.stat().st_size
    assert phone(via).call("00441234567890", tenant='ac"me').final_code == 404  # not acme
    assert "WARNING" not in logged_since(lab.asterisk_log, offset)


def test_a_plan_of_thirty_attempts_is_followed_to_its_end(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    # 29 trunks that are no PJSIP endpoint (each attempt fails at once), then carrier-a. Past
    # several of Asterisk's limits: on the AGI path `route` sets 187 variables, some 5 KB (one
    # ARRAY() sets 100, one AGI command line holds 2,047 bytes) and the trace, some 1.8 KB, is
    # past what GET VARIABLE answers (1,023 characters); on the ARI path the ROUTER_* writes
    # are past the 4,096 bytes of an HTTP request line.
    dead = [f"dead-trunk-{i:02}-of-a-carrier-with-a-long-name" for i in range(1, 30)]
    version = lab.seed("\n".join([
        'defaults: {country_code: "34", setup_timeout: 2, ring_timeout: 4, max_attempts: 30}',
        "carriers:",
        *(f"  c{i:02}: {{trunks: [{name}]}}" for i, name in enumerate(dead, 1)),
        "  live: {trunks: [carrier-a]}",
        "target_patterns:",
        '  spain: {prefix: "+34"}',
        "outgoing_routes:",
        *(f"  - {{pattern: spain, carrier: c{i:02}, priority: {i}}}"
          for i in range(1, 30)),
        "  - {pattern: spain, carrier: live, priority: 30}",
    ]) + "\n")
    a = carrier("a", "answer")
    cdr_at = lab_mod.file_size(lab_mod.paths().cdr_csv)
    with AriObserver(lab.ari_url, lab.ari_auth, phones=f"PJSIP/phone-{via}-") as observer:
        assert phone(via).call(NUMBER).final_code == 200
        trace = observer.whole_trace()
    assert [entry.split(":")[0] for entry in trace.split("|")] == [*dead, "carrier-a"]
    assert a.invites() == 1
    # The lab's CDR file stays one record a line, each with its 14 columns: Asterisk 22.10's
    # advanced cdr_custom writer cut this call's line at 1,023 characters, quote and newline
    # included, and the next record ran into it (asterisk_conf/cdr_custom.conf keeps the
    # legacy writer, which cuts a value at 511 characters instead).
    def with_the_answer() -> list[list[str]]:
        rows = lab_mod.cdr_rows_since(cdr_at)
        return rows if any("live" in row for row in rows) else []

    rows = wait_for("the answered call's CDR record", with_the_answer)
    assert {len(row) for row in rows} == {14}, rows
    answered = [row for row in rows if row[10:12] == ["live", "carrier-a"]]
    assert answered and answered[-1][13] == version, rows[-1]


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    # carrier-a answers 302 to carrier-c's address. The router goes on with its own plan
    # (carrier-b). Asterisk must not follow the redirect by itself: Dial() did, into a Local
    # channel in the carrier endpoint's context (the lab's rejects, a laxer one may dial out).
    lab.seed(tiers_routes(ring_timeout=4))
    a, b, c = carrier("a", "redirect"), carrier("b", "answer"), carrier("c", "answer")
    log_at = Path(lab.asterisk_log).stat().st_size
    with AriObserver(lab.ari_url, lab.ari_auth, phones=f"PJSIP/phone-{via}-") as observer:
        assert phone(via).call(NUMBER).final_code == 200
        trace = observer.whole_trace()
    first, second = trace.split("|")
    # ARI sees the 302 (cause 23); Dial() reports a prevented forward as BUSY with no cause
    # and no SIP code: the outcome script finds nothing to stop on and goes on.
    assert first == ("carrier-a:congestion:23:302" if via == "ari"
                     else "carrier-a:congestion::")
    assert second == "carrier-b:answered:16:200"
    assert (a.invites(), b.invites(), c.invites()) == (1, 1, 0)
    assert "@from-carriers:" not in logged_since(lab.asterisk_log, log_at)  # no dialplan ran


def test_a_first_trunk_that_is_no_endpoint_leaves_the_phone_hearing_the_next(
        lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    # A typo in a trunk name (validate cannot know Asterisk's endpoints): Asterisk cannot
    # create the channel at all. The next trunk's ringing and answer must reach the phone;
    # on ARI the caller joined the bridge only with the first attempt, so it got 100 then a
    # 200 into silence.
    lab.seed("""
defaults: {country_code: "34", setup_timeout: 2, ring_timeout: 10}
carriers: {typo: {trunks: [carrier-x]}, second: {trunks: [carrier-b]}}
target_patterns: {spain: {prefix: "+34"}}
outgoing_routes:
  - {pattern: spain, carrier: typo, priority: 1}
  - {pattern: spain, carrier: second, priority: 2}
""")
    b = carrier("b", "answer_after:1")
    result = phone(via).call(NUMBER, hangup_after=1)
    assert result.final_code == 200
    assert 180 in result.codes, result.codes
    assert b.invites() == 1


@pytest.mark.parametrize(("first", "code", "invites"), [
    # 487 nobody asked for: the carrier ended the INVITE itself. SPEC section 3 lists 487
    # (127) as "stop"; the phone gets 127's 500. Earlier versions tried carrier-b.
    ("ring_then:487", 500, (1, 0)),
    ("error:487", 500, (1, 0)),
    # 603 after ringing: a rejection like any 603 (SPEC section 3), so carrier-b is tried. An
    # earlier version stopped here, taking it for the callee's own decline.
    ("ring_then:603", 200, (1, 1)),
    # 480 after ringing: the callee did not answer, stop (SPEC section 3); a congestion or a
    # busy after ringing is judged as without it.
    ("ring_then:480", 480, (1, 0)),
    ("ring_then:503", 200, (1, 1)),
    ("ring_then:486", 486, (1, 0)),
])
def test_a_carrier_that_rings_then_ends_the_call_itself(
        lab, carrier, phone, via, first, code, invites) -> None:  # type: ignore[no-untyped-def]
    lab.seed(tiers_routes(ring_timeout=4))
    a, b = carrier("a", first), carrier("b", "answer")
    result = phone(via).call(NUMBER)
    assert result.final_code == code, result.codes
    assert (a.invites(), b.invites()) == invites


def test_a_callee_who_picked_up_is_not_rung_again_when_asterisk_drops_the_answer(
        lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    # A 200 without SDP: Asterisk ACKs and BYEs it. On the ARI path the channel often ended
    # before its answer reached the bridge (cause 127, a 406 nobody sent), and carrier-b rang
    # the callee again: 2 of 12 calls here, 3 of 11 in the acceptance run (whose carrier
    # sending its BYE with its 200 made it 9 of 12; SIPp's BYE comes too late for that).
    lab.seed(tiers_routes(ring_timeout=4))
    a, b = carrier("a", "answer_no_sdp"), carrier("b", "answer")
    calls = 20
    for _ in range(calls):
        phone(via).call(NUMBER)
    assert (a.invites(), b.invites()) == (calls, 0)


@pytest.mark.parametrize(("first", "ring", "setup"), [
    ("trying", 4, 2), ("trying", 2, 3), ("silent", 2, 3)])
def test_a_trunk_without_a_provisional_reply_is_left_after_the_setup_timeout(
        lab, carrier, phone, via, first, ring, setup) -> None:  # type: ignore[no-untyped-def]
    # Dial's ^SETUP timer CANCELs it and its 487 answers that CANCEL: on the AGI path the
    # same 487 as a carrier's own (which stops, test above); ROUTER_DIAL_START tells them apart.
    # A ring timeout shorter than the setup timeout: the ARI path leaves the trunk after
    # setup_timeout all the same. Dial() counts its ring timeout from the INVITE and has no
    # timer that starts at the 180, so on the AGI path that timer ends the attempt first
    # (NOANSWER, with the 487 of a trunk that said Trying): a dead trunk, next trunk, a second
    # early, the difference docs/agi.md states.
    lab.seed(tiers_routes(ring_timeout=ring, setup_timeout=setup))
    a, b = carrier("a", first), carrier("b", "answer")
    result = phone(via).call(NUMBER)
    assert result.final_code == 200, result.codes
    assert (a.invites(), b.invites()) == (1, 1)
    left_after = setup if via == "ari" else min(ring, setup)
    assert left_after <= result.duration < left_after + 1.5, result.duration  # (+ 0.5 s talk)


@pytest.mark.parametrize(("first", "invites"), [
    ("early_503", (1, 0)),  # a 183 with SDP alerted the callee with media: stop, as asked
    # A 183 without SDP too: neither path can tell them apart. ignore_183_without_sdp would,
    # at the cost of the setup timer ignoring that 183 (asterisk_conf/pjsip.conf).
    ("progress_503", (1, 0)),
])
def test_a_183_stops_a_carrier_that_wants_no_retry_after_early_media(
        lab, carrier, phone, via, first, invites) -> None:  # type: ignore[no-untyped-def]
    # France: carrier-d ("picky", retry_after_early_media: false), then carrier-b.
    lab.seed(tiers_routes(ring_timeout=4))
    d, b = carrier("d", first), carrier("b", "answer")
    result = phone(via).call("0033123456789")
    assert (d.invites(), b.invites()) == invites, result.codes
    assert result.final_code == (200 if invites[1] else 503)


def test_a_ring_timeout_shorter_than_the_setup_timeout_cuts_the_ringing_there(
        lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    """carrier-a rings at once and would answer after 3.5 s: with ring_timeout 2 it is no
    answer after 2 s of ringing, the call stops (480) and carrier-b is not tried. The AGI
    path used to give Dial() setup + ring (5 s) here: carrier-a's late answer was connected."""
    lab.seed(tiers_routes(ring_timeout=2, setup_timeout=3))
    a, b = carrier("a", "answer_after:3.5"), carrier("b", "answer")
    result = phone(via).call(NUMBER)
    assert result.final_code == 480, result.codes
    assert (a.invites(), a.requests("CANCEL"), b.invites()) == (1, 1, 0)
    assert 2 <= result.duration < 2 + 1, result.duration


@pytest.mark.parametrize(("first_policy", "code", "invites"), [
    pytest.param("failover: {stop: [503]}", 503, (1, 0), id="stop-stays-stop"),
    pytest.param("failover: {retry: [486]}", 200, (1, 1), id="retry-stays-retry"),
])
def test_a_seed_while_an_attempt_rings_does_not_change_how_it_is_judged(
        lab, carrier, phone, via, first_policy, code, invites) -> None:  # type: ignore[no-untyped-def]
    # The call is routed with carrier-a's policy of the first version; while carrier-a rings,
    # a second version gives carrier-a the other policy (stop on 503 <-> the default). The
    # 503 that ends the ringing is judged by the first: no half-applied reload. The AGI path
    # judged it by the second (its outcome script read the current version).
    routes = tiers_routes(ring_timeout=8)
    plain = "first: {trunks: [carrier-a]}"
    before = routes.replace(plain, f"first: {{trunks: [carrier-a], {first_policy}}}")
    after = routes.replace(plain, "first: {trunks: [carrier-a], failover: {stop: [503]}}") \
        if "retry" in first_policy else routes
    lab.seed(before)
    a, b = carrier("a", "ring_then:503:3"), carrier("b", "answer")
    # A number of its own: an earlier test's stray INVITE (sipp._is_stray) reaching carrier-a
    # must not pass for this call's, or the second version would be seeded before the call
    # is routed.
    number, invited = "911234599", "sip:+34911234599@"
    with ThreadPoolExecutor(max_workers=1) as background:
        call = background.submit(phone(via).call, number)
        wait_for("carrier-a's INVITE", lambda: any(
            m.is_request and m.method == "INVITE" and m.request_uri.startswith(invited)
            for m in a.messages() if not m.sent))
        lab.seed(after)
        result = call.result(timeout=30)
    assert (result.final_code, (a.invites(), b.invites())) == (code, invites), result.codes


@pytest.mark.parametrize("dialled", [
    pytest.param("911234567%09", id="a-trailing-tab"),
    pytest.param("911234567%0A", id="a-trailing-line-break"),
    # A line break would end FastAGI's header line: the rest read as a header of its own.
    pytest.param("911234567%0Aagi_arg_2:%20acme", id="a-line-break-and-a-header"),
    # Asterisk keeps 79 characters of an extension: cut there, this was 9 digits and spaces.
    pytest.param("911234567" + "%20" * 75 + "abc", id="spaces-past-asterisk-s-limit"),
])
def test_white_space_in_the_dialled_string_is_invalid_and_reaches_no_carrier(
        lab, carrier, phone, via, dialled) -> None:  # type: ignore[no-untyped-def]
    lab.seed(tiers_routes(ring_timeout=4))
    a = carrier("a", "answer")
    result = phone(via).call(dialled)
    assert result.final_code == 484, result.codes  # INVALID: cause 28
    assert a.invites() == 0


#: Every SIP code of SPEC section 3's table, as carrier-a's final answer (no 180 before it),
#: with carrier-b answering behind it: the phone's final code and the INVITEs (a, b).
_NEXT_TRUNK = (200, (1, 1))
SPEC_SECTION_3_CODES = {
    486: (486, (1, 0)), 600: (486, (1, 0)),                      # busy: stop
    408: _NEXT_TRUNK, 500: _NEXT_TRUNK, 502: _NEXT_TRUNK,        # unreachable, server error
    503: _NEXT_TRUNK, 504: _NEXT_TRUNK,
    401: _NEXT_TRUNK, 403: _NEXT_TRUNK, 407: _NEXT_TRUNK,        # rejected by the carrier
    603: _NEXT_TRUNK, 404: _NEXT_TRUNK, 485: _NEXT_TRUNK,
    604: _NEXT_TRUNK, 484: _NEXT_TRUNK, 410: _NEXT_TRUNK,
    488: _NEXT_TRUNK, 606: _NEXT_TRUNK,
}


@pytest.mark.parametrize("sip_code", sorted(SPEC_SECTION_3_CODES))
def test_each_failure_code_of_the_outcome_table_is_judged_as_the_table_says(
        lab, carrier, phone, via, sip_code) -> None:  # type: ignore[no-untyped-def]
    lab.seed(tiers_routes(ring_timeout=4))
    a, b = carrier("a", f"error:{sip_code}"), carrier("b", "answer")
    result = phone(via).call(NUMBER)
    final, invites = SPEC_SECTION_3_CODES[sip_code]
    assert (result.final_code, (a.invites(), b.invites())) == (final, invites), result.codes


@pytest.mark.parametrize(("second", "code"), [("answer", 200), ("error:503", 480)])
def test_a_480_before_any_ringing_moves_on_and_is_the_phone_s_code_when_last(
        lab, carrier, phone, via, second, code) -> None:  # type: ignore[no-untyped-def]
    # The carrier's own 480 (the callee unavailable) was judged "unreachable", congestion:
    # the phone got 503 when nothing answered, which a proxy upstream takes for "try another
    # server". It is a rejection: the next trunk, and 480 ranks above the next one's 503.
    lab.seed(tiers_routes(ring_timeout=4))
    a, b = carrier("a", "error:480"), carrier("b", second)
    result = phone(via).call(NUMBER)
    assert (result.final_code, (a.invites(), b.invites())) == (code, (1, 1)), result.codes


#: In-dialog requests of a phone during a call (a carrier's get the same: the modules that
#: answer them are Asterisk's, not an endpoint's), and the answer each gets. Asterisk answered
#: none of them (its session layer takes every in-dialog request, and no module loaded then
#: answered these): the sender retransmitted for 32 s and then took it as timed out; a
#: carrier's OPTIONS keepalive (Kamailio's and OpenSIPS's dialog pings) ends the call then.
IN_DIALOG = [
    # a blind transfer: declined (allow_transfer = no), the call goes on
    ("REFER", "Refer-To: <sip:600@127.0.0.1:5060>", "", 603),
    ("OPTIONS", "Accept: application/sdp", "", 200),  # keepalive (res_pjsip_dlg_options)
    ("INFO", "Content-Type: application/dtmf-relay", "Signal=5\nDuration=160", 200),
    ("INFO", "X-Keepalive: yes", "", 200),  # an empty INFO: keepalive (res_pjsip_empty_info)
]


@pytest.mark.parametrize(("method", "header", "body", "code"), IN_DIALOG,
                         ids=["refer", "options", "info-dtmf", "info-empty"])
def test_an_in_dialog_request_is_answered_and_the_call_goes_on(
        lab, carrier, tmp_path, via, method, header, body, code) -> None:  # type: ignore[no-untyped-def]
    lab.seed(tiers_routes(ring_timeout=4))
    a = carrier("a", "answer")
    answers = _in_dialog_call(via, method, header, body, tmp_path)
    assert answers == {"INVITE": 200, method: code, "BYE": 200}
    assert a.invites() == 1


#: In-dialog requests no loaded module answers (docs/lab.md says why MESSAGE stays so).
UNANSWERED = [
    ("NOTIFY", "Event: talk", ""),
    ("MESSAGE", "Content-Type: text/plain", "hello"),
]


@pytest.mark.parametrize(("method", "header", "body"), UNANSWERED, ids=["notify", "message"])
def test_an_unanswered_in_dialog_request_leaves_the_call_to_end_cleanly(
        lab, carrier, tmp_path, via, method, header, body) -> None:  # type: ignore[no-untyped-def]
    """The phone gives up on its request and hangs up: its BYE ends both legs (the fixture
    checks that no channel and no bridge is left)."""
    lab.seed(tiers_routes(ring_timeout=4))
    a = carrier("a", "answer")
    answers = _in_dialog_call(via, method, header, body, tmp_path)
    assert answers == {"INVITE": 200, "BYE": 200}
    assert a.invites() == 1


def _in_dialog_call(via: str, method: str, header: str, body: str,
                    workdir: Path) -> dict[str, int | None]:
    """One answered call whose phone sends one in-dialog request, then hangs up after its
    answer or after 4 s without one; the final answer each of the phone's requests got.
    Without retransmissions (see `sipp.run_phone`): the 4 s are the scenario's."""
    messages = sipp.run_phone(topology.phone(via).address, NUMBER, "uac_in_dialog.xml",
                              workdir, values={"METHOD": method, "HEADER": header,
                                               "BODY": body}, retransmit=False)
    return {m.method: m.status for m in messages if not m.sent and not m.is_request}


def test_a_cancel_crossing_the_carrier_s_answer_leaves_nothing_up(
        lab, carrier, tmp_path, via) -> None:  # type: ignore[no-untyped-def]
    """carrier-a answers 0.3 s after its 180 and the phone CANCELs 0.26 to 0.34 s after it:
    from a CANCEL well before the answer, through a CANCEL and a 200 crossing each other, to
    an answer before the CANCEL. Whichever reaches Asterisk first, the phone gets 487 or a
    200 (which it ACKs and ends with a BYE), carrier-a's leg ends by CANCEL or BYE, and no
    channel or bridge is left once the phone is done (each call is checked, not only the
    last)."""
    lab.seed(tiers_routes(ring_timeout=4))
    a = carrier("a", "answer_after:0.3")
    outcomes = []
    for cancel_ms in range(260, 341, 10):
        known = {m.call_id for m in a.messages()}
        phone = sipp.run_phone(topology.phone(via).address, NUMBER, "uac_cancel_race.xml",
                               tmp_path, values={"CANCEL_MS": str(cancel_ms)})
        final = next((c for c in sipp.invite_codes(phone) if c >= 200), None)
        assert final in (200, 487), (cancel_ms, [m.raw.splitlines()[0] for m in phone])
        wait_for(f"no channel or bridge left after the call at {cancel_ms} ms",
                 lambda: not any(lab.leftovers()))

        def carrier_leg_ended(known: set[str] = known) -> str | None:
            got = {m.method for m in a.messages()
                   if m.call_id not in known and m.is_request and not m.sent}
            return "CANCEL" if "CANCEL" in got else "BYE" if "BYE" in got else None

        outcomes.append((final, wait_for("carrier-a's leg to end", carrier_leg_ended)))
    assert a.invites() == len(outcomes)
    # the two ends of the sweep are no race: cancelled before the answer, answered before it
    assert outcomes[0] == (487, "CANCEL") and outcomes[-1] == (200, "BYE"), outcomes


@pytest.mark.parametrize(("phone_sent", "carrier_got"), [
    pytest.param(70, ["69"], id="70-becomes-69"),
    pytest.param(5, ["4"], id="5-becomes-4"),
    pytest.param(1, ["0"], id="1-becomes-0"),
    pytest.param(None, ["70"], id="none-is-asterisk-s-70"),
])
def test_the_carrier_gets_the_phone_s_max_forwards_less_one(
        lab, carrier, phone, via, phone_sent, carrier_got) -> None:  # type: ignore[no-untyped-def]
    # Asterisk starts every outgoing INVITE at 70 by itself: a trunk leading back into the
    # platform would loop for ever. Each attempt of a failover carries it (the second one is
    # a channel of its own, created after the first failed).
    lab.seed(tiers_routes(ring_timeout=4))
    a, b = carrier("a", "unavailable"), carrier("b", "answer")
    assert phone(via).call(NUMBER, max_forwards=phone_sent).final_code == 200
    assert (a.invite_header("Max-Forwards"), b.invite_header("Max-Forwards")) == (
        [carrier_got], [carrier_got])


def test_a_call_whose_max_forwards_is_spent_gets_483_and_reaches_no_carrier(
        lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    lab.seed(tiers_routes(ring_timeout=4))
    a = carrier("a", "answer")
    result = phone(via).call(NUMBER, max_forwards=0)
    assert result.final_code == 483, result.codes
    assert a.invites() == 0
