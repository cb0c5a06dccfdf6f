"""Versions of the routing table in Redis: publish (seed), list, roll back, load (SPEC section 5).

A seed writes the complete new version under its own key (one hash, written by one script, so
it exists whole or not at all, and never over another version), then one Lua script checks it,
publishes its id on the notify channel, switches the current pointer and records it in the
list of versions: all in one atomic step. Until that step, readers keep seeing the previous
version; if the seed fails before it, the new key expires on its own within an hour and is
never listed.

Each version stores a SHA-256 of its data and its route count, so a reader detects a partial or
corrupted value and keeps what it has. Key names: :mod:`redis_seed.keys`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis
from redis.commands.core import Script

from routing.model import RoutingTable

from .codec import FORMAT_COLUMNS, FORMAT_DICT, from_data, to_data
from .errors import (
    CorruptVersion,
    NoCurrentVersion,
    NoSuchVersion,
    SwitchNotConfirmed,
    VersionStoreError,
)
from .keys import (
    DEFAULT_KEEP,
    F_CREATED,
    F_DATA,
    F_ENCODING,
    F_FORMAT,
    F_ROUTES,
    F_SHA256,
    F_SOURCE,
    F_VERSION,
    Keys,
    fields,
    format_version,
    is_version_id,
    text,
    version_number,
)

log = logging.getLogger(__name__)

#: Format of the stored data (:mod:`redis_seed.codec`); a reader refuses one it does not know.
DATA_FORMAT = FORMAT_COLUMNS
#: zlib-compressed JSON: a 100,000-route table is ~5x smaller, which matters when many
#: routers load each new version.
ENCODING_ZLIB_JSON = "zlib+json"
ENCODING_JSON = "json"
#: A version written but never made current (a seed that died half-way) disappears by itself.
UNPUBLISHED_TTL = 3600

#: Switches the history keeps (`rollback` without a version goes back through them).
HISTORY_MAX = 100

# KEYS: current pointer, version hash, versions zset, history list.
# ARGV: version id, sha256, number, channel, mode, the current version expected (mode 'back'),
# HISTORY_MAX.
# Checks that no key is of another type (a foreign key under the prefix: Lua does not undo
# the writes before an error) and that the version is there whole (its checksum field
# matches), then announces, switches, persists and lists it, atomically. The announcement
# comes before the first write: a user that may not publish on the channel (Redis 7 gives a
# new ACL user no channel) fails there with nothing changed, and no reader can read before
# the script ends anyway. Mode 'push' (a seed, `rollback VERSION`) adds it to the history;
# mode 'back' (`rollback`) goes back in the history to it, provided the current version is
# still the one the target was chosen from.
_SWITCH_LUA = """
for i, kind in ipairs({'hash', 'hash', 'zset', 'list'}) do
  local found = redis.call('TYPE', KEYS[i]).ok
  if found ~= kind and found ~= 'none' then
    return redis.error_reply('FOREIGNKEY ' .. KEYS[i] .. ' ' .. found .. ' ' .. kind)
  end
end
local sha = redis.call('HGET', KEYS[2], 'sha256')
if sha ~= ARGV[2] then
  return redis.error_reply('NOVERSION ' .. ARGV[1])
end
if ARGV[5] == 'back' and redis.call('HGET', KEYS[1], 'version') ~= ARGV[6] then
  return redis.error_reply('CHANGED ' .. ARGV[6])
end
redis.call('PUBLISH', ARGV[4], ARGV[1])
if ARGV[5] == 'back' then
  local at = nil
  for i, v in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
    if v == ARGV[1] then
      at = i
      break
    end
  end
  if at then
    redis.call('LTRIM', KEYS[4], at - 1, -1)
  else
    redis.call('DEL', KEYS[4])
    redis.call('RPUSH', KEYS[4], ARGV[1])
  end
else
  redis.call('LPUSH', KEYS[4], ARGV[1])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
end
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'sha256', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""


# KEYS: the new version's hash. ARGV: UNPUBLISHED_TTL, then its fields and values.
# Writes the version only where no other is (a counter moved back by hand or by a concurrent
# seed's repair must not write over a version), with the expiry of an unpublished one.
_WRITE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: Version ids a seed tries before it gives up (each one taken by a version kept or written).
ID_TRIES = 100

