"""``outbound-router agi``: the FastAGI server over the routing table in Redis."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import sys
from pathlib import Path

import uvloop

from agi.scripts import Scripts
from agi.server import AgiServer
from outbound_router.limits import raise_open_files_limit
from outbound_router.sdnotify import serving
from outbound_router.settings import Settings
from outbound_router.signals import handle_signals

log = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    """Serve FastAGI until SIGINT or SIGTERM. Blocking; returns the process exit code."""
    raise_open_files_limit("agi")
    try:
        # uvloop, as the ari service: the same asyncio with the loop and sockets in C.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(settings))
    except KeyboardInterrupt:
        return 0


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    from redis_seed.reader import SnapshotReader

    try:
        server = AgiServer({}, host=settings.agi_host, port=settings.agi_port,
                           allow=settings.agi_allow)
    except ValueError as exc:
        log.error("AGI_ALLOW: %s (expected addresses or networks such as "
                  "127.0.0.1,10.0.0.0/8)", exc)
        return 2
    if stop is None:  # from here on: a SIGHUP while Redis is read must not end the service
        stop = asyncio.Event()
        handle_signals(asyncio.get_running_loop(), stop.set, "agi")
    reader = SnapshotReader(settings.redis_url, prefix=settings.redis_prefix,
                            cache=Path(settings.routes_cache) if settings.routes_cache else None)
    await reader.start()
    scripts = Scripts(lambda: reader.snapshot, random.Random())
    server.handlers.update(scripts.handlers())
    try:
        await server.start()
    except OSError as exc:
        hint = ("another `outbound-router agi` running? set AGI_LISTEN=HOST:PORT"
                if exc.errno == errno.EADDRINUSE else
                "is HOST an address of this machine? set AGI_LISTEN=HOST:PORT")
        log.error("cannot listen on %s:%d for FastAGI: %s (%s)", settings.agi_host,
                  settings.agi_port, exc.strerror or exc, hint)
        await reader.close()
        return 2  # the environment is wrong (README's exit statuses)
    try:
        async with serving("agi"):
            await stop.wait()
    finally:
        log.info("FastAGI stopping: %d session(s) running", server.running)
        await server.close()
        # the figures once the running sessions finished (or were cut)
        stats = server.stats
        log.info("FastAGI stopped: %d sessions served, %d dropped, %d turned away with every "
                 "place busy, %d refused", stats.served, stats.dropped, stats.overloaded,
                 stats.refused)
        await reader.close()
    return 0


if __name__ == "__main__":  # the same as `outbound-router agi`: its settings, errors and logs
    from outbound_router.cli import main as cli_main

    raise SystemExit(cli_main(["agi", *sys.argv[1:]]))
