"""The lab's service supervisor (outbound_router/supervise.py), with real processes: a crashed
service comes back, a stopped or failing one does not, and neither outlives the other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: The stand-in service: notes its PID at each start, then waits (SIGTERM ends it with 0; a
#: SIGHUP is noted in STARTS.hup, as the services log and ignore it).
#: The handler goes first: a test that sees the PID may stop it at once (with the PID noted
#: first, a SIGTERM in between killed it, exit -15: one failure in a full run).
SERVICE = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGHUP, lambda *_: open(sys.argv[1] + ".hup", "a").write("hup\\n"))
open(sys.argv[1], "a").write(f"{os.getpid()}\\n")
code = int(sys.argv[2])
if code >= 0:
    sys.exit(code)
while True:
    signal.pause()
"""


def wait_for(what: str, check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling files and /proc: nothing here to await


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


class Supervised:
    def __init__(self, tmp: Path, exit_code: int = -1) -> None:
        self.starts = tmp / "starts"
        self.log = tmp / "supervise.log"
        script = tmp / "service.py"
        script.write_text(SERVICE)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "outbound_router.supervise", sys.executable,
                 str(script), str(self.starts), str(exit_code)], stderr=log)

    def pids(self) -> list[int]:
        return [int(x) for x in self.starts.read_text().split()] if self.starts.exists() else []

    def said(self) -> str:
        return self.log.read_text()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    made: list[Supervised] = []

    def make(exit_code: int = -1) -> Supervised:
        made.append(Supervised(tmp_path, exit_code))
        return made[-1]

    yield make
    for s in made:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        for pid in s.pids():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_service_is_started_again(supervised: Callable[..., Supervised]) -> None:
    s = supervised()
    wait_for("the service", lambda: len(s.pids()) == 1)
    os.kill(s.pids()[0], signal.SIGKILL)
    wait_for("its restart", lambda: len(s.pids()) == 2)
    assert "killed by SIGKILL" in s.said() and "restarting in 1 s" in s.said()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=10) == 0  # the service's own exit status
    assert not alive(s.pids()[1])


def test_a_sighup_reaches_the_service_and_ends_nothing(
        supervised: Callable[..., Supervised]) -> None:
    s = supervised()
    wait_for("the service", lambda: len(s.pids()) == 1)
    hups = s.starts.with_suffix(".hup")
    s.proc.send_signal(signal.SIGHUP)
    wait_for("the service to get it", lambda: hups.exists() and hups.read_text() == "hup\n")
    assert s.proc.poll() is None and alive(s.pids()[0]) and len(s.pids()) == 1
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=10) == 0


def test_a_service_that_fails_at_start_up_is_not_restarted(
        supervised: Callable[..., Supervised]) -> None:
    s = supervised(exit_code=2)  # as `agi` with its port taken
    assert s.proc.wait(timeout=10) == 2
    assert len(s.pids()) == 1
    assert "exited with 2 at start-up: not restarted" in s.said()


def test_a_service_that_ends_by_itself_ends_the_supervisor(
        supervised: Callable[..., Supervised]) -> None:
    s = supervised(exit_code=0)
    assert s.proc.wait(timeout=10) == 0
    assert len(s.pids()) == 1


def test_a_stop_while_waiting_to_restart_starts_nothing(
        supervised: Callable[..., Supervised]) -> None:
    s = supervised()
    wait_for("the service", lambda: len(s.pids()) == 1)
    os.kill(s.pids()[0], signal.SIGKILL)
    wait_for("the restart's delay", lambda: "restarting in 1 s" in s.said())
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=10) == 128 + signal.SIGKILL  # the last run's end
    assert len(s.pids()) == 1


def test_a_killed_supervisor_takes_the_service_with_it(
        supervised: Callable[..., Supervised]) -> None:
    s = supervised()
    wait_for("the service", lambda: len(s.pids()) == 1)
    s.proc.kill()
    s.proc.wait()
    wait_for("the service to end", lambda: not alive(s.pids()[0]))


def crash_loop(runs: float, *, stop_after: int) -> list[str]:
    """What a Supervisor (in this process, with short delays) says of a service that is
    killed ``runs`` seconds after each start, until it has said ``stop_after`` things."""
    from outbound_router.supervise import Supervisor

    said: list[str] = []

    def say(text: str) -> None:
        said.append(text)
        if len(said) == stop_after:
            supervisor.stop(signal.SIGTERM)

    service = (f"import os, signal, time; time.sleep({runs!r}); "
               "os.kill(os.getpid(), signal.SIGKILL)")
    supervisor = Supervisor([sys.executable, "-c", service], say=say, first_backoff=0.01,
                            max_backoff=0.04, stable=0.3)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert supervisor.run() == -signal.SIGKILL
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return said


def test_a_crash_loop_waits_longer_each_time_up_to_a_cap() -> None:
    said = crash_loop(0, stop_after=5)
    assert [line.rsplit("restarting in ", 1)[1] for line in said] == [
        "0.01 s", "0.02 s", "0.04 s", "0.04 s", "0.04 s"]


def test_a_service_that_ran_a_while_before_its_crash_is_restarted_at_once_again() -> None:
    said = crash_loop(0.35, stop_after=3)
    assert [line.rsplit("restarting in ", 1)[1] for line in said] == ["0.01 s"] * 3
