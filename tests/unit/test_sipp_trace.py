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
