"""The lab's Asterisk itself: ARI, SIP, both router entry points, and the SIPp fixtures."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid

import aiohttp
import pytest

from outbound_router import lab as lab_mod
from outbound_router import topology

pytestmark = pytest.mark.lab


def test_ari_answers_with_the_configured_credentials(lab):
    status, info = lab.ari("GET", "/asterisk/info")
    assert status == 200
    assert info["system"]["version"].startswith("22.")


def test_ari_refuses_a_wrong_password(lab):
    status, _ = lab_mod.ari_request("/asterisk/info", (lab.ari_auth[0], "wrong-password"))
    assert status == 401


def test_ari_refuses_requests_without_credentials(lab):
    status, _ = lab_mod.ari_request("/asterisk/info", None)
    assert status == 401


def test_asterisk_started_without_errors(lab):
    assert lab_mod.startup_problems(lab_mod.paths()) == []


def test_asterisk_listens_on_loopback_only(lab):
    pid = lab_mod.running_info().asterisk_pid
    inodes = set()
    for fd in (f"/proc/{pid}/fd/{n}" for n in __import__("os").listdir(f"/proc/{pid}/fd")):
        try:
            target = __import__("os").readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] == "0A":
                listening.append(fields[1])
    # 127.0.0.1:8088 (ARI) is the only TCP listener; SIP is UDP 127.0.0.1:5060.
    assert listening == ["0100007F:1F98"]
    with open("/proc/net/udp") as f:
        udp = [line.split()[1] for line in f.readlines()[1:] if line.split()[9] in inodes]
    assert "0100007F:13C4" in udp


def _options(source: str) -> str:
    call_id = f"{uuid.uuid4()}@{source}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(3)
        port = s.getsockname()[1]
        request = (
            f"OPTIONS sip:{topology.SIP_HOST}:{topology.SIP_PORT} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-{uuid.uuid4().hex};rport\r\n"
            f"From: <sip:probe@{source}>;tag=probe\r\n"
            f"To: <sip:{topology.SIP_HOST}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(request.encode(), (topology.SIP_HOST, topology.SIP_PORT))
        return s.recv(65535).decode(errors="replace").split("\r\n", 1)[0]


def test_sip_options_from_a_phone_is_answered_200(lab):
    assert _options(topology.phone("ari").address) == "SIP/2.0 200 OK"


async def _stasis_starts(lab, number: str, tenant: str | None
                         ) -> tuple[list[list[str]], int | None]:
    """Stand in for the router's ARI app during one call from the ARI phone: hang the call up
    as NO_ROUTE would at its StasisStart. Returns the args of every StasisStart seen until the
    phone's call ended, and the phone's final code."""
    user, password = lab.ari_auth
    url = f"{lab.ari_url}/ari/events?app={topology.ARI_APP}"
    headers = {"Authorization": aiohttp.encode_basic_auth(user, password)}
    starts: list[list[str]] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        async with asyncio.timeout(5):  # not the 120 s of pytest-timeout when ARI is stuck
            ws = await http.ws_connect(url)
        async with ws:
            call = asyncio.create_task(asyncio.to_thread(_phone_call, lab, number, tenant))
            try:
                async with asyncio.timeout(15):
                    while True:
                        try:
                            msg = await asyncio.wait_for(ws.receive(), timeout=0.5)
                        except TimeoutError:  # quiet for 0.5 s: done once the call ended
                            if call.done() and starts:
                                break
                            continue
                        event = json.loads(msg.data)
                        if event.get("type") != "StasisStart":
                            continue
                        starts.append(event["args"])
                        channel = event["channel"]["id"]
                        async with http.delete(f"{lab.ari_url}/ari/channels/{channel}",
                                               params={"reason_code": "3"}) as resp:
                            assert resp.status == 204
            finally:
                result = await call
    return starts, result.final_code


def _phone_call(lab, number, tenant):
    from outbound_router import sipp
    return sipp.place_call(topology.phone("ari").address, number, lab.workdir / "phones",
                           tenant=tenant, timeout=10)


@pytest.mark.parametrize(
    ("number", "tenant", "args"),
    [
        ("911234567", None, ["911234567"]),
        ("0034911234567", "acme", ["0034911234567", "acme"]),
        ("+34&9,1ab", None, ["+34&9,1ab"]),  # not filtered: the router answers INVALID itself
    ],
)
async def test_call_from_the_ari_phone_reaches_the_stasis_app(lab, number, tenant, args):
    with lab.service_stopped("ari"):
        starts, final = await _stasis_starts(lab, number, tenant)
    assert starts == [args]  # once: the h extension does not enter Stasis again
    assert final is not None and final >= 400


async def test_call_from_the_agi_phone_reaches_the_fastagi_address(lab):
    requests: list[dict[str, str]] = []
    got_request = asyncio.Event()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env = {}
        while line := (await reader.readline()).decode().strip():
            key, _, value = line.partition(": ")
            env[key] = value
        requests.append(env)
        got_request.set()
        writer.close()  # no answer at all: the dialplan treats it as a router error

    with lab.service_stopped("agi"):
        server = await asyncio.start_server(session, topology.AGI_HOST, topology.AGI_PORT)
        async with server:
            call = asyncio.create_task(asyncio.to_thread(
                lambda: _agi_call(lab, "0034911234567")))
            async with asyncio.timeout(10):
                await got_request.wait()
            result = await call
    assert requests[0]["agi_network_script"] == "route"
    assert requests[0]["agi_arg_1"] == "0034911234567"
    assert requests[0]["agi_callerid"] == "phone"
    assert result.final_code is not None and result.final_code >= 400


def _agi_call(lab, number):
    from outbound_router import sipp
    return sipp.place_call(topology.phone("agi").address, number, lab.workdir / "phones",
                           timeout=10)


# ---- the fixtures themselves, through the baseline phone (static Dial to carrier-a) ----------


@pytest.mark.parametrize(
    ("behaviour", "final", "codes"),
    [
        ("answer", 200, (100, 180, 200)),
        ("busy", 486, (100, 486)),
        ("unavailable", 503, (100, 503)),
        ("not_found", 404, (100, 404)),
        ("error:484", 484, (100, 484)),
        ("early_503", 503, (100, 183, 503)),
        ("answer_after:1", 200, (100, 180, 200)),
    ],
)
def test_carrier_behaviour_reaches_the_phone(lab, carrier, phone, behaviour, final, codes):
    a = carrier("a", behaviour)
    result = phone("baseline").call("5550100")
    assert result.final_code == final
    assert result.codes == codes
    assert a.invites() == 1
    assert a.request_uris() == ["sip:5550100@127.0.0.11:5060"]


def test_the_baseline_dials_only_plus_and_digits(lab, carrier, phone):
    # `Dial(PJSIP/${EXTEN}@carrier-a)` with the dialled string as it came: `@carrier-d&PJSIP/`
    # (%40, %26, %2F in the request URI) rang carrier-d and carrier-a both (a security audit).
    a, d = carrier("a", "answer"), carrier("d", "answer")
    assert phone("baseline").call("0034911234567%40carrier-d%26PJSIP%2F0033111").final_code == 484
    assert (a.invites(), d.invites()) == (0, 0)
    assert phone("baseline").call("+34911234567").final_code == 200
    assert a.request_uris() == ["sip:+34911234567@127.0.0.11:5060"]


def test_answer_after_rings_for_the_given_time(lab, carrier, phone):
    carrier("a", "answer_after:2")
    result = phone("baseline").call("5550101", hangup_after=0.1)
    assert result.final_code == 200
    assert result.duration >= 2.0


def test_phone_sends_the_tenant_header_only_when_asked(lab, carrier, phone):
    carrier("a", "answer")
    with_tenant = phone("baseline").call("5550104", tenant="acme")
    without = phone("baseline").call("5550105")
    assert with_tenant.answered and without.answered
    assert "\nX-Tenant: acme\n" in with_tenant.trace.read_text().replace("\r\n", "\n")
    assert "X-Tenant" not in without.trace.read_text()


def test_load_counts_final_codes(lab, carrier, phone):
    carrier("a", "answer")
    result = phone("baseline").load("5550106", calls=20, rate=20, talk=0.1)
    assert result.final_codes == {200: 20}
    assert result.successful == 20 and result.failed == 0


# Last: a silent or absent carrier leaves Asterisk retransmitting its INVITE (pjsip timer B,
# 32 s); the retransmissions reach the next carrier started on that address.


@pytest.mark.parametrize("behaviour", ["ring", "silent"])
def test_phone_cancels_an_unanswered_call(lab, carrier, phone, behaviour):
    a = carrier("a", behaviour)
    result = phone("baseline").call("5550102", cancel_after=1.5)
    assert result.cancelled
    assert result.final_code == 487
    assert "sip:5550102@127.0.0.11:5060" in a.request_uris()


def test_a_carrier_not_started_means_nothing_answers_there(lab, phone):
    # Nothing listens on 127.0.0.11: Asterisk's INVITE goes unanswered; the phone gives up.
    result = phone("baseline").call("5550103", cancel_after=1.0)
    assert result.cancelled
    assert 200 not in result.codes


def test_seed_publishes_a_version_the_running_services_load(lab):
    version = lab.seed(lab_mod.ROUTES_EXAMPLE)
    assert re.fullmatch(r"v\d+", version)
    for name in lab.services_running():
        log = (lab.state_dir / f"{name}.log").read_text()
        assert f"routing version {version} loaded" in log


def test_array_assignment_sets_every_value_verbatim_in_asterisk(lab):
    """The router sets its ROUTER_* variables in one request through ARRAY(): Asterisk's own
    argument splitter must give back each value unchanged, whatever characters it holds."""
    from urllib.parse import urlencode

    from routing.variables import array_assignment

    suffix = uuid.uuid4().hex[:8].upper()
    values = {
        f"T{suffix}_A": "carrier-a:answered:16:200|carrier-b:failed:34:503",
        f"T{suffix}_B": 'comma, "quotes", back\\slash, (paren [bracket',
        f"T{suffix}_C": "",
        f"T{suffix}_D": "+34911234567",
    }
    name, value = array_assignment(values)
    status, _ = lab.ari("POST", "/asterisk/variable?" + urlencode({"variable": name,
                                                                    "value": value}))
    assert status == 204
    for var, expected in values.items():
        status, got = lab.ari("GET", "/asterisk/variable?" + urlencode({"variable": var}))
        assert (status, got["value"]) == (200, expected), var
