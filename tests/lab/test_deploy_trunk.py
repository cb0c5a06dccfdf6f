"""The carrier trunk of docs/deploy.md ("Adding a carrier trunk"), as the page gives it, loads
into the lab's Asterisk and carries calls on both paths. Its carrier's address is swapped for
a loopback one (the lab sends nothing elsewhere)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from outbound_router import lab as lab_mod
from outbound_router import sipp, topology

from .observer import logged_since
from .routes import NUMBER

pytestmark = pytest.mark.lab

DEPLOY_MD = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
DOC_ADDRESS, LAB_ADDRESS = "203.0.113.10", "127.0.0.99"


def doc_trunk() -> str:
    """The ini block of the page's "Adding a carrier trunk" section."""
    section = DEPLOY_MD.read_text().split("## Adding a carrier trunk", 1)[1]
    block = re.search(r"```ini\n(.*?)```", section, re.S)
    assert block is not None, "no ini block under 'Adding a carrier trunk' in docs/deploy.md"
    return block.group(1)


@pytest.fixture
def doc_trunk_loaded(lab) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The page's trunk added to the lab's pjsip.conf and loaded; the name of its endpoint.
    The lab's own pjsip.conf is back, and loaded, afterwards."""
    text = doc_trunk()
    assert DOC_ADDRESS in text
    endpoint = re.search(r"^\[([^\]]+)\]\s*\ntype = endpoint", text, re.M)
    assert endpoint is not None
    conf = lab_mod.paths().in_chroot(f"{topology.ASTERISK_CONFIG_DIR}/pjsip.conf")
    own = conf.read_text()
    log_at = Path(lab.asterisk_log).stat().st_size
    conf.write_text(own + "\n" + text.replace(DOC_ADDRESS, LAB_ADDRESS))
    try:
        assert "reloaded successfully" in lab_mod.asterisk_cli("module reload res_pjsip.so")
        problems = [line for line in logged_since(lab.asterisk_log, log_at).splitlines()
                    if "WARNING[" in line or "ERROR[" in line]
        assert problems == [], "the page's trunk does not load cleanly"
        yield endpoint.group(1)
    finally:
        conf.write_text(own)
        lab_mod.asterisk_cli("module reload res_pjsip.so")


@pytest.mark.parametrize("via", ["ari", "agi"])
def test_the_trunk_of_the_deploy_page_carries_a_call(  # type: ignore[no-untyped-def]
        lab, phone, tmp_path, doc_trunk_loaded, via) -> None:
    lab.seed(f"""
defaults: {{country_code: "34", setup_timeout: 3, ring_timeout: 10}}
carriers:
  mine: {{trunks: [{doc_trunk_loaded}]}}
target_patterns:
  spain: {{prefix: "+34"}}
outgoing_routes:
  - {{pattern: spain, carrier: mine, priority: 1}}
""")
    trunk = topology.CarrierTrunk("z", doc_trunk_loaded, LAB_ADDRESS, 5060, "answer")
    carrier = sipp.start_carrier(trunk, "answer", tmp_path / "carrier")
    try:
        result = phone(via).call(NUMBER)
        assert result.final_code == 200, result.codes
        assert carrier.request_uris() == [f"sip:+34911234567@{LAB_ADDRESS}:5060"]
    finally:
        carrier.stop()
