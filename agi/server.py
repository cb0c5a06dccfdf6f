"""A small asyncio FastAGI server (SPEC section 4).

Asterisk's ``AGI(agi://HOST:PORT/SCRIPT?QUERY,ARG1,ARG2)`` opens one TCP connection per call,
sends ``agi_*: value`` header lines ending with an empty line, then reads one reply per command
we send, strictly one at a time. This module speaks that protocol and nothing else: the scripts
(``agi.scripts``) are the translators to the routing core.

What real Asterisk (and a hostile or broken peer) can send, and how it is handled:

- a connection that closes or stalls before the headers end, over-long lines, too many headers:
  the session is dropped and logged; other sessions are not affected (each has its own task,
  and every read has a deadline);
- ``100 result=0 Trying...``: an interim reply (``GOSUB``); the final reply follows;
- ``520-Invalid command syntax.  Proper usage follows:`` ... ``520 End of proper usage.``: one
  reply over several lines, read whole so the next command gets its own reply;
- ``HANGUP`` on a line of its own, sent once when the channel hangs up, at any moment: it is
  not a reply; it marks the session hung up and the reply still follows;
- ``511 Command Not Permitted on a dead channel or intercepted channel``;
- ``200 result=1 (value (with) parentheses)``: the data is everything up to the last ``)``;
- bytes that are not UTF-8: decoded with U+FFFD replacements, never an exception.

FastAGI has no authentication: the server binds 127.0.0.1 by default and can refuse peers that
are not in an allow-list of networks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from routing.numbers import all_digits
from routing.variables import assignment

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4573

#: The line Asterisk sends, unasked, when the channel hangs up during the session.
HANGUP_LINE = "HANGUP"
CODE_TRYING = 100
CODE_OK = 200
CODE_DEAD_CHANNEL = 511

_NEVER = float("inf")
_READ_ERRORS = (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError)
_STATUS_RE = re.compile(r"^([0-9]{3})([ -])(.*)$")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one peer can make the server do."""

    max_sessions: int = 1000  # sessions served at once; more wait for a place
    queue_timeout: float = 5.0  # how long a session may wait for a place, once it has begun
    backlog: int = 1024  # connections the kernel queues before they are accepted
    header_timeout: float = 5.0  # the whole header block must arrive within this
    read_timeout: float = 10.0  # each command's final reply must arrive within this
    max_line: int = 8192  # bytes in one line (header or reply)
    max_headers: int = 256  # header lines in a session
    max_header_bytes: int = 65536  # bytes of a session's whole header block
    #: connections still sending their headers at once; a new one past it closes the oldest
    #: (Asterisk sends its headers at once: a peer that holds connections open without
    #: finishing them must not keep its calls out). With max_header_bytes, it bounds what
    #: peers that never finish can make the server hold (64 MB; 400 such peers held 880 MB
    #: before, and most of it stayed afterwards).
    max_beginning: int = 1000
    #: ...but only one that has been sending them this long: calls that connect while the
    #: loop is busy wait in the backlog with their headers sent, and are all accepted before
    #: any is read (a burst past max_beginning closed that many calls). Until the oldest is
    #: this old, a newer connection comes in past max_beginning.
    evict_after: float = 1.0
    max_reply_lines: int = 512  # lines in one multi-line (520) reply
    log_burst: int = 10  # warnings of one kind about bad connections logged per window...
    log_window: float = 10.0  # ...of this many seconds; the rest are counted in one line


# -- errors -------------------------------------------------------------------------------


class AgiError(Exception):
    """Base class of the FastAGI errors."""


class AgiProtocolError(AgiError):
    """The peer sent something that is not FastAGI, or broke a limit."""


class AgiTimeout(AgiError):
    """The peer did not send what we waited for in time."""


class AgiConnectionClosed(AgiError):
    """The peer closed the connection (or it broke) in the middle of the session."""


class AgiCommandError(AgiError):
    """Asterisk refused a command (510 unknown, 520 usage, 511 dead channel, ...)."""

    def __init__(self, command: str, reply: AgiReply) -> None:
        # One log line: a 520 reply's usage text runs over several.
        first, *more = reply.text.split("\n")
        rest = f" (+{len(more)} more lines)" if more else ""
        super().__init__(f"{command.split(' ', 2)[:2]!r} -> {reply.code} {first!r}{rest}")
        self.command = command
        self.reply = reply


