"""The lab's phone scenario for a CANCEL crossing the answer (uac_cancel_race.xml), against a
SIPp carrier standing in for Asterisk."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbound_router import sipp, topology

TRUNK = topology.CarrierTrunk("z", "carrier-z", "127.0.0.99", 5099, demo="answer")


@pytest.fixture()
def carrier_as_asterisk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The phone calls a SIPp carrier at 127.0.0.99:5099 (carrier "z") instead of Asterisk."""
    monkeypatch.setattr(topology, "carrier", lambda name: TRUNK)
    monkeypatch.setattr(topology, "SIP_HOST", TRUNK.address)
    monkeypatch.setattr(topology, "SIP_PORT", TRUNK.port)


def _call(behaviour: str, scenario: Path, workdir: Path) -> list[sipp.SipMessage]:
    carrier = sipp.start_carrier("z", behaviour, workdir / "carrier")
    try:
        # an absolute template name is that file (SCENARIO_DIR / an absolute path)
        return sipp.run_phone("127.0.0.10", "911234567", str(scenario), workdir / "phone",
                              timeout=10)
    finally:
        carrier.stop()


@pytest.mark.parametrize("handler", [True, False], ids=["as-shipped", "without-_unexp.main"])
@pytest.mark.usefixtures("carrier_as_asterisk")
def test_a_200_before_the_cancel_is_sent_is_acked_and_the_call_hung_up(
        tmp_path: Path, handler: bool) -> None:
    # In the lab, SIPp sends the CANCEL one scheduler turn after its wait for a 200 timed
    # out, and a 200 arriving within that turn once aborted the phone: no ACK, no BYE, the
    # call left up (a CI run). Here a pause after the timeout widens that turn to 400 ms, and
    # the carrier answers 150 ms after its 180, 100 ms after the phone stopped waiting.
    text = sipp.render("uac_cancel_race.xml", {"CANCEL_MS": "50"})
    widened = text.replace('<label id="docancel"/>',
                           '<label id="docancel"/>\n  <pause milliseconds="400"/>')
    label = '<label id="_unexp.main"/>'
    if not handler:
        widened = widened.replace(label, "")
    assert widened.count("<pause") == 1 and widened.count(label) == int(handler)
    scenario = tmp_path / "uac_cancel_race_widened.xml"
    scenario.write_text(widened)
    phone = _call("answer_after:0.15", scenario, tmp_path)
    [call] = sipp.phone_calls(phone)
    assert call.codes[-1] == 200
    sent = [m.method for m in phone if m.sent and m.is_request]
    if handler:
        assert sent == ["INVITE", "ACK", "BYE"] and call.bye_answered
    else:  # what the lab's phone did before: SIPp aborts (a CANCEL, too late), no ACK, no BYE
        assert "ACK" not in sent and "BYE" not in sent, sent


@pytest.mark.usefixtures("carrier_as_asterisk")
def test_another_unexpected_message_aborts_the_phone_as_before(tmp_path: Path) -> None:
    # A 183 where the phone waits for its 180 reaches the handler, whose recv takes only a
    # 200: SIPp aborts the call (and CANCELs it). Without _unexp.retaddr in use it jumped to
    # the handler again and again, and crashed (SIGSEGV) before sending anything more.
    scenario = tmp_path / "uac_cancel_race.xml"
    scenario.write_text(sipp.render("uac_cancel_race.xml", {"CANCEL_MS": "1000"}))
    phone = _call("progress_503", scenario, tmp_path)
    assert [m.method for m in phone if m.sent and m.is_request] == ["INVITE", "CANCEL"]
