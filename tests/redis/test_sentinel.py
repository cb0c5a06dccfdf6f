"""Redis Sentinel for real (SPEC section 5): a master, a replica and a Sentinel on loopback.
The CLI seeds through a ``redis+sentinel://`` URL, and a reader keeps routing through a
failover and then follows the versions published to the promoted replica."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis_tables import generation_of, generation_table

from outbound_router.local_redis import RedisProcess
from redis_seed.connection import close_client, sync_client
from redis_seed.reader import SnapshotReader
from redis_seed.store import publish
from routing.plan import Status, plan

SERVICE = "mymaster"
EXAMPLE = Path(__file__).resolve().parents[2] / "redis_seed" / "routes.example.yaml"


@dataclass
class Cluster:
    master: RedisProcess
    replica: RedisProcess
    sentinel: RedisProcess

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}"

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel.port, decode_responses=True)


def wait_for_sentinel_event(pubsub: redis.client.PubSub, channel: str,
                            timeout: float) -> str:
    """The next message the Sentinel publishes on ``channel`` (subscribed beforehand)."""
    while True:
        message = pubsub.get_message(timeout=timeout)  # blocks until a message or timeout
        if message is None:
            raise TimeoutError(f"the Sentinel published no {channel} within {timeout} s")
        if message["type"] == "message" and message["channel"] == channel:
            return str(message["data"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from _cluster(tmp_path)


@pytest.fixture
def stubborn_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A master the Sentinel cannot turn into a replica (as one cut off from it by a
    partition): after a failover it stays up, a master, with the old data."""
    yield from _cluster(tmp_path, "--rename-command", "REPLICAOF", "",
                        "--rename-command", "SLAVEOF", "")


