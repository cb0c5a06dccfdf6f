"""How `lab down` tells that a process it stopped has really gone."""

from __future__ import annotations

import os
import subprocess

from outbound_router import lab


def test_a_running_process_has_not_exited_a_zombie_and_a_reaped_one_have() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not lab._exited(child.pid)
        child.kill()
        # Wait for the exit without reaping: the child stays a zombie, its sockets closed.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert lab._exited(child.pid)
    finally:
        child.kill()
        child.wait()
    assert lab._exited(child.pid)
