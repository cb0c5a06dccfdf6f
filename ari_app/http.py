"""A small HTTP/1.1 keep-alive client for ARI's REST calls: one asyncio protocol per connection.

Why not aiohttp here (it still carries the events websocket): an ARI call makes about ten REST
requests, each a few hundred bytes each way, and aiohttp spent ~100-150 us of CPU on each; this
client builds the request in one ``write`` and parses the answer in one pass over the bytes
(bench/bench_ari_calls.py has the figures). It does what Asterisk's HTTP server needs and no
more:

* persistent connections (``Connection: keep-alive``), one request at a time on each, at most
  ``limit`` open; a request waits for a free one;
* responses with ``Content-Length`` (what Asterisk sends), or none for 204/304, or
  ``Transfer-Encoding: chunked``, or a body up to the close;
* a connection the server closed while it sat idle (Asterisk drops idle sessions after
  ``session_keep_alive``, 15 s by default) fails before any byte of the answer: the request is
  sent again, once, on a new connection. Idle connections older than ``idle_timeout`` are not
  reused at all;
* a request that timed out keeps its connection, and its place among the ``limit``, until
  its late answer has been read (then the connection is reused) or ``DRAIN_MAX`` more
  seconds have passed (then it is closed). Closed at once, the server went on with the
  request all the same (Asterisk counts a session until its thread is done with it, and an
  overloaded one is slow to notice the close) while a new connection took its place: past
  the lab's capacity, Asterisk's sessions went over its ``sessionlimit`` of 500 with a pool
  of 64, and it closed thousands of requests unanswered (hangups and bridge destructions
  among them). So the server never has more than ``limit`` of ours at once. A timeout that
  fires more than ``STALLED`` seconds late found the event loop stalled (the process
  frozen): the answer may be waiting unread, so it gets up to ``STALL_GRACE`` more.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

#: A timer that fires this late (seconds) found the event loop stalled...
STALLED = 0.5
#: ...and gives what it waits for up to this long more: it may have come in time, unread.
STALL_GRACE = 2.0
#: A connection whose request timed out waits this long more for the late answer.
DRAIN_MAX = 30.0


class HttpError(Exception):
    """The server could not be reached, or did not answer with HTTP."""


class NotSent(HttpError):
    """The request was certainly not sent: no connection free within its timeout (all of
    them busy with requests the server is slow to answer), or none could be made."""


class NotConnected(NotSent):
    """No connection could be made: the request was certainly not sent."""


@dataclass(slots=True)
class _Progress:
    written: bool = False  # the request went out on a connection (it may have been done)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


class _Connection(asyncio.Protocol):
    """One TCP connection; ``exchange`` sends a request and waits for its whole answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0  # requests sent on it
        self.idle_since = time.monotonic()
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._received = 0  # bytes of the answer in progress

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance() here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        self._buffer += data
        if self._waiter is not None and not self._waiter.done():
            self._parse(eof=False)

    def eof_received(self) -> bool:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._parse(eof=True)  # a body delimited by the close
            if not waiter.done():
                waiter.set_exception(ConnectionResetError(
                    f"connection closed after {self._received} bytes of the answer"
                    + (f": {exc}" if exc else "")))

    # -- requests ------------------------------------------------------------------------

    @property
    def answered_nothing(self) -> bool:
        return self._received == 0

    async def exchange(self, request: bytes) -> Response:
        assert self.transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._received = 0
        self._buffer.clear()  # nothing may come between answers
        try:
            self.transport.write(request)
            return await self._waiter
        finally:
            self._waiter = None
            self.used += 1
            self.idle_since = time.monotonic()

    async def late_answer(self) -> Response:
        """The answer to the request whose wait was given up (:meth:`exchange` cancelled by
        its timeout); what came of it meanwhile is in the buffer."""
        assert self._waiter is None
        if self.closed:
            raise ConnectionResetError("connection closed before the late answer")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self._parse(eof=False)
            return await self._waiter
        finally:
            self._waiter = None
            self.idle_since = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _parse(self, *, eof: bool) -> None:
        assert self._waiter is not None
        try:
            answer = _answer(self._buffer, eof=eof)
        except (ValueError, IndexError):
            self._waiter.set_exception(
                HttpError(f"not an HTTP answer: {bytes(self._buffer[:60])!r}"))
            self.close()
            return
        if answer is None:
            return
        response, keep_alive = answer
        if not keep_alive:
            self.close()
        self._waiter.set_result(response)


def _answer(buf: bytearray, *, eof: bool) -> tuple[Response, bool] | None:
    """The complete answer at the start of ``buf`` (removed from it) and whether the
    connection stays open; None while it is incomplete. Interim 1xx answers are skipped."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest[:3])
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        start = end + 4
        if 100 <= status < 200:
            del buf[:start]
            continue
        length: int | None = None
        chunked = False
        keep_alive = version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                keep_alive = value == "keep-alive" or (keep_alive and value != "close")
        body: bytes | None
        if status in (204, 304):
            body, used = b"", start
        elif chunked:
            body, used = _dechunk(buf, start)
        elif length is not None:
            body, used = (bytes(buf[start:start + length]), start + length) \
                if len(buf) >= start + length else (None, 0)
        else:  # delimited by the close
            body, used = (bytes(buf[start:]), len(buf)) if eof else (None, 0)
            keep_alive = False
        if body is None:
            return None
        del buf[:used]
        return Response(status, body), keep_alive


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes | None, int]:
    """(body, end) of a complete chunked body starting at ``pos``; (None, 0) when incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, 0
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            while trailer_end > pos:  # skip trailer fields
                pos = trailer_end + 2
                trailer_end = buf.find(b"\r\n", pos)
            return (bytes(out), trailer_end + 2) if trailer_end >= 0 else (None, 0)
        if len(buf) < pos + size + 2:
            return None, 0
        out += buf[pos:pos + size]
        pos += size + 2