# KEYS: current pointer, versions zset, then the hash of each version in ARGV (same order).
# Removes those versions, but not the one current when it runs; returns the ids removed.
_PRUNE_LUA = """
local current = redis.call('HGET', KEYS[1], 'version')
local removed = {}
for i, id in ipairs(ARGV) do
  if id ~= current then
    redis.call('ZREM', KEYS[2], id)
    redis.call('DEL', KEYS[i + 2])
    removed[#removed + 1] = id
  end
end
return removed
"""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    created: datetime | None
    source: str
    routes: int
    sha256: str
    current: bool

    def __str__(self) -> str:
        created = self.created.strftime("%Y-%m-%d %H:%M:%SZ") if self.created else "?"
        mark = "*" if self.current else " "
        routes = "route " if self.routes == 1 else "routes"
        return f"{mark} {self.version}  {created}  {self.routes:>7} {routes}  {self.source}"


# -- encoding ---------------------------------------------------------------------------


def encode_table(table: RoutingTable, *, compress: bool = True,
                 fmt: str = DATA_FORMAT) -> tuple[bytes, str]:
    """``(blob, encoding)`` of a table, as stored in a version's ``data`` field."""
    raw = json.dumps(to_data(table, fmt), separators=(",", ":"), ensure_ascii=False).encode()
    if compress:
        return zlib.compress(raw, 1), ENCODING_ZLIB_JSON
    return raw, ENCODING_JSON


def decode_version(fields: Mapping[bytes, bytes], version: str,
                   sha256: str | None = None) -> RoutingTable:
    """Check and decode a version hash (``HGETALL``); :class:`CorruptVersion` if anything is off.

    ``sha256`` is the checksum named by the current pointer, when there is one.
    """
    if not fields:
        raise NoSuchVersion(f"version {version} is not in Redis (pruned, or never written)")

    def field(name: str) -> bytes:
        try:
            return fields[name.encode()]
        except KeyError:
            raise CorruptVersion(f"version {version} has no {name!r} field: "
                                 "it was not written whole") from None

    def text(name: str) -> str:
        try:
            return field(name).decode()
        except UnicodeDecodeError:
            raise CorruptVersion(f"version {version} has a {name!r} field that is not "
                                 "text") from None

    stored_sha = text(F_SHA256)
    data = field(F_DATA)
    actual = hashlib.sha256(data).hexdigest()
    if actual != stored_sha or (sha256 is not None and stored_sha != sha256):
        raise CorruptVersion(f"version {version} does not match its checksum: "
                             "partial or corrupted write")
    if text(F_VERSION) != version:
        raise CorruptVersion(f"key of version {version} holds version {text(F_VERSION)}")
    fmt = text(F_FORMAT)
    if fmt not in (FORMAT_DICT, FORMAT_COLUMNS):
        raise CorruptVersion(f"version {version} has data format {fmt}, this router reads "
                             f"formats {FORMAT_DICT} and {FORMAT_COLUMNS}: upgrade the router")
    encoding = text(F_ENCODING)
    try:
        if encoding == ENCODING_ZLIB_JSON:
            data = zlib.decompress(data)
        elif encoding != ENCODING_JSON:
            raise CorruptVersion(f"version {version} has unknown encoding {encoding!r}")
        table = from_data(json.loads(data), fmt)
    except (zlib.error, ValueError, KeyError, IndexError, TypeError, AttributeError,
            RecursionError) as exc:  # (data of any shape passes the checksum of its writer)
        raise CorruptVersion(f"version {version} cannot be decoded: {exc}") from exc
    try:
        expected_routes = int(field(F_ROUTES))
    except ValueError:
        raise CorruptVersion(f"version {version} has a {F_ROUTES!r} field that is no "
                             "number") from None
    if len(table.routes) != expected_routes:
        raise CorruptVersion(f"version {version} holds {len(table.routes)} routes, "
                             f"{expected_routes} were written")
    return table


# -- publish side -----------------------------------------------------------------------


def _switch_script(client: redis.Redis) -> Script:
    return client.register_script(_SWITCH_LUA)


