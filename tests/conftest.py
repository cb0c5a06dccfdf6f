"""Fixtures shared by every test tier: a private redis-server per test that needs one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from outbound_router.local_redis import RedisProcess


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def redis_server(redis_proc: RedisProcess) -> str:
    """The URL of a private, empty redis-server."""
    return redis_proc.url


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    """A redis-py client of that private server."""
    client = redis.Redis.from_url(redis_server)
    try:
        yield client
    finally:
        client.close()
