"""Decisions per second and latency of the attempt plan on one core, over 100,000 prefixes.

Usage: .venv/bin/python bench/bench_routing.py [--prefixes 100000] [--decisions 200000]
Targets (issue 2): p99 <= 20 us, >= 100,000 decisions/s.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_table import make_table, sample_numbers  # noqa: E402

from routing.plan import plan  # noqa: E402
from routing.snapshot import Snapshot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=200_000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    table = make_table(args.prefixes)
    t1 = time.perf_counter()
    snapshot = Snapshot.build(table, "bench")
    t2 = time.perf_counter()
    print(f"table: {len(table.patterns):,} prefixes, {len(table.routes):,} routes, "
          f"{len(table.groups):,} groups; generated in {t1 - t0:.2f} s, indexed in {t2 - t1:.2f} s")

    numbers = sample_numbers(table, 10_000)
    rng = random.Random(3)
    for n in numbers[:2000]:  # warm-up
        plan(snapshot, n, rng=rng)

    gc.disable()
    n = args.decisions
    batch = [numbers[i % len(numbers)] for i in range(n)]
    start = time.perf_counter()
    for number in batch:
        plan(snapshot, number, rng=rng)
    elapsed = time.perf_counter() - start

    clock = time.perf_counter_ns
    lat = []
    for number in batch[:100_000]:
        a = clock()
        plan(snapshot, number, rng=rng)
        lat.append(clock() - a)
    gc.enable()
    lat.sort()
    p50 = lat[len(lat) // 2] / 1000
    p99 = lat[int(len(lat) * 0.99)] / 1000
    attempts = sum(len(plan(snapshot, x, rng=rng).attempts) for x in numbers[:1000]) / 1000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"decisions: {n / elapsed:,.0f}/s on one core; latency p50 {p50:.1f} us, "
          f"p99 {p99:.1f} us; {attempts:.1f} attempts per plan on average")
    print(f"process max RSS (table + snapshot): {rss:.0f} MB")


if __name__ == "__main__":
    main()
