"""The signals a long-running service (`ari`, `agi`) acts on.

SIGTERM and SIGINT stop it (each service says what becomes of its calls). SIGHUP, which
daemons commonly take as "reload", is logged and otherwise ignored: there is nothing to reload
(routes follow Redis by themselves, settings come from the environment). Its default action
ended the process at once, mid-call, and systemd counts an end by SIGHUP as clean:
`Restart=on-failure` left such a service down, and every call then failed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)


def handle_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None],
                   service: str) -> None:
    """Call ``stop`` on SIGTERM or SIGINT; log SIGHUP and go on."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, _hangup, service)


def _hangup(service: str) -> None:
    log.warning("%s: SIGHUP ignored: nothing to reload (routes follow Redis by themselves; "
                "settings come from the environment: restart the service to change them)",
                service)
