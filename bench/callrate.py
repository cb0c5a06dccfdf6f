"""Call-rate sweeps on the lab with SIPp, shared by bench_ari_calls.py and bench_agi.py.

Each step places ``rate * seconds`` calls (1 s talk) from the SIPp phones of one path at a
fresh SIPp carrier-a that answers, and reads both message traces. Two figures come out of a
sweep, each the highest rate whose step passed:

* **answered**: every call was answered, and SIPp really sent the INVITEs at (at least 95 %
  of) the rate asked for (on a saturated machine SIPp itself falls behind, and its calls then
  "succeed" at a lower rate than the one asked for). This is the issues' "highest call rate
  with zero failed calls";
* **kept up**: the same, and the 95th percentile of the time from the phone's INVITE to the
  carrier's INVITE stayed under ``max_setup_ms``. A static Dial() at twice this rate still
  answers every call, but seconds late: the platform is overloaded, not keeping up.

Rates double from ``start`` until a step fails *answered* (or passes ``max_rate``), then
``refine`` bisection steps narrow each figure between its last passed and first failed rate.
The paths alternate at every rate, so whatever else the machine does slows them alike, and
every step starts from a quiet lab (``wait_quiet``).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from outbound_router import sipp, topology

if TYPE_CHECKING:
    from outbound_router.lab import LabInfo

NUMBER = "911234567"
MIN_ACHIEVED = 0.95
QUIET_BUSY = 0.15  # the machine counts as idle below this busy fraction (idle lab: 2-4 %)


def invite_times(messages: list[sipp.SipMessage], *, sent: bool) -> list[float]:
    """First transmission of every initial INVITE in a trace, in time order."""
    seen: set[str] = set()
    times = []
    for m in messages:
        if (m.sent == sent and m.is_request and m.method == "INVITE" and not m.has_to_tag()
                and m.call_id not in seen):
            seen.add(m.call_id)
            times.append(m.stamp)
    return sorted(times)


def percentile(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


@dataclass(frozen=True)
class Step:
    via: str
    rate: int
    calls: int
    result: sipp.LoadResult
    achieved: float  # INVITEs per second the phones really sent
    setup: list[float]  # per call, phone INVITE -> carrier INVITE (s), sorted

    @property
    def answered(self) -> bool:
        return self.result.failed == 0 and self.achieved >= self.rate * MIN_ACHIEVED

    def kept_up(self, max_setup_ms: float) -> bool:
        return (self.answered and bool(self.setup)
                and percentile(self.setup, 0.95) * 1e3 <= max_setup_ms)

    def line(self, max_setup_ms: float) -> str:
        setup = (f"setup p50 {statistics.median(self.setup) * 1e3:7.1f} ms, "
                 f"p95 {percentile(self.setup, 0.95) * 1e3:7.1f} ms" if self.setup
                 else "setup: no INVITE pairs")
        failed = f", {self.result.failed} failed {dict(self.result.final_codes)}" \
            if self.result.failed else ""
        verdict = ("kept up" if self.kept_up(max_setup_ms)
                   else "answered, late" if self.answered else "FAILED")
        return (f"  {self.via:8} {self.rate:4d} calls/s x {self.calls:4d}: "
                f"{self.result.successful:4d} answered{failed}, sent at {self.achieved:4.0f}/s, "
                f"{setup}: {verdict}")


def run_step(via: str, rate: int, calls: int, work: Path, *, talk: float = 1.0,
             number: str = NUMBER) -> Step:
    """``calls`` calls at ``rate`` from the phones of ``via`` to a fresh carrier-a."""
    run = work / f"{via}-{rate}-{calls}"
    carrier = sipp.start_carrier("a", "answer", run / "carrier")
    try:
        result = sipp.start_load(topology.phone(via).address, number, run / "phone",
                                 calls=calls, rate=rate, talk=talk,
                                 concurrent=max(10, round(rate * (talk + 3)))).wait()
    finally:
        carrier.stop()
    phone_trace = next((run / "phone").glob("phone-*.messages.log"))
    sent = invite_times(sipp.parse_trace(phone_trace.read_text(errors="replace")), sent=True)
    got = invite_times(carrier.messages(), sent=False)
    achieved = (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 else 0.0
    setup = sorted(g - s for s, g in zip(sent, got, strict=False)) if len(sent) == len(got) \
        else []
    return Step(via, rate, calls, result, achieved, setup)


@dataclass
class Figures:
    """Highest passed rate (0: not even the first) and lowest failed rate of each criterion."""

    answered: int = 0
    kept_up: int = 0
    answered_failed: int | None = None
    kept_up_failed: int | None = None


def sweep(vias: Sequence[str], work: Path, *, start: int, max_rate: int, seconds: float = 5.0,
          refine: int = 2, max_setup_ms: float = 500.0) -> dict[str, Figures]:
    figures = {via: Figures() for via in vias}

    def step(via: str, rate: int) -> None:
        wait_quiet()
        s = run_step(via, rate, max(50, round(rate * seconds)), work)
        print(s.line(max_setup_ms), flush=True)
        if not s.answered:
            # Its calls left up would hold RTP ports and descriptors through the next steps
            # (a run left 3,615 channels, and later steps failed with 488 and 603).
            hang_up_leftovers()
        f = figures[via]
        for name, passed in (("answered", s.answered), ("kept_up", s.kept_up(max_setup_ms))):
            if passed:
                setattr(f, name, max(getattr(f, name), rate))
            else:
                failed = getattr(f, f"{name}_failed")
                setattr(f, f"{name}_failed", rate if failed is None else min(failed, rate))

    rate = start
    while rate <= max_rate and any(f.answered_failed is None for f in figures.values()):
        for via, f in figures.items():
            if f.answered_failed is None:
                step(via, rate)
        rate *= 2
    for _ in range(refine):
        for via, f in figures.items():
            rates = {(low + high) // 2
                     for low, high in ((f.answered, f.answered_failed),
                                       (f.kept_up, f.kept_up_failed))
                     if high is not None and low and high - low > max(2, low // 20)}
            for rate in sorted(rates):  # both criteria may bisect to the same rate: once
                step(via, rate)
    hang_up_leftovers()
    return figures


def running_lab() -> LabInfo:
    """The running lab, to place SIPp calls on; exits with what to do when it cannot."""
    from outbound_router import lab

    if shutil.which("sipp") is None:
        sys.exit("sipp not found: apt-get install sip-tester")
    info = lab.running_info()
    if info is None:
        sys.exit("the lab is not running: outbound-router lab up --no-carriers")
    return info


def seed_routes(redis_url: str, routes: str, label: str) -> tuple[str | None, str]:
    """Publish ``routes`` (YAML text) under the lab's REDIS_PREFIX and wait until every
    running router service loaded it; returns (the version current before, the new one) for
    :func:`restore_routes` (made current again here when a service did not load it)."""
    from outbound_router import lab
    from redis_seed.connection import sync_client
    from redis_seed.keys import Keys
    from redis_seed.routes_file import parse_routes
    from redis_seed.store import current_version, publish

    p = lab.paths()
    # What the services' logs say from now on: version ids start again after a Redis lost
    # its data, and a whole log still held an older run's "routing version v000002 loaded".
    offsets = lab.service_log_offsets(p, lab.load_state(p))
    keys = Keys(lab.redis_prefix())
    client = sync_client(redis_url)
    try:
        before = current_version(client, keys=keys)
        version = publish(client, parse_routes(routes, f"<{label}>"), source=label, keys=keys)
    finally:
        client.close()
    try:
        lab.wait_loaded(offsets, version, timeout=5.0)
    except lab.LabError as exc:
        restore_routes(redis_url, before)
        sys.exit(str(exc))
    return before, version


def restore_routes(redis_url: str, version: str | None) -> None:
    """Make ``version`` (what :func:`seed_routes` found) current again."""
    from outbound_router import lab
    from redis_seed.connection import sync_client
    from redis_seed.errors import NoSuchVersion
    from redis_seed.keys import Keys
    from redis_seed.store import rollback

    if version is None:
        return
    client = sync_client(redis_url)
    try:
        rollback(client, version, keys=Keys(lab.redis_prefix()))
    except NoSuchVersion:
        print(f"the routes current before ({version}) are no longer kept in Redis: seed the "
              "routes file again (outbound-router seed FILE)")
    finally:
        client.close()


def machine_busy(window: float = 0.5) -> float:
    """Fraction of all CPUs' time not idle over the next ``window`` seconds (/proc/stat)."""

    def times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # idle + iowait

    total0, idle0 = times()
    time.sleep(window)  # the measurement's window, not a wait for an event
    total1, idle1 = times()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def queued_tasks(cli_output: str) -> int:
    """Tasks waiting in all of Asterisk's taskprocessors (`core show taskprocessors`)."""
    queued = 0
    for line in cli_output.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[1].isdigit() and fields[2].isdigit():
            queued += int(fields[2])
    return queued