# -- the request and the replies ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """What Asterisk told us when it connected."""

    script: str  # the request path without slashes, e.g. "route"
    query: Mapping[str, str]  # the request's query string, e.g. {"tenant": "acme"}
    args: tuple[str, ...]  # agi_arg_1 .. agi_arg_N, in order
    env: Mapping[str, str]  # every header line, e.g. env["agi_channel"]
    peer: str = ""

    @property
    def channel(self) -> str:
        return self.env.get("agi_channel", "")

    @property
    def uniqueid(self) -> str:
        return self.env.get("agi_uniqueid", "")

    def arg(self, n: int, default: str = "") -> str:
        """Argument n (1-based), or ``default`` when absent."""
        return self.args[n - 1] if 0 < n <= len(self.args) else default

    @classmethod
    def from_env(cls, env: Mapping[str, str], peer: str = "") -> AgiRequest:
        script = env.get("agi_network_script")
        if script is None:
            # No script part in the URL: Asterisk omits the header; fall back on agi_request.
            try:
                parts = urlsplit(env.get("agi_request", ""))
                path, query = parts.path, parts.query
            except ValueError:  # agi://[::1/route: no script, as none can be read
                path, query = "", ""
        else:
            path, _, query = script.partition("?")
        numbered = []
        for key, value in env.items():
            # (isdigit() alone takes "²", which int() refuses: the session's task died on it)
            if key.startswith("agi_arg_") and all_digits(key[8:]):
                numbered.append((int(key[8:]), value))
        numbered.sort()
        return cls(
            script=path.strip("/"),
            query=MappingProxyType(dict(parse_qsl(query, keep_blank_values=True))
                                   if query else {}),
            args=tuple(v for _, v in numbered),
            env=MappingProxyType(env),
            peer=peer,
        )


class AgiReply(NamedTuple):
    """One parsed reply, e.g. ``200 result=1 (value)`` (a tuple: built once per command)."""

    code: int
    result: str | None = None  # what follows ``result=``, up to the first space
    data: str | None = None  # the part in parentheses, if any
    extra: str = ""  # anything after: ``endpos=1234``, ``Trying...``
    text: str = ""  # the reply without its code (all lines for a multi-line reply)

    @property
    def ok(self) -> bool:
        return self.code == CODE_OK

    @classmethod
    def parse(cls, code: int, text: str) -> AgiReply:
        if not text.startswith("result="):
            return cls(code, extra=text, text=text)
        result, _, rest = text[7:].partition(" ")
        rest = rest.lstrip(" ")
        data: str | None = None
        if rest.startswith("("):
            close = rest.rfind(")")
            if close > 0:
                data = rest[1:close]
                rest = rest[close + 1:].lstrip(" ")
        return cls(code, result, data, rest, text)


# -- deadlines ------------------------------------------------------------------------------


class Deadline:
    """When the read a connection waits on must have completed (``inf``: not waiting).

    One timer per read (``asyncio.timeout``) costs more than the rest of a command's handling;
    instead a read sets ``at`` and the server's sweeper aborts the connections whose deadline
    passed, a few times per timeout period.
    """

    __slots__ = ("at", "evicted", "expired", "transport")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.at = float("inf")
        self.expired = False
        self.evicted = False  # closed to make room for a newer connection
        self.transport = transport

    def expire_if_due(self, now: float) -> None:
        if self.at <= now and not self.expired:
            self.expired = True
            self.transport.abort()  # type: ignore[attr-defined]


# -- one session ---------------------------------------------------------------------------


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """Puts the call's unique id on every line."""

    def __init__(self, logger: logging.Logger, call: str) -> None:
        super().__init__(logger, {"call": call})
        self.call = call

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.call}] {msg}", kwargs


_SPECIAL = re.compile(r'["\\\r\n\0]')


#: Asterisk reads an AGI command into a 2,048-byte buffer (res_agi.c, ``AGI_BUF_LEN``): a
#: longer line is cut there and its rest read as a command of its own.
AGI_LINE_MAX = 2047  # bytes, the newline included
#: ``ARRAY()`` sets at most 100 variables (func_strings.c); the rest would go, joined, into
#: the 100th name.
ARRAY_MAX = 100


