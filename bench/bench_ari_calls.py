"""ARI router vs a static dialplan Dial(): call rate and added setup latency on the real lab.

    .venv/bin/python bench/bench_ari_calls.py [--start 10] [--max-rate 320] [--seconds 5]
                                               [--latency-calls 60]

Needs the lab up with its `ari` service and carrier-a free for a SIPp carrier of our own
(``outbound-router lab up --no-carriers``). Seeds a one-route table (+34 -> carrier-a, which
answers) so the router does exactly one attempt, the same work as the baseline
``Dial(PJSIP/${EXTEN}@carrier-a)`` of the phones at 127.0.0.30; the routes that were current
before are made current again at the end.

Prints, for both paths in the same run:

* the highest call rate (calls/s, SIPp phones, 1 s talk) with zero failed calls: rates double
  from ``--start`` until a call fails or ``--max-rate``, then one step between; each step
  places ``rate * --seconds`` calls (at least 50). Baseline and router alternate at every rate,
  so whatever else the machine does slows both alike;
* the setup latency: time from the phone's INVITE to carrier-a's INVITE (both SIPp message
  traces, one clock), median and p90 over ``--latency-calls`` calls placed 0.2 s apart, and the
  median the router adds.

No assertions: figures only (the target is router >= 0.7x the baseline's rate).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from outbound_router import lab as lab_mod
from outbound_router import sipp, topology

NUMBER = "911234567"

ROUTES = """
defaults: {country_code: "34", setup_timeout: 5, ring_timeout: 30, max_attempts: 6}
carriers:
  bench: {trunks: [carrier-a], number_format: "+E164"}
target_patterns:
  spain: {prefix: "+34"}
outgoing_routes:
  - {name: bench, pattern: spain, carrier: bench, priority: 1}
