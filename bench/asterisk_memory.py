"""Asterisk's resident memory over blocks of calls on one path: does the router make it grow?
And the router's own: the `ari` or `agi` service's memory over the same calls.

    .venv/bin/python bench/asterisk_memory.py {ari,agi,baseline} [--blocks 6] [--calls 3000]
                                              [--rate 100]

Needs the lab up with carrier-a free for a SIPp carrier of our own
(``outbound-router lab up --no-carriers``); restart the lab (``lab down``, ``lab up``) before
each path so that every run starts from a fresh Asterisk. Seeds the one-route table of
bench_ari_calls.py (+34 -> carrier-a, which answers, 1 s talk), places ``--blocks`` blocks of
``--calls`` calls, waits for the lab to be quiet after each, and prints Asterisk's VmRSS and
that of the path's service (none for the baseline). The
routes that were current before are made current again at the end. No assertions: figures.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import bench_ari_calls
import callrate

from outbound_router import lab as lab_mod


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("via", choices=["ari", "agi", "baseline"])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=100)
    args = parser.parse_args()
    info = callrate.running_lab()
    state = lab_mod.load_state(lab_mod.paths())
    pid = int(state["asterisk_pid"])
    service = None
    if args.via != "baseline":
        supervisor = ((state.get("services") or {}).get(args.via) or {}).get("pid")
        service = lab_mod.worker_of(supervisor, args.via) if supervisor else None
        if service is None:
            raise SystemExit(f"the lab's {args.via} service does not run: lab up")

    def figures() -> str:
        own = f", {args.via} service {rss_mb(service):.1f} MB" if service else ""
        return f"Asterisk VmRSS {rss_mb(pid):.1f} MB{own}"

    before, version = bench_ari_calls.seed_bench_routes(info.redis_url)
    try:
        print(f"{args.via}: {figures()} before any call", flush=True)
        answered = 0
        with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
            for block in range(args.blocks):
                step = callrate.run_step(args.via, args.rate, args.calls, Path(tmp) / str(block))
                callrate.wait_quiet()
                answered += step.result.successful
                print(f"{args.via}: {answered:6d} calls answered ({step.result.failed} failed "
                      f"in this block): {figures()}", flush=True)
    finally:
        callrate.restore_routes(info.redis_url, before)


if __name__ == "__main__":
    main()
