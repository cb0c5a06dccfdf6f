"""The ports a SIPp phone is given."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from outbound_router import sipp, topology


def test_media_ports_never_take_the_phone_s_sip_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # Seen in a lab run: -p 43394 and -mp 43392, whose video socket is 43394: SIPp failed
    # with errno 98 and placed no call.
    offered = iter([43392, 43396])
    monkeypatch.setattr(sipp, "free_udp_port", lambda address: next(offered))
    assert sipp.free_udp_ports("127.0.0.1", avoid=43394) == 43396




def _udp_addresses(pid: int) -> list[str]:
    """The local addresses (hex ADDR:PORT of /proc/net/udp) of the UDP sockets of ``pid``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    with open("/proc/net/udp") as f:
        return [line.split()[1] for line in f.readlines()[1:] if line.split()[9] in inodes]


def test_a_sipp_of_the_lab_binds_nothing_on_every_interface(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIPp's remote-control socket (8888 and up: one "Q" datagram ends the process) was on
    # 0.0.0.0, for every demo carrier and every phone of `lab call` and `lab demo`.
    trunk = topology.CarrierTrunk("z", "carrier-z", "127.0.0.99", 5099, demo="answer")
    monkeypatch.setattr(topology, "carrier", lambda name: trunk)
    carrier = sipp.start_carrier("z", "answer", tmp_path)
    try:
        addresses = _udp_addresses(carrier.pid)
    finally:
        carrier.stop()
    assert "6300007F:13EB" in addresses  # 127.0.0.99:5099, its SIP socket
    assert not [a for a in addresses if a.startswith("00000000:")], addresses
    phone = sipp._phone_command("127.0.0.10", "911234567", tmp_path / "x.xml",
                                tmp_path / "t.log", tenant=None, extra=[])
    assert phone[phone.index("-ci") + 1] == "127.0.0.10"


def test_a_killed_carrier_is_gone_and_its_address_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trunk = topology.CarrierTrunk("z", "carrier-z", "127.0.0.99", 5099, demo="answer")
    monkeypatch.setattr(topology, "carrier", lambda name: trunk)
    carrier = sipp.start_carrier("z", "answer", tmp_path / "first")
    try:
        carrier.kill()
        assert not carrier.running()
        assert not sipp.udp_bound(trunk.address, trunk.port)
        carrier.kill()  # once more: nothing to do
        again = sipp.start_carrier("z", "answer", tmp_path / "again")  # the address is free
        again.stop()
    finally:
        carrier.stop()
