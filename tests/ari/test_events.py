"""Parsing every event Asterisk 22 sent in the recordings."""

from __future__ import annotations

import json

import pytest
from fake_ari import RECORDINGS

from ari_app import events as ev
from ari_app.events import EventType, parse_event, stasis_args_from_app_data

CASES = sorted(p.parent.name for p in (RECORDINGS / "create").glob("*/events.jsonl"))


def test_the_recordings_are_there() -> None:
    # An empty CASES would make the tables below pass without testing anything.
    assert len(CASES) == 9, CASES


def recorded(case: str) -> list[dict]:
    path = RECORDINGS / "create" / case / "events.jsonl"
    return [e for e in map(json.loads, path.read_text().splitlines()) if "type" in e]


@pytest.mark.parametrize("case", CASES)
def test_every_recorded_event_parses_with_its_channel(case: str) -> None:
    for raw in recorded(case):
        event = parse_event(raw)
        assert event.type == raw["type"]
        if raw["type"] != "BridgeDestroyed":
            assert event.channel_id is not None


@pytest.mark.parametrize("case", CASES)
def test_carrier_failures_carry_cause_and_sip_code(case: str) -> None:
    """Every failed attempt ends in ChannelDestroyed with a Q.850 cause and a SIP code."""
    attempts = [json.loads(line) for line in
                (RECORDINGS / "create" / case / "attempts.jsonl").read_text().splitlines()]
    events = [parse_event(e) for e in recorded(case)]
    for attempt in attempts:
        destroyed = [e for e in events if e.type == EventType.CHANNEL_DESTROYED
                     and e.channel_id == attempt["channel_id"]]
        if attempt["outcome"] == "failed":
            assert (destroyed[0].cause, destroyed[0].tech_cause) == (
                attempt["cause"], attempt["tech_cause"])


def test_soft_hangup_request_has_no_q850_cause() -> None:
    raw = json.loads((RECORDINGS / "raw-examples/create-noanswer-timeout-ChannelHangupRequest.json")
                     .read_text())
    event = parse_event(raw)
    assert event.soft and event.cause is None and event.hangup


def test_dial_events_name_the_dialled_channel_and_its_progress() -> None:
    events = [parse_event(e) for e in recorded("a183-noanswer_b200")]
    dials = [e for e in events if e.type == EventType.DIAL]
    assert all(e.channel_id and e.channel_id.startswith("out-carrier-") for e in dials)
    progress = [e for e in dials if e.dialstatus == "PROGRESS"]
    assert progress and progress[0].provisional and progress[0].early_media
    answers = [e for e in dials if e.answered]
    assert answers and not answers[0].provisional


def test_ringing_state_change_is_a_provisional_reply() -> None:
    events = [parse_event(e) for e in recorded("a480-noanswer_b200")]
    ringing = [e for e in events if e.type == EventType.CHANNEL_STATE_CHANGE
               and e.channel_state == "Ringing"]
    assert ringing and all(e.provisional and not e.early_media for e in ringing)


def test_event_without_type_is_rejected() -> None:
    with pytest.raises(ValueError):
        parse_event({"channel": {"id": "x"}})


@pytest.mark.parametrize(
    ("app_data", "args"),
    [("outbound-router,911234567", ("911234567",)),
     ("outbound-router,911234567,acme", ("911234567", "acme")),
     ('outbound-router,"91,1\\"2",acme', ('91,1"2', "acme")),
     ("other-app,911234567", None),
     ("", None)],
)
def test_stasis_args_are_read_back_from_app_data(app_data: str, args: tuple | None) -> None:
    assert stasis_args_from_app_data("outbound-router", app_data) == args


@pytest.mark.parametrize(("cause", "expected"), [("17", 17), (17, 17), ("\u00b9\u2077", None),
                                                 ("\u0661\u0667", None), (True, None)])
def test_a_cause_is_read_from_ascii_digits_only(cause: object, expected: int | None) -> None:
    # str.isdigit() takes "¹⁷", which int() refuses: the event raised instead of parsing.
    event = parse_event({"type": "ChannelDestroyed", "cause": cause,
                         "channel": {"id": "c1", "name": "PJSIP/x-1", "state": "Down"}})
    assert event.cause == expected


# -- what ARI lists ---------------------------------------------------------------------------


def test_a_recorded_channel_reads_as_the_reconcile_needs_it() -> None:
    raw = next(e["channel"] for e in recorded("a486_b404") if e["type"] == "StasisStart")
    ch = ev.channel(raw)
    assert ch is not None
    assert (ch.id, ch.state, ch.name) == ("1795706834.78", "Ring", "PJSIP/caller-0000004e")
    assert ch.created == pytest.approx(1795706834.668)
    assert ch.stasis_args("lab-router") == ("inbound", "4864041")
    assert ch.stasis_args("outbound-router") is None
    assert ev.channels([raw, {"state": "Up"}, "junk"]) == {ch.id: ch}  # no id: no channel


def test_a_channel_in_another_dialplan_application_has_no_stasis_args() -> None:
    ch = ev.channel({"id": "c1", "dialplan": {"app_name": "Dial", "app_data": "outbound-router"}})
    assert ch is not None and ch.stasis_args("outbound-router") is None
    assert ev.channel({"id": "c2"}) == ev.Channel("c2")  # nothing else known


def test_bridges_and_endpoints_are_read_leniently() -> None:
    listed = [{"id": "orb-1", "name": "outbound-router", "channels": ["a", 7, "b"]},
              {"name": "no id"}, {"id": "b2", "channels": None}]
    assert ev.bridges(listed) == [ev.Bridge("orb-1", "outbound-router", ("a", "b")),
                                  ev.Bridge("b2", None, ())]
    assert ev.bridges({"not": "a list"}) == []
    assert ev.endpoint_names([{"resource": "carrier-a"}, {"technology": "PJSIP"}]) == {
        "carrier-a"}
