"""Seeding 100,000 routes into Redis, and what a reader pays to load them.

Usage: .venv/bin/python bench/bench_seed.py [--prefixes 100000] [--runs 3] [--reloads 1]
       [--redis-url URL] [--cache]

Without --redis-url it starts its own redis-server on a free loopback port. Prints:

- validate: reading and checking the same table as a YAML routes file (``seed FILE`` does this
  first);
- seed: ``publish()`` of the table (encode, write the version, atomic switch, notify, prune);
- reader: in a fresh process, ``SnapshotReader.start()`` until the snapshot is usable (fetch,
  checksum, decode, index), its resident memory before and after, and the time a running reader
  takes to switch to a newly seeded version;
- with ``--cache``, the reader keeps a routes cache (``ROUTES_CACHE``, redis_seed/cache.py) as
  the services do: the figures above then include writing it, and the script prints its size
  and how long a reader started with Redis away takes to route from it.

Targets (issue 2): seeding <= 5 s, reader <= 100 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Only what a router imports is loaded at the top, so that the reader process measured below
# carries no bench baggage (the table generator, YAML).
import redis  # noqa: E402

from redis_seed.keys import Keys  # noqa: E402
from redis_seed.store import publish  # noqa: E402

PREFIX = "bench-seed"


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process, in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


async def reader_child(url: str, cache: str | None) -> None:
    """Runs in a fresh process: load the current version, report time and memory as JSON."""
    from redis_seed.reader import SnapshotReader

    before, _ = rss_mb()
    reader = SnapshotReader(url, prefix=PREFIX, cache=Path(cache) if cache else None)
    t0 = time.perf_counter()
    await reader.start()
    load_s = time.perf_counter() - t0
    assert reader.snapshot is not None, "no version loaded"
    after, peak = rss_mb()
    first = reader.version
    print(json.dumps({"load_s": load_s, "rss_before": before, "rss_after": after,
                      "rss_peak": peak, "version": first}), flush=True)
    # The parent seeds again each time it reads a line of ours; time the hot reload.
    while line := await asyncio.to_thread(sys.stdin.readline):
        held = reader.version
        t1 = time.perf_counter()
        await reader.wait_until(lambda s, held=held: s.version != held, timeout=30.0)
        reload_s = time.perf_counter() - t1
        after2, peak2 = rss_mb()
        print(json.dumps({"reload_s": reload_s, "seeded_at": float(line),
                          "rss_after_reload": after2, "rss_peak_reload": peak2}), flush=True)
    await reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reloads", type=int, default=1,
                        help="hot reloads of the reader, alternating two tables (default 1)")
    parser.add_argument("--redis-url")
    parser.add_argument("--cache", action="store_true",
                        help="the reader keeps a routes cache, as the services do")
    parser.add_argument("--reader", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--cache-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        asyncio.run(reader_child(args.reader, args.cache_file))
        return

    from outbound_router.local_redis import RedisProcess  # not in the reader child's imports

    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp:
        server = None
        url = args.redis_url
        if url is None:
            server = RedisProcess(Path(tmp))
            server.start()
            url = server.url
        client = redis.Redis.from_url(url)
        try:
            run(client, url, args)
        finally:
            for key in client.scan_iter(f"{PREFIX}:*"):
                client.delete(key)
            client.close()
            if server is not None:
                server.kill()


def run(client: redis.Redis, url: str, args: argparse.Namespace) -> None:
    import yaml
    from gen_table import make_table

    from redis_seed.routes_file import load_routes_file, to_routes_dict
    from redis_seed.store import encode_table

    t0 = time.perf_counter()
    table = make_table(n_prefixes=args.prefixes, seed=1)
    print(f"table: {len(table.patterns):,} prefixes, {len(table.groups)} country groups, "
          f"{len(table.routes):,} routes, {len(table.carriers)} carriers "
          f"(generated in {time.perf_counter() - t0:.2f} s)")
    blob, encoding = encode_table(table)
    columns = encode_table(table, compress=False)[0]
    dicts = encode_table(table, compress=False, fmt="1")[0]
    print(f"stored version: {len(blob) / 1e6:.1f} MB ({encoding}, columns); uncompressed "
          f"{len(columns) / 1e6:.1f} MB, {len(dicts) / 1e6:.1f} MB as to_dict() JSON")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routes.yaml"
        path.write_text(yaml.safe_dump(to_routes_dict(table), sort_keys=False,
                                       default_flow_style=None, width=1000))
        size = path.stat().st_size
        t0 = time.perf_counter()
        loaded = load_routes_file(path)
        validate_s = time.perf_counter() - t0
    assert loaded == table
    print(f"validate: {validate_s:.2f} s for the {size / 1e6:.1f} MB YAML routes file")

    keys = Keys(PREFIX)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        publish(client, table, source="bench", keys=keys, keep=2)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(f"seed: publish() median {median:.2f} s, best {min(times):.2f} s over {args.runs} "
          f"runs (target <= 5 s); `seed FILE` end to end ~{validate_s + median:.2f} s")

    cache_dir = tempfile.TemporaryDirectory(prefix="bench-seed-cache-")
    cache = Path(cache_dir.name) / "routes.cache"
    child = subprocess.Popen([sys.executable, __file__, "--reader", url,
                              *(["--cache-file", str(cache)] if args.cache else [])],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    first = json.loads(child.stdout.readline())
    # Alternate with a table of other prefixes, so every reload replaces every object.
    other = make_table(n_prefixes=args.prefixes, seed=2) if args.reloads > 1 else table
    reloads = []
    for i in range(args.reloads):
        publish(client, other if i % 2 else table, source="bench", keys=keys, keep=2)
        child.stdin.write(f"{time.perf_counter()}\n")
        child.stdin.flush()
        reloads.append(json.loads(child.stdout.readline()))
    child.stdin.close()
    child.wait()
    second = reloads[0]
    print(f"reader: first load {first['load_s']:.2f} s; resident memory "
          f"{first['rss_before']:.1f} MB after imports, {first['rss_after']:.1f} MB with the "
          f"snapshot (peak {first['rss_peak']:.0f} MB) (target <= 100 MB)")
    print(f"reader: hot reload of a new version {second['reload_s']:.2f} s after the seed "
          f"returned; {second['rss_after_reload']:.0f} MB after it "
          f"(peak {second['rss_peak_reload']:.0f} MB, old and new snapshot both alive)")
    if len(reloads) > 1:
        after = [r["rss_after_reload"] for r in reloads]
        marks = sorted({0, len(after) // 4, len(after) // 2, 3 * len(after) // 4, len(after) - 1})
        shown = ", ".join(f"{i + 1}: {after[i]:.0f}" for i in marks)
        print(f"reader: resident memory after reload {shown} MB; peak "
              f"{max(r['rss_peak_reload'] for r in reloads):.0f} MB")
    if args.cache:
        from outbound_router.local_redis import free_port

        # Redis away (a port nobody listens on): the reader routes from the cache.
        away = f"redis://127.0.0.1:{free_port()}/0"
        restarted = subprocess.run([sys.executable, __file__, "--reader", away,
                                    "--cache-file", str(cache)], input="", text=True,
                                   capture_output=True, check=True)
        started = json.loads(restarted.stdout.splitlines()[0])
        print(f"cache: {cache.stat().st_size / 1e6:.1f} MB on disk; a reader started with "
              f"Redis away routes from it after {started['load_s']:.2f} s "
              f"({started['rss_after']:.0f} MB)")
    cache_dir.cleanup()


if __name__ == "__main__":
    main()