def set_variable_lines(pairs: Iterable[tuple[str, str]]) -> list[bytes]:
    """The ``SET VARIABLE`` command lines that set the pairs in order: as few as fit in
    Asterisk's limits (one for an ordinary plan, more from some fifteen attempts on)."""
    values = dict(pairs)
    if not values:
        return []
    whole = _set_line(values)
    if len(values) <= ARRAY_MAX and len(whole) <= AGI_LINE_MAX:
        return [whole]
    lines: list[bytes] = []
    chunk: dict[str, str] = {}
    line = b""
    for name, value in values.items():
        candidate = _set_line({**chunk, name: value})
        if chunk and (len(candidate) > AGI_LINE_MAX or len(chunk) == ARRAY_MAX):
            lines.append(line)
            chunk, candidate = {}, _set_line({name: value})
        if len(candidate) > AGI_LINE_MAX:
            raise ValueError(f"{name} is too long for one AGI command ({len(candidate)} bytes)")
        chunk[name] = value
        line = candidate
    if chunk:
        lines.append(line)
    return lines


def _set_line(values: Mapping[str, str]) -> bytes:
    name, value = assignment(values)
    return f"SET VARIABLE {name} {quote(value)}\n".encode()


def quote(value: str) -> str:
    """An AGI command argument in double quotes (res_agi's parse_args unescapes ``\\``)."""
    if _SPECIAL.search(value) is None:
        return f'"{value}"'
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"an AGI argument cannot hold a line break: {value[:40]!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AgiSession:
    """The command side of one FastAGI connection, handed to a script."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 request: AgiRequest, limits: Limits, deadline: Deadline) -> None:
        self.request = request
        self.hung_up = False  # Asterisk said HANGUP, or a command got 511
        self._log: CallLog | None = None
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self._deadline = deadline

    @property
    def log(self) -> CallLog:
        """This call's logger: every line starts with the call's unique id."""
        if self._log is None:
            self._log = CallLog(log, self.request.uniqueid or "-")
        return self._log

    async def command(self, line: str) -> AgiReply:
        """Send one command line and return its final reply (whatever its code)."""
        if "\n" in line or "\r" in line:
            raise ValueError("one AGI command is one line")
        return AgiReply.parse(*await self._exchange(line.encode("utf-8") + b"\n"))

    async def _exchange(self, data: bytes) -> tuple[int, str]:
        """Write one command and read its final reply's code and text. No drain: the reply
        is awaited before the next write, so at most one command sits in the buffer.

        One deadline covers the whole reply, the lines before the final one included (interim
        ``100`` lines, ``HANGUP``, a ``520`` block): a peer that keeps sending those never
        answers, and must not hold its place longer than one that sends nothing.

        The read is written out here rather than through ``_read_line``: one coroutine level
        less per command measured 5 to 10 % of the server's CPU per route session."""
        self._writer.write(data)
        deadline = self._deadline
        deadline.at = time.monotonic() + self._limits.read_timeout
        try:
            raw = await self._reader.readuntil(b"\n")
        except _READ_ERRORS as exc:
            raise self._read_error(exc) from None
        if raw.startswith(b"200 "):  # the common case, inline
            deadline.at = _NEVER
            return CODE_OK, raw[4:].rstrip(b"\r\n").decode("utf-8", "replace")
        reply = await self._read_reply(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
        deadline.at = _NEVER
        return reply

    async def _read_line(self) -> str:
        """One more line of the reply ``_exchange`` waits for, under its deadline."""
        try:
            raw = await self._reader.readuntil(b"\n")
        except _READ_ERRORS as exc:
            raise self._read_error(exc) from None
        return raw.rstrip(b"\r\n").decode("utf-8", "replace")

    def _read_error(self, exc: Exception) -> AgiError:
        if isinstance(exc, asyncio.LimitOverrunError):
            return AgiProtocolError(f"a line longer than {self._limits.max_line} bytes")
        if self._deadline.expired:
            return AgiTimeout(f"no reply within {self._limits.read_timeout:g} s")
        if isinstance(exc, asyncio.IncompleteReadError):  # its own text is asyncio's
            return AgiConnectionClosed("Asterisk closed the connection before its reply"
                                       + (f" ({len(exc.partial)} bytes of it)"
                                          if exc.partial else ""))
        return AgiConnectionClosed(str(exc) or "the peer closed the connection")

    async def _read_reply(self, line: str | None = None) -> tuple[int, str]:
        """The final reply, starting from ``line`` when it was already read."""
        while True:
            if line is None:
                line = await self._read_line()
            if line.startswith("200 "):
                return CODE_OK, line[4:]
            if line == HANGUP_LINE:
                if not self.hung_up:
                    self.log.debug("Asterisk says the channel hung up")
                self.hung_up = True
                line = None
                continue
            m = _STATUS_RE.match(line)
            if m is None:
                raise AgiProtocolError(f"not an AGI reply: {line[:80]!r}")
            code, text = int(m.group(1)), m.group(3)
            if m.group(2) == "-":
                text = await self._read_continuation(code, text)
            if code == CODE_TRYING:
                line = None
                continue
            if code == CODE_DEAD_CHANNEL:
                self.hung_up = True
            return code, text

    async def _read_continuation(self, code: int, first: str) -> str:
        """The rest of a multi-line reply: up to the line starting with ``<code> ``."""
        parts = [first]
        end = f"{code} "
        while True:
            line = await self._read_line()
            if line.startswith(end):
                parts.append(line[len(end):])
                return "\n".join(parts)
            parts.append(line)
            if len(parts) > self._limits.max_reply_lines:
                raise AgiProtocolError(
                    f"a {code} reply longer than {self._limits.max_reply_lines} lines")

    # -- the commands the scripts use ----------------------------------------------------

    async def checked(self, line: str) -> AgiReply:
        reply = await self.command(line)
        if not reply.ok:
            raise AgiCommandError(line, reply)
        return reply

    async def set_variable(self, name: str, value: str | int) -> None:
        await self.set_variables(((name, str(value)),))

    async def set_variables(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Set the pairs, in order, with ``SET VARIABLE ARRAY(name,...) "value,..."``: one
        round trip to Asterisk instead of one per variable, more only when the line would
        pass Asterisk's limits (:func:`set_variable_lines`). A name given twice keeps its
        last value."""
        for line in set_variable_lines(pairs):
            code, text = await self._exchange(line)
            if code != CODE_OK:
                raise AgiCommandError(line.decode().rstrip("\n"), AgiReply.parse(code, text))

    async def get_variable(self, name: str) -> str | None:
        """The variable's value (``GET VARIABLE`` also reads functions such as
        ``HANGUPCAUSE(chan,tech)``), or None when it is not set."""
        reply = await self.checked(f"GET VARIABLE {quote(name)}")
        if reply.result != "1":
            return None
        return reply.data if reply.data is not None else ""

    async def get_full_variable(self, name: str) -> str:
        """The value of a variable or function of any length ("" when not set): ``GET
        VARIABLE`` answers at most 1,023 characters (res_agi.c), ``GET FULL VARIABLE`` the
        whole of ``${name}``."""
        return await self.expand("${" + name + "}")

    async def expand(self, text: str) -> str:
        """``text`` with the channel's variables and functions substituted (``GET FULL
        VARIABLE``), e.g. ``${A}|${B}``: several values in one round trip."""
        reply = await self.checked(f"GET FULL VARIABLE {quote(text)}")
        return (reply.data or "") if reply.result == "1" else ""


Handler = Callable[[AgiSession], Awaitable[None]]


# -- the server ----------------------------------------------------------------------------


def parse_allow(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                  ...]:
    """Networks allowed to connect ("127.0.0.1", "10.0.0.0/8", "::1"); ValueError if bad."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