def _switch(client: redis.Redis, keys: Keys, version: str, sha256: str, *,
            back_from: str | None = None) -> None:
    """Make ``version`` current; ``back_from``: going back in the history from that version
    (`rollback` without a version), which must still be the current one."""
    try:
        _switch_script(client)(
            keys=[keys.current, keys.version(version), keys.versions, keys.history],
            args=[version, sha256, version_number(version), keys.notify,
                  "back" if back_from else "push", back_from or "", HISTORY_MAX],
        )
    except redis.ResponseError as exc:
        if "NOVERSION" in str(exc):
            raise NoSuchVersion(f"version {version} is not kept in Redis") from None
        if str(exc).startswith("FOREIGNKEY"):
            _, key, found, kind = str(exc).split()
            raise VersionStoreError(
                f"the Redis key {key} is a {found}, not the {kind} this product keeps there: "
                "another program writes under this prefix (set REDIS_PREFIX to another "
                "prefix, or remove the key); nothing was changed") from None
        if "CHANGED" in str(exc):
            raise VersionStoreError(f"the current version changed from {back_from} while "
                                    "rolling back: nothing was done (see `outbound-router "
                                    "versions`, then roll back again)") from None
        if "can't publish to the channel" in str(exc):
            raise VersionStoreError(
                f"the Redis user of REDIS_URL may not publish on the channel {keys.notify}, "
                f"which tells the routers of a new version: grant it (ACL SETUSER USER "
                f"&{keys.notify}); nothing was changed") from None
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if isinstance(exc.__context__, ConnectionRefusedError):
            raise  # no connection at all: never sent, nothing changed ("cannot reach Redis")
        # The switch may have been sent, and run, before the answer was lost: "cannot reach
        # Redis" made an operator seed again, and the first switch had been made 35 s later.
        raise SwitchNotConfirmed(
            f"Redis did not confirm the switch to version {version} ({exc}): it may have "
            "been made, now or once Redis gets to it, or not at all. See `outbound-router "
            "versions` (the current version is marked) before seeding or rolling back "
            "again") from None


def publish(client: redis.Redis, table: RoutingTable, *, source: str = "",
            keep: int = DEFAULT_KEEP, keys: Keys | None = None,
            fmt: str = DATA_FORMAT) -> str:
    """Write ``table`` as a new version (never over another), then announce it and make it
    current in one atomic script; prune.

    Returns the new version id (``v000042``). On any failure before the switch, the current
    version is unchanged. Pruning happens after the switch; its failure is logged, not raised.
    """
    if keep < 1:
        raise ValueError("keep must be >= 1")
    keys = keys or Keys()
    blob, encoding = encode_table(table, fmt=fmt)
    sha256 = hashlib.sha256(blob).hexdigest()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    write = client.register_script(_WRITE_LUA)
    for _ in range(ID_TRIES):
        version = _next_version_id(client, keys)
        # The script refuses an id whose key exists (a seed that died before its switch, a
        # counter set back): the next id then. No clean-up on failure: an unpublished version
        # expires by itself, and deleting it after a lost reply could delete a switch that
        # did happen.
        if write(keys=[keys.version(version)], args=[
                UNPUBLISHED_TTL, F_VERSION, version, F_FORMAT, fmt, F_ENCODING, encoding,
                F_SHA256, sha256, F_ROUTES, len(table.routes), F_CREATED, created, F_SOURCE,
                source, F_DATA, blob]):
            break
    else:
        raise VersionStoreError(f"no free version id after {ID_TRIES} tries: does another "
                                f"program write under the prefix {keys.prefix}? (see "
                                "`outbound-router versions`); nothing was changed")
    _switch(client, keys, version, sha256)
    log.info("published routing version %s (%d routes, from %s)", version, len(table.routes),
             source or "?")
    try:
        prune(client, keep, keys=keys)
    except redis.RedisError as exc:
        log.warning("could not prune old routing versions: %s", exc)
    return version


# KEYS: the counter, the versions zset. The next id, and the id the counter stood at when it
# was behind the newest version kept (0 when not). In one step, so that the counter only
# ever moves forward: checked after the INCR, a concurrent seed's newer version took it for
# a counter left behind and set it back (under ids other seeds had taken).
_NEXT_ID_LUA = """
local n = redis.call('INCR', KEYS[1])
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if top[2] ~= nil and n <= tonumber(top[2]) then
  redis.call('SET', KEYS[1], top[2])
  return {redis.call('INCR', KEYS[1]), n}
end
return {n, 0}
"""


def _next_version_id(client: redis.Redis, keys: Keys) -> str:
    """The counter's next version id. A counter behind the versions kept (lost to eviction
    or a clean-up, or keys restored without it) is moved past the newest first."""
    try:
        number, behind = (int(x) for x in client.register_script(_NEXT_ID_LUA)(
            keys=[keys.counter, keys.versions]))
    except redis.ResponseError as exc:
        if "not an integer" not in str(exc):
            raise
        found = client.get(keys.counter)
        if isinstance(found, bytes):
            found = found.decode("utf-8", "replace")
        top = client.zrevrange(keys.versions, 0, 0, withscores=True)
        newest = int(top[0][1]) if top else 0
        raise VersionStoreError(
            f"the version counter {keys.counter} holds {found!r}, not a whole number: set it "
            f"to the newest version's number (`redis-cli SET {keys.counter} {newest}`; "
            "`outbound-router versions` lists the versions kept); nothing was changed") from None
    if behind:
        log.warning("the version counter %s was behind the versions kept (at %d): moved past "
                    "the newest", keys.counter, behind)
    return format_version(number)


