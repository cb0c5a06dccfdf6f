"""bench/callrate.py's sweep: what it steps and what it reports, with a fake lab."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from outbound_router import sipp

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import callrate  # noqa: E402


def fake_step(limits: dict[str, tuple[int, int]], ran: list[tuple[str, int]]):
    """A path answers every call up to its first limit and keeps up to its second."""

    def run_step(via: str, rate: int, calls: int, work: Path, **_: object) -> callrate.Step:
        ran.append((via, rate))
        answered_up_to, kept_up_to = limits[via]
        ok = calls if rate <= answered_up_to else calls - 1
        setup = [0.001 if rate <= kept_up_to else 2.0] * ok
        result = sipp.LoadResult(calls, {200: ok, 503: calls - ok}, 1.0)
        return callrate.Step(via, rate, calls, result, float(rate), setup)

    return run_step


def test_sweep_doubles_then_bisects_each_figure_without_repeating_a_step(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ran: list[tuple[str, int]] = []
    limits = {"baseline": (700, 500), "ari": (300, 300)}
    monkeypatch.setattr(callrate, "run_step", fake_step(limits, ran))
    cleaned: list[tuple[str, int] | None] = []
    monkeypatch.setattr(callrate, "hang_up_leftovers",
                        lambda: cleaned.append(ran[-1] if ran else None))
    quiet_before: list[int] = []
    monkeypatch.setattr(callrate, "wait_quiet", lambda: quiet_before.append(len(ran)))
    figures = callrate.sweep(("baseline", "ari"), tmp_path, start=40, max_rate=1280, refine=2)
    assert (figures["baseline"].answered, figures["baseline"].kept_up) == (640, 480)
    assert (figures["ari"].answered, figures["ari"].kept_up) == (280, 280)
    # ari: 160 passes both figures and 320 fails both, so each refinement bisects both to
    # the same rate (240, then 280): each runs once, not once per figure.
    assert [r for v, r in ran if v == "ari"] == [40, 80, 160, 320, 240, 280]
    assert len(ran) == len(set(ran))
    # The calls an overloaded step left up are hung up before the next step, and at the end.
    failed = [(v, r) for v, r in ran if r > limits[v][0]]
    assert cleaned == [*failed, ran[-1]]
    # Every step starts from a quiet lab: the wait comes right before each one.
    assert quiet_before == list(range(len(ran)))


def test_queued_tasks_sums_the_in_queue_column() -> None:
    # `core show taskprocessors` of the lab's Asterisk, columns narrowed to fit here
    out = "\n".join([
        "",
        "Processor          Processed  In Queue  Max Depth  Low water High water "
        "Low time(us) High time(us)",
        "ast_msg_queue              0         0          0        450        500 0 0",
        "stasis/m:ari:application/outbound-router-00000048 64497 40 181 450 500 0 8958",
        "stasis/m:cdr:aggregator-00000007 120000 1203 4000 450 500 0 9000",
        "",
        "4 taskprocessors",
    ])
    assert callrate.queued_tasks(out) == 1243
    assert callrate.queued_tasks("") == 0
