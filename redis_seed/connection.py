"""Redis clients from a URL: ``redis://``, ``rediss://`` (TLS), and Sentinel (the URL forms
are in :mod:`redis_seed.urls`). URLs are logged with :func:`mask_url` only: a password never
reaches a log line.
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.retry
import redis.sentinel
from redis.backoff import ExponentialBackoff, NoBackoff

from .urls import (
    SentinelTarget,
    check_redis_url,
    is_sentinel_url,
    parse_sentinel_url,
    url_scheme,
)

#: Fail fast: the reader has its own backoff, and a seed should say "unreachable" quickly.
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 10.0
#: A Sentinel answers SENTINEL MASTERS at once: one that does not within this (stopped, hung,
#: a black hole) is passed over for the next one in the URL, without retrying it. With the
#: Redis defaults (10 s and three retries) one hung Sentinel first in the list held every
#: command and every reconnect for about 110 s; at 0.5 s, Sentinels answering in 0.4 to
#: 0.6 s (a loaded host) made a reader connect and fail by turns.
SENTINEL_TIMEOUT = 1.0


def _for_redis_py(url: str) -> str:
    """``url`` with its scheme in lower case: the check takes ``REDIS://`` (schemes are
    case-insensitive, RFC 3986), redis-py's ``from_url`` only ``redis://``."""
    scheme = url_scheme(url)
    return scheme + url[len(scheme):]


def _common(overrides: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    kwargs.update(overrides)
    return kwargs


def _sentinel_kwargs(url: str, kwargs: dict[str, Any], no_retry: Any,
                     ) -> tuple[SentinelTarget, dict[str, Any], dict[str, Any]]:
    """The parsed Sentinel URL, the arguments of a (sync or asyncio) ``Sentinel``, and those
    of its ``master_for`` besides the service name. ``no_retry``: a (sync or asyncio)
    ``Retry`` that does not retry, for the Sentinels' own connections."""
    t = parse_sentinel_url(url)
    tls = {"ssl": True, **dict(t.tls)} if t.sentinel_ssl else {}
    sentinel = {"sentinel_kwargs": {"password": t.sentinel_password,
                                    "socket_connect_timeout": SENTINEL_TIMEOUT,
                                    "socket_timeout": SENTINEL_TIMEOUT,
                                    "retry": no_retry, **tls},
                **kwargs}
    master = {"db": t.db, "username": t.username, "password": t.password, "ssl": t.ssl,
              **dict(t.tls)}
    return t, sentinel, master


def sync_client(url: str, **overrides: Any) -> redis.Redis:
    """A redis-py client for ``url`` (for the CLI: seed, versions, rollback, explain)."""
    check_redis_url(url)
    kwargs = _common(overrides)
    if is_sentinel_url(url):
        t, sentinel_kwargs, master_kwargs = _sentinel_kwargs(
            url, kwargs, redis.retry.Retry(NoBackoff(), 0))
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(t.hosts), **sentinel_kwargs)
        master = sentinel.master_for(  # type: ignore[no-untyped-call]
            t.service_name, **master_kwargs)
        return cast(redis.Redis, master)
    return redis.Redis.from_url(_for_redis_py(url), **kwargs)


class _RetryUnlessRefused(redis.asyncio.retry.Retry):
    """redis-py's retry, less refused credentials (an AuthenticationError is a
    ConnectionError to redis-py): each try is one more failed login in Redis's ACL log."""

    async def call_with_retry(self, do: Any, fail: Any, is_retryable: Any = None,
                              with_failure_count: bool = False) -> Any:
        def retryable(error: Exception) -> bool:
            return (not isinstance(error, redis.AuthenticationError)
                    and (is_retryable is None or is_retryable(error)))

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


def async_client(url: str, **overrides: Any) -> redis.asyncio.Redis:
    """A ``redis.asyncio`` client for ``url`` (for the reader in the ARI app and AGI server).

    Retries inside redis-py are kept short: the reader backs off on its own and must notice an
    outage quickly rather than hang a poll for seconds.
    """
    check_redis_url(url)
    overrides.setdefault("retry", _RetryUnlessRefused(
        ExponentialBackoff(cap=0.2, base=0.05), retries=1))
    kwargs = _common(overrides)
    if is_sentinel_url(url):
        t, sentinel_kwargs, master_kwargs = _sentinel_kwargs(
            url, kwargs, redis.asyncio.retry.Retry(NoBackoff(), 0))
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(t.hosts), **sentinel_kwargs)
        master = sentinel.master_for(t.service_name, **master_kwargs)
        return cast(redis.asyncio.Redis, master)
    return redis.asyncio.Redis.from_url(_for_redis_py(url), **kwargs)


def sentinel_count(client: redis.Redis | redis.asyncio.Redis) -> int:
    """How many Sentinels a client made by :func:`sync_client` or :func:`async_client` asks
    for its master (0: a plain Redis URL)."""
    return len(_sentinels(client))


def _sentinels(client: redis.Redis | redis.asyncio.Redis) -> list[Any]:
    """The clients of the sentinels behind a Sentinel-made client (none for a plain one)."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))


def close_client(client: redis.Redis) -> None:
    """Close a :func:`sync_client`, with its connections to the sentinels when it has any
    (closing the master client alone leaves those open)."""
    client.close()
    for sentinel in _sentinels(client):
        sentinel.close()


async def close_async_client(client: redis.asyncio.Redis) -> None:
    """Close an :func:`async_client`, with its connections to the sentinels when it has any."""
    await client.aclose()
    for sentinel in _sentinels(client):
        await sentinel.aclose()