def _cluster(tmp_path: Path, *master_options: str) -> Iterator[Cluster]:
    master = RedisProcess(tmp_path / "master", "--repl-diskless-sync-delay", "0",
                          *master_options)
    master.start()
    replica = RedisProcess(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    conf = tmp_path / "sentinel" / "sentinel.conf"
    conf.parent.mkdir()
    conf.write_text(
        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 500\n"
        f"sentinel failover-timeout {SERVICE} 2000\n")
    sentinel = RedisProcess(conf.parent, "--sentinel", config=conf)
    procs = [master, replica, sentinel]
    try:
        replica.start()
        sentinel.start()
        c = Cluster(master, replica, sentinel)
        # Failover needs the Sentinel to know the replica (it learns it from the master's INFO).
        with c.sentinel_client() as s:
            pubsub = s.pubsub()
            pubsub.subscribe("+slave")
            if not s.sentinel_slaves(SERVICE):
                wait_for_sentinel_event(pubsub, "+slave", timeout=15)
            pubsub.close()
        yield c
    finally:
        for proc in procs:
            proc.kill()


def test_the_cli_seeds_and_lists_versions_through_a_sentinel(cluster: Cluster) -> None:
    env = {**os.environ, "REDIS_URL": cluster.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "outbound_router.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    seeded = cli("seed", str(EXAMPLE))
    assert seeded.returncode == 0, seeded.stderr
    version = seeded.stdout.strip()
    listing = cli("versions")
    assert listing.returncode == 0 and version in listing.stdout
    with redis.Redis(port=cluster.master.port) as master:  # it went to the master
        assert master.exists(f"outbound-router:version:{version}")


def test_seed_and_rollback_warn_when_a_replica_lacks_the_switch(cluster: Cluster) -> None:
    # A seed acknowledged by the master alone, which a failover then loses: routers went
    # back to the version before without a word from `seed`.
    env = {**os.environ, "REDIS_URL": cluster.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "outbound_router.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    with redis.Redis(port=cluster.master.port) as master:  # the replica's first sync done
        master.set("synced", 1)
        assert master.wait(1, 15000) == 1
    first = cli("seed", str(EXAMPLE))
    assert first.returncode == 0 and "warning" not in first.stderr, first.stderr
    os.kill(cluster.replica.proc.pid, signal.SIGSTOP)  # connected, but acknowledges nothing
    try:
        second = cli("seed", str(EXAMPLE))
        back = cli("rollback")
    finally:
        os.kill(cluster.replica.proc.pid, signal.SIGCONT)
    assert second.returncode == 0, second.stderr  # the master has it: routers take it
    assert "warning: 0 of the master's 1 replicas had the change within 1 s" in second.stderr
    assert (back.returncode, back.stdout) == (0, first.stdout), back.stderr
    assert "0 of the master's 1 replicas" in back.stderr
    again = cli("rollback", second.stdout.strip())
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr


def seeded_and_replicated(cluster: Cluster) -> tuple[redis.Redis, str]:
    """A client through the Sentinel that seeded generation 1, once the replica has it (the
    replica may then be promoted), and that version."""
    seeder = sync_client(cluster.url)
    v1 = publish(seeder, generation_table(1))
    with redis.Redis(port=cluster.master.port) as master:
        assert master.wait(1, 5000) == 1
    return seeder, v1


async def failed_over(cluster: Cluster, act: Callable[[redis.Redis], object]) -> int:
    """Do ``act`` (given a client of the Sentinel), then wait for the Sentinel's failover:
    the new master's port."""
    with cluster.sentinel_client() as s:
        pubsub = s.pubsub()
        pubsub.subscribe("+switch-master")
        await asyncio.to_thread(act, s)
        switched = await asyncio.to_thread(wait_for_sentinel_event, pubsub, "+switch-master", 30)
        pubsub.close()
    return int(switched.split()[-1])


async def test_a_reader_routes_through_a_failover_and_follows_the_new_master(
        cluster: Cluster) -> None:
    seeder, v1 = seeded_and_replicated(cluster)
    reader = SnapshotReader(cluster.url, poll_interval=0.5, max_backoff=0.5)
    await reader.start()
    try:
        assert reader.version == v1
        assert await failed_over(cluster, lambda _: cluster.master.kill()) == cluster.replica.port
        # Meanwhile calls were routed from the last version loaded.
        p = plan(reader.snapshot, "+34911234567", rng=random.Random(1))  # type: ignore[arg-type]
        assert p.status is Status.OK
        # A seed through the same URL reaches the promoted replica; the reader follows it.
        v2 = await asyncio.to_thread(publish, seeder, generation_table(2))
        snapshot = await reader.wait_for_version(v2, timeout=15)
        assert generation_of(snapshot) == 2
    finally:
        await reader.close()
        close_client(seeder)


def ask_for_failover(sentinel: redis.Redis) -> None:
    """SENTINEL FAILOVER, once the Sentinel has seen the replica in sync: it reads a replica's
    INFO every 10 s, and until then answers NOGOODSLAVE."""
    deadline = time.monotonic() + 15
    while True:
        try:
            sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
            return
        except redis.ResponseError as exc:
            if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)  # the Sentinel's next look at the replica has no event to wait on


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never answers: a hung Sentinel (the kernel
    completes the handshakes, nobody reads)."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        yield hole.getsockname()[1]


def test_a_hung_sentinel_first_in_the_url_is_passed_over(cluster: Cluster,
                                                         silent_port: int) -> None:
    # With redis-py's defaults (10 s, three retries) `versions` took 114 s, and a router
    # reconnecting through such a URL as long.
    url = f"redis+sentinel://127.0.0.1:{silent_port},127.0.0.1:{cluster.sentinel.port}/{SERVICE}"
    seeded = subprocess.run([sys.executable, "-m", "outbound_router.cli", "seed", str(EXAMPLE)],
                            env={**os.environ, "REDIS_URL": url}, capture_output=True,
                            text=True, timeout=15)
    assert seeded.returncode == 0, seeded.stderr
    listing = subprocess.run([sys.executable, "-m", "outbound_router.cli", "versions"],
                             env={**os.environ, "REDIS_URL": url}, capture_output=True,
                             text=True, timeout=15)
    assert seeded.stdout.strip() in listing.stdout, listing.stderr


async def test_a_reader_follows_a_failover_away_from_a_master_that_still_answers(
        stubborn_cluster: Cluster) -> None:
    # A failover away from a master that still answers (a partition; SENTINEL FAILOVER until
    # the Sentinel makes the old master its replica, about 10 s on a tester's set): a reader
    # that kept reading the old master did not see the versions seeded on the new one (SPEC
    # section 5: within 1 s).
    cluster = stubborn_cluster
    seeder, v1 = seeded_and_replicated(cluster)
    reader = SnapshotReader(cluster.url, poll_interval=0.5, max_backoff=0.5)
    await reader.start()
    try:
        assert reader.version == v1
        assert await failed_over(cluster, ask_for_failover) == cluster.replica.port
        later = sync_client(cluster.url)  # a later `seed` asks the Sentinel anew
        try:
            v2 = await asyncio.to_thread(publish, later, generation_table(2))
        finally:
            close_client(later)
        with redis.Redis(port=cluster.master.port) as old:
            assert not old.exists(f"outbound-router:version:{v2}")  # the old one lacks it
        snapshot = await reader.wait_for_version(v2, timeout=1.5)
        assert generation_of(snapshot) == 2
    finally:
        await reader.close()
        close_client(seeder)


def test_sentinels_that_do_not_answer_or_know_no_such_service_are_told_apart(
        cluster: Cluster, silent_port: int) -> None:
    # Both said "cannot reach Redis ...: No master found for 'x'. Start Redis".
    def versions(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "outbound_router.cli", "versions"],
                              env={**os.environ, "REDIS_URL": url}, capture_output=True,
                              text=True, timeout=15)

    silent = versions(f"redis+sentinel://127.0.0.1:{silent_port}/{SERVICE}")
    assert silent.returncode == 2, silent.stderr
    assert "no Sentinel of redis+sentinel://127.0.0.1:" in silent.stderr
    assert "answered" in silent.stderr and "correct their addresses" in silent.stderr
    unknown = versions(f"redis+sentinel://127.0.0.1:{cluster.sentinel.port}/no-such-service")
    assert unknown.returncode == 2, unknown.stderr
    assert "name no master: No master found for 'no-such-service'" in unknown.stderr
    assert "SENTINEL MASTERS" in unknown.stderr


async def test_sentinels_that_stop_answering_do_not_stop_a_reader_on_a_master_that_does(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    # The per-poll master check took Sentinels that did not answer for an outage of Redis:
    # the reader dropped its master and stayed on the old version until they answered again.
    seeder, v1 = seeded_and_replicated(cluster)
    reader = SnapshotReader(cluster.url, poll_interval=0.5, max_backoff=0.5)
    await reader.start()
    # Subscribed and reading (a new connection asks the Sentinels for the master: without
    # them none can be made, and redis-py keeps no last known address).
    await reader.wait_for_version(await asyncio.to_thread(publish, seeder, generation_table(3)),
                                  timeout=2.0)
    os.kill(cluster.sentinel.proc.pid, signal.SIGSTOP)
    try:
        with redis.Redis(port=cluster.master.port) as master:  # seeded on the master itself
            v2 = await asyncio.to_thread(publish, master, generation_table(2))
        await reader.wait_for_version(v2, timeout=2.0)
        await asyncio.to_thread(
            wait_for_log, caplog, "the Sentinels of redis+sentinel://", timeout=5)
        assert reader.connected and "is unavailable" not in caplog.text
        assert caplog.text.count("do not answer") == 1
    finally:
        os.kill(cluster.sentinel.proc.pid, signal.SIGCONT)
        await reader.close()
        close_client(seeder)


def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in caplog.text:
        assert time.monotonic() < deadline, f"no {text!r} logged within {timeout} s"
        time.sleep(0.05)  # a log line has no event to wait on
