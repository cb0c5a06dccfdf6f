"""The route and outcome scripts over a fake, stateful channel: the same decisions as the core."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agi.scripts import Scripts, observe, parse_sip_code
from agi.server import AgiServer
from redis_seed.routes_file import parse_routes
from routing.policy import Observation
from routing.snapshot import Snapshot

from .agi_fake_asterisk import FakeChannel, ServerFactory
from .conftest import ROUTES

AGI_DIALPLAN = Path(__file__).parents[2] / "asterisk_conf" / "extensions_agi.conf"


async def route(server: AgiServer, *args: str) -> dict[str, str]:
    return (await FakeChannel(server.port, args=list(args)).run()).variables


async def outcome(server: AgiServer, variables: dict[str, str], n: int, cause: str,
                  dialstatus: str, sip: str | None = None, ringtime: str = "",
                  progresstime: str = "") -> dict[str, str]:
    """Run ``outcome`` on the channel holding ``variables``, as the dialplan calls it after
    Dial() attempt n; ``sip`` None: Dial created no channel."""
    keys = "HANGUPCAUSE_KEYS()"
    before = variables.get(keys, "")
    if sip is not None:
        peer = f"PJSIP/carrier-x-{n:08x}"
        # HANGUPCAUSE_KEYS() lists the channels in no fixed order: put the new one first.
        variables[keys] = ",".join(filter(None, [peer, before]))
        variables[f"HANGUPCAUSE({peer},tech)"] = sip
    ch = FakeChannel(server.port, script="outcome", variables=variables,
                     args=[str(n), cause, dialstatus, ringtime, progresstime, before])
    return (await ch.run()).variables


# -- route -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dialled", "status", "cause"), [
    ("0033123456789", "OK", None),
    ("+3490512345", "BLOCKED", "21"),
    ("0044201234567", "NO_ROUTE", "3"),
    ("91&PJSIP/evil", "INVALID", "28"),
    ("", "INVALID", "28"),
])
async def test_route_status_and_caller_cause(router: AgiServer, dialled: str, status: str,
                                             cause: str | None) -> None:
    v = await route(router, dialled)
    assert v["ROUTER_STATUS"] == status
    assert v.get("ROUTER_CAUSE") == cause
    if status != "OK":
        assert v["ROUTER_COUNT"] == "0" and "ROUTER_DIAL_1" not in v


async def test_route_reads_the_tenant_from_the_second_argument(agi_server: ServerFactory,
                                                               snapshot: Snapshot) -> None:
    from dataclasses import replace

    from routing.model import Route
    acme_only = Route(name="acme-uk", priority=0, carrier="cheap",
                      pattern="spain", tenant="acme", stopper=True)
    table = replace(snapshot.table, routes=(*snapshot.table.routes, acme_only))
    tenant_snapshot = Snapshot.build(table, "v-tenant")
    server = await agi_server(Scripts(lambda: tenant_snapshot, random.Random(1)).handlers())

    assert (await route(server, "911234567", "acme"))["ROUTER_DIAL_1"].endswith("@carrier-c")
    assert (await route(server, "911234567", "other"))["ROUTER_COUNT"] == "3"


async def test_route_without_a_loaded_table_answers_error(agi_server: ServerFactory) -> None:
    server = await agi_server(Scripts(lambda: None, random.Random(1)).handlers())
    v = await route(server, "911234567")
    assert v["ROUTER_STATUS"] == "ERROR" and v["ROUTER_CAUSE"] == "34"


async def test_route_answers_error_at_once_when_planning_fails(
        router: AgiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without ROUTER_STATUS the dialplan takes the router for unreachable and asks again.
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("agi.scripts.plan", broken)
    v = await route(router, "911234567")
    assert v["ROUTER_STATUS"] == "ERROR" and v["ROUTER_CAUSE"] == "34"


async def test_route_records_the_table_version(router: AgiServer) -> None:
    assert (await route(router, "911234567"))["ROUTER_VERSION"] == "v-test"


# -- outcome: the outcome matrix over the dialplan's inputs ----------------------------------


async def test_503_moves_on_and_records_the_attempt(router: AgiServer) -> None:
    v = await route(router, "911234567")
    v = await outcome(router, v, 1, "34", "CONGESTION", "SIP 503 Service Unavailable")
    assert v["ROUTER_NEXT"] == "1"
    assert v["ROUTER_RESULT_1"] == "congestion:34"
    # the dialplan appends it to ROUTER_ATTEMPTS and its CDR copy (tests/lab/test_cdr.py)
    assert v["ROUTER_LAST_ATTEMPT"] == f"{v['ROUTER_TRUNK_1']}:congestion:34:503"
    assert "ROUTER_HANGUP_CAUSE" not in v
    # Every Dial()'s CDR record has the routing (tests/lab/test_cdr.py).
    assert (v["CDR(ROUTER_STATUS)"], v["CDR(ROUTER_NUMBER)"], v["CDR(ROUTER_VERSION)"]) == (
        "OK", "+34911234567", "v-test")


async def test_404_moves_on(router: AgiServer) -> None:
    v = await outcome(router, await route(router, "911234567"), 1, "1", "CHANUNAVAIL",
                      "SIP 404 Not Found")
    assert v["ROUTER_NEXT"] == "1"


async def test_486_stops_with_busy(router: AgiServer) -> None:
    v = await outcome(router, await route(router, "911234567"), 1, "17", "BUSY",
                      "SIP 486 Busy Here")
    assert v["ROUTER_NEXT"] == "0" and v["ROUTER_HANGUP_CAUSE"] == "17"


async def test_ringing_then_dial_timeout_stops_with_no_answer(router: AgiServer) -> None:
    v = await outcome(router, await route(router, "911234567"), 1, "0", "NOANSWER",
                      "SIP 180 Ringing", ringtime="180")
    assert v["ROUTER_NEXT"] == "0" and v["ROUTER_HANGUP_CAUSE"] == "19"
    assert v["ROUTER_RESULT_1"] == "no-answer:19"


@pytest.mark.parametrize(("dialstatus", "ringtime"), [("CHANUNAVAIL", ""), ("NOANSWER", "4001")])
async def test_a_200_that_crossed_dial_s_timer_stops_the_call(router: AgiServer, dialstatus: str,
                                                              ringtime: str) -> None:
    # The callee picked up as Dial's ^SETUP or ring timer fired and got a BYE: the next trunk
    # rang them again (15 of 16 crossings on the lab, 'CHANUNAVAIL tech=SIP 200 OK ->
    # unreachable, next').
    v = await outcome(router, await route(router, "911234567"), 1, "0", dialstatus,
                      "SIP 200 OK", ringtime=ringtime)
    assert v["ROUTER_NEXT"] == "0"
    assert v["ROUTER_HANGUP_CAUSE"] == "16"
    assert v["ROUTER_RESULT_1"] == "answered:16"
    # the trace entry as the ARI path writes an answer (it was 'carrier-x:answered::')
    assert v["ROUTER_LAST_ATTEMPT"] == f"{v['ROUTER_TRUNK_1']}:answered:16:200"


async def test_dial_timeout_without_any_provisional_reply_moves_on(router: AgiServer) -> None:
    v = await outcome(router, await route(router, "911234567"), 1, "0", "NOANSWER",
                      "SIP 487 Request Terminated")
    assert v["ROUTER_NEXT"] == "1" and v["ROUTER_RESULT_1"].startswith("unreachable:")


async def test_setup_timeout_moves_on(router: AgiServer) -> None:
    v = await outcome(router, await route(router, "911234567"), 1, "0", "CHANUNAVAIL",
                      "SIP 487 Request Terminated")
    assert v["ROUTER_NEXT"] == "1" and v["ROUTER_RESULT_1"].startswith("unreachable:")


async def test_480_from_a_trunk_that_never_rang_moves_on(router: AgiServer) -> None:
    v = await outcome(router, await route(router, "911234567"), 1, "19", "NOANSWER",
                      "SIP 480 Temporarily Unavailable")
    assert v["ROUTER_NEXT"] == "1"


async def test_a_3xx_that_dial_made_busy_is_not_judged_on_an_earlier_attempts_cause(
        router: AgiServer) -> None:
    # Dial's `i` option reports a carrier's 302 as BUSY with no SIP code and leaves the
    # caller's HANGUPCAUSE as an earlier attempt left it: here attempt 1's 19 (a 480 without
    # ringing, next trunk). Attempt 2 was judged "no answer" on it and the call stopped (a
    # code review); the dialplan notes HANGUPCAUSE before each Dial.
    v = await route(router, "911234567")
    v = await outcome(router, v, 1, "19", "NOANSWER", "SIP 480 Temporarily Unavailable")
    assert v["ROUTER_NEXT"] == "1"
    v["ROUTER_CAUSE_BEFORE"] = "19"
    v = await outcome(router, v, 2, "19", "BUSY", "SIP 180 Ringing", ringtime="800")
    assert v["ROUTER_RESULT_2"] == "congestion:34" and v["ROUTER_NEXT"] == "1"
    # A busy callee whose channel could not be told apart still stops (the cause changed).
    v["ROUTER_CAUSE_BEFORE"] = "34"
    v = await outcome(router, v, 3, "17", "BUSY")
    assert v["ROUTER_RESULT_3"] == "busy:17" and v["ROUTER_NEXT"] == "0"


async def test_all_attempts_failing_hang_up_with_the_most_meaningful_cause(
        router: AgiServer) -> None:
    v = await route(router, "911234567")
    assert v["ROUTER_COUNT"] == "3"
    v = await outcome(router, v, 1, "34", "CONGESTION", "SIP 503 Service Unavailable")
    v = await outcome(router, v, 2, "1", "CHANUNAVAIL", "SIP 404 Not Found")
    v = await outcome(router, v, 3, "34", "CONGESTION", "SIP 503 Service Unavailable")
    assert v["ROUTER_NEXT"] == "0"
    assert v["ROUTER_HANGUP_CAUSE"] == "1"  # the rejection beats congestion
    assert v["ROUTER_LAST_ATTEMPT"] == f"{v['ROUTER_TRUNK_3']}:congestion:34:503"


async def test_the_caller_cause_weighs_every_attempt_of_a_long_plan(
        agi_server: ServerFactory) -> None:
    # The earlier verdicts are read RESULTS_PER_READ at a time: a 404 in the second batch
    # still beats the 503s.
    trunks = [f"trunk-{i}" for i in range(1, 71)]
    routes = (ROUTES.replace("  peering: {trunks: [carrier-a, carrier-b]}",
                             f"  peering: {{trunks: [{', '.join(trunks)}]}}")
              .replace("max_attempts: 6", "max_attempts: 70"))
    snap = Snapshot.build(parse_routes(routes, "long.yaml"), "v-long")
    server = await agi_server(Scripts(lambda: snap, random.Random(7)).handlers())
    v = await route(server, "911234567")
    assert v["ROUTER_COUNT"] == "70"
    for n in range(1, 71):
        rejected = n == 55
        v = await outcome(server, v, n, "1" if rejected else "34",
                          "CHANUNAVAIL" if rejected else "CONGESTION",
                          "SIP 404 Not Found" if rejected else "SIP 503 Service Unavailable")
        assert v["ROUTER_NEXT"] == ("1" if n < 70 else "0")
    assert v["ROUTER_HANGUP_CAUSE"] == "1"


async def test_a_carriers_own_failover_policy_applies(router: AgiServer) -> None:
    v = await route(router, "0033123456789")  # france: picky (retry 486, stop 503) first
    assert v["ROUTER_CARRIER_1"] == "picky"
    busy = await outcome(router, dict(v), 1, "17", "BUSY", "SIP 486 Busy Here")
    assert busy["ROUTER_NEXT"] == "1"
    overloaded = await outcome(router, dict(v), 1, "34", "CONGESTION",
                               "SIP 503 Service Unavailable")
    assert overloaded["ROUTER_NEXT"] == "0" and overloaded["ROUTER_HANGUP_CAUSE"] == "34"


@pytest.mark.parametrize(("new_policy", "gone"), [
    ("failover: {retry: [503]}", False),  # the new version fails over on 503
    ("", False),  # the default policy: 503 fails over
    (None, True),  # the carrier is gone from the new version
])
async def test_an_attempt_is_judged_by_the_policy_of_the_version_it_was_routed_with(
        agi_server: ServerFactory, snapshot: Snapshot, new_policy: str | None,
        gone: bool) -> None:
    """A seed while the attempt rings: the call was planned with picky stopping on 503, and
    its outcome says stop, whatever the version current when the attempt ends says."""
    current = [snapshot]
    server = await agi_server(Scripts(lambda: current[0], random.Random(7)).handlers())
    v = await route(server, "0033123456789")
    assert v["ROUTER_CARRIER_1"] == "picky"
    assert v["ROUTER_FAILOVER_1"] == "retry=486 stop=503"
    routes = ROUTES.replace("    failover: {retry: [486], stop: [503]}\n",
                            f"    {new_policy}\n" if new_policy else "")
    if gone:
        routes = routes.replace("picky", "fussy")
    current[0] = Snapshot.build(parse_routes(routes, "new.yaml"), "v-new")
    v = await outcome(server, v, 1, "34", "CONGESTION", "SIP 503 Service Unavailable")
    assert v["ROUTER_NEXT"] == "0" and v["ROUTER_HANGUP_CAUSE"] == "34"


async def test_the_default_policy_of_the_routed_version_holds_after_a_seed_that_overrides_it(
        agi_server: ServerFactory, snapshot: Snapshot) -> None:
    current = [snapshot]
    server = await agi_server(Scripts(lambda: current[0], random.Random(7)).handlers())
    v = await route(server, "911234567")
    assert v["ROUTER_FAILOVER_1"] == ""
    current[0] = Snapshot.build(parse_routes(ROUTES.replace(
        "  peering: {trunks: [carrier-a, carrier-b]}",
        "  peering: {trunks: [carrier-a, carrier-b], failover: {stop: [503]}}"), "new.yaml"),
        "v-new")
    v = await outcome(server, v, 1, "34", "CONGESTION", "SIP 503 Service Unavailable")
    assert v["ROUTER_NEXT"] == "1"


async def test_the_longest_policy_a_routes_file_may_give_is_set_and_judged_whole(
        agi_server: ServerFactory) -> None:
    # Read back with GET VARIABLE (1,023 characters), a long policy was cut and what was
    # left still parsed: its stop list lost, the 503 failed over. Longer still, it did not
    # fit one AGI command and every route session to that carrier died.
    from routing.model import MAX_FAILOVER_CODES

    retry = [c for c in range(400, 700) if c != 503]
    retry += list(range(1, MAX_FAILOVER_CODES - len(retry)))  # 400 codes with stop's 503
    routes = ROUTES.replace("    failover: {retry: [486], stop: [503]}\n",
                            f"    failover: {{retry: {retry}, stop: [503]}}\n")
    snap = Snapshot.build(parse_routes(routes, "long.yaml"), "v-long")
    server = await agi_server(Scripts(lambda: snap, random.Random(7)).handlers())
    v = await route(server, "0033123456789")
    assert v["ROUTER_STATUS"] == "OK" and v["ROUTER_CARRIER_1"] == "picky"
    assert len(v["ROUTER_FAILOVER_1"]) > 1023
    v = await outcome(server, v, 1, "34", "CONGESTION", "SIP 503 Service Unavailable")
    assert v["ROUTER_NEXT"] == "0" and v["ROUTER_HANGUP_CAUSE"] == "34"


async def test_an_unreadable_policy_falls_back_to_the_carriers_current_one(
        router: AgiServer) -> None:
    v = await route(router, "0033123456789")
    v["ROUTER_FAILOVER_1"] = "stop=five"  # not what route writes
    v = await outcome(router, v, 1, "34", "CONGESTION", "SIP 503 Service Unavailable")
    assert v["ROUTER_NEXT"] == "0"  # picky's current policy: stop on 503


async def test_only_the_channel_of_this_attempt_gives_the_sip_code(router: AgiServer) -> None:
    v = await route(router, "911234567")
    v = await outcome(router, v, 1, "17", "BUSY", "SIP 486 Busy Here")
    # Attempt 2 created no channel (CHANUNAVAIL): attempt 1's 486 must not be read again.
    v = await outcome(router, v, 2, "17", "CHANUNAVAIL", None)
    assert v["ROUTER_RESULT_2"] == "unreachable:34"
    assert v["ROUTER_NEXT"] == "1"


async def test_keys_split_over_several_args_are_put_back_together(router: AgiServer) -> None:
    v = await route(router, "911234567")
    v["HANGUPCAUSE_KEYS()"] = "PJSIP/a-1,PJSIP/b-2,PJSIP/c-3"
    v["HANGUPCAUSE(PJSIP/c-3,tech)"] = "SIP 486 Busy Here"
    v["HANGUPCAUSE(PJSIP/a-1,tech)"] = "SIP 503 Service Unavailable"
    ch = FakeChannel(router.port, script="outcome", variables=v,
                     args=["1", "17", "BUSY", "", "", "PJSIP/a-1", "PJSIP/b-2"])
    assert (await ch.run()).variables["ROUTER_RESULT_1"] == "busy:17"


@pytest.mark.parametrize("index", ["x", "0", "4", "-1", "²", "١", ""])
async def test_an_attempt_index_that_was_not_planned_stops_with_an_error_cause(
        router: AgiServer, index: str) -> None:
    # Only 1..ROUTER_COUNT (3 here) come from the shipped dialplan. "-1" and "²" made the
    # script fail with a traceback, "١" was read as 1, "0" judged an attempt nobody made.
    variables = await route(router, "911234567")
    assert variables["ROUTER_COUNT"] == "3"
    v = await FakeChannel(router.port, script="outcome", variables=variables,
                          args=[index, "34", "CONGESTION"]).run()
    assert {k: v.variables[k] for k in ("ROUTER_HANGUP_CAUSE", "ROUTER_NEXT")} == {
        "ROUTER_HANGUP_CAUSE": "34", "ROUTER_NEXT": "0"}
    assert not any(k.startswith("ROUTER_RESULT_") for k in v.variables if k not in variables)


# -- the pure translation --------------------------------------------------------------------


@pytest.mark.parametrize(("tech", "code"), [
    ("SIP 503 Service Unavailable", 503),
    ("SIP 486 Busy Here", 486),
    ("SIP 180 Ringing", None),  # what a ring timeout leaves: no final answer
    ("SIP 183 Session Progress", None),
    ("SIP 200 OK", None),
    ("", None),
    ("IAX2 whatever", None),
    ("SIP 99 x", None),
])
def test_parse_sip_code(tech: str, code: int | None) -> None:
    assert parse_sip_code(tech) == code


@pytest.mark.parametrize(("args", "expected"), [
    (("34", "CONGESTION", "", "", "SIP 503 Service Unavailable"),
     Observation(cause=34, sip_code=503)),
    (("17", "BUSY", "120", "", "SIP 486 Busy Here"),
     Observation(cause=17, sip_code=486, provisional=True)),
    (("34", "CONGESTION", "", "90", "SIP 503 Service Unavailable"),
     Observation(cause=34, sip_code=503, provisional=True, early_media=True)),
    # Ring timeout: HANGUPCAUSE still holds the previous attempt's 34 (measured on Asterisk 22)
    (("34", "NOANSWER", "1", "", "SIP 180 Ringing"),
     Observation(provisional=True, ring_timeout=True)),
    (("0", "NOANSWER", "150", "", "SIP 487 Request Terminated"),
     Observation(provisional=True, ring_timeout=True)),
    (("0", "NOANSWER", "", "90", ""),
     Observation(provisional=True, early_media=True, ring_timeout=True)),
    (("", "NOANSWER", "", "", ""), Observation(setup_timeout=True)),
    # Setup timeout (no response at all): no channel key, HANGUPCAUSE stale
    (("34", "CHANUNAVAIL", "", "", ""), Observation(setup_timeout=True)),
    (("19", "NOANSWER", "", "", "SIP 480 Temporarily Unavailable"),
     Observation(cause=19, sip_code=480)),
    (("1", "CHANUNAVAIL", "", "", "SIP 404 Not Found"), Observation(cause=1, sip_code=404)),
    # The carrier rang, then sent 487 by itself (no timer of Dial's fired: measured on the lab,
    # Dial says CHANUNAVAIL): its answer, not a ring timeout
    (("127", "CHANUNAVAIL", "2", "", "SIP 487 Request Terminated"),
     Observation(cause=127, sip_code=487, provisional=True)),
    # No SIP code found (the new channel could not be told apart): BUSY and CONGESTION come
    # from the far end's answer, which renewed HANGUPCAUSE (a busy callee was rung again)
    (("17", "BUSY", "", "", ""), Observation(cause=17)),
    (("34", "CONGESTION", "", "", ""), Observation(cause=34)),
    (("16", "CANCEL", "100", "", ""), Observation(provisional=True, caller_gone=True)),
    # The carrier's 200 crossed Dial's ^SETUP or ring timer (or came with its own BYE): the
    # callee picked up, got a BYE, and the next trunk was rung (acceptance run on the lab)
    (("0", "CHANUNAVAIL", "", "", "SIP 200 OK"), Observation(answered=True, unconnected=True)),
    (("34", "NOANSWER", "4001", "", "SIP 200 OK"),
     Observation(provisional=True, answered=True, unconnected=True)),
    (("16", "CANCEL", "", "300", "SIP 200 OK"),
     Observation(provisional=True, early_media=True, answered=True, unconnected=True,
                 caller_gone=True)),
])
def test_observe(args: tuple[str, str, str, str, str], expected: Observation) -> None:
    assert observe(*args) == expected


@pytest.mark.parametrize(("args", "before", "expected"), [
    # BUSY or CONGESTION without a SIP code: the cause counts only when the Dial changed it
    (("17", "BUSY", "", "", ""), "0", Observation(cause=17)),
    (("17", "BUSY", "", "", ""), "17", Observation()),  # a 3xx after a retried busy
    (("19", "BUSY", "800", "", "SIP 180 Ringing"), "19", Observation(provisional=True)),
    (("34", "CONGESTION", "", "", ""), "34", Observation()),
    # a final SIP code: HANGUPCAUSE is that answer's, whatever it was before
    (("17", "BUSY", "", "", "SIP 486 Busy Here"), "17", Observation(cause=17, sip_code=486)),
])
def test_observe_with_the_cause_before_the_dial(args: tuple[str, str, str, str, str],
                                                before: str, expected: Observation) -> None:
    assert observe(*args, cause_before=before) == expected


async def test_outcome_of_a_late_attempt_reads_the_whole_channel_list(
        router: AgiServer) -> None:
    # Far into a call, HANGUPCAUSE_KEYS() is past the 1,023 characters GET VARIABLE answers
    # (res_agi.c): cut, the new channel was not found and the 503 was lost. The trace is
    # not read at all: it is the dialplan's to extend.
    v = await route(router, "911234567")
    v["ROUTER_ATTEMPTS"] = "|".join(f"trunk-{i:02}-of-a-carrier-with-a-long-name:unreachable::"
                                    for i in range(1, 40))
    v["HANGUPCAUSE_KEYS()"] = ",".join(f"PJSIP/trunk-{i:02}-{i:08x}" for i in range(1, 60))
    assert len(v["HANGUPCAUSE_KEYS()"]) > 1023
    ch = FakeChannel(router.port, script="outcome", variables=v,
                     args=["1", "34", "CONGESTION", "", "", v["HANGUPCAUSE_KEYS()"]])
    peer = "PJSIP/carrier-x-00000001"
    v["HANGUPCAUSE_KEYS()"] += f",{peer}"
    v[f"HANGUPCAUSE({peer},tech)"] = "SIP 503 Service Unavailable"
    await ch.run()
    assert v["ROUTER_RESULT_1"] == "congestion:34"
    assert v["ROUTER_LAST_ATTEMPT"] == f"{v['ROUTER_TRUNK_1']}:congestion:34:503"
    assert not any("ROUTER_ATTEMPTS" in c for c in ch.commands)


@pytest.mark.parametrize(("start", "end_ms", "now_ms", "result", "go_on"), [
    ("1795785909000", 8, 9, "cancelled:127", "0"),  # the carrier's own 487, at once: stop
    # the 487 answers the CANCEL of Dial's ^SETUP timer: a dead trunk, next
    ("1795785909000", 5020, 5021, "unreachable:34", "1"),
    # a slow outcome script: the Dial's end decides, not when the script runs
    ("1795785909000", 8, 6000, "cancelled:127", "0"),
    ("1795785909000", None, 8, "cancelled:127", "0"),  # no ROUTER_DIAL_END: now
    (None, 8, 9, "unreachable:34", "1"),  # a dialplan without ROUTER_DIAL_START: as before
])
async def test_a_487_without_ringing_is_told_from_the_setup_timer_by_the_dial_time(
        router: AgiServer, start: str | None, end_ms: int | None, now_ms: int, result: str,
        go_on: str) -> None:
    v = await route(router, "911234567")
    assert v["ROUTER_SETUP_TIMEOUT_1"] == "5"
    if start is not None:
        v["ROUTER_DIAL_START"] = start
    if end_ms is not None:
        v["ROUTER_DIAL_END"] = str(1795785909000 + end_ms)
    v["STRFTIME(,,%s%3q)"] = str(1795785909000 + now_ms)  # Asterisk's clock, now
    v = await outcome(router, v, 1, "127", "CHANUNAVAIL", "SIP 487 Request Terminated")
    assert (v["ROUTER_RESULT_1"], v["ROUTER_NEXT"]) == (result, go_on)


@pytest.mark.parametrize(("end_ms", "result", "warned"), [
    # No channel, at once: a trunk Dial cannot call at all (no such endpoint). Judged as the
    # ARI app judges its failed channel create, and said in a WARNING (it was INFO only).
    (3, "congestion:34", True),
    # No channel after the setup timeout: a silent trunk, Dial's ^SETUP timer, no warning.
    (5020, "unreachable:34", False),
])
async def test_a_trunk_dial_cannot_call_at_all_is_told_from_a_silent_one_and_warned_about(
        router: AgiServer, caplog: pytest.LogCaptureFixture, end_ms: int, result: str,
        warned: bool) -> None:
    v = await route(router, "911234567")
    v["ROUTER_DIAL_START"] = "1795785909000"
    v["ROUTER_DIAL_END"] = str(1795785909000 + end_ms)
    v = await outcome(router, v, 1, "34", "CHANUNAVAIL", None)
    assert (v["ROUTER_RESULT_1"], v["ROUTER_NEXT"]) == (result, "1")
    assert ("Dial could not call carrier-" in caplog.text) is warned


def test_a_clock_set_back_during_the_dial_rules_nothing_out() -> None:
    from agi.scripts import setup_timer_ruled_out
    assert setup_timer_ruled_out("1000", "1008", "5")
    assert not setup_timer_ruled_out("1000", "900", "5")  # negative: unknown, the timer
    assert not setup_timer_ruled_out("1000", "6000", "5")
    assert not setup_timer_ruled_out("", "1008", "5")


#: Asterisk reads a function without read2 into a buffer of VAR_BUF_SIZE (4,096) bytes, in
#: ${...} (pbx_variables.c) and in GET FULL VARIABLE (ast_func_read2(..., 0)):
#: HANGUPCAUSE_KEYS() (func_hangupcause.c) answers at most 4,095 characters.
VAR_BUF_SIZE = 4096


def _keys_read_back(ch: FakeChannel, line: str) -> bytes | None:
    if line.startswith("GET FULL VARIABLE") and "HANGUPCAUSE_KEYS()" in line:
        keys = ch.variables["HANGUPCAUSE_KEYS()"][:VAR_BUF_SIZE - 1]
        return f"200 result=1 ({keys})\n".encode()
    return None


def _dialplan_clears_the_hash_before_each_dial() -> bool:
    """Whether the shipped dialplan runs HangupCauseClear() right before it notes
    HANGUPCAUSE_KEYS() for the Dial."""
    lines = [line.split(";")[0].strip() for line in AGI_DIALPLAN.read_text().splitlines()]
    steps = [line for line in lines if line.startswith("same")]
    noted = next(i for i, step in enumerate(steps) if "Set(RTR_KEYS=" in step)
    return steps[noted - 1].endswith("HangupCauseClear()")


@pytest.mark.parametrize("new_key_first", [True, False])
async def test_a_late_attempt_of_a_call_with_long_trunk_names_is_judged_on_its_sip_code(
        agi_server: ServerFactory, new_key_first: bool) -> None:
    # A valid table: 60 trunks of 60-character names, max_attempts 60; the carrier stops on
    # a 500. The caller's hangup-cause hash kept every attempt's channel: past attempt ~53
    # its keys passed 4,095 characters, the channel this Dial created could not be told from
    # the cut list, and the 500 was judged on cause 38 alone (the carrier's `stop: [500]`
    # ignored, the next trunk dialled). The dialplan steps are modelled after the shipped
    # dialplan (from a code review).
    trunks = [f"t{i:02d}-" + "x" * 56 for i in range(1, 61)]
    routes = (ROUTES.replace("  peering: {trunks: [carrier-a, carrier-b]}",
                             f"  peering: {{trunks: [{', '.join(trunks)}], "
                             "failover: {stop: [500]}}")
              .replace("max_attempts: 6", "max_attempts: 60"))
    snap = Snapshot.build(parse_routes(routes, "long-names.yaml"), "v-long")
    server = await agi_server(Scripts(lambda: snap, random.Random(7)).handlers())
    v = (await FakeChannel(server.port, args=["911234567"]).run()).variables
    assert v["ROUTER_COUNT"] == "60"
    clears = _dialplan_clears_the_hash_before_each_dial()
    keys: list[str] = []
    for n in range(1, 56):
        if clears:
            keys = []
        before = ("," + ",".join(keys))[:VAR_BUF_SIZE - 1]  # Set(RTR_KEYS=,${...KEYS()})
        peer = f"PJSIP/{v[f'ROUTER_TRUNK_{n}']}-{n:08x}"
        keys = [peer, *keys] if new_key_first else [*keys, peer]
        v["HANGUPCAUSE_KEYS()"] = ",".join(keys)
        last = n == 55
        v[f"HANGUPCAUSE({peer},tech)"] = ("SIP 500 Internal Server Error" if last
                                          else "SIP 503 Service Unavailable")
        ch = FakeChannel(server.port, script="outcome", variables=v, respond=_keys_read_back,
                         args=[str(n), "38" if last else "34", "CONGESTION", "", "", before])
        v = (await ch.run()).variables
        assert v["ROUTER_NEXT"] == ("0" if last else "1")
    assert v["ROUTER_LAST_ATTEMPT"].endswith(":congestion:38:500")
