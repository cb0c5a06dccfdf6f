"""The reader side of the Redis versions: an always-usable in-memory routing snapshot.

Used by the ARI app and the AGI server::

    reader = SnapshotReader(settings.redis_url)
    await reader.start()
    ...
    snapshot = reader.snapshot          # None only until a first version was ever loaded
    plan(snapshot, digits, tenant, rng=rng)
    ...
    await reader.close()

How it follows the current version (SPEC section 5):

- it subscribes to the notify channel and, besides, checks the current pointer every
  ``poll_interval`` seconds, so a missed message costs at most one interval (a Redis user
  that may not subscribe gets polling alone, said once);
- a new version is read (one immutable hash), checked against its checksum, decoded and indexed
  off the event loop, then swapped in with one assignment: callers see the old snapshot or the
  new one, never a mix; a version that fails to load is logged once and the old one kept;
- when Redis goes away, or stops answering for READ_TIMEOUT (hung, stopped, a silent
  partition), it logs one warning, keeps routing from the last snapshot, reconnects with
  capped, jittered exponential backoff, and logs the recovery; any other error is logged
  with its traceback once per kind and retried the same way: hot reload never stops;
- through Sentinel, it asks at each poll which master the Sentinels name, and moves to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import random
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from routing.model import RoutingTable
from routing.snapshot import Snapshot

from . import cache
from .advice import misconfigured, short_reason
from .connection import SENTINEL_TIMEOUT, async_client, close_async_client, sentinel_count
from .errors import VersionStoreError
from .gc_pause import collector_paused
from .keys import DEFAULT_PREFIX, F_SHA256, F_VERSION, Keys, fields, text, version_number
from .regex_cost import MAX_PATHS, regex_cost
from .store import decode_version
from .urls import mask_url

log = logging.getLogger(__name__)

#: Errors that mean "Redis cannot be used right now" (connection refused or lost, timeouts,
#: authentication, a key of the wrong type...): keep the last snapshot and back off.
REDIS_DOWN = (RedisError, OSError)
#: Errors of a stored version that cannot be turned into a snapshot.
BAD_VERSION = (VersionStoreError, ValueError, KeyError, TypeError, AttributeError, re.error)

ClientFactory = Callable[[str], redis.asyncio.Redis]
#: Kept versions, newest first, a reader with nothing loaded tries when the current one
#: cannot be read.
FALL_BACK_TRIES = 5
#: The reads that tell whether Redis answers (the current pointer, subscribing, asking the
#: Sentinels for the master) give up after this: a stopped or hung Redis, which neither
#: answers nor closes the connection, is an outage after 2 s rather than after the socket
#: timeout twice (20 s), and a Sentinel failover away from it is followed at once. A version's
#: own data, which may be megabytes on a slow link, keeps the socket timeout.
READ_TIMEOUT = 2.0
#: Redis refused the credentials: tried again every 5 to 6 s rather than every 0.5 s, with one
#: login a try (each is a failed login in Redis's ACL log, where alarms for password
#: guessing look).
REFUSED_BACKOFF = 5.0
#: Sentinels that did not answer the master check are asked again after this (s).
SENTINEL_RETRY = 5.0
#: Version ids whose checksum a reader remembers (about 100 bytes each).
SEEN_MAX = 10_000


def _redis_down(exc: BaseException) -> BaseException | None:
    """The REDIS_DOWN error ``exc`` is, or was raised while handling: under uvloop, redis-py's
    reconnect can write to the transport the server just closed, and a RuntimeError ("unable
    to perform operation on <TCPTransport closed=True ...>") comes out with the
    ConnectionError as its context. None: not Redis trouble (a bug, another program's
    data)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, REDIS_DOWN):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _malloc_trim() -> Callable[[], None]:
    """glibc keeps the heap pages a decoded version freed (the JSON text, the old snapshot);
    ``malloc_trim`` gives them back to the system: about 20 MB at 100,000 routes."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to give back this way
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]

    def release() -> None:
        trim(0)

    return release


_trim = _malloc_trim()


def _release_memory() -> None:
    gc.collect()
    _trim()


def _build(fields: dict[bytes, bytes], version: str,
           sha256: str | None) -> tuple[RoutingTable, Snapshot]:
    with collector_paused():  # (twice as fast for big tables)
        table = decode_version(fields, version, sha256)
        snapshot = Snapshot.build(table, version)
    _warn_of_slow_regexes(table, version)
    return table, snapshot


def _warn_of_slow_regexes(table: RoutingTable, version: str) -> None:
    """A version seeded before `validate` counted what a regex can cost may hold one that
    stalls every call for seconds on some numbers: routed with all the same, and named."""
    for pattern in table.patterns.values():
        if pattern.regex is None:
            continue
        cost = regex_cost(pattern.regex)
        if cost.too_slow:
            log.warning("routing version %s: the regex of target pattern %r can take about "
                        "%s ways to match a number such as %s (validate now refuses more "
                        "than %s): every call waits meanwhile; seed a routes file without it",
                        version, pattern.name, f"{cost.paths:,}", cost.worst, f"{MAX_PATHS:,}")


class SnapshotReader:
    """Keeps :attr:`snapshot` equal to the current routing version in Redis."""

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        poll_interval: float = 0.5,
        initial_backoff: float = 0.1,
        #: Redis back (restarted, failed over), a seed is often made at once: SPEC's "every
        #: router sees a new version within 1 s" holds only if the reader is back by then.
        max_backoff: float = 0.5,
        on_change: Callable[[Snapshot], Awaitable[None] | None] | None = None,
        client_factory: ClientFactory = async_client,
        #: A file of this machine that keeps the last version loaded (redis_seed/cache.py):
        #: started while Redis has none for it, the reader routes with that one.
        cache: Path | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        self._url = redis_url
        self._safe_url = mask_url(redis_url)
        self._keys = Keys(prefix)
        self._poll_interval = poll_interval
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._backoff = initial_backoff
        self._on_change = on_change
        self._client_factory = client_factory
        self._cache = cache
        self._cache_failed = False
        self._client: redis.asyncio.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._snapshot: Snapshot | None = None
        self._sha256: str | None = None
        self._bad: tuple[str, str | None] | None = None  # a version that failed to load
        self._missing: tuple[str, str | None] | None = None  # named current, not in Redis
        self._failures_logged: set[str] = set()  # kinds of unexpected errors logged
        self._empty_logged = False
        #: The Redis user may not SUBSCRIBE to the notify channel: follow by polling alone.
        self._poll_only = False
        self._down_since: float | None = None
        self._last_answer: float | None = None  # when Redis last answered the pointer read
        self._refused = False  # the last try failed on the credentials
        #: (event loop time) the Sentinels did not answer the master check: none before
        #: this; 0 while they answer
        self._sentinels_again_at = 0.0
        #: The checksum of each version id this reader loaded, the last SEEN_MAX of them: an
        #: id that comes back naming another table (Redis restored from an older copy).
        self._seen: dict[str, str | None] = {}
        self._changed = asyncio.Event()
        self._closing = False
        #: Connection attempts that failed since the reader started (for monitoring).
        self.failed_attempts = 0

    # -- what callers use -----------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot | None:
        """The routing snapshot to use now (``None`` until a first version was loaded)."""
        return self._snapshot

    @property
    def version(self) -> str | None:
        return self._snapshot.version if self._snapshot is not None else None

    @property
    def connected(self) -> bool:
        """False while Redis is known to be unreachable."""
        return self._down_since is None

    async def start(self) -> None:
        """Load the current version if Redis answers, then follow it in the background.

        Never raises for Redis trouble: when Redis is down at start, :attr:`snapshot` stays
        ``None`` until it comes back.
        """
        if self._task is not None:
            raise RuntimeError("SnapshotReader already started")
        self._client = self._client_factory(self._url)
        try:
            await self._check()
        except Exception as exc:  # noqa: BLE001 (nothing may stop the router's start)
            self._trouble(exc)
        if self._snapshot is None and self._cache is not None:
            await self._load_cache()
        self._task = asyncio.create_task(self._run(), name="routing-snapshot-reader")

    async def close(self) -> None:
        # The flag as well as the cancel: redis-py's read timeouts can swallow a cancellation
        # that arrives while a read times out (Python 3.11), so the loop also checks the flag.
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            await close_async_client(client)

    async def __aenter__(self) -> SnapshotReader:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def wait_until(self, predicate: Callable[[Snapshot], bool],
                         timeout: float) -> Snapshot:  # noqa: ASYNC109 (a test helper)
        """Wait until the snapshot satisfies ``predicate``; TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                snapshot = self._snapshot
                if snapshot is not None and predicate(snapshot):
                    return snapshot
                await changed.wait()

    async def wait_for_version(self, version: str,
                               timeout: float) -> Snapshot:  # noqa: ASYNC109
        return await self.wait_until(lambda s: s.version == version, timeout)

    # -- following the current version -----------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._follow()
            except Exception as exc:  # noqa: BLE001 (a bug must not end hot reload for good)
                self._trouble(exc)
            if self._closing:
                return
            # jitter: many routers, one Redis (refused credentials: no sooner than 5 s)
            delay = (REFUSED_BACKOFF * random.uniform(1.0, 1.2) if self._refused
                     else self._backoff * random.uniform(0.5, 1.0))
            self._backoff = min(self._backoff * 2, self._max_backoff)
            await asyncio.sleep(delay)

    async def _follow(self) -> None:
        assert self._client is not None
        if self._poll_only:
            await self._poll()
            return
        pubsub = self._client.pubsub()
        try:
            try:
                # (get_message: the reply to SUBSCRIBE, which redis-py does not wait for)
                async with self._answers_within(self._connect_bound()):
                    await pubsub.subscribe(self._keys.notify)
                    await pubsub.get_message(timeout=self._poll_interval)
            except NoPermissionError as exc:
                self._poll_only = True
                log.warning("the Redis user of %s may not subscribe to %s (%s): new routing "
                            "versions are found by polling every %g s instead; grant it "
                            "(ACL SETUSER USER &%s)", self._safe_url, self._keys.notify, exc,
                            self._poll_interval, self._keys.notify)
                return  # (to _poll, once this connection is closed)
            # Subscribed first, checked second: a version published in between is not missed.
            await self._check()
            self._recovered()
            loop = asyncio.get_running_loop()
            next_poll = loop.time() + self._poll_interval
            while not self._closing:
                timeout = max(0.0, next_poll - loop.time())
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=timeout)
                if message is not None:
                    # A burst of seeds: drain what is queued, then load only the latest.
                    while await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=0.0) is not None:
                        pass
                    await self._check()
                    next_poll = loop.time() + self._poll_interval
                elif loop.time() >= next_poll:
                    if await self._master_moved():
                        return  # (to subscribe again, on the new master)
                    await self._check()
                    next_poll = loop.time() + self._poll_interval
        finally:
            with contextlib.suppress(*REDIS_DOWN):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _poll(self) -> None:
        """Follow by reading the current pointer every ``poll_interval`` alone (no pub/sub)."""
        await self._check()
        self._recovered()
        while not self._closing:
            await asyncio.sleep(self._poll_interval)
            if await self._master_moved():
                return
            await self._check()

    def _connect_bound(self) -> float:
        """How long a read that may have to connect first can take: asking each Sentinel
        for the master (SENTINEL_TIMEOUT each that does not answer) and redis-py's
        handshake."""
        assert self._client is not None
        return READ_TIMEOUT + SENTINEL_TIMEOUT * sentinel_count(self._client)

    @contextlib.asynccontextmanager
    async def _answers_within(self, seconds: float) -> Any:
        """Redis's answer within ``seconds``, else a redis-py TimeoutError (an outage). The
        command in flight is cancelled, and redis-py drops its connection."""
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError:
            raise RedisTimeoutError(f"no answer within {seconds:g} s") from None

    async def _master_moved(self) -> bool:
        """Through Sentinel: the master the Sentinels name is no longer the one this reader
        reads. A failover away from a master that still answers (SENTINEL FAILOVER, a
        partition) leaves it up and read-only, and a reader that kept reading it saw the
        versions seeded on the new master only once the Sentinels made it a replica of it
        (about 10 s). One SENTINEL MASTERS a poll; redis-py drops the idle connections.

        Sentinels that do not answer (or name no master) are no outage of the master this
        reader reads, which does answer: reading goes on from it, said once, and the
        Sentinels are asked again every SENTINEL_RETRY s rather than at each poll."""
        assert self._client is not None
        pool: Any = self._client.connection_pool
        read = getattr(pool, "master_address", None)
        if read is None or not hasattr(pool, "get_master_address"):
            return False  # a plain Redis URL, or not connected yet
        loop = asyncio.get_running_loop()
        if loop.time() < self._sentinels_again_at:
            return False
        try:
            async with self._answers_within(self._connect_bound()):
                named = await pool.get_master_address()
        except REDIS_DOWN as exc:
            if not self._sentinels_again_at:
                log.warning("the Sentinels of %s do not answer (%s: %s): reading on from the "
                            "master %s:%s, which does; a failover is followed once they answer",
                            self._safe_url, type(exc).__name__, short_reason(exc), read[0], read[1])
            self._sentinels_again_at = loop.time() + SENTINEL_RETRY
            return False
        if self._sentinels_again_at:
            self._sentinels_again_at = 0.0
            log.info("the Sentinels of %s answer again", self._safe_url)
        if tuple(named) == tuple(read):
            return False
        log.info("the Sentinels name %s:%s as the master of %s now (it was %s:%s): reading "
                 "from it", named[0], named[1], self._safe_url, read[0], read[1])
        return True

    async def _check(self) -> None:
        """Load the current version if it is not the one held."""
        assert self._client is not None
        async with self._answers_within(READ_TIMEOUT):
            current = fields(await self._client.hgetall(self._keys.current))
        self._last_answer = asyncio.get_running_loop().time()
        raw_version = current.get(F_VERSION.encode())
        raw_sha = current.get(F_SHA256.encode())
        if raw_version is None:
            if not self._empty_logged:
                self._empty_logged = True
                log.warning("Redis at %s holds no routing version yet under REDIS_PREFIX %r "
                            "(run `outbound-router seed FILE`); %s", self._safe_url,
                            self._keys.prefix, self._holding())
            return
        self._empty_logged = False
        try:
            version = raw_version.decode()
            sha = raw_sha.decode() if raw_sha is not None else None
        except UnicodeDecodeError:
            version, sha = repr(raw_version), None
        held = self._snapshot
        if held is not None and held.version == version and self._sha256 == sha:
            return
        if self._bad == (version, sha):
            return  # already logged
        stored = fields(await self._client.hgetall(self._keys.version(version)))
        if not stored:
            # Not kept (yet): Redis lost its data between the two reads, or a replica has not
            # got the version yet. Read again at the next poll, logged once.
            if self._missing != (version, sha):
                self._missing = (version, sha)
                if held is not None or not await self._fall_back(version, "not in Redis"):
                    log.warning("routing version %s, named current, is not in Redis; %s",
                                version, self._holding())
            return
        self._missing = None
        try:
            table, snapshot = await asyncio.to_thread(_build, stored, version, sha)
        except BAD_VERSION as exc:
            if held is not None or not await self._fall_back(version, exc):
                log.warning("routing version %s not loaded, %s: %s", version, self._holding(),
                            exc)
            self._bad = (version, sha)  # not read again until the pointer moves: logged once
            return
        routes = len(table.routes)
        del table
        if self._seen.get(version, sha) != sha:
            log.warning("routing version %s is another table than the %s this router routed "
                        "with before: Redis lost its data (restarted empty, or restored from "
                        "an older copy) and gave a version id again (a ROUTER_VERSION in CDRs "
                        "may now name two tables; keep Redis persistent)", version, version)
        elif held is not None and await self._ids_started_again(held.version, version):
            log.warning("routing version %s replaces %s, which Redis no longer keeps: Redis "
                        "lost its data (restarted empty, or restored from an older copy) and "
                        "version ids went back (a ROUTER_VERSION in CDRs may now name two "
                        "tables; keep Redis persistent)", version, held.version)
        await self._swap(snapshot, sha, routes)
        self._save(stored)

    async def _fall_back(self, bad: str, why: object) -> bool:
        """Nothing is loaded and the current version cannot be (a newer release's data
        format, damaged data, evicted): load the newest kept version that can, as a router
        that was already running keeps the one it holds. Otherwise this router, restarted
        during a rolling upgrade, turned every call away (ERROR) while its siblings routed
        them. False when no kept version can be read either."""
        assert self._client is not None
        newest = await self._client.zrevrange(self._keys.versions, 0, FALL_BACK_TRIES - 1)
        for version in (text(v) for v in newest):
            if version == bad:
                continue
            stored = fields(await self._client.hgetall(self._keys.version(version)))
            try:
                table, snapshot = await asyncio.to_thread(_build, stored, version, None)
            except BAD_VERSION:
                continue
            log.warning("routing version %s not loaded: %s; routing from version %s, the "
                        "newest kept version this router can read, until %s can be read or "
                        "another version is seeded", bad, why,
                        version, bad)
            sha = text(stored[F_SHA256.encode()])
            await self._swap(snapshot, sha, len(table.routes))
            self._save(stored)
            return True
        return False

    # -- the local copy (ROUTES_CACHE) ------------------------------------------------------

    def _save(self, stored: dict[bytes, bytes]) -> None:
        """Keep the version just loaded in the cache file, when there is one (a failure is
        logged once until a write succeeds again). On the event loop: the stored version is
        compressed (1.2 MB for 100,000 routes), written in about 2 ms without an fsync, once
        per version. Written from a worker thread instead, it left the reader 25 to 30 MB
        larger after each reload of 100,000 routes (bench/bench_seed.py --cache)."""
        if self._cache is None:
            return
        try:
            cache.write(self._cache, self._keys.prefix, stored)
        except OSError as exc:
            if not self._cache_failed:
                log.warning("cannot write the routes cache %s (%s): started while Redis is "
                            "away, this router would have no routes", self._cache, exc)
            self._cache_failed = True
        else:
            self._cache_failed = False

    async def _load_cache(self) -> None:
        """Nothing could be loaded from Redis at start: route with the version this router
        (or the one before it on this path) last loaded, until Redis has one."""
        assert self._cache is not None
        try:
            cached = await asyncio.to_thread(cache.read, self._cache)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("routes cache %s not used: %s", self._cache, exc)
            return
        if cached.prefix != self._keys.prefix:
            log.warning("routes cache %s not used: it holds a version read under REDIS_PREFIX "
                        "%r, not %r", self._cache, cached.prefix, self._keys.prefix)
            return
        version = cached.fields.get(F_VERSION.encode(), b"?").decode("utf-8", "replace")
        try:
            table, snapshot = await asyncio.to_thread(_build, cached.fields, version, None)
        except BAD_VERSION as exc:
            log.warning("routes cache %s not used: %s", self._cache, exc)
            return
        log.warning("routing from version %s of the routes cache %s (written %s), Redis "
                    "having none for this router now; the version Redis names current "
                    "replaces it as soon as it can be read", version, self._cache,
                    cached.written)
        await self._swap(snapshot, text(cached.fields[F_SHA256.encode()]), len(table.routes))

    async def _ids_started_again(self, held: str, version: str) -> bool:
        """A version numbered at or below the one held, which Redis no longer lists, with the
        id counter below it too: not a rollback (its target is kept), nor two seeds switching
        out of id order (the counter is past both), but a Redis that lost its data (two
        reads, only then)."""
        assert self._client is not None
        try:
            held_number = version_number(held)
            if version_number(version) > held_number:
                return False
        except ValueError:
            return False
        pipe = self._client.pipeline(transaction=False)
        pipe.zscore(self._keys.versions, held)
        pipe.get(self._keys.counter)
        score, counter = await pipe.execute()
        if score is not None:
            return False
        try:
            return counter is None or int(counter) < held_number
        except ValueError:  # a counter damaged by hand: no evidence either way, as if lost
            return True

    async def _swap(self, snapshot: Snapshot, sha: str | None, routes: int) -> None:
        previous = self._snapshot
        self._snapshot = snapshot  # the one assignment callers can observe
        self._sha256 = sha
        self._seen.pop(snapshot.version, None)  # (the newest last)
        self._seen[snapshot.version] = sha
        if len(self._seen) > SEEN_MAX:
            del self._seen[next(iter(self._seen))]
        self._bad = None
        log.info("routing version %s loaded (%d routes)%s", snapshot.version, routes,
                 f", replacing {previous.version}" if previous is not None else "")
        del previous  # the old snapshot goes now, unless a call still holds it
        _release_memory()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._on_change is not None:
            try:
                result: Any = self._on_change(snapshot)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # a listener's bug must not stop hot reload
                log.exception("on_change callback failed for routing version %s",
                              snapshot.version)

    # -- outage bookkeeping ---------------------------------------------------------------

    def _holding(self) -> str:
        if self._snapshot is None and self._task is None and self._cache is not None:
            return f"no routing version loaded yet: the routes cache {self._cache} is read next"
        if self._snapshot is None:
            return "no routing version loaded: calls get ERROR until one is"
        return f"routing continues from version {self._snapshot.version}"

    def _trouble(self, exc: Exception) -> None:
        """Whatever stopped a read: an outage when Redis is the cause, else a failure."""
        down = _redis_down(exc)
        if down is not None:
            self._outage(down)
        else:
            self._failed(exc)

    def _outage(self, exc: BaseException) -> None:
        self.failed_attempts += 1
        self._refused = isinstance(exc, AuthenticationError)
        if self._down_since is not None:
            log.debug("Redis at %s still unavailable: %s", self._safe_url, exc)
            return
        # Since its last answer: a hung Redis is found out only once a read gives up.
        self._down_since = self._last_answer or asyncio.get_running_loop().time()
        fix = misconfigured(exc, self._url, self._keys.prefix)
        log.warning("Redis at %s is unavailable (%s: %s); %s; reconnecting with backoff "
                    "(%s)%s", self._safe_url, type(exc).__name__, short_reason(exc),
                    self._holding(), f"every {REFUSED_BACKOFF:g} s or so" if self._refused
                    else f"at most every {self._max_backoff:.1f} s", f". {fix}" if fix else "")

    def _failed(self, exc: Exception) -> None:
        """An error that is neither Redis unreachable nor a bad version (a bug, or data of
        another program): logged with its traceback once per kind, then retried."""
        kind = type(exc).__name__
        if kind in self._failures_logged:
            log.debug("routing snapshot reader failed again: %s: %s", kind, exc)
            return
        self._failures_logged.add(kind)
        log.error("the routing snapshot reader failed (%s: %s); %s; trying again with "
                  "backoff", kind, exc, self._holding(), exc_info=exc)

    def _recovered(self) -> None:
        self._backoff = self._initial_backoff
        self._refused = False
        if self._down_since is None:
            return
        down_for = asyncio.get_running_loop().time() - self._down_since
        self._down_since = None
        log.info("Redis at %s is available again after %.1f s; routing version %s",
                 self._safe_url, down_for, self.version or "none")
