"""The compact attempt trace of ROUTER_ATTEMPTS (routing.trace)."""

from __future__ import annotations

from routing.trace import TraceEntry, abandoned_trace, entry_count, format_trace, parse_trace


def test_a_trace_reads_back_as_written() -> None:
    entries = [TraceEntry("carrier-b", "congestion", 34, 503),
               TraceEntry("carrier-a", "unjudged", None, None),
               TraceEntry("carrier-c", "answered", 16, 200)]
    text = format_trace(entries)
    assert text == "carrier-b:congestion:34:503|carrier-a:unjudged::|carrier-c:answered:16:200"
    assert parse_trace(text) == entries


def test_the_abandoned_trace_adds_the_attempt_in_progress_as_cancelled() -> None:
    before = format_trace([TraceEntry("carrier-b", "congestion", 34, 503)])
    assert abandoned_trace(before, "carrier-a") == (
        "carrier-b:congestion:34:503|carrier-a:cancelled::")
    assert abandoned_trace("", "carrier-a") == "carrier-a:cancelled::"


def test_entry_count_counts_as_fieldqty_does() -> None:
    assert [entry_count(t) for t in ("", "a:busy:17:486", "a:congestion:34:503|b:cancelled::")] \
        == [0, 1, 2]