def eviction_risk(client: redis.Redis) -> str | None:
    """What is wrong when Redis may evict the routing keys, which never expire: the current
    pointer or a version gone under memory pressure (a Redis shared with a cache), a router
    that starts afterwards has no routes. None when it may not, or cannot be asked (CONFIG is
    often refused to application users)."""
    try:
        reply = cast(dict[str, str], client.config_get("maxmemory-policy"))
    except redis.RedisError:
        return None
    policy = text(next(iter(reply.values()), ""))
    if not policy.startswith("allkeys"):
        return None
    return (f"Redis evicts any key under memory pressure (maxmemory-policy {policy}): the "
            "current routing version could go, and a router started then would have no "
            "routes. Use noeviction or a volatile-* policy for the router's Redis.")


#: How long `seed` and `rollback` wait for the master's replicas to have the switch: the
#: second within which SPEC section 5 has every router see a new version.
REPLICA_WAIT = 1.0


def unreplicated(client: redis.Redis, timeout: float = REPLICA_WAIT) -> str | None:
    """What is wrong when the master's replicas have not all acknowledged the writes made so
    far on this connection within ``timeout`` (WAIT): a Sentinel failover now would promote a
    replica without the new version, and routers would go back to the one before. None when
    they have, when there are none (no wait then), or when Redis cannot be asked."""
    try:
        info = client.info("replication")
        replicas = int(info.get("connected_slaves", 0))
        if info.get("role") != "master" or replicas < 1:
            return None
        acked = int(client.wait(replicas, int(timeout * 1000)))
    except (redis.RedisError, ValueError):
        return None
    if acked >= replicas:
        return None
    return (f"{acked} of the master's {replicas} replicas had the change within {timeout:g} s: "
            "should Redis fail over to one that lacks it, routers go back to the version "
            "before (see `outbound-router versions` after a failover)")


def _current(client: redis.Redis, keys: Keys) -> tuple[str | None, str | None]:
    current = fields(client.hgetall(keys.current))
    version = current.get(F_VERSION.encode())
    sha = current.get(F_SHA256.encode())
    try:
        return (version.decode() if version else None, sha.decode() if sha else None)
    except UnicodeDecodeError:
        raise CorruptVersion(f"the Redis key {keys.current} holds no version id: another "
                             "program writes under this prefix (set REDIS_PREFIX to another "
                             "prefix, or seed again)") from None


def current_version(client: redis.Redis, *, keys: Keys | None = None) -> str | None:
    return _current(client, keys or Keys())[0]


def prune(client: redis.Redis, keep: int = DEFAULT_KEEP, *, keys: Keys | None = None) -> list[str]:
    """Remove versions beyond the newest ``keep``; return them. Never the current one, nor
    the one `rollback` would go back to (the version a seed just replaced, however old)."""
    keys = keys or Keys()
    ids = _kept_ids(client, keys)  # oldest first
    current = current_version(client, keys=keys)
    spared = {current, _back_target(client, keys, current, set(ids)) if current else None}
    doomed = [v for v in ids[: max(0, len(ids) - keep)] if v not in spared]
    if doomed:
        # In one script that skips the version current when it runs: a rollback to one of
        # them between the reads above and here must not lose the version it made current.
        removed = client.register_script(_PRUNE_LUA)(
            keys=[keys.current, keys.versions, *(keys.version(v) for v in doomed)],
            args=doomed)
        doomed = [text(v) for v in cast(list[Any], removed)]
        if doomed:
            log.info("pruned routing versions %s", ", ".join(doomed))
    return doomed


def _kept_ids(client: redis.Redis, keys: Keys) -> list[str]:
    """The ids in the set of kept versions, oldest first; not a member another program put
    there (``foo``): compared by number, it stopped the prune after a seed's switch (a
    traceback) and every `rollback`."""
    return [v for v in (text(m) for m in cast(list[Any], client.zrange(keys.versions, 0, -1)))
            if is_version_id(v)]