@dataclass
class ServerStats:
    accepted: int = 0
    refused: int = 0  # not in the allow-list
    dropped: int = 0  # timed out or broke the protocol before/while serving
    overloaded: int = 0  # no place within queue_timeout
    served: int = 0
    active: int = 0
    peak: int = 0
    unknown_script: int = 0  # asked for a script we do not have


@dataclass(slots=True)
class _LogWindow:
    end: float
    logged: int = 0
    held_back: int = 0


class LogBudget:
    """At most ``burst`` warnings of one kind per ``window`` seconds; the rest are counted and
    reported in one line when the window ends. A peer opening thousands of bad connections, or
    an overload, must not write a line per connection (and slow the server with its log)."""

    def __init__(self, burst: int, window: float) -> None:
        self.burst = burst
        self.window = window
        self._windows: dict[str, _LogWindow] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        """Log ``msg`` unless ``burst`` lines of ``kind`` were logged in this window."""
        self.log(logging.WARNING, kind, msg, *args)

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        """As :meth:`warning`, at ``level``."""
        now = time.monotonic()
        window = self._windows.get(kind)
        if window is None or now >= window.end:
            if window is not None:
                self._report(kind, window)
            window = self._windows[kind] = _LogWindow(now + self.window)
        if window.logged < self.burst:
            window.logged += 1
            log.log(level, msg, *args)
        else:
            window.held_back += 1

    def flush(self, now: float = _NEVER) -> None:
        """Report the windows that ended by ``now`` (all of them by default)."""
        for kind, window in list(self._windows.items()):
            if now >= window.end:
                del self._windows[kind]
                self._report(kind, window)

    def _report(self, kind: str, window: _LogWindow) -> None:
        if window.held_back:
            log.warning("FastAGI: %d more %s within %g s, not logged one by one",
                        window.held_back, kind, self.window)


