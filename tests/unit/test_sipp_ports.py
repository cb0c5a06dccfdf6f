"""The ports a SIPp phone is given."""

from __future__ import annotations

import pytest

from outbound_router import sipp


def test_media_ports_never_take_the_phone_s_sip_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # Seen in a lab run: -p 43394 and -mp 43392, whose video socket is 43394: SIPp failed
    # with errno 98 and placed no call.
    offered = iter([43392, 43396])
    monkeypatch.setattr(sipp, "free_udp_port", lambda address: next(offered))
    assert sipp.free_udp_ports("127.0.0.1", avoid=43394) == 43396

