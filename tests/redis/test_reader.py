"""The snapshot reader against a real redis-server: first load, hot reload within 1 s (also when
a notification is missed), never a mixed snapshot, bad versions kept out, Redis outages."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio
from redis_tables import generation_of, generation_table

from redis_seed import cache
from redis_seed import reader as reader_module
from redis_seed.connection import async_client
from redis_seed.keys import Keys
from redis_seed.reader import SnapshotReader
from redis_seed.store import publish
from routing.model import RoutingTable
from routing.plan import Status, plan
from routing.snapshot import Snapshot

NUMBER = "+34911234567"



@pytest.fixture
async def reader(redis_server: str) -> AsyncIterator[SnapshotReader]:
    r = SnapshotReader(redis_server, poll_interval=0.5, max_backoff=0.5)
    try:
        yield r
    finally:
        await r.close()


async def seed(client: redis.Redis, g: int, **kwargs: object) -> str:
    """Publish generation ``g`` from a thread, as a separate seeding process would."""
    return await asyncio.to_thread(publish, client, generation_table(g), **kwargs)  # type: ignore[arg-type]


def routes_a_call(snapshot: Snapshot | None) -> int:
    """Route a call with the snapshot; the generation of the carriers it would try."""
    assert snapshot is not None
    p = plan(snapshot, NUMBER, rng=random.Random(1))
    assert p.status is Status.OK
    generations = {int(a.carrier.name[1:].split("-")[0]) for a in p.attempts}
    assert len(generations) == 1, generations
    return generations.pop()


async def test_start_loads_the_current_version(client: redis.Redis,
                                               reader: SnapshotReader) -> None:
    version = await seed(client, 1)
    await reader.start()
    assert reader.version == version
    assert reader.snapshot is not None and reader.snapshot.table == generation_table(1)
    assert routes_a_call(reader.snapshot) == 1


async def test_reader_picks_up_a_new_version_within_one_second(
        client: redis.Redis, reader: SnapshotReader) -> None:
    await seed(client, 1)
    await reader.start()
    version = await seed(client, 2)
    snapshot = await reader.wait_for_version(version, timeout=1.0)
    assert generation_of(snapshot) == 2
    assert routes_a_call(reader.snapshot) == 2


@dataclass(frozen=True)
class MutedKeys(Keys):
    """Keys of a seeder whose notification never arrives (published elsewhere)."""

    @property
    def notify(self) -> str:
        return f"{self.prefix}:lost-notifications"


async def test_a_missed_notification_is_caught_by_the_periodic_check(
        client: redis.Redis, reader: SnapshotReader) -> None:
    await seed(client, 1)
    await reader.start()
    version = await seed(client, 2, keys=MutedKeys())
    snapshot = await reader.wait_for_version(version, timeout=1.0)
    assert generation_of(snapshot) == 2


async def test_a_reader_polling_during_200_seeds_never_sees_a_mixed_snapshot(
        client: redis.Redis, reader: SnapshotReader) -> None:
    await seed(client, 1)
    await reader.start()
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set():
            snapshot = reader.snapshot
            assert snapshot is not None
            g = generation_of(snapshot)  # every part of the table from one generation
            assert routes_a_call(snapshot) == g
            if not seen or seen[-1][0] != snapshot.version:
                seen.append((snapshot.version, g))
            await asyncio.sleep(0.001)  # let the reader run between two looks

    poller = asyncio.create_task(poll())
    try:
        for g in range(2, 202):
            last = await seed(client, g)
        await reader.wait_for_version(last, timeout=1.0)
    finally:
        done.set()
        await poller
    assert reader.snapshot is not None and generation_of(reader.snapshot) == 201
    assert len(seen) > 2, "the reader should have switched during the seeds"
    # one generation per version, and versions only move forward
    assert [g for _, g in seen] == sorted({g for _, g in seen})
    assert [v for v, _ in seen] == sorted({v for v, _ in seen})
    assert all(int(v[1:]) == g for v, g in seen)


async def test_a_corrupted_version_is_not_loaded_and_the_old_one_kept(
        client: redis.Redis, reader: SnapshotReader,
        caplog: pytest.LogCaptureFixture) -> None:
    first = await seed(client, 1)
    await reader.start()
    # A seeder that dies half-way through its data, then (wrongly) switches the pointer.
    keys = Keys()
    client.hset(keys.version("v000099"), mapping={
        "version": "v000099", "format": "1", "encoding": "json", "sha256": "0" * 64,
        "routes": 4, "data": b'{"defaults": {"count'})
    client.hset(keys.current, mapping={"version": "v000099", "sha256": "0" * 64})
    client.publish(keys.notify, "v000099")
    await asyncio.wait_for(_until(lambda: "v000099 not loaded" in caplog.text), timeout=2.0)
    assert reader.version == first
    assert routes_a_call(reader.snapshot) == 1
    version = await seed(client, 2)
    await reader.wait_for_version(version, timeout=1.0)
    assert caplog.text.count("v000099 not loaded") == 1  # logged once, not at every poll


async def test_a_reader_started_on_an_unreadable_version_routes_with_the_newest_readable(
        client: redis.Redis, reader: SnapshotReader,
        caplog: pytest.LogCaptureFixture) -> None:
    # A newer release seeded a data format this router cannot read (a rolling upgrade), and
    # this router restarts: it turned every call away (ERROR, no routing version loaded)
    # while the routers that kept running routed them with the version they held.
    await seed(client, 1)
    readable = await seed(client, 2)
    keys = Keys()
    newer = await seed(client, 3)
    client.hset(keys.version(newer), "format", "99")  # what this router cannot read
    await reader.start()
    assert reader.version == readable
    assert routes_a_call(reader.snapshot) == 2
    assert (f"routing version {newer} not loaded: version {newer} has data format 99") in (
        caplog.text)
    assert f"routing from version {readable}, the newest kept version" in caplog.text
    version = await seed(client, 4)  # a version it can read: the current one again
    await reader.wait_for_version(version, timeout=1.0)
    assert caplog.text.count(f"{newer} not loaded") == 1


async def test_a_reader_started_while_the_current_version_is_gone_routes_with_the_newest_kept(
        client: redis.Redis, reader: SnapshotReader,
        caplog: pytest.LogCaptureFixture) -> None:
    # Evicted, or not replicated yet: the same, until the current one is there.
    readable = await seed(client, 1)
    gone = await seed(client, 2)
    stored = client.hgetall(Keys().version(gone))
    client.delete(Keys().version(gone))
    await reader.start()
    assert reader.version == readable
    assert f"routing version {gone} not loaded: not in Redis; routing from version {readable}" \
        in caplog.text
    client.hset(Keys().version(gone), mapping=stored)  # it comes (a replica catching up)
    await reader.wait_for_version(gone, timeout=2.0)


async def _until(condition: Callable[[], bool]) -> None:
    """Poll a condition that has no event to await (a log line, a counter)."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def test_redis_killed_the_reader_keeps_routing_then_catches_up(
        client: redis.Redis, reader: SnapshotReader, redis_proc,  # type: ignore[no-untyped-def]
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="redis_seed.reader")
    await seed(client, 1)
    before = await seed(client, 2)
    await reader.start()
    assert reader.version == before

    redis_proc.kill()
    await asyncio.wait_for(_until(lambda: reader.failed_attempts >= 3), timeout=10.0)
    assert not reader.connected
    assert reader.version == before
    assert routes_a_call(reader.snapshot) == 2  # calls are still routed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # the outage, logged once
    assert "routing continues from version v000002" in warnings[0].getMessage()

    redis_proc.restart()  # an empty Redis: version numbers start again at v000001
    client.connection_pool.reset()
    after = await seed(client, 3)
    snapshot = await reader.wait_until(lambda s: generation_of(s) == 3, timeout=5.0)
    assert snapshot.version == after
    assert reader.connected
    assert "is available again" in caplog.text
    assert routes_a_call(reader.snapshot) == 3