class AgiServer:
    """Serves FastAGI scripts by request path: ``agi://HOST:PORT/<name>`` runs handlers[name]."""

    def __init__(self, handlers: Mapping[str, Handler], *, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, allow: Iterable[str] = (),
                 limits: Limits | None = None) -> None:
        self.handlers = dict(handlers)
        self.host = host
        self.port = port
        self.allow = parse_allow(allow)
        self.limits = limits or Limits()
        self.stats = ServerStats()
        self.log_budget = LogBudget(self.limits.log_burst, self.limits.log_window)
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(self.limits.max_sessions)
        #: connections reading their headers now, oldest first, with their peer and start
        self._beginning: dict[Deadline, tuple[str, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadlines: set[Deadline] = set()
        self._sweeper: asyncio.Task[None] | None = None
        #: How often deadlines are checked: a timeout fires at most this late.
        self.tick = min(self.limits.read_timeout, self.limits.header_timeout) / 5

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connect, self.host, self.port, limit=self.limits.max_line,
            reuse_address=True, backlog=self.limits.backlog)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep(), name="agi-deadlines")
        if not self.allow and not _is_loopback(self.host):
            log.warning("FastAGI listens on %s:%d with no AGI_ALLOW list: FastAGI has no "
                        "authentication, anyone who can reach the port can ask for routes",
                        self.host, self.port)
        log.info("FastAGI listening on %s:%d (scripts: %s)", self.host, self.port,
                 ", ".join(sorted(self.handlers)))

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    @property
    def running(self) -> int:
        """Sessions accepted and not finished yet."""
        return len(self._tasks)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, give running sessions ``grace`` seconds, then cancel them."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = set(self._tasks)
        try:
            if cut := await self._finish(tasks, grace):
                self.stats.dropped += cut  # ended by us, not served
                log.warning("FastAGI: %d session(s) still running after %g s: closed", cut,
                            grace)
        finally:
            if self._sweeper is not None:
                self._sweeper.cancel()
                await asyncio.gather(self._sweeper, return_exceptions=True)
            self.log_budget.flush()

    async def _finish(self, tasks: set[asyncio.Task[None]], grace: float) -> int:
        """Wait for ``tasks``, cancel those still running after ``grace``; how many were."""
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(pending)

    async def __aenter__(self) -> AgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            for deadline in list(self._deadlines):
                deadline.expire_if_due(now)
            self.log_budget.flush(now)

    # -- per connection --------------------------------------------------------------------

    def _allowed(self, peer: str) -> bool:
        if not self.allow:
            return True
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(ip in net for net in self.allow)

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        deadline = Deadline(writer.transport)
        self._deadlines.add(deadline)
        try:
            await self._serve(reader, writer, deadline)
        except asyncio.CancelledError:
            # Only close() cancels a connection (past its grace). The task ends here rather
            # than cancelled: on Python 3.11 asyncio's own done-callback of a cancelled
            # connection task logs a traceback (CPython gh-113538), one per session.
            pass
        finally:
            self._deadlines.discard(deadline)
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     deadline: Deadline) -> None:
        stats = self.stats
        stats.accepted += 1
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else ""
        if not self._allowed(peer):
            stats.refused += 1
            self.log_budget.warning("connections refused (not in AGI_ALLOW)",
                                    "FastAGI connection from %s refused: not in AGI_ALLOW", peer)
            return
        if len(self._beginning) >= self.limits.max_beginning and (
                time.monotonic() - next(iter(self._beginning.values()))[1]
                >= self.limits.evict_after):
            # The oldest goes: Asterisk sends its headers at once, so the connections that
            # have waited longest are those that will not finish (closing the newest instead
            # let a local peer holding 1,000 idle connections keep every call out).
            oldest, (old_peer, since) = next(iter(self._beginning.items()))
            del self._beginning[oldest]
            oldest.evicted = True
            oldest.transport.abort()  # type: ignore[attr-defined]
            stats.dropped += 1
            self.log_budget.warning("connections closed: too many beginning at once",
                                    "FastAGI connection from %s closed after %.1f s without "
                                    "its headers: %d connections are sending theirs",
                                    old_peer, time.monotonic() - since,
                                    self.limits.max_beginning)
        # The headers first: a connection that sends nothing (or too little) must not hold
        # a place that sessions which have begun are waiting for.
        self._beginning[deadline] = (peer, time.monotonic())
        try:
            env = await read_headers(reader, self.limits, deadline)
        except AgiError as exc:
            if not deadline.evicted:  # else counted and logged when it was closed
                stats.dropped += 1
                self.log_budget.warning("sessions dropped before they began",
                                        "FastAGI session from %s dropped before it began: %s",
                                        peer, exc)
            return
        finally:
            self._beginning.pop(deadline, None)
        try:
            if self._slots.locked():
                async with asyncio.timeout(self.limits.queue_timeout):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()
        except TimeoutError:
            stats.overloaded += 1
            self.log_budget.warning("sessions dropped for lack of a place",
                                    "FastAGI connection from %s dropped: %d sessions busy "
                                    "for %g s", peer, self.limits.max_sessions,
                                    self.limits.queue_timeout)
            return
        stats.active += 1
        stats.peak = max(stats.peak, stats.active)
        try:
            await self._run_session(reader, writer, env, peer, deadline)
        finally:
            stats.active -= 1
            self._slots.release()

    async def _run_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           env: dict[str, str], peer: str, deadline: Deadline) -> None:
        request = AgiRequest.from_env(env, peer)
        session = AgiSession(reader, writer, request, self.limits, deadline)
        handler = self.handlers.get(request.script)
        if handler is None:
            self.stats.unknown_script += 1
            # A dialplan that names a wrong script does so on every call: a line per call
            # at first, then one a window with how many more.
            self.log_budget.warning("sessions for no known script",
                                    "[%s] no FastAGI script %r (known: %s); closing",
                                    request.uniqueid or "-", request.script,
                                    ", ".join(sorted(self.handlers)))
            return
        try:
            await handler(session)
        except (AgiConnectionClosed, AgiTimeout, AgiProtocolError) as exc:
            self.stats.dropped += 1
            self.log_budget.warning("sessions ended early", "[%s] %s session ended early: %s",
                                    request.uniqueid or "-", request.script, exc)
            return
        except AgiCommandError as exc:
            self.stats.dropped += 1
            if session.hung_up:
                session.log.info("%s: the channel hung up (%s)", request.script, exc)
            else:
                # An ERROR (an Asterisk that refuses our commands routes nothing), within the
                # budget: a peer refusing every command wrote 46,000 lines in an audit.
                self.log_budget.log(logging.ERROR, "sessions whose command Asterisk refused",
                                    "[%s] %s: Asterisk refused a command: %s",
                                    request.uniqueid or "-", request.script, exc)
            return
        except Exception:
            # A bug in a script must not take the server down; the call goes on in the
            # dialplan without the script's variables, which the dialplan treats as ERROR.
            self.stats.dropped += 1
            session.log.exception("%s script failed", request.script)
            return
        self.stats.served += 1