def list_versions(client: redis.Redis, *, keys: Keys | None = None) -> list[VersionInfo]:
    """The versions kept in Redis, oldest first, the current one marked."""
    keys = keys or Keys()
    ids = _kept_ids(client, keys)
    current = current_version(client, keys=keys)
    pipe = client.pipeline(transaction=False)
    for v in ids:
        pipe.hmget(keys.version(v), [F_CREATED, F_SOURCE, F_ROUTES, F_SHA256])
    infos = []
    for v, (created, source, routes, sha) in zip(ids, pipe.execute(), strict=True):
        if sha is None:
            continue  # pruned between the two reads
        infos.append(VersionInfo(
            version=v,
            created=_parse_time(created),
            source=text(source) if source else "",
            routes=int(routes) if routes and routes.isdigit() else 0,
            sha256=sha.decode("utf-8", "replace"),
            current=v == current,
        ))
    return infos


def _parse_time(raw: bytes | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.strptime(raw.decode(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _back_target(client: redis.Redis, keys: Keys, current: str,
                 kept: set[str]) -> str | None:
    """Where `rollback` without a version goes from ``current``: the version that was current
    before it (the history's next entry still kept), so a version rolled away from does not
    come back after the next seed. Past the history's end (versions seeded before it was
    kept, or pruned), the kept version just before it by number."""
    history = [text(v) for v in cast(list[Any], client.lrange(keys.history, 0, -1))]
    if history and history[0] == current:
        earlier = next((v for v in history[1:] if v in kept and v != current), None)
        if earlier is not None:
            return earlier
    older = [v for v in kept if version_number(v) < version_number(current)]
    return max(older, key=version_number, default=None)


def rollback(client: redis.Redis, version: str | None = None, *,
             keys: Keys | None = None) -> str:
    """Make ``version`` current again; by default the version that was current before the
    current one (seed A, seed B, rollback: A; seed C, rollback: A again, not B).

    Raises :class:`NoSuchVersion` when it is not kept, :class:`NoCurrentVersion` when there is
    nothing to roll back from, ValueError for a malformed id.
    """
    keys = keys or Keys()
    back_from = None
    if version is None:
        back_from = current_version(client, keys=keys)
        if back_from is None:
            raise _nothing_seeded(keys)
        kept = set(_kept_ids(client, keys))
        version = _back_target(client, keys, back_from, kept)
        if version is None:
            raise NoSuchVersion(f"no version before {back_from} is kept: nothing to roll "
                                "back to (see `outbound-router versions`)")
    else:
        version_number(version)  # ValueError for "42" or "latest"
        if version == current_version(client, keys=keys):
            # Switching would announce a change that is none, and add the version to the
            # history once more.
            log.info("routing version %s is already current: nothing changed", version)
            return version
    stored = fields(client.hgetall(keys.version(version)))
    if not stored or client.zscore(keys.versions, version) is None:
        raise NoSuchVersion(f"version {version} is not kept in Redis "
                            "(see `outbound-router versions`)")
    # Readers would refuse it and stay where they are, while `versions` named it current.
    try:
        decode_version(stored, version)
    except CorruptVersion as exc:
        raise CorruptVersion(f"{exc}; the current version is unchanged") from None
    _switch(client, keys, version, text(stored[F_SHA256.encode()]), back_from=back_from)
    log.info("rolled back to routing version %s", version)
    return version


def _nothing_seeded(keys: Keys) -> NoCurrentVersion:
    return NoCurrentVersion(f"Redis holds no routing version yet under REDIS_PREFIX "
                            f"{keys.prefix!r}: run `outbound-router seed FILE`")


def current_gone(version: str) -> str:
    """What to say of a current version that is not in Redis, and what to do."""
    return (f"the current version {version} is not in Redis (evicted, or deleted: keep Redis "
            "from evicting the routing keys): `outbound-router rollback VERSION` to a kept "
            "one, or seed again")


def load_current(client: redis.Redis, *, keys: Keys | None = None) -> tuple[str, RoutingTable]:
    """The current version and its table (for ``explain`` without a file)."""
    keys = keys or Keys()
    for _ in range(3):  # the current version may be pruned between the two reads: re-read
        version, sha = _current(client, keys)
        if version is None:
            raise _nothing_seeded(keys)
        stored = fields(client.hgetall(keys.version(version)))
        if stored:
            return version, decode_version(stored, version, sha)
    assert version is not None  # (the loop raised on None)
    raise NoSuchVersion(current_gone(version))