def wait_quiet(within: float = 60.0) -> None:
    """Start a step only once the last one's work is done: no channel is up, Asterisk has
    nothing queued and the machine is idle, so that no step is measured on a machine still
    busy with the last one's backlog (the CDR and ARI application queues, the router's). On
    the fourth session's VM an AGI step at 640 calls/s left 1,654 channels still up after a
    minute of hanging them up, and the steps after overloaded ones waited 1 to 12 s here."""
    from outbound_router import lab

    info = lab.running_info()
    started = time.monotonic()
    while True:
        up = len(channels_up(info)) if info is not None else 0
        queued = queued_tasks(lab.asterisk_cli("core show taskprocessors"))
        busy = machine_busy()
        if up == 0 and queued == 0 and busy < QUIET_BUSY:
            break
        if time.monotonic() - started > within:
            print(f"  not quiet after {within:.0f} s ({up} channel(s) up, {queued} task(s) "
                  f"queued in Asterisk, machine {busy:.0%} busy): the next step starts anyway",
                  flush=True)
            return
    waited = time.monotonic() - started
    if waited > 1.0:
        print(f"  (waited {waited:.1f} s for the last step's backlog to drain)", flush=True)


def channels_up(info: LabInfo) -> list[dict[str, Any]]:
    """The channels ARI lists in the lab's Asterisk (none when it does not answer)."""
    from outbound_router import lab

    status, channels = lab.ari_request("/channels", info.ari_auth, timeout=10)
    return list(channels) if status == 200 and channels else []


