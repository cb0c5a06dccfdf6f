"""Redis URLs without redis-py: schemes, Sentinel URLs, checks and password masking.

Kept apart from :mod:`redis_seed.connection` (which imports redis-py) so that settings can be
checked, and URLs masked for a log line, by anything without loading the client library.

Sentinel URLs name the sentinels and the monitored service::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]
    rediss+sentinel://...                       (TLS to the master)
    ...?sentinel_password=SECRET                (when the sentinels have their own password)
    rediss+sentinel://...?ssl_ca_certs=FILE     (the ssl_* options of rediss://, for the master
                                                 and, with sentinel_ssl=true, the sentinels)

The user and password are the master's; the sentinel port defaults to 26379.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from routing.numbers import all_digits

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
    #: TLS options of the connections (``ssl_ca_certs``...), as redis-py takes them
    tls: tuple[tuple[str, str | bool], ...] = ()
    #: TLS to the sentinels too (``sentinel_ssl=true``), with the same options
    sentinel_ssl: bool = False


def url_scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or not _SCHEME_RE.fullmatch(scheme):
        raise ValueError(f"not a Redis URL: {mask_url(url)!r} (expected redis://host:port/db, "
                         "rediss://..., or redis+sentinel://host:port/service)")
    return scheme.lower()


def is_sentinel_url(url: str) -> bool:
    return url_scheme(url) in SENTINEL_SCHEMES


_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
#: A known scheme with a mistyped ``://`` (``redis//``, ``redis:/``, ``http:``): a malformed
#: URL is shown with it, so that the reader sees what is wrong.
_LOOSE_SCHEME_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)(?::/{0,2}|/{1,2})")
_KNOWN_SCHEMES = (*PLAIN_SCHEMES, *SENTINEL_SCHEMES, "http", "https")
#: the value of a ``password=``, ``sentinel_password=`` or ``ssl_password=`` (the client
#: key's) query parameter, up to the next ``&`` (a ``#`` in it is part of what the operator
#: typed, so it is hidden too)
_SECRET_QUERY_RE = re.compile(r"(?i)[?&](?:sentinel_|ssl_)?password=(?P<secret>[^&]*)")
_MASK = "***"


def _userinfo_start(url: str) -> tuple[int, bool]:
    """Where the user information of ``url`` may start, and whether its user name (before the
    first ``:``) may be shown: after ``scheme://``, after a known scheme with a mistyped
    ``://``, else at the start (then nothing of it is shown)."""
    scheme, sep, _ = url.partition("://")
    if sep and _SCHEME_RE.fullmatch(scheme):
        return len(scheme) + len(sep), True
    m = _LOOSE_SCHEME_RE.match(url)
    if m is not None and m["scheme"].lower() in _KNOWN_SCHEMES:
        return m.end(), True
    return 0, False


def mask_url(url: str) -> str:
    """The URL with every password replaced by ``***`` (for logs and error messages), also
    when the URL is malformed.

    The user information runs from after ``scheme://`` (or from the start, when there is no
    well-formed scheme) to the *last* ``@``, as redis-py and urllib split it: a password may
    hold an ``@``, and a ``/``, ``?`` or ``#`` that was not percent-encoded must not show
    either. An ``@`` after the host (in a query value) hides the host too: showing too little
    is better than showing a password. The user name shows only when the user information is
    a well-formed ``user:password``. ``password=``, ``sentinel_password=`` and
    ``ssl_password=`` query values are hidden as well."""
    hidden = [m.span("secret") for m in _SECRET_QUERY_RE.finditer(url)]
    start, show_user = _userinfo_start(url)
    at = url.rfind("@")
    if url[:start].lower().startswith("unix"):
        # unix://[[user]:password@]/path, and a socket path may hold an '@' (redis@1.sock)
        at = -1 if url.startswith("/", start) else url.rfind("@/") if "@/" in url else at
    if at >= start:
        userinfo = url[start:at]
        user, colon, _ = userinfo.partition(":")
        if show_user and colon and not any(c in userinfo for c in "/?#"):
            start += len(user) + len(colon)  # a well-formed user:password: show the user
        hidden.append((start, at))
    out: list[str] = []
    shown = 0  # url[:shown] is in out
    for begin, end in sorted(hidden):
        if begin > shown or not out:
            out += [url[shown:begin], _MASK]
        shown = max(shown, end)
    out.append(url[shown:])
    return "".join(out)


def _userinfo_spills(path: str, query: str, fragment: str = "") -> bool:
    """True when an ``@`` comes after where a URL parser ends the host part (in the path, the
    fragment, a query parameter name, or a value other than a password's, where none
    belongs): the user name or password holds a ``/``, ``?`` or ``#`` that is not
    percent-encoded, and part of it would be taken for the host, port, path or query (and
    quoted in an error as a sentinel address or an option name)."""
    items = (item.partition("=") for item in query.split("&"))
    return "@" in path or "@" in fragment or any(
        "@" in key or ("@" in value and not key.lower().endswith("password"))
        for key, _, value in items)


