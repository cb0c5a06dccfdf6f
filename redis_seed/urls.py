"""Redis URLs without redis-py: schemes, Sentinel URLs, checks and password masking.

Kept apart from :mod:`redis_seed.connection` (which imports redis-py) so that settings can be
checked, and URLs masked for a log line, by anything without loading the client library.

Sentinel URLs name the sentinels and the monitored service::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]
    rediss+sentinel://...                       (TLS to the master)
    ...?sentinel_password=SECRET                (when the sentinels have their own password)

The user and password are the master's; the sentinel port defaults to 26379.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
PLAIN_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
EXPECTED = "redis://[[user]:password@]host:port/db, rediss://..., unix:///path or " \
    "redis+sentinel://host:port[,host:port]/service"


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    hosts: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def url_scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f"not a Redis URL: {mask_url(url)!r} (expected redis://host:port/db, "
                         "rediss://..., or redis+sentinel://host:port/service)")
    return scheme.lower()


def is_sentinel_url(url: str) -> bool:
    return url_scheme(url) in SENTINEL_SCHEMES


_USERINFO_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/?#]*)@")
_SECRET_QUERY_RE = re.compile(r"(?i)([?&](?:sentinel_)?password=)[^&#]*")


def mask_url(url: str) -> str:
    """The URL with every password replaced by ``***`` (for logs and error messages)."""
    def userinfo(m: re.Match[str]) -> str:
        user, colon, _ = m["userinfo"].partition(":")
        return f"{m['scheme']}{user}:***@" if colon else f"{m['scheme']}***@"

    return _SECRET_QUERY_RE.sub(r"\1***", _USERINFO_RE.sub(userinfo, url, count=1))


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[[user]:pass@]h1[:p1][,h2[:p2]]/service[/db][?sentinel_password=]``."""
    scheme = url_scheme(url)
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL: {mask_url(url)!r}")
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, colon, secret = userinfo.partition(":")
        if colon:
            username = unquote(user) or None
            password = unquote(secret) or None
        else:
            password = unquote(user) or None
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        if not part:
            raise ValueError(f"empty sentinel address in {mask_url(url)!r}")
        m = re.fullmatch(r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<p6>[0-9]+))?|"
                         r"(?P<host>[^:\[\]]+)(?::(?P<port>[0-9]+))?", part)
        if m is None:
            raise ValueError(f"bad sentinel address {part!r} in {mask_url(url)!r}")
        host = m["v6"] or m["host"]
        port = int(m["p6"] or m["port"] or DEFAULT_SENTINEL_PORT)
        if not 0 < port < 65536:
            raise ValueError(f"bad sentinel port {port} in {mask_url(url)!r}")
        hosts.append((host, port))
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments:
        raise ValueError(f"the Sentinel URL {mask_url(url)!r} names no service: "
                         "add /service_name (e.g. /mymaster)")
    if len(segments) > 2:
        raise ValueError(f"too many path segments in {mask_url(url)!r}: "
                         "expected /service_name[/db]")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"bad database number {segments[1]!r} in {mask_url(url)!r}")
        db = int(segments[1])
    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown Sentinel URL option(s) {', '.join(sorted(unknown))} in "
                         f"{mask_url(url)!r}: only sentinel_password is understood")
    sentinel_password = params.get("sentinel_password", [None])[-1] or None
    return SentinelTarget(hosts=tuple(hosts), service_name=segments[0], db=db,
                          username=username, password=password,
                          sentinel_password=sentinel_password,
                          ssl=scheme == "rediss+sentinel")


def check_redis_url(url: str) -> None:
    """Raise ValueError, saying what is wrong (password masked), unless ``url`` is a Redis URL
    this product can use. Nothing is connected to."""
    scheme = url_scheme(url)
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return
    if scheme not in PLAIN_SCHEMES:
        raise ValueError(f"unsupported scheme {scheme!r} in {mask_url(url)!r}: expected {EXPECTED}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsing it is the check: "abc", 99999 raise ValueError)
    except ValueError as exc:
        raise ValueError(f"malformed Redis URL {mask_url(url)!r} ({exc}): expected {EXPECTED}") \
            from None
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"the Redis URL {mask_url(url)!r} names no socket path")
        return
    db = unquote(parts.path).strip("/")
    if db and not db.isdigit():
        raise ValueError(f"bad database number {db!r} in {mask_url(url)!r}: "
                         "expected /0, /1...")