def hang_up_leftovers(within: float = 60.0) -> None:
    """Past its knee a path can leave calls up in Asterisk (a BYE lost in the overload: SIPp
    sends no RTP, so no RTP timeout ends them either). Hang them up, again until ARI lists none
    (Asterisk, busy with thousands of them, takes a while): the next step, and later lab runs,
    expect no channel."""
    from outbound_router import lab

    info = lab.running_info()
    if info is None:
        return
    started = time.monotonic()
    first = True
    while True:
        channels = channels_up(info)
        if not channels:
            break
        if first:
            print(f"  {len(channels)} channel(s) left up by the overloaded step: hanging them up",
                  flush=True)
            first = False
        elif time.monotonic() - started > within:
            print(f"  {len(channels)} channel(s) still up after {within:.0f} s", flush=True)
            return
        for channel in channels:
            lab.ari_request(f"/channels/{channel['id']}", info.ari_auth, method="DELETE")
        time.sleep(0.5)  # polling ARI: Asterisk sends the bench no event of its own
    if not first:
        print(f"  ... all gone after {time.monotonic() - started:.1f} s", flush=True)


def summary(figures: dict[str, Figures], names: dict[str, str]) -> str:
    """Both figures of both paths and the router/baseline ratios."""
    (base_via, base), (via, router) = list(figures.items())
    lines = []
    for label, attr in (("every call answered", "answered"),
                        ("kept up (setup p95 in bound)", "kept_up")):
        b, r = getattr(base, attr), getattr(router, attr)
        capped = " (baseline: at least; it passed every rate up to --max-rate)" \
            if getattr(base, f"{attr}_failed") is None else ""
        ratio = f"{r / b:.2f}x" if b else "n/a"
        lines.append(f"  {label:30} {names[base_via]} {b}/s, {names[via]} {r}/s: {ratio}{capped}")
    return "\n".join(lines)