async def test_an_error_raised_while_a_lost_connection_is_handled_is_the_outage(
        client: redis.Redis, reader: SnapshotReader, caplog: pytest.LogCaptureFixture) -> None:
    # Under uvloop, redis-py's reconnect of the pub/sub connection wrote to the transport the
    # server had just closed: a RuntimeError, with the ConnectionError as its context, logged
    # as a failure of the reader with its traceback (seen on the lab as Redis was killed).
    follow, raised = reader._follow, []

    async def lost_then_follow() -> None:
        if not raised:
            raised.append(1)
            try:
                raise redis.ConnectionError("Connection closed by server.")
            except redis.ConnectionError:
                raise RuntimeError("unable to perform operation on <TCPTransport closed=True "
                                   "reading=False>; the handler is closed") from None
        await follow()

    reader._follow = lost_then_follow  # type: ignore[method-assign]
    await seed(client, 1)
    await reader.start()
    await asyncio.wait_for(_until(lambda: reader.failed_attempts >= 1), timeout=5.0)
    version = await seed(client, 2)
    await reader.wait_for_version(version, timeout=1.0)
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == ["WARNING"]
    assert "is unavailable (ConnectionError: Connection closed by server.)" in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_hung_redis_is_an_outage_once_a_read_gives_up_and_told_from_its_last_answer(
        client: redis.Redis, reader: SnapshotReader, redis_proc,  # type: ignore[no-untyped-def]
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stopped Redis neither answers nor closes its connections: the reader waited out the
    # socket timeout twice (20 s) before it called it an outage, then said "available again
    # after 0.1 s" of a stall of 25 s. (READ_TIMEOUT shortened: the test waits it out.)
    monkeypatch.setattr(reader_module, "READ_TIMEOUT", 0.5)
    caplog.set_level(logging.INFO, logger="redis_seed.reader")
    version = await seed(client, 1)
    await reader.start()
    pid = redis_proc.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.wait_for(_until(lambda: not reader.connected), timeout=3.0)
        assert reader.version == version
        assert routes_a_call(reader.snapshot) == 1  # calls are still routed
        assert "is unavailable (TimeoutError: no answer within 0.5 s)" in caplog.text
        failed = reader.failed_attempts
        await asyncio.wait_for(_until(lambda: reader.failed_attempts > failed + 1), timeout=5.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    await asyncio.wait_for(_until(lambda: reader.connected), timeout=3.0)
    down_for = re.search(r"available again after ([0-9.]+) s", caplog.text)
    assert down_for is not None and float(down_for.group(1)) >= 1.0, caplog.text
    newer = await seed(client, 2)
    await reader.wait_for_version(newer, timeout=1.0)


async def test_redis_down_at_start_then_up(redis_proc, client: redis.Redis,  # type: ignore[no-untyped-def]
                                           reader: SnapshotReader) -> None:
    redis_proc.kill()
    await reader.start()  # does not raise
    assert reader.snapshot is None
    redis_proc.restart()
    client.connection_pool.reset()
    version = await seed(client, 7)
    snapshot = await reader.wait_for_version(version, timeout=5.0)
    assert generation_of(snapshot) == 7


async def test_during_an_outage_the_reader_tries_again_at_least_every_half_second(
        redis_proc) -> None:  # type: ignore[no-untyped-def]
    # Redis is often seeded the moment it is back: with attempts up to 2 s apart, a router
    # saw that version up to 2 s after the seed (SPEC section 5: within 1 s).
    redis_proc.kill()
    async with SnapshotReader(redis_proc.url) as r:  # the services' defaults
        await asyncio.wait_for(_until(lambda: r.failed_attempts >= 6), timeout=10.0)
        assert r._backoff <= 0.5


async def test_credentials_refused_are_tried_again_every_few_seconds_only(
        client: redis.Redis, redis_server: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every 0.5 s, and twice a try (redis-py's own retry), a router with a wrong password
    # filled Redis's ACL log with failed logins (5,945 in 25 minutes), where alarms for
    # password guessing look. (REFUSED_BACKOFF shortened: the test waits it out.)
    monkeypatch.setattr(reader_module, "REFUSED_BACKOFF", 0.3)
    await asyncio.to_thread(client.config_set, "requirepass", "right")
    await asyncio.to_thread(client.execute_command, "ACL", "LOG", "RESET")
    wrong = redis_server.replace("redis://", "redis://:wrong@")
    loop = asyncio.get_running_loop()
    async with SnapshotReader(wrong, poll_interval=0.5) as r:  # the services' defaults
        started = loop.time()
        await asyncio.wait_for(_until(lambda: r.failed_attempts >= 4), timeout=15.0)
        tries, took = r.failed_attempts, loop.time() - started
    # (the first two tries come at once: the start, then the follow loop)
    assert took >= 2 * 0.3  # two waits of REFUSED_BACKOFF at least, not the 0.1 s backoff
    log = await asyncio.to_thread(client.execute_command, "ACL", "LOG")
    logins = sum(int(entry[b"count"]) for entry in log)
    assert logins == tries  # one login a try
    assert "every 0.3 s or so" in caplog.text and "wrong" not in caplog.text
    # and what to do, which waiting will not mend
    assert "refused the credentials" in caplog.text
    assert "Put the right user and password in REDIS_URL" in caplog.text


async def test_a_reader_started_while_redis_is_away_routes_with_its_cached_version(
        client: redis.Redis, redis_proc, tmp_path,  # type: ignore[no-untyped-def]
        caplog: pytest.LogCaptureFixture) -> None:
    # A router restarted during a Redis outage had no version: every call got ERROR until
    # Redis came back (SPEC section 5: routing goes on from the last version loaded).
    path = tmp_path / "routes.cache"
    await seed(client, 1)
    second = await seed(client, 2)
    async with SnapshotReader(redis_proc.url, cache=path) as first_run:
        assert first_run.version == second
    assert path.stat().st_mode & 0o777 == 0o600
    redis_proc.kill()
    async with SnapshotReader(redis_proc.url, cache=path) as restarted:
        assert restarted.version == second
        assert routes_a_call(restarted.snapshot) == 2
        assert f"routing from version {second} of the routes cache {path}" in caplog.text
        assert "calls get ERROR" not in caplog.text  # (the outage is said before the cache)
        assert f"the routes cache {path} is read next" in caplog.text
        redis_proc.restart()  # empty: the next seed is v000001 again, and is taken
        client.connection_pool.reset()
        after = await seed(client, 3)
        assert generation_of(await restarted.wait_for_version(after, timeout=5.0)) == 3
    async with SnapshotReader(redis_proc.url, cache=path):  # the cache follows Redis
        pass
    redis_proc.kill()
    async with SnapshotReader(redis_proc.url, cache=path) as again:
        assert again.version == after and routes_a_call(again.snapshot) == 3


async def test_a_routes_cache_that_cannot_be_used_is_said_and_left(
        client: redis.Redis, redis_proc, tmp_path,  # type: ignore[no-untyped-def]
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "routes.cache"
    await seed(client, 1)
    async with SnapshotReader(redis_proc.url, cache=path):
        pass
    redis_proc.kill()
    async with SnapshotReader(redis_proc.url, cache=path, prefix="another") as other:
        assert other.snapshot is None  # read under another REDIS_PREFIX
    assert "it holds a version read under REDIS_PREFIX 'outbound-router', not 'another'" in (
        caplog.text)
    whole = cache.read(path)
    path.write_bytes(path.read_bytes()[:-10])  # cut short
    async with SnapshotReader(redis_proc.url, cache=path) as cut:
        assert cut.snapshot is None
    assert "cut short or damaged" in caplog.text
    cache.write(path, "outbound-router", {**whole.fields, b"data": whole.fields[b"data"][:-1]
                                          + bytes([whole.fields[b"data"][-1] ^ 1])})
    async with SnapshotReader(redis_proc.url, cache=path) as damaged:
        assert damaged.snapshot is None
    assert "does not match its checksum" in caplog.text
    path.write_text("routes: []\n")
    async with SnapshotReader(redis_proc.url, cache=path) as foreign:
        assert foreign.snapshot is None
    assert "not a routes cache of outbound-router" in caplog.text


def test_a_routes_cache_copy_a_crash_left_half_written_is_removed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The copy in the making is named by PID: each crash while writing (and systemd's
    # restart, a new PID) left one more beside the cache.
    path = tmp_path / "routes.cache"
    left = tmp_path / ".routes.cache.999999.tmp"
    left.write_bytes(b"half")
    cache.write(path, "outbound-router", {b"version": b"v000001"})
    assert not left.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["routes.cache"]


async def test_a_routes_cache_that_cannot_be_written_is_said_once(
        client: redis.Redis, redis_server: str, tmp_path,  # type: ignore[no-untyped-def]
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gone" / "routes.cache"
    await seed(client, 1)
    async with SnapshotReader(redis_server, cache=path) as r:
        newer = await seed(client, 2)
        await r.wait_for_version(newer, timeout=1.0)
    assert caplog.text.count(f"cannot write the routes cache {path}") == 1


async def test_empty_redis_gives_no_snapshot_until_the_first_seed(
        client: redis.Redis, reader: SnapshotReader,
        caplog: pytest.LogCaptureFixture) -> None:
    await reader.start()
    assert reader.snapshot is None
    assert "holds no routing version yet" in caplog.text
    version = await seed(client, 1)
    await reader.wait_for_version(version, timeout=1.0)


async def test_rollback_reaches_the_reader(client: redis.Redis,
                                           reader: SnapshotReader) -> None:
    from redis_seed.store import rollback

    await seed(client, 1)
    await seed(client, 2)
    await reader.start()
    assert await asyncio.to_thread(rollback, client) == "v000001"
    snapshot = await reader.wait_for_version("v000001", timeout=1.0)
    assert generation_of(snapshot) == 1


async def test_version_ids_that_start_again_after_redis_lost_its_data_are_logged(
        client: redis.Redis, reader: SnapshotReader, caplog: pytest.LogCaptureFixture) -> None:
    # The lab's Redis keeps nothing on disk: restarted empty, the next seed was v000001 again,
    # and the routers said only "v000001 loaded, replacing v000003".
    for g in (1, 2, 3):
        await seed(client, g)
    await reader.start()
    await asyncio.to_thread(client.flushdb)
    assert await seed(client, 4) == "v000001"
    await reader.wait_until(lambda s: generation_of(s) == 4, timeout=2.0)
    assert ("routing version v000001 replaces v000003, which Redis no longer keeps: Redis "
            "lost its data (restarted empty, or restored from an older copy) and version ids "
            "went back") in caplog.text


async def test_a_version_id_that_comes_back_naming_another_table_is_logged(
        client: redis.Redis, reader: SnapshotReader, caplog: pytest.LogCaptureFixture) -> None:
    # Redis restored from an older copy (v000005 current, counter 5) after v000006 to
    # v000010: the next seed is v000006 again, another table, and nothing was said of it.
    for g in (1, 2):
        await seed(client, g)
    dump = await asyncio.to_thread(lambda: {k: client.dump(k) for k in client.keys("*")})
    await reader.start()
    third = await seed(client, 3)
    await reader.wait_for_version(third, timeout=2.0)
    await asyncio.to_thread(client.flushdb)  # the older copy comes back
    for key, value in dump.items():
        await asyncio.to_thread(client.restore, key, 0, value)
    await reader.wait_until(lambda s: generation_of(s) == 2, timeout=2.0)
    assert await seed(client, 4) == third  # its id again, another table
    await reader.wait_until(lambda s: generation_of(s) == 4, timeout=2.0)
    assert (f"routing version {third} is another table than the {third} this router routed "
            "with before: Redis lost its data") in caplog.text


async def test_a_rollback_is_not_taken_for_lost_data(
        client: redis.Redis, reader: SnapshotReader, caplog: pytest.LogCaptureFixture) -> None:
    from redis_seed.store import rollback

    await seed(client, 1)
    await seed(client, 2)
    await reader.start()
    assert await asyncio.to_thread(rollback, client) == "v000001"
    await reader.wait_for_version("v000001", timeout=1.0)
    assert "started again" not in caplog.text


async def test_a_newer_version_pruned_under_an_older_one_is_not_taken_for_lost_data(
        client: redis.Redis, reader: SnapshotReader) -> None:
    # Seeds running at once switch out of id order, and one's prune can remove the newer
    # version a router holds while an older one becomes current: the routers said Redis had
    # lost its data and version ids had started again. The id counter is past the held id
    # then; after a real loss it is not.
    from redis_seed.keys import Keys

    for g in (1, 2, 3):
        await seed(client, g)
    await reader.start()
    await asyncio.to_thread(client.zrem, Keys().versions, "v000003")  # another seed's prune
    assert not await reader._ids_started_again("v000003", "v000002")
    await asyncio.to_thread(client.set, Keys().counter, 2)  # the counter lost with the data
    assert await reader._ids_started_again("v000003", "v000002")
    # A counter damaged by hand gives no evidence either way: the warning, not an error
    # that stopped every later version from being taken.
    await asyncio.to_thread(client.set, Keys().counter, "oops")
    assert await reader._ids_started_again("v000003", "v000002")


async def test_on_change_is_called_with_each_new_snapshot(client: redis.Redis,
                                                          redis_server: str) -> None:
    changes: list[str] = []

    async def on_change(snapshot: Snapshot) -> None:
        changes.append(snapshot.version)

    async with SnapshotReader(redis_server, on_change=on_change) as r:
        v1 = await seed(client, 1)
        await r.wait_for_version(v1, timeout=1.0)
        v2 = await seed(client, 2)
        await r.wait_for_version(v2, timeout=1.0)
    assert changes == [v1, v2]


async def test_the_password_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://:s3cret-pass@127.0.0.1:{port}/0"
    async with SnapshotReader(url) as r:
        await asyncio.wait_for(_until(lambda: r.failed_attempts >= 1), timeout=5.0)
    assert "unavailable" in caplog.text
    assert "s3cret-pass" not in caplog.text
    assert "redis://:***@127.0.0.1" in caplog.text


async def test_a_version_is_built_with_the_garbage_collector_paused(
        client: redis.Redis, reader: SnapshotReader, monkeypatch: pytest.MonkeyPatch) -> None:
    """Collections during a big table's build doubled its load time: the collector is off
    while a version is built and on again afterwards, also after a version that fails."""
    seen: list[bool] = []
    real_build = Snapshot.build

    def build(table: RoutingTable, version: str) -> Snapshot:
        seen.append(gc.isenabled())
        if table.defaults.ring_timeout == 3:  # generation 3
            raise ValueError("a version this router cannot index")
        return real_build(table, version)

    monkeypatch.setattr(Snapshot, "build", build)
    assert gc.isenabled()
    await seed(client, 1)
    await reader.start()
    assert seen == [False] and gc.isenabled()
    broken = await seed(client, 3)
    await asyncio.wait_for(_until(lambda: len(seen) == 2), timeout=2.0)
    assert seen == [False, False] and gc.isenabled()
    assert reader.version != broken and routes_a_call(reader.snapshot) == 1



async def test_a_user_that_may_not_subscribe_follows_by_polling_and_says_so_once(
        redis_server: str, client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    # Redis 7 gives a new ACL user no pub/sub channel. The reader's SUBSCRIBE failed at its
    # first read: "Redis is unavailable", "available again", a new connection, some 13 times
    # a second for as long as it ran.
    caplog.set_level(logging.INFO, logger="redis_seed.reader")
    client.execute_command("ACL", "SETUSER", "router", "on", ">routerpw", "~outbound-router:*",
                           "+@read", "+@connection", "+@pubsub")  # no &channel
    await seed(client, 1)
    url = redis_server.replace("redis://", "redis://router:routerpw@")
    connections = int(client.info("stats")["total_connections_received"])
    async with SnapshotReader(url, poll_interval=0.2) as r:
        for g in (2, 3):
            version = await seed(client, g)
            assert generation_of(await r.wait_for_version(version, timeout=2.0)) == g
        assert r.connected
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "may not subscribe to outbound-router:notify" in m
                and "&outbound-router:notify" in m]) == 1, messages
    assert not [m for m in messages if "unavailable" in m or "available again" in m], messages
    assert "routerpw" not in "\n".join(messages)
    # The reader's connection, and those of the two seeds and the stats reads.
    assert int(client.info("stats")["total_connections_received"]) - connections <= 3


async def test_a_version_missing_for_a_moment_is_loaded_once_it_is_there(
        redis_server: str, client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    # Redis lost its data between the reads of the current pointer and of the version (a
    # restart without persistence, a failover to a replica behind): the reader marked the
    # version bad for good, and stayed on the old one after the operator had seeded the
    # same files again (same ids, same checksums), while every other router moved on.
    await seed(client, 1)
    v2_key = Keys().version("v000002").encode()
    flushed = asyncio.Event()

    def factory(url: str) -> redis.asyncio.Redis:
        made = async_client(url)
        real = made.hgetall

        async def hgetall(name: str | bytes) -> Any:
            if (name.encode() if isinstance(name, str) else name) == v2_key \
                    and not flushed.is_set():
                await asyncio.to_thread(client.flushall)  # Redis restarted empty, here
                flushed.set()
            return await real(name)

        made.hgetall = hgetall  # type: ignore[method-assign]
        return made

    async with SnapshotReader(redis_server, poll_interval=0.2, client_factory=factory) as r:
        assert r.version == "v000001"
        await seed(client, 2)
        await flushed.wait()
        assert await seed(client, 1) == "v000001"
        assert await seed(client, 2) == "v000002"
        snapshot = await r.wait_until(lambda s: generation_of(s) == 2, timeout=3.0)
        assert snapshot.version == "v000002"
    missing = [rec for rec in caplog.records if "is not in Redis" in rec.getMessage()]
    assert len(missing) == 1, [rec.getMessage() for rec in caplog.records]


async def test_an_unexpected_error_neither_stops_the_start_nor_ends_hot_reload(
        redis_server: str, client: redis.Redis, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # start() raised on a current pointer of another program (bytes that are no UTF-8): the
    # ari and agi services died at start. Any error but Redis down or a bad version (a bug)
    # ended the background task in silence: no more hot reload, even after a good seed.
    client.hset(Keys().current, mapping={"version": b"\xff\xfe", "sha256": b"\xff"})
    async with SnapshotReader(redis_server, poll_interval=0.1, max_backoff=0.2) as r:
        assert r.snapshot is None
        v1 = await seed(client, 1)  # repairs the pointer
        assert generation_of(await r.wait_for_version(v1, timeout=2.0)) == 1
        build = reader_module._build
        failures = [RuntimeError("a bug")]

        def build_with_a_bug(*args: Any) -> Any:
            if failures:
                raise failures.pop()
            return build(*args)

        monkeypatch.setattr(reader_module, "_build", build_with_a_bug)
        v2 = await seed(client, 2)
        assert generation_of(await r.wait_for_version(v2, timeout=2.0)) == 2
    assert not failures
    errors = [rec for rec in caplog.records if "snapshot reader failed" in rec.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is not None, errors  # with its traceback


async def test_a_version_with_a_regex_that_stalls_calls_is_routed_and_named(
        client: redis.Redis, reader: SnapshotReader,
        caplog: pytest.LogCaptureFixture) -> None:
    # Seeded before validate counted what a regex can cost: routed with as it is (it is the
    # current version), with a warning naming the pattern and a number that takes seconds.
    import dataclasses

    from routing.model import TargetPattern

    table = generation_table(1)
    slow = TargetPattern("q1", regex=r"^\+(1|11|\d|[0-9])*2")
    table = dataclasses.replace(table, patterns={**table.patterns, "q1": slow})
    version = await asyncio.to_thread(publish, client, table)
    await reader.start()
    assert reader.version == version
    assert (f"routing version {version}: the regex of target pattern 'q1' can take about "
            "103,894,022 ways to match a number such as +111111111111111") in caplog.text
    assert "target pattern 'p1'" not in caplog.text
