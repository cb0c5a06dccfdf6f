"""A router service (`outbound-router ari|agi`) run as a process of its own, for tests that
signal it or read what it tells the outside."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def service_process(service: str, env: Mapping[str, str],
                    **popen: object) -> Iterator[subprocess.Popen[bytes]]:
    """The service, its stderr piped; killed at the end if it is still running."""
    proc = subprocess.Popen([sys.executable, "-m", "outbound_router.cli", service],  # type: ignore[call-overload]
                            env=dict(env), stderr=subprocess.PIPE, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
