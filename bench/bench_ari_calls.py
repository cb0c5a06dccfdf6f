"""ARI router vs a static dialplan Dial(): call rate and added setup latency on the real lab.

    .venv/bin/python bench/bench_ari_calls.py [--start 40] [--max-rate 640] [--seconds 5]
                                               [--refine 2] [--max-setup-ms 500]
                                               [--latency-calls 60]

Needs the lab up with its `ari` service and carrier-a free for a SIPp carrier of our own
(``outbound-router lab up --no-carriers``). Seeds a one-route table (+34 -> carrier-a, which
answers) so the router does exactly one attempt, the same work as the baseline
``Dial(PJSIP/${EXTEN}@carrier-a)`` of the phones at 127.0.0.30; the routes that were current
before are made current again at the end.

Prints, for both paths in the same run:

* the setup latency: time from the phone's INVITE to carrier-a's INVITE (both SIPp message
  traces, one clock), median and p90 over ``--latency-calls`` calls placed 0.2 s apart, and the
  median the router adds;
* the highest call rate of each path with every call answered, and the highest at which it
  also kept up (setup p95 under ``--max-setup-ms``), baseline and router alternating at every
  rate, and the ratios (bench/callrate.py).

No assertions: figures only (the target is router >= 0.7x the baseline's rate).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import callrate

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
    return callrate.seed_routes(redis_url, ROUTES, "bench")


def latency(calls: int, work: Path) -> dict[str, list[float]]:
    out = {}
    for via in ("baseline", "ari"):
        step = callrate.run_step(via, 5, calls, work / "latency", talk=0.2)
        if step.result.failed or not step.setup:
            print(f"  {via}: latency run not clean ({dict(step.result.final_codes)}, "
                  f"{len(step.setup)} pairs)", flush=True)
        out[via] = step.setup
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=40)
    parser.add_argument("--max-rate", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--refine", type=int, default=2)
    parser.add_argument("--max-setup-ms", type=float, default=500.0)
    parser.add_argument("--latency-calls", type=int, default=60)
    args = parser.parse_args()
    info = callrate.running_lab()
    before, version = seed_bench_routes(info.redis_url)
    try:
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
            print(f"call rate sweep (1 s talk, {args.seconds:g} s of calls per step; kept up: "
                  f"setup p95 <= {args.max_setup_ms:g} ms):")
            best = callrate.sweep(("baseline", "ari"), work, start=args.start,
                                  max_rate=args.max_rate, seconds=args.seconds,
                                  refine=args.refine, max_setup_ms=args.max_setup_ms)
    finally:
        callrate.restore_routes(info.redis_url, before)
    print("highest call rate (target: ARI router >= 0.7x the baseline):")
    print(callrate.summary(best, {"baseline": "static Dial()", "ari": "ARI router"}))


if __name__ == "__main__":
    main()
