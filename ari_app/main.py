"""``outbound-router ari``: run the Stasis application until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import uvloop

from ari_app.app import RouterApp
from ari_app.client import AriClient
from outbound_router.limits import raise_open_files_limit
from outbound_router.sdnotify import serving
from outbound_router.settings import Settings, SettingsError
from outbound_router.signals import handle_signals

log = logging.getLogger(__name__)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the app until ``stop`` is set (or the task is cancelled)."""
    from redis_seed.reader import SnapshotReader

    stop = stop or asyncio.Event()
    app: RouterApp | None = None

    def routing_changed(_snapshot: object) -> None:
        if app is not None:
            app.routing_changed()

    reader = SnapshotReader(settings.redis_url, prefix=settings.redis_prefix,
                            on_change=routing_changed,
                            cache=Path(settings.routes_cache) if settings.routes_cache else None)
    await reader.start()
    if reader.snapshot is None:
        log.warning("no routing table in Redis yet: calls fail with ROUTER_STATUS=ERROR "
                    "until one is seeded (outbound-router seed FILE)")
    ari = AriClient(settings.ari_url, settings.ari_username, settings.ari_password,
                    settings.ari_app)
    app = RouterApp(ari, lambda: reader.snapshot)
    runner = asyncio.create_task(app.run(), name="ari-app")
    stopper = asyncio.create_task(stop.wait(), name="ari-stop")
    try:
        async with serving("ari"):
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (runner, stopper):
            task.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await runner  # the app's own failure, if it failed, is raised here
        finally:
            await ari.close()
            await reader.close()


def run(settings: Settings) -> int:
    """Blocking entry point for the CLI: 0 on a clean stop, 2 on bad settings."""
    raise_open_files_limit("ari")
    try:
        settings.require_ari_credentials()
    except SettingsError as exc:
        log.error("%s", exc)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        handle_signals(asyncio.get_running_loop(), stop.set, "ari")
        await serve(settings, stop=stop)

    # uvloop: the same asyncio, with the event loop and socket I/O in C (a third less CPU per
    # call on the router's side, bench/bench_ari_calls.py).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return 0


if __name__ == "__main__":  # the same as `outbound-router ari`: its settings, errors and logs
    from outbound_router.cli import main as cli_main

    raise SystemExit(cli_main(["ari", *sys.argv[1:]]))
