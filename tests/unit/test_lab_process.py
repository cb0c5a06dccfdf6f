"""How `lab down` tells that a process it stopped has really gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

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


def test_a_zombie_leader_whose_threads_still_run_has_not_exited() -> None:
    """A big Asterisk's main thread is a zombie before its other threads have exited, and
    its sockets (5060, 8088) stay open until the last one has: `lab up` right after a
    `lab down` of an Asterisk that had run the benches found both ports still taken."""
    code = ("import ctypes, sys, threading\n"
            "threading.Thread(target=sys.stdin.read).start()\n"
            "print('ready', flush=True)\n"
            "ctypes.CDLL(None).pthread_exit(None)\n")  # the main thread ends, the other runs
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stdin is not None
        try:
            assert child.stdout.readline() == "ready\n"
            while _state(child.pid) != "Z":  # the main thread's pthread_exit is under way
                os.sched_yield()
            assert not lab._exited(child.pid)
            child.stdin.close()  # the last thread returns: the process exits
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
            assert lab._exited(child.pid)
        finally:
            child.kill()

def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_lab_down_waits_until_the_parent_has_reaped_what_it_stopped() -> None:
    """What `lab up` started belongs to PID 1 once `lab up` has exited; until PID 1 reaps it,
    `ps` and `pgrep asterisk` still list it (<defunct>). `lab down` waits for that, once for
    all it stopped (wait_reaped)."""
    code = ("import os, signal, sys, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    signal.pause()\n"  # the child: SIGTERM ends it
            "print(pid, flush=True)\n"
            "os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)\n"  # exited, not reaped yet
            "time.sleep(0.5)\n"  # a parent slow to reap
            "os.waitpid(pid, 0)\n"
            "sys.stdin.read()\n")
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None and parent.stdin is not None
        try:
            pid = int(parent.stdout.readline())
            assert lab.stop_process(pid, lambda p: not lab._exited(p))
            lab.wait_reaped([pid])
            assert not os.path.exists(f"/proc/{pid}")
        finally:
            parent.stdin.close()


def test_the_pid_listening_on_a_tcp_port_is_found_from_its_socket() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert lab.tcp_listener_pid("127.0.0.1", port) is None  # bound, not listening
        s.listen()
        assert lab.tcp_listening("127.0.0.1", port)
        assert lab.tcp_listener_pid("127.0.0.1", port) == os.getpid()
    assert lab.tcp_listener_pid("127.0.0.1", port) is None
