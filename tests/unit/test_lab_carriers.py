"""`lab up` and the demo carriers' addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbound_router import lab, sipp


def test_lab_up_with_a_carrier_address_held_by_another_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain `lab up` while a test's own carriers hold 127.0.0.11..14 said "`lab up
    --no-carriers` stops them", which only stops the lab's own (an operations audit)."""
    def held(*_: object, **__: object) -> None:
        raise sipp.SippError("127.0.0.11:5060 is already in use")

    monkeypatch.setattr(sipp, "start_carrier", held)
    monkeypatch.setattr(sipp, "udp_bound", lambda address, port: True)
    p = lab.Paths(tmp_path / "cache")
    p.state_dir.mkdir(parents=True)
    with pytest.raises(lab.LabError, match=r"127\.0\.0\.11:5060 is in use by a carrier that is "
                       r"not one of the lab's .* `lab up --no-carriers` to keep it"):
        lab.ensure_carriers(p, {}, True, say=lambda _: None)