def _spill_problem(url: str) -> str:
    return (f"malformed Redis URL {mask_url(url)!r}: the user name or password holds a '/', "
            "'?' or '#': percent-encode them (%2F, %3F, %23), e.g. "
            "redis://:my%2Fpass@host:6379/0")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis[s]+sentinel://[[user]:pass@]h1[:p1][,h2[:p2]]/service[/db]``: options
    ``sentinel_password`` and, with ``rediss+sentinel://``, ``ssl_*`` and ``sentinel_ssl``."""
    scheme = url_scheme(url)
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL: {mask_url(url)!r}")
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if _userinfo_spills(path, query):
        raise ValueError(_spill_problem(url))
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
        if not all_digits(segments[1]):
            raise ValueError(f"bad database number {segments[1]!r} in {mask_url(url)!r}")
        db = int(segments[1])
    params = parse_qs(query, keep_blank_values=True)
    ssl = scheme == "rediss+sentinel"
    options = {"sentinel_password": (lambda v: True, ""),
               **({**_TLS_QUERY_OPTIONS, "sentinel_ssl": (_boolean, "true or false")}
                  if ssl else {})}
    unknown = set(params) - set(options)
    if unknown:
        tls = " (the ssl_* options need rediss+sentinel://)" if not ssl and any(
            name in _TLS_QUERY_OPTIONS or name == "sentinel_ssl" for name in unknown) else ""
        raise ValueError(f"unknown Sentinel URL option(s) {', '.join(sorted(unknown))} in "
                         f"{mask_url(url)!r}: understood are {', '.join(options)}{tls}")
    _check_values(options, params, url)
    values = {name: given[-1] for name, given in params.items()}
    sentinel_password = values.pop("sentinel_password", None) or None
    sentinel_ssl = _true(values.pop("sentinel_ssl", "false"))
    tls_options = tuple((name, _true(v) if name == "ssl_check_hostname" else v)
                        for name, v in sorted(values.items()))
    return SentinelTarget(hosts=tuple(hosts), service_name=segments[0], db=db,
                          username=username, password=password,
                          sentinel_password=sentinel_password, ssl=ssl, tls=tls_options,
                          sentinel_ssl=sentinel_ssl)


def check_redis_url(url: str) -> None:
    """Raise ValueError, saying what is wrong (password masked), unless ``url`` is a Redis URL
    this product can use. Nothing is connected to."""
    scheme = url_scheme(url)
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        # (its own parser: a '#' in a value is kept, not a fragment)
        _refuse_twice(parse_qs(url.partition("?")[2], keep_blank_values=True), url)
        return
    if scheme not in PLAIN_SCHEMES:
        raise ValueError(f"unsupported scheme {scheme!r} in {mask_url(url)!r}: expected {EXPECTED}")
    # (urllib's own messages may quote part of the URL, a password included: not shown)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"malformed Redis URL {mask_url(url)!r}: its host part cannot be read "
                         f"(an IPv6 host is written in brackets: [::1]); expected {EXPECTED}"
                         ) from None
    # a socket path may hold an '@' (unix:///run/redis@1.sock, unix://:pw@/run/redis@1.sock)
    path = parts.path if scheme != "unix" or parts.netloc[-1:] not in ("", "@") else ""
    if _userinfo_spills(path, parts.query, parts.fragment):
        raise ValueError(_spill_problem(url))
    try:
        parts.port  # noqa: B018  (parsing it is the check: "abc", 99999 raise ValueError)
    except ValueError:
        raise ValueError(f"malformed Redis URL {mask_url(url)!r}: the port must be a number "
                         f"from 1 to 65535; expected {EXPECTED}") from None
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"the Redis URL {mask_url(url)!r} names no socket path")
    else:
        if not parts.hostname:
            # redis-py would connect to localhost:6379: maybe another Redis than meant
            raise ValueError(f"the Redis URL {mask_url(url)!r} names no host: write "
                             f"{scheme}://HOST:PORT/DB, e.g. {scheme}://127.0.0.1:6379/0")
        db = unquote(parts.path).strip("/")
        if db and not all_digits(db):
            raise ValueError(f"bad database number {db!r} in {mask_url(url)!r}: "
                             "expected /0, /1...")
    if parts.fragment or url.endswith("#"):
        # (not shown: it may be the rest of a password, which redis-py would silently cut)
        raise ValueError("the Redis URL holds a '#', after which redis-py ignores the rest: "
                         "in a password or an option, percent-encode it (%23)")
    _check_query(scheme, parts.query, url)
    _check_given_once(scheme, parts, url)


