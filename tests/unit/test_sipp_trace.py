"""Counting what a SIPp carrier received, from its message trace."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from outbound_router import sipp, topology

DATA = Path(__file__).parent / "data"


def carrier_with_trace(tmp_path: Path, trace: str) -> sipp.Carrier:
    c = sipp.Carrier(topology.carrier("a"), sipp.Behaviour("ring", "uas_ring.xml"), tmp_path,
                     pid=0)
    shutil.copy(DATA / trace, c.trace_path)
    return c


def test_a_stray_invite_and_its_cancel_are_not_the_carriers_own(tmp_path: Path) -> None:
    # Recorded on the lab (test_ringing_past_the_ring_timeout_stops): carrier-a rang for 3 s,
    # and was CANCELled at the ring timeout; meanwhile a retransmission of an earlier test's
    # unanswered INVITE reached it, got 100 Trying, and pjsip CANCELled it 0.5 ms later.
    c = carrier_with_trace(tmp_path, "ring-with-stray.messages.log")
    assert c.invites() == 1
    assert c.request_uris() == ["sip:+34911234567@127.0.0.11:5060"]
    assert c.requests("CANCEL") == 1  # the ring timeout's, not the stray one's
    assert c.requests("BYE") == 0
    every_cancel = [m for m in c.messages() if not m.sent and m.method == "CANCEL"]
    assert len(every_cancel) == 2


def test_a_trace_read_while_sipp_writes_it_never_shows_half_a_message(tmp_path: Path) -> None:
    # Recorded on the lab: a silent carrier-a got one INVITE and two retransmissions. SIPp
    # writes the trace through a stdio buffer; read in the middle of a retransmission, the
    # half-written copy (no CSeq yet) looked like a second INVITE: 700 of the file's 2,859
    # cut points counted 2 INVITEs before parse_trace left unfinished messages out.
    text = (DATA / "silent.messages.log").read_text()
    counts = []
    for cut in range(len(text) + 1):
        messages = sipp.parse_trace(text[:cut])
        assert {m.call_id for m in messages} <= {"daf330c5-ecd9-47e8-8209-09437e39bd24"}
        assert all(m.headers.get("cseq") == "1518 INVITE" for m in messages)
        counts.append(len(messages))
    assert counts == sorted(counts) and counts[-1] == 3
    c = carrier_with_trace(tmp_path, "silent.messages.log")
    assert c.invites() == 1


def test_a_silent_carrier_tells_its_own_invite_from_a_stray_retransmission(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Recorded on the lab: silent carrier-a got its own INVITE (f97ec4df..., again 0.5 s and
    # 1.5 s later) and, 15.5 s after an earlier test's silent attempt, that attempt's fifth
    # retransmission (26959cd1..., seen once). Both go unanswered: only the gap to the next copy
    # tells them apart.
    c = carrier_with_trace(tmp_path, "silent-with-stray.messages.log")
    assert c.invites() == 1
    assert c.request_uris() == ["sip:+34911234567@127.0.0.11:5060"]

    # Read 0.3 s after the first copy, before any retransmission could come, the copy cannot
    # be told yet: invites() waits out the rest of the window and reads the trace again.
    text = (DATA / "silent-with-stray.messages.log").read_text()
    first = text[:text.index("\n-----") + 1]
    two = text[:text.index("\n-----", len(first)) + 1]  # and its first retransmission
    stamp = sipp.parse_trace(first)[0].stamp
    clock = [stamp + 0.3]
    waited: list[float] = []
    monkeypatch.setattr(sipp.time, "time", lambda: clock[0])

    def sleep(seconds: float, then: str) -> None:
        waited.append(round(seconds, 3))
        clock[0] += seconds
        c.trace_path.write_text(then)  # what SIPp wrote meanwhile

    # The retransmission came during the wait: this carrier's own INVITE.
    c.trace_path.write_text(first)
    monkeypatch.setattr(sipp.time, "sleep", lambda s: sleep(s, two))
    assert c.invites() == 1
    # Nothing came: a stray's last copy (in the lab, one came 0.74 s before the end of a test,
    # and the silent carrier counted 2 INVITEs).
    clock[0] = stamp + 0.3
    c.trace_path.write_text(first)
    monkeypatch.setattr(sipp.time, "sleep", lambda s: sleep(s, first))
    assert c.invites() == 0
    assert waited == [0.55, 0.55]
    monkeypatch.setattr(sipp.time, "sleep", lambda s: pytest.fail("no wait needed"))
    clock[0] = stamp + 2.0
    assert c.invites() == 0  # 2 s and no retransmission: not an INVITE sent to this carrier


def test_header_values_gives_every_copy_of_a_header_and_none_from_the_body() -> None:
    # `headers` keeps a header's first value only: two Max-Forwards in one INVITE (one of
    # Asterisk's and one added) must show as two.
    raw = ("INVITE sip:+34911234567@127.0.0.11:5060 SIP/2.0\n"
           "Via: SIP/2.0/UDP 127.0.0.1:5060\n"
           "Max-Forwards: 69\n"
           "max-forwards :70\n"
           "Content-Length: 22\n"
           "\n"
           "Max-Forwards: 1\n")
    invite = sipp.SipMessage(False, "", raw.split("\n", 1)[0], {}, raw)
    assert sipp.header_values(invite, "Max-Forwards") == ["69", "70"]
    assert sipp.header_values(invite, "X-Tenant") == []
