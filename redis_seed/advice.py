"""What went wrong with Redis, and what to do about it, in words an operator can act on.

The CLI prints :func:`redis_problem` and exits 2; the routers' reader adds
:func:`misconfigured` to its outage warning when waiting will not mend it (a wrong password,
an untrusted certificate...). URLs appear masked only: a password never reaches a message.
"""

from __future__ import annotations

import redis
import redis.asyncio.sentinel
import redis.sentinel

from .urls import has_password, mask_url, unreadable_tls_files

_URL_FORM = "redis://[user]:password@host:port/db"


def short_reason(exc: BaseException) -> str:
    """``str(exc)``, less what redis-py appends to "No master found for 'x'": the repr of
    every Sentinel client it asked and their errors (about 2 KB)."""
    if isinstance(exc, (redis.sentinel.MasterNotFoundError,  # (one per client kind)
                        redis.asyncio.sentinel.MasterNotFoundError)):
        return str(exc).split(" : ", 1)[0]
    return str(exc)


def redis_problem(exc: BaseException, url: str, prefix: str) -> str:
    """What went wrong with the Redis at ``url`` (keys under ``prefix``) and what to do."""
    return _problem(exc, url, prefix)[0]


def misconfigured(exc: BaseException, url: str, prefix: str) -> str | None:
    """:func:`redis_problem` when ``exc`` comes of a setting that waiting does not mend
    (credentials, permissions, TLS trust, a file, a Sentinel service name); None for an
    outage."""
    message, lasting = _problem(exc, url, prefix)
    return message if lasting else None


def _problem(exc: BaseException, url: str, prefix: str) -> tuple[str, bool]:
    """The message, and whether it is a setting to mend rather than an outage to wait out."""
    where = mask_url(url)
    reason = short_reason(exc).rstrip(".")
    if isinstance(exc, redis.AuthenticationError):
        if not has_password(url):
            return (f"Redis at {where} requires a password, and REDIS_URL gives none. Put it "
                    f"in REDIS_URL ({_URL_FORM}).", True)
        return (f"Redis at {where} refused the credentials: {reason}. Put the right user "
                f"and password in REDIS_URL ({_URL_FORM}).", True)
    # (a command refused inside a script is no NoPermissionError: "The user executing the
    # script can't run this command or subcommand script: ...")
    if isinstance(exc, redis.exceptions.NoPermissionError) or (
            "user executing the script can't" in reason):
        return (f"the Redis user of REDIS_URL may not do this: {reason}. Grant it read on the "
                f"keys {prefix}:*; to seed or roll back, also write on them, the commands "
                f"EVALSHA and SCRIPT LOAD, and PUBLISH on {prefix}:notify (ACL SETUSER USER "
                f"~{prefix}:* &{prefix}:notify +@connection +@read +@write +evalsha "
                "+script|load +publish).", True)
    if isinstance(exc, redis.ReadOnlyError):
        return (f"Redis at {where} is a read-only replica: {reason}. Point REDIS_URL at the "
                "master, or at the Sentinels (redis+sentinel://).", True)
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return (f"Redis at {where} is out of memory: {reason}. Free memory or raise its "
                "maxmemory.", False)
    # (redis-py has one for its asyncio Sentinel client and one for the other)
    if isinstance(exc, (redis.sentinel.MasterNotFoundError,
                        redis.asyncio.sentinel.MasterNotFoundError)):
        if " : " in str(exc):  # redis-py lists the Sentinels it could not ask
            return (f"no Sentinel of {where} answered: {reason}. Start them, or correct their "
                    "addresses in REDIS_URL (redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE).",
                    False)
        return (f"the Sentinels of {where} name no master: {reason}. Either the service name "
                "at the end of REDIS_URL is not one they monitor (a Sentinel's SENTINEL "
                "MASTERS lists them), or its master is down and no replica took over yet.",
                True)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return _unreachable(reason, where, url)
    if "DB index is out of range" in reason:
        return (f"Redis at {where} has no such database: {reason}. Name a database below its "
                "`databases` setting at the end of REDIS_URL (redis://host:port/0).", True)
    if "unknown command" in reason and "sentinel" in reason.lower():
        return (f"{where} is a plain Redis, not a Sentinel: {reason}. Use "
                "redis://host:port/db for it, or redis+sentinel://SENTINEL:26379/SERVICE for "
                "the Sentinels.", True)
    if reason.startswith("WRONGTYPE"):
        return (f"Redis at {where} answered with an error: {reason}. Does another program "
                f"use keys under REDIS_PREFIX {prefix!r}? Set REDIS_PREFIX to a "
                "prefix of the router's own.", True)
    return f"Redis at {where} answered with an error: {reason}.", False


def _unreachable(reason: str, where: str, url: str) -> tuple[str, bool]:
    """A Redis that could not be reached (or not over TLS)."""
    tls = url.startswith(("rediss://", "rediss+sentinel://"))
    if tls and "certificate verify failed" in reason:
        return (f"Redis at {where} speaks TLS, but this machine does not trust its "
                f"certificate: {reason}. Name the CA that signed it in REDIS_URL "
                "(?ssl_ca_certs=/path/to/ca.pem); for a certificate of another host name, "
                "connect by the name it gives.", True)
    unreadable = unreadable_tls_files(url) if tls else []
    if unreadable:
        return (f"REDIS_URL names {' and '.join(unreadable)}, which this user cannot read "
                f"({reason}). Correct the path, or the file's permissions.", True)
    hint = " Start Redis or set REDIS_URL (redis://[:password@]host:port/db)."
    if tls:
        # A plain Redis reads the TLS hello as a command and waits: a timeout, not a
        # refusal, so the usual advice alone would send the operator the wrong way.
        hint += (" A rediss:// URL needs a Redis that speaks TLS (tls-port); for a plain "
                 "one use redis://.")
    elif "reset by peer" in reason or "closed by server" in reason:
        # A Redis that speaks TLS only drops a plain client's first command.
        hint += " If that Redis speaks TLS only (tls-port), use rediss://."
    return f"cannot reach Redis at {where}: {reason}.{hint}", False