def _check_given_once(scheme: str, parts: SplitResult, url: str) -> None:
    """No setting given twice, in the URL's parts and its query: redis-py takes one of the
    two without a word (a password in the user part wins over ?password=, ?db= over /N)."""
    params = parse_qs(parts.query, keep_blank_values=True)
    also = []
    if parts.password is not None and "password" in params:
        also.append("password")
    if parts.username and "username" in params:
        also.append("username")
    if scheme != "unix" and unquote(parts.path).strip("/") and "db" in params:
        also.append("db")
    _refuse_twice(params, url, also)


def _refuse_twice(params: dict[str, list[str]], url: str, also: Sequence[str] = ()) -> None:
    """Refuse an option the query gives twice, or one of ``also`` (given in the query and in
    another part of the URL)."""
    twice = [name for name, values in params.items() if len(values) > 1] + list(also)
    if twice:
        raise ValueError(f"the Redis URL {mask_url(url)!r} gives {', '.join(sorted(set(twice)))} "
                         "twice: give each once")


def _boolean(value: str) -> bool:
    return value.lower() in ("1", "0", "true", "false", "yes", "no", "y", "n", "t", "f")


def _true(value: str) -> bool:
    return value.lower() in ("1", "true", "yes", "y", "t")


def _number(value: str) -> bool:
    try:
        return float(value) >= 0
    except ValueError:
        return False


#: The query options of a ``redis://`` URL this product passes on to redis-py, and the check
#: of their values (redis-py hands any other name to its connection class, which fails with a
#: TypeError at the first command, and some bad values with a bare ValueError).
_QUERY_OPTIONS: dict[str, tuple[Callable[[str], bool], str]] = {
    "db": (all_digits, "a database number (0, 1...)"),
    "password": (lambda v: True, ""),
    "username": (lambda v: True, ""),
    "client_name": (lambda v: v.isprintable() and " " not in v, "a name without spaces"),
    "socket_timeout": (_number, "seconds (e.g. 10 or 2.5)"),
    "socket_connect_timeout": (_number, "seconds (e.g. 10 or 2.5)"),
    "socket_keepalive": (_boolean, "true or false"),
    "health_check_interval": (all_digits, "whole seconds (e.g. 30)"),
}
#: More options of a ``rediss://`` URL (TLS).
_TLS_QUERY_OPTIONS: dict[str, tuple[Callable[[str], bool], str]] = {
    "ssl_ca_certs": (bool, "a file of CA certificates"),
    "ssl_ca_path": (bool, "a directory of CA certificates"),
    "ssl_certfile": (bool, "a client certificate file"),
    "ssl_keyfile": (bool, "the client certificate's key file"),
    "ssl_password": (lambda v: True, ""),
    "ssl_cert_reqs": (lambda v: v in ("none", "optional", "required"),
                      "none, optional or required"),
    "ssl_check_hostname": (_boolean, "true or false"),
}


def _check_query(scheme: str, query: str, url: str) -> None:
    """Every query option of a plain or TLS URL is one redis-py takes, with a usable value."""
    if not query:
        return
    options = dict(_QUERY_OPTIONS, **(_TLS_QUERY_OPTIONS if scheme == "rediss" else {}))
    if scheme == "unix":
        del options["socket_keepalive"]  # a TCP option
    params = parse_qs(query, keep_blank_values=True)
    for name in params:
        if name not in options:
            tls = " (only with rediss://)" if name in _TLS_QUERY_OPTIONS else ""
            raise ValueError(
                f"unknown option {name!r}{tls} in the Redis URL {mask_url(url)!r}: understood "
                f"are {', '.join(options)}")
    _check_values(options, params, url)


def _check_values(options: dict[str, tuple[Callable[[str], bool], str]],
                  params: dict[str, list[str]], url: str) -> None:
    for name, values in params.items():
        ok, expected = options[name]
        if not ok(values[-1]):
            shown = _MASK if name.endswith("password") else repr(values[-1])
            raise ValueError(f"bad value {shown} for {name} in the Redis URL "
                             f"{mask_url(url)!r}: expected {expected}")


def has_password(url: str) -> bool:
    """Whether ``url`` gives the Redis (master's) password: in its user information, or as a
    ``password=`` query parameter."""
    try:
        if is_sentinel_url(url):
            return bool(parse_sentinel_url(url).password)
        parts = urlsplit(url)
        return bool(parts.password or parse_qs(parts.query).get("password"))
    except ValueError:
        return False


#: The TLS options that name a file or directory of this machine.
_TLS_FILE_OPTIONS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")


def unreadable_tls_files(url: str) -> list[str]:
    """``option=path`` of each file or directory a TLS URL names that this process cannot
    read (redis-py says only "No such file or directory" of it, naming none)."""
    try:
        params = parse_qs(urlsplit(url).query)
    except ValueError:
        return []
    return [f"{name}={params[name][-1]}" for name in _TLS_FILE_OPTIONS
            if name in params and not os.access(params[name][-1], os.R_OK)]
