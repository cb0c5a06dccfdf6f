"""FastAGI figures (issue 5): route sessions per second, and the AGI path's call rate on the lab.

    .venv/bin/python bench/bench_agi.py sessions [--seconds 5] [--rounds 5] [--concurrency 10]
        The real ``route`` script in ``AgiServer`` against a bare asyncio FastAGI server that
        sends the very same commands without planning anything, each in its own process,
        both driven at the same time by one fake Asterisk (an asyncio Protocol answering
        ``200 result=1``), so that a busy machine slows both alike. Prints sessions/s, the
        server's CPU time per session and the ratio (target >= 0.9x).

    .venv/bin/python bench/bench_agi.py calls [--start 40] [--max-rate 640] [--seconds 5]
                                              [--refine 2] [--max-setup-ms 500]
        Needs the lab up without its demo carriers (``outbound-router lab up --no-carriers``):
        each step starts its own SIPp carrier-a. Seeds a table that sends +34 to carrier-a
        alone, the baseline's trunk. SIPp phones call through the AGI path (127.0.0.20) and
        the static-dialplan baseline (127.0.0.30) at rising rates; prints the highest rate of
        each with every call answered, and the highest at which it also kept up (setup p95
        under --max-setup-ms), and the ratios (bench/callrate.py; target >= 0.9x).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_ROUTES = ROOT / "redis_seed" / "routes.example.yaml"
NUMBER = "911234567"  # +34 91...: four attempts over three tiers in the example routes
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the two servers (each run in a subprocess) ---------------------------------------------


def _snapshot():  # type: ignore[no-untyped-def]
    from redis_seed.routes_file import load_routes_file
    from routing.snapshot import Snapshot
    return Snapshot.build(load_routes_file(EXAMPLE_ROUTES), "bench")


def route_commands() -> list[bytes]:
    """What the route script sends for NUMBER: the echo server sends exactly these (one
    ``SET VARIABLE ARRAY(...)`` line for this plan; it sent one line per variable, 27, long
    after the route script had moved to one, and the ratio read 5x)."""
    from agi.scripts import route_variables
    from agi.server import set_variable_lines
    from routing.plan import plan
    p = plan(_snapshot(), NUMBER, rng=random.Random(1))
    return set_variable_lines(route_variables(p, "bench"))


async def serve_route(port: int) -> None:
    from agi.scripts import Scripts
    from agi.server import AgiServer
    snapshot = _snapshot()
    server = AgiServer(Scripts(lambda: snapshot, random.Random()).handlers(),
                       host="127.0.0.1", port=port)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def serve_echo(port: int) -> None:
    """The bare baseline: read the headers, send the commands one by one, read each reply."""
    commands = route_commands()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readuntil(b"\n")) != b"\n":
            pass
        for command in commands:
            writer.write(command)
            await reader.readuntil(b"\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# -- the fake Asterisk ----------------------------------------------------------------------


HEADERS = (
    "agi_network: yes\nagi_network_script: route\nagi_request: agi://127.0.0.1/route\n"
    "agi_channel: PJSIP/phone-agi-00000001\nagi_language: en\nagi_type: PJSIP\n"
    "agi_uniqueid: 1795706968.362\nagi_version: 22.10.1\nagi_callerid: phone\n"
    "agi_calleridname: Bench\nagi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\n"
    f"agi_callingtns: 0\nagi_dnid: {NUMBER}\nagi_rdnis: unknown\nagi_context: from-agi-phones\n"
    f"agi_extension: {NUMBER}\nagi_priority: 6\nagi_enhanced: 0.0\nagi_accountcode: \n"
    f"agi_threadid: 140389128836800\nagi_arg_1: {NUMBER}\nagi_arg_2: \n\n"
).encode()


class FakeAsterisk(asyncio.Protocol):
    """One session: send the headers, answer every command line with ``200 result=1``."""

    def __init__(self, done: asyncio.Future[int]) -> None:
        self.done = done
        self.commands = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(HEADERS)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        n = data.count(b"\n")
        self.commands += n
        self.transport.write(b"200 result=1\n" * n)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.commands)


async def drive(port: int, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    """Run sessions back to back, ``concurrency`` at a time, for ``seconds``; return how many
    completed, their latencies and the commands answered."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    commands = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal commands
        while time.perf_counter() < stop_at:
            done: asyncio.Future[int] = loop.create_future()
            t0 = time.perf_counter()
            await loop.create_connection(lambda d=done: FakeAsterisk(d), "127.0.0.1", port)
            answered = await done  # not `commands += await done`: that reads `commands` first
            commands += answered
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, commands


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Server:
    """One of the two servers, in its own process."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        from outbound_router.local_redis import free_port

        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, f"_serve-{kind}", str(self.port)],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()


async def one_round(servers: list[Server], seconds: float, concurrency: int,
                    ) -> dict[str, dict[str, float]]:
    """Both servers driven at the same time for the same window: whatever else the machine
    does slows both alike."""
    cpu0 = {s.kind: s.cpu() for s in servers}
    results = await asyncio.gather(*(drive(s.port, seconds, concurrency) for s in servers))
    out = {}
    for s, (n, lat, commands) in zip(servers, results, strict=True):
        lat.sort()
        out[s.kind] = {"rate": n / seconds, "cpu_us": (s.cpu() - cpu0[s.kind]) / n * 1e6,
                       "p50_ms": lat[len(lat) // 2] * 1e3,
                       "p99_ms": lat[int(len(lat) * 0.99)] * 1e3, "commands": commands / n}
    return out


def bench_sessions(args: argparse.Namespace) -> None:
    print(f"{len(route_commands())} commands a session (route {NUMBER}, example routes); "
          f"both servers driven together, {args.concurrency} sessions at once each, "
          f"{args.rounds} rounds of {args.seconds:g} s")
    servers = [Server("echo"), Server("route")]
    runs: dict[str, list[dict[str, float]]] = {"echo": [], "route": []}
    try:
        asyncio.run(one_round(servers, 1.0, args.concurrency))  # warm-up
        for _ in range(args.rounds):
            result = asyncio.run(one_round(servers, args.seconds, args.concurrency))
            for kind, r in result.items():
                runs[kind].append(r)
                print(f"  {kind:5}  {r['rate']:7.0f} sessions/s  server CPU {r['cpu_us']:5.0f} "
                      f"us/session  p50 {r['p50_ms']:5.2f} ms  p99 {r['p99_ms']:5.2f} ms  "
                      f"({r['commands']:.0f} commands)", flush=True)
            print(f"         ratio {result['route']['rate'] / result['echo']['rate']:.2f}x",
                  flush=True)
    finally:
        for s in servers:
            s.stop()
    ratios = [r["rate"] / e["rate"] for r, e in zip(runs["route"], runs["echo"], strict=True)]
    cpu = {k: statistics.median(r["cpu_us"] for r in v) for k, v in runs.items()}
    print(f"median ratio route/echo: {statistics.median(ratios):.2f}x sessions/s "
          f"(target >= 0.9x); server CPU per session {cpu['echo']:.0f} us (echo) vs "
          f"{cpu['route']:.0f} us (route)")


# -- SIPp against the lab -------------------------------------------------------------------


#: The AGI path does the same SIP work as the baseline: one attempt, carrier-a, which answers.
BENCH_ROUTES = """
defaults: {country_code: "34", setup_timeout: 5, ring_timeout: 30, max_attempts: 6}
carriers:
  peering: {trunks: [carrier-a]}
