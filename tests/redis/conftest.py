"""The Redis tests call the private server's client (tests/conftest.py) ``client``."""

from __future__ import annotations

import pytest
import redis


@pytest.fixture
def client(redis_client: redis.Redis) -> redis.Redis:
    return redis_client
