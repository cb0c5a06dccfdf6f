"""systemd's service notifications (sd_notify(3)), without libsystemd.

Under a unit with ``Type=notify`` and ``WatchdogSec=`` (deploy/systemd/), a service says
``READY=1`` once it serves, ``STOPPING=1`` as it stops, and ``WATCHDOG=1`` from its event loop
every half of ``WatchdogSec``. A service whose loop is stuck (a handler that never returns, a
deadlock, a SIGSTOP) then stops feeding the watchdog, and systemd kills and restarts it. Neither
``Stasis()`` nor ``AGI()`` has a timeout of its own: while the process still holds its sockets
(a frozen FastAGI server's kernel even accepts new connections into its backlog), every call
waits on it in silence. Killed, its connections close, the dialplan asks again (3 s), and the
restarted service takes the calls.

Without ``NOTIFY_SOCKET`` (not started by systemd, or ``Type=`` is not notify) nothing is sent;
without ``WATCHDOG_USEC`` (no ``WatchdogSec=``) the watchdog is not fed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` ("READY=1"...) to systemd; False when there is nobody to tell."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("telling systemd %s failed: %s (NOTIFY_SOCKET=%s)", state, exc,
                    os.environ.get("NOTIFY_SOCKET"))
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between two WATCHDOG=1, half of WatchdogSec=; None: no watchdog for us."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isascii() or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (a parent that started us)
    return int(usec) / 2_000_000


async def _feed_watchdog(interval: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)  # a period, not a wait for something


@contextlib.asynccontextmanager
async def serving(service: str) -> AsyncIterator[None]:
    """READY=1 and the watchdog fed while the body runs (the service serves), then
    STOPPING=1."""
    feeding: asyncio.Task[None] | None = None
    if notify("READY=1"):
        interval = watchdog_interval()
        if interval is not None:
            log.info("%s: feeding systemd's watchdog every %g s", service, interval)
            feeding = asyncio.create_task(_feed_watchdog(interval), name="sd-watchdog")
    try:
        yield
    finally:
        if feeding is not None:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
        notify("STOPPING=1")
