"""Counting what a SIPp carrier received, from its message trace."""

from __future__ import annotations

import shutil
from pathlib import Path

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
    # half-written copy (no CSeq yet) looked like a second INVITE and failed
    # test_a_silent_trunk_is_left_after_the_setup_timeout with (2, 1) INVITEs.
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
