"""outbound_router/limits.py, in a child process started with a low open-files limit (as
systemd's default soft limit of 1,024, or `ulimit -n 256`)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

CHILD = """
import logging, resource
logging.basicConfig(format="%(levelname)s %(message)s")
from outbound_router.limits import raise_open_files_limit
print(raise_open_files_limit("agi"), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def run_with_limit(soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          check=True, timeout=30, preexec_fn=limit)


@pytest.mark.parametrize(("hard", "raised"), [(8192, 8192), (200_000, 65_536)])
def test_the_soft_limit_is_raised_to_the_hard_one(hard: int, raised: int) -> None:
    if hard > resource.getrlimit(resource.RLIMIT_NOFILE)[1] and os.geteuid() != 0:
        pytest.skip("only root may raise its hard limit that far")
    out = run_with_limit(256, hard)
    assert out.stdout.split() == [str(raised), str(raised)]
    assert out.stderr == ""


def test_a_low_hard_limit_is_said_once() -> None:
    out = run_with_limit(256, 512)
    assert out.stdout.split() == ["512", "512"]
    assert out.stderr.count("WARNING agi: open files limit 512 (hard limit 512)") == 1
    assert "LimitNOFILE=4096" in out.stderr