async def read_headers(reader: asyncio.StreamReader, limits: Limits,
                       deadline: Deadline) -> dict[str, str]:
    """The ``agi_*: value`` block up to the empty line, all within ``header_timeout``."""
    env: dict[str, str] = {}
    lines = 0  # not len(env): a name sent again and again is a line each time
    size = 0
    deadline.at = time.monotonic() + limits.header_timeout
    try:
        while True:
            raw = await reader.readuntil(b"\n")
            line = raw.rstrip(b"\r\n")
            if not line:
                deadline.at = _NEVER
                return env
            lines += 1
            size += len(raw)
            if lines > limits.max_headers:
                raise AgiProtocolError(f"more than {limits.max_headers} header lines")
            if size > limits.max_header_bytes:
                raise AgiProtocolError(f"a header block over {limits.max_header_bytes} bytes")
            key, sep, value = line.decode("utf-8", "replace").partition(":")
            if not sep:
                raise AgiProtocolError(f"not a header line: {line[:80]!r}")
            # res_agi writes "%s: %s\n": the value is everything after that one space, its
            # own spaces kept (a tenant "acme " is not "acme", as on the ARI path)
            env[key.strip()] = value[1:] if value.startswith(" ") else value
    except (asyncio.IncompleteReadError, ConnectionError):
        if deadline.expired:
            raise AgiTimeout(f"headers incomplete after {limits.header_timeout:g} s "
                             f"({lines} lines)") from None
        raise AgiConnectionClosed(
            f"closed before the headers ended ({lines} lines)") from None
    except asyncio.LimitOverrunError:
        raise AgiProtocolError(f"a header line longer than {limits.max_line} bytes") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