target_patterns:
  spain: {prefix: "+34"}
outgoing_routes:
  - {name: spain-peering, pattern: spain, carrier: peering, priority: 1}
"""


def bench_calls(args: argparse.Namespace) -> None:
    import callrate

    info = callrate.running_lab()  # (it checks for sipp too)
    before, version = callrate.seed_routes(info.redis_url, BENCH_ROUTES, "bench-agi")
    try:
        print(f"routes {version}: +34 to carrier-a alone, the baseline's trunk (answers)")
        with tempfile.TemporaryDirectory(prefix="bench-agi-") as tmp:
            print(f"call rate sweep (1 s talk, {args.seconds:g} s of calls per step; kept up: "
                  f"setup p95 <= {args.max_setup_ms:g} ms):")
            best = callrate.sweep(("baseline", "agi"), Path(tmp), start=args.start,
                                  max_rate=args.max_rate, seconds=args.seconds,
                                  refine=args.refine, max_setup_ms=args.max_setup_ms)
    finally:
        callrate.restore_routes(info.redis_url, before)
    print("highest call rate (target: AGI path >= 0.9x the baseline):")
    print(callrate.summary(best, {"baseline": "static Dial()", "agi": "AGI path"}))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1].startswith("_serve-"):
        serve = serve_route if sys.argv[1] == "_serve-route" else serve_echo
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(serve(int(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sessions")
    s.add_argument("--seconds", type=float, default=5.0)
    s.add_argument("--concurrency", type=int, default=10)
    s.add_argument("--rounds", type=int, default=5)
    c = sub.add_parser("calls")
    c.add_argument("--start", type=int, default=40)
    c.add_argument("--max-rate", type=int, default=640,
                   help="do not go beyond (past ~700 calls/s the lab's Asterisk runs out of "
                        "file descriptors and logs errors that later lab tests trip over)")
    c.add_argument("--seconds", type=float, default=5.0)
    c.add_argument("--refine", type=int, default=2)
    c.add_argument("--max-setup-ms", type=float, default=500.0)
    args = parser.parse_args()
    (bench_sessions if args.what == "sessions" else bench_calls)(args)


if __name__ == "__main__":
    main()