def stall_extended(deadline: float, now: float) -> float:
    """When a timer due at ``deadline`` and firing at ``now`` really expires: now, or, when
    it fires more than ``STALLED`` late (the loop was stalled, what it waits for may have come
    in time and still be unread), up to ``STALL_GRACE`` later."""
    late = now - deadline
    return now + min(late, STALL_GRACE) if late > STALLED else now


def _expire(timer: asyncio.Timeout, deadline: float) -> None:
    """A request's deadline passed: time out now, unless the loop was stalled."""
    timer.reschedule(stall_extended(deadline, asyncio.get_running_loop().time()))


class HttpPool:
    """Keep-alive connections to one server; ``request`` is all a caller needs."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        headers: dict[str, str] | None = None,
        limit: int = 64,
        idle_timeout: float = 10.0,
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if tls else None
        host_header = host if ":" not in host else f"[{host}]"
        default_port = 443 if tls else 80
        if port != default_port:
            host_header = f"{host_header}:{port}"
        fixed = {"Host": host_header, "Connection": "keep-alive", **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._timeout = timeout
        self._idle: deque[_Connection] = deque()
        self._open = 0  # connections open or being opened, idle ones included
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: Waiters woken (a connection or a slot was freed for each) that have not run yet: a
        #: new request queues behind them instead of taking what was freed for them.
        self._woken = 0
        self.connections_made = 0  # for tests and metrics
        #: Connections waiting for the late answer of a request that timed out (each keeps
        #: its place among the ``limit``).
        self._draining: set[asyncio.Task[None]] = set()
        #: Set by retire(): no request is written any more (one already written is not undone).
        self.retired = False

    def retire(self) -> None:
        """From now on every request fails before it is written, those already waiting for a
        connection included."""
        self.retired = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1

    async def request(self, method: str, target: str, body: bytes | None = None) -> Response:
        """Send one request (``target``: path and query, already encoded) and read its answer
        within the pool's ``timeout``."""
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: 0\r\n"
        raw = (head + "\r\n").encode("latin-1") + (body or b"")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        progress = _Progress()
        try:
            async with asyncio.timeout(None) as timer:
                expiry = loop.call_at(deadline, _expire, timer, deadline)
                try:
                    return await self._exchange(raw, progress)
                finally:
                    expiry.cancel()
        except TimeoutError as exc:
            if progress.written:
                raise  # most likely done, its answer late
            # Taken for "sent, no answer", a hangup that never left was taken as done.
            raise NotSent(f"not sent: no connection free within {self._timeout:g} s") from exc

    async def _exchange(self, raw: bytes, progress: _Progress) -> Response:
        for attempt in range(2):
            progress.written = False  # (a first one closed unanswered was not done)
            conn = await self._acquire(fresh=attempt > 0)  # (it fails once retired)
            if self.retired:  # meanwhile, while a new connection was being made
                self._release(conn)
                raise HttpError("not sent: the pool is retired")
            reused = conn.used > 0  # the second attempt always has a new one
            progress.written = True
            try:
                response = await conn.exchange(raw)
            except ConnectionError as exc:
                self._release(conn)
                # A kept-alive connection the server had closed: nothing was answered,
                # nothing was done. Once more on a new connection.
                if reused and conn.answered_nothing:
                    continue
                raise HttpError(str(exc)) from exc
            except BaseException:  # timeout or cancellation mid-answer
                self._drain_later(conn)
                raise
            self._release(conn)
            return response
        raise AssertionError("unreachable")

    async def _acquire(self, *, fresh: bool) -> _Connection:
        # First come, first served: a request that finds others waiting queues behind them,
        # else a task sending requests back to back took every freed connection before the
        # woken waiter ran, and the waiters timed out.
        turn = False
        while True:
            if self.retired:
                raise HttpError("not sent: the pool is retired")
            if turn or not (self._waiters or self._woken):
                if not fresh and (conn := self._take_idle()) is not None:
                    return conn
                if self._open < self._limit:
                    return await self._connect()
                if fresh and self._idle:  # full of idle connections: make room for a new one
                    self._idle.popleft().close()
                    self._open -= 1
                    continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._woken -= 1
                    self._wake()  # pass the turn on
                else:
                    if waiter in self._waiters:  # (_wake() may have dropped it already)
                        self._waiters.remove(waiter)
                    if self._idle or self._open < self._limit:
                        self._wake()  # one queued behind it meanwhile may go now
                raise
            self._woken -= 1
            turn = True

    def _drain_later(self, conn: _Connection) -> None:
        """The request on ``conn`` was given up without its answer: the server may still be
        at it. The connection keeps its place until that answer is read (see the module's
        docstring)."""
        if conn.closed:
            self._release(conn)
            return
        task = asyncio.get_running_loop().create_task(self._drain(conn))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _drain(self, conn: _Connection) -> None:
        read = False
        try:
            async with asyncio.timeout(DRAIN_MAX):
                await conn.late_answer()
            read = True
        except (TimeoutError, ConnectionError, HttpError):
            pass
        finally:
            if not read:
                conn.close()
            self._release(conn)

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn
            conn.close()
            self._open -= 1
        return None

    async def _connect(self) -> _Connection:
        self._open += 1
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                _Connection, self.host, self.port, ssl=self._ssl
            )
        except BaseException as exc:
            self._open -= 1
            self._wake()
            if isinstance(exc, OSError):
                raise NotConnected(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
            raise
        self.connections_made += 1
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed:
            self._open -= 1
        else:
            self._idle.append(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                return

    async def close(self) -> None:
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)
        while self._idle:
            self._idle.pop().close()
            self._open -= 1