"""


def seed_bench_routes(redis_url: str) -> tuple[str | None, str]:
    """Publish ROUTES; returns (the version current before, the new one)."""
    from redis_seed.connection import sync_client
    from redis_seed.routes_file import parse_routes
    from redis_seed.store import current_version, publish

    client = sync_client(redis_url)
    try:
        before = current_version(client)
        return before, publish(client, parse_routes(ROUTES, "<bench routes>"), source="bench")
    finally:
        client.close()


def restore_routes(redis_url: str, version: str | None) -> None:
    from redis_seed.connection import sync_client
    from redis_seed.store import rollback

    if version is None:
        return
    client = sync_client(redis_url)
    try:
        rollback(client, version)
    finally:
        client.close()


def wait_loaded(version: str, log: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while f"routing version {version} loaded" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            sys.exit(f"the ari service did not load {version} within {timeout} s ({log})")
        time.sleep(0.05)


def _stamp(m: sipp.SipMessage) -> float:
    return time.mktime(time.strptime(m.time[:19], "%Y-%m-%d %H:%M:%S")) + float(m.time[19:])


def invite_times(messages: list[sipp.SipMessage], *, sent: bool) -> list[float]:
    """First transmission of every initial INVITE in a trace, in time order."""
    seen: set[str] = set()
    times = []
    for m in messages:
        if (m.sent == sent and m.is_request and m.method == "INVITE" and not m.has_to_tag()
                and m.call_id not in seen):
            seen.add(m.call_id)
            times.append(_stamp(m))
    return sorted(times)


def load(via: str, rate: int, calls: int, work: Path, **kw: float) -> tuple[sipp.LoadResult,
                                                                            list[float]]:
    """One SIPp load from the `via` phones against a fresh carrier-a; the result and, per call,
    the time from the phone's INVITE to the carrier's INVITE."""
    run = work / f"{via}-{rate}-{calls}"
    carrier = sipp.start_carrier("a", "answer", run / "carrier")
    try:
        result = sipp.place_load(topology.phone(via).address, NUMBER, run / "phone",
                                 calls=calls, rate=rate, **kw)
    finally:
        carrier.stop()
    phone_trace = next((run / "phone").glob("phone-*.messages.log"))
    sent = invite_times(sipp.parse_trace(phone_trace.read_text(errors="replace")), sent=True)
    got = invite_times(carrier.messages(), sent=False)
    delays = [g - s for s, g in zip(sent, got, strict=False)] if len(sent) == len(got) else []
    return result, delays


def sweep(start: int, max_rate: int, seconds: float, work: Path) -> dict[str, int]:
    best = {"baseline": 0, "ari": 0}
    failed_at: dict[str, int] = {}

    def step(rate: int) -> None:
        for via in best:
            if via in failed_at and failed_at[via] <= rate:
                continue
            calls = max(50, round(rate * seconds))
            result, _ = load(via, rate, calls, work, talk=1.0, concurrent=rate * 4)
            clean = result.failed == 0
            print(f"  {via:8} {rate:4d} calls/s x {calls:4d}: {result.successful:4d} answered, "
                  f"{result.failed:3d} failed {dict(result.final_codes)}  "
                  f"({result.elapsed:.1f} s)", flush=True)
            if clean:
                best[via] = max(best[via], rate)
            else:
                failed_at[via] = min(failed_at.get(via, rate), rate)

    rate = start
    while rate <= max_rate and len(failed_at) < len(best):
        step(rate)
        rate *= 2
    for via in list(best):  # one step between the last clean rate and the first failure
        if via in failed_at and best[via] and failed_at[via] > best[via] * 1.3:
            mid = (best[via] + failed_at[via]) // 2
            calls = max(50, round(mid * seconds))
            result, _ = load(via, mid, calls, work, talk=1.0, concurrent=mid * 4)
            print(f"  {via:8} {mid:4d} calls/s x {calls:4d}: {result.successful:4d} answered, "
                  f"{result.failed:3d} failed", flush=True)
            if result.failed == 0:
                best[via] = mid
    return best


def latency(calls: int, work: Path) -> dict[str, list[float]]:
    out = {}
    for via in ("baseline", "ari"):
        result, delays = load(via, 5, calls, work / "latency", talk=0.2, concurrent=5)
        if result.failed or not delays:
            print(f"  {via}: latency run not clean ({dict(result.final_codes)}, "
                  f"{len(delays)} pairs)", flush=True)
        out[via] = sorted(delays)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=10)
    parser.add_argument("--max-rate", type=int, default=320)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency-calls", type=int, default=60)
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        sys.exit("sipp not found: apt-get install sip-tester")
    info = lab_mod.running_info()
    if info is None:
        sys.exit("the lab is not running: outbound-router lab up --no-carriers")
    before, version = seed_bench_routes(info.redis_url)
    try:
        wait_loaded(version, info.state_dir / "ari.log")
        print(f"routes {version}: +34 -> carrier-a (answers), one attempt per call")
        with tempfile.TemporaryDirectory(prefix="bench-ari-") as tmp:
            work = Path(tmp)
            print("setup latency (phone INVITE -> carrier INVITE), 5 calls/s:")
            lat = latency(args.latency_calls, work)
            for via, d in lat.items():
                if d:
                    print(f"  {via:8} median {statistics.median(d) * 1e3:6.2f} ms  "
                          f"p90 {d[int(len(d) * 0.9)] * 1e3:6.2f} ms  ({len(d)} calls)")
            if lat["baseline"] and lat["ari"]:
                added = statistics.median(lat["ari"]) - statistics.median(lat["baseline"])
                print(f"  the router adds {added * 1e3:.2f} ms (median) before the carrier's "
                      "INVITE")
            print(f"call rate sweep (1 s talk, {args.seconds:g} s of calls per step):")
            best = sweep(args.start, args.max_rate, args.seconds, work)
    finally:
        restore_routes(info.redis_url, before)
    ratio = best["ari"] / best["baseline"] if best["baseline"] else float("nan")
    capped = " (capped by --max-rate)" if max(best.values()) >= args.max_rate else ""
    print(f"highest rate with zero failed calls: static Dial() {best['baseline']}/s, "
          f"ARI router {best['ari']}/s: {ratio:.2f}x (target >= 0.7x){capped}")


if __name__ == "__main__":
    main()
