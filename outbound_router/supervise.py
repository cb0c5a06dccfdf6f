"""Keep a lab service running: restart it when it crashes, as systemd's ``Restart=on-failure``
and docker-compose's ``restart: unless-stopped`` do in a deployment.

    python -m outbound_router.supervise python -m outbound_router.cli ari

`lab up` starts the `ari` and `agi` services this way. Without it a crashed `ari` (killed,
out of memory) left every call it had bridged with nobody to tear it down: the caller hung
up and the carrier's leg stayed up, billed, until somebody ran `lab up` again; a restarted
`ari` reconciles such leftovers at once.

- The child exits by itself with 0 (stopped on purpose, SIGTERM): the supervisor exits too.
- It exits non-zero within ``START_GRACE`` seconds of its first start (a bad setting, its port
  in use: nothing a restart mends): the supervisor exits with its status, for `lab up` to
  report.
- Otherwise a crash (killed by a signal, a non-zero exit) restarts it after 1 s, then 2,
  4... at most ``MAX_BACKOFF`` s while it keeps crashing within ``STABLE`` seconds of each
  start; a longer run resets the delay.
- SIGTERM or SIGINT to the supervisor: passed on to the child, waited for, and the supervisor
  exits with its status. The child gets SIGTERM if the supervisor dies (``PR_SET_PDEATHSIG``),
  so that a killed supervisor leaves no service running that nothing tracks.
- SIGHUP to the supervisor is passed on to the child (which logs it and goes on); its default
  action ended the supervisor, and the service with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

START_GRACE = 10.0
STABLE = 10.0  # a run this long was no crash loop: the next restart waits 1 s again
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor goes."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _log(text: str) -> None:
    """One line in the service's log, dated as the service's own lines are."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    print(f"{stamp},{int(now % 1 * 1000):03d} WARNING supervise: {text}", file=sys.stderr,
          flush=True)


class Supervisor:
    """Runs ``argv`` until it ends on purpose; the policy is the module's docstring."""

    def __init__(self, argv: Sequence[str], *, say: Callable[[str], None] = _log,
                 first_backoff: float = FIRST_BACKOFF, max_backoff: float = MAX_BACKOFF,
                 stable: float = STABLE, start_grace: float = START_GRACE) -> None:
        self.argv = list(argv)
        self.name = argv[-1]  # the service: ari, agi
        self.say = say
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self.stable, self.start_grace = stable, start_grace
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.restarts = 0

    def stop(self, signum: int, _frame: object = None) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def hangup(self, signum: int, _frame: object = None) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.stop)
        signal.signal(signal.SIGHUP, self.hangup)
        backoff = self.first_backoff
        while True:
            started = time.monotonic()
            self.child = subprocess.Popen(self.argv, preexec_fn=_die_with_parent)
            if self.stopping:  # a stop that came while it was being started
                self.child.send_signal(signal.SIGTERM)
            code = self.child.wait()
            ran = time.monotonic() - started
            if self.stopping or code == 0:
                return code
            if code > 0 and self.restarts == 0 and ran < self.start_grace:
                self.say(f"{self.name} {describe(code)} at start-up: not restarted")
                return code
            if ran >= self.stable:
                backoff = self.first_backoff
            self.say(f"{self.name} {describe(code)} after {ran:.1f} s: restarting in "
                     f"{backoff:g} s")
            if self._stopped_during(backoff):
                return code
            backoff = min(backoff * 2, self.max_backoff)
            self.restarts += 1

    def _stopped_during(self, seconds: float) -> bool:
        """Wait before a restart, unless a stop signal comes first (True then)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            # One that came before the mask went to the handler: self.stopping says so.
            if not self.stopping and signal.sigtimedwait(STOP_SIGNALS, seconds) is not None:
                self.stopping = True
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return self.stopping


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m outbound_router.supervise COMMAND [ARG...]", file=sys.stderr)
        return 2
    code = Supervisor(args).run()
    return code if code >= 0 else 128 - code  # a child killed by signal N: 128 + N, as sh


if __name__ == "__main__":
    sys.exit(main())
