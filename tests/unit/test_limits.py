"""outbound_router/limits.py, in a child process started with a low open-files limit (as
systemd's default soft limit of 1,024, or `ulimit -n 256`)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

CHILD = """
import logging, resource, sys
logging.basicConfig(format="%(levelname)s %(message)s")
from outbound_router import limits
limits.WANTED = int(sys.argv[1])
print(limits.raise_open_files_limit("agi"), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def run_with_limit(soft: int, hard: int,
                   wanted: int = 65_536) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run([sys.executable, "-c", CHILD, str(wanted)], capture_output=True,
                          text=True,
                          check=True, timeout=30, preexec_fn=limit)


@pytest.mark.parametrize(("wanted", "raised"), [(65_536, 8192), (6000, 6000)])
def test_the_soft_limit_is_raised_to_the_hard_one_or_what_is_wanted(wanted: int,
                                                                      raised: int) -> None:
    out = run_with_limit(256, 8192, wanted)
    assert out.stdout.split() == [str(raised), str(raised)]
    assert out.stderr == ""


def test_a_low_hard_limit_is_said_once() -> None:
    out = run_with_limit(256, 512)
    assert out.stdout.split() == ["512", "512"]
    assert out.stderr.count("WARNING agi: open files limit 512 (hard limit 512)") == 1
    assert "LimitNOFILE=4096" in out.stderr
