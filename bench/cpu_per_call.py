"""CPU time per call of each lab process, for a static Dial(), the ARI path and the AGI path.

    .venv/bin/python bench/cpu_per_call.py [--rate 100] [--seconds 8] [--runs 2]
                                          [--vias baseline,ari,agi]

Needs the lab up with its services and carrier-a free for a SIPp carrier of our own
(``outbound-router lab up --no-carriers``). Seeds the one-route table of bench_ari_calls.py
(+34 -> carrier-a, which answers: one attempt per call); at the end, the routes that were
current before are made current again.

Each step places ``rate * seconds`` calls (1 s talk) from one path's phones at a fresh SIPp
carrier-a, from a quiet lab, and reads the CPU time (user + system, ``/proc/PID/stat``) that
Asterisk, the ``ari`` and ``agi`` services and the step's SIPp processes spent from the step's
start until its last call ended, less what each spent idle over as long just before, and their
sum. Divided by the calls answered: milliseconds of CPU per call. The paths alternate at every
run, so whatever else the machine does weighs on them alike.

This is the figure the call rates follow on a machine whose cores are full (docs/ari.md): the
ARI path's target (>= 0.7x the baseline's call rate) needs Asterisk's CPU per ARI call within
about 1.4x of its CPU per static Dial() call. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_ari_calls
import callrate

from outbound_router import lab as lab_mod

TICK = 1.0 / os.sysconf("SC_CLK_TCK")
IDLE_WINDOW = 2.0


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK  # utime, stime


def children_cpu() -> float:
    """User + system CPU seconds of this script's children that ended: the SIPp phones and
    carriers of the steps. (Not /proc/stat: in this sandbox its machine-wide figure came out
    lower than Asterisk's own time.)"""
    t = os.times()
    return t.children_user + t.children_system


def processes() -> dict[str, int]:
    """The lab's processes to measure: Asterisk and the router services that run."""
    p = lab_mod.paths()
    state = lab_mod.load_state(p)
    found = {"asterisk": int(state["asterisk_pid"])}
    for name in lab_mod.running_services(state):
        worker = lab_mod.service_worker(name)  # the service itself, not its supervisor
        if worker is not None:
            found[name] = worker
    return found


def sample(pids: dict[str, int]) -> dict[str, float]:
    return {**{name: process_cpu(pid) for name, pid in pids.items()}, "sipp": children_cpu()}


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def measure(via: str, rate: int, seconds: float, work: Path,
            pids: dict[str, int]) -> tuple[callrate.Step, dict[str, float]]:
    """One step; CPU ms per answered call of each process, idle use taken off."""
    callrate.wait_quiet()
    idle_start, t0 = sample(pids), time.monotonic()
    time.sleep(IDLE_WINDOW)  # measuring the idle lab: a window of time, nothing to await
    idle = spent(idle_start, sample(pids))
    idle_seconds = time.monotonic() - t0
    start, t1 = sample(pids), time.monotonic()
    step = callrate.run_step(via, rate, max(50, round(rate * seconds)), work)
    busy = spent(start, sample(pids))
    elapsed = time.monotonic() - t1
    answered = max(1, step.result.successful)
    per_call = {name: (busy[name] - idle[name] * elapsed / idle_seconds) / answered * 1e3
                for name in busy}
    per_call["all"] = sum(per_call.values())
    return step, per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--vias", default="baseline,ari,agi")
    args = parser.parse_args()
    vias = [v for v in args.vias.split(",") if v]
    info = callrate.running_lab()
    pids = processes()
    missing = {"ari", "agi"} & set(vias) - set(pids)
    if missing:
        sys.exit(f"the lab runs no {' and no '.join(sorted(missing))} service: lab up")
    before, version = bench_ari_calls.seed_bench_routes(info.redis_url)
    results: dict[str, list[dict[str, float]]] = {via: [] for via in vias}
    try:
        print(f"routes {version}: +34 -> carrier-a (answers), one attempt per call; "
              f"{args.rate} calls/s for {args.seconds:g} s a step, 1 s talk")
        print("CPU ms per answered call (idle use taken off):")
        with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
            for run in range(args.runs):
                for via in vias:
                    step, per_call = measure(via, args.rate, args.seconds,
                                             Path(tmp) / str(run), pids)
                    if step.result.failed:
                        callrate.hang_up_leftovers()
                    results[via].append(per_call)
                    cells = "  ".join(f"{name} {ms:5.2f}" for name, ms in per_call.items())
                    print(f"  {via:8} run {run + 1}: {step.result.successful:4d} answered, "
                          f"{step.result.failed} failed: {cells}", flush=True)
    finally:
        callrate.restore_routes(info.redis_url, before)
    print("median over the runs, CPU ms per call:")
    for via, runs in results.items():
        medians = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
        print(f"  {via:8} " + "  ".join(f"{name} {ms:5.2f}" for name, ms in medians.items()))
    if "baseline" in results and results["baseline"]:
        base = statistics.median(r["asterisk"] for r in results["baseline"])
        for via in (v for v in vias if v != "baseline"):
            ast = statistics.median(r["asterisk"] for r in results[via])
            print(f"  Asterisk CPU per {via} call / per static Dial() call: {ast / base:.2f}x")


if __name__ == "__main__":
    main()
