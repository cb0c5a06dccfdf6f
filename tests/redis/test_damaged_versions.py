"""Versions and routes caches damaged in ways their checksum does not catch (a foreign or buggy
writer, a field outside the checksum): a bad version, never a reader or a command that fails
(from a review of redis_seed; each test failed before)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import redis
from redis_tables import generation_table

from outbound_router.local_redis import RedisProcess
from redis_seed import cache
from redis_seed.keys import Keys
from redis_seed.reader import SnapshotReader
from redis_seed.store import encode_table, publish

ROOT = Path(__file__).resolve().parents[2]


def malformed(client: redis.Redis, version: str) -> None:
    """Rewrite ``version``'s data with carriers as a JSON list instead of an object, its
    sha256 recomputed: every check passes but the decoding."""
    blob, _ = encode_table(generation_table(9))
    data = json.loads(zlib.decompress(blob))
    data["carriers"] = list(data["carriers"].values())
    blob = zlib.compress(json.dumps(data).encode())
    sha = hashlib.sha256(blob).hexdigest()
    client.hset(Keys().version(version), mapping={"data": blob, "sha256": sha})
    if client.hget(Keys().current, "version") == version.encode():
        client.hset(Keys().current, "sha256", sha)


def cli(redis_server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outbound_router.cli", *args],
                          env={**os.environ, "REDIS_URL": redis_server}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_a_reader_started_on_a_malformed_version_routes_with_the_newest_readable(
        client: redis.Redis, redis_server: str, caplog: pytest.LogCaptureFixture) -> None:
    # AttributeError out of the decoding was no "bad version": a traceback, no fall-back to
    # the newest readable version (every call ERROR), and the version read and decoded again
    # at every backoff.
    readable = publish(client, generation_table(1))
    bad = publish(client, generation_table(2))
    malformed(client, bad)
    async with SnapshotReader(redis_server, poll_interval=0.5, max_backoff=0.5) as reader:
        assert reader.version == readable
        newer = publish(client, generation_table(3))
        await reader.wait_for_version(newer, timeout=2.0)
    assert caplog.text.count(f"{bad} not loaded") == 1
    assert "Traceback" not in caplog.text


def test_rolling_back_to_a_malformed_version_is_refused_in_one_line(
        client: redis.Redis, redis_server: str) -> None:
    # (a traceback, exit 1: the status of a bad routes file)
    publish(client, generation_table(1))
    bad = publish(client, generation_table(2))
    publish(client, generation_table(3))
    malformed(client, bad)
    out = cli(redis_server, "rollback", bad)
    assert (out.returncode, "Traceback" in out.stderr) == (2, False), out.stderr
    assert len(out.stderr.splitlines()) == 1 and bad in out.stderr


def test_versions_lists_a_version_whose_routes_field_is_damaged(
        client: redis.Redis, redis_server: str) -> None:
    # (int() of it raised: a traceback, exit 1)
    version = publish(client, generation_table(1))
    client.hset(Keys().version(version), "routes", "4\xff")
    out = cli(redis_server, "versions")
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert version in out.stdout


async def test_a_routes_cache_with_a_damaged_version_field_is_not_used_and_stops_nothing(
        client: redis.Redis, redis_proc: RedisProcess, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    # The cache is read while Redis is away; its version field is outside the checksum.
    # A byte that is no UTF-8 there raised out of start(): the service exited at start,
    # again at every restart, for as long as Redis stayed away.
    path = tmp_path / "routes.cache"
    publish(client, generation_table(1))
    async with SnapshotReader(redis_proc.url, cache=path):
        pass
    whole = cache.read(path)
    cache.write(path, "outbound-router", {**whole.fields, b"version": b"v00000\xff"})
    redis_proc.kill()
    async with SnapshotReader(redis_proc.url, cache=path) as reader:
        assert reader.snapshot is None
    assert f"routes cache {path} not used" in caplog.text
