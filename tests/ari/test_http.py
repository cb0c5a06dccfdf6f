"""The REST client's HTTP/1.1 connections against a raw socket server that behaves like
Asterisk's (and like what goes wrong with it)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest

from ari_app.http import HttpError, HttpPool, NotSent

Reply = Callable[[bytes, int], bytes | None]  # (request, n-th on this connection) -> answer


class RawServer:
    """Answers each request with ``reply(request, n)``; None closes the connection unanswered."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.reply(request, n)
                n += 1
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def ok(body: bytes = b'{"ok": true}', status: str = "200 OK", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nServer: Asterisk\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Reply], asyncio.Future[tuple[RawServer, HttpPool]]]]:
    made: list[tuple[RawServer, HttpPool]] = []

    async def make(reply: Reply, **kw: float) -> tuple[RawServer, HttpPool]:
        server = RawServer(reply)
        port = await server.start()
        pool = HttpPool("127.0.0.1", port, headers={"Authorization": "Basic eDp5"}, **kw)
        made.append((server, pool))
        return server, pool

    yield make  # type: ignore[misc]
    for server, pool in made:
        await pool.close()
        await server.close()


async def test_requests_share_one_kept_alive_connection(serve) -> None:
    server, pool = await serve(lambda req, n: ok())
    for _ in range(5):
        resp = await pool.request("POST", "/ari/channels/1/ring")
        assert (resp.status, resp.body) == (200, b'{"ok": true}')
    assert server.connections == 1
    first = server.requests[0].decode()
    assert first.startswith("POST /ari/channels/1/ring HTTP/1.1\r\n")
    assert "Authorization: Basic eDp5\r\n" in first and "Content-Length: 0\r\n" in first


async def test_json_body_is_sent_with_its_length(serve) -> None:
    server, pool = await serve(lambda req, n: ok(b"", "204 No Content"))
    resp = await pool.request("PUT", "/ari/applications/x/eventFilter", b'{"allowed": []}')
    assert (resp.status, resp.body) == (204, b"")
    assert server.requests[0].endswith(b'Content-Length: 15\r\n\r\n{"allowed": []}')


async def test_concurrent_requests_open_at_most_limit_connections(serve) -> None:
    server, pool = await serve(lambda req, n: ok(), limit=3)
    results = await asyncio.gather(*(pool.request("GET", f"/ari/x/{i}") for i in range(20)))
    assert all(r.status == 200 for r in results)
    assert server.connections <= 3


async def test_an_idle_connection_the_server_closed_is_retried_once_on_a_new_one(serve) -> None:
    # Asterisk closes a kept-alive session after session_keep_alive without a word.
    server, pool = await serve(lambda req, n: ok() if n == 0 else None)
    assert (await pool.request("POST", "/ari/a")).status == 200
    assert (await pool.request("POST", "/ari/b")).status == 200
    assert server.connections == 2
    assert [r.split(b" ")[1] for r in server.requests] == [b"/ari/a", b"/ari/b", b"/ari/b"]


async def test_a_new_connection_closed_unanswered_is_an_error_not_a_retry(serve) -> None:
    server, pool = await serve(lambda req, n: None)
    with pytest.raises(HttpError):
        await pool.request("POST", "/ari/a")
    assert len(server.requests) == 1


async def test_connection_close_is_honoured(serve) -> None:
    server, pool = await serve(lambda req, n: ok(extra="Connection: close\r\n"))
    await pool.request("GET", "/ari/a")
    await pool.request("GET", "/ari/b")
    assert server.connections == 2


async def test_chunked_and_split_answers_are_read_whole(serve) -> None:
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"4\r\n[1, \r\n3\r\n2, \r\n2\r\n3]\r\n0\r\n\r\n")
    server, pool = await serve(lambda req, n: answer)
    assert (await pool.request("GET", "/ari/a")).body == b"[1, 2, 3]"
    assert (await pool.request("GET", "/ari/b")).body == b"[1, 2, 3]"
    assert server.connections == 1


async def test_a_silent_server_times_out_and_its_connection_is_not_reused(serve) -> None:
    gate = asyncio.Event()

    def reply(req: bytes, n: int) -> bytes | None:
        return ok() if gate.is_set() else b""  # nothing at all for the first request

    server, pool = await serve(reply, timeout=0.2)
    with pytest.raises(TimeoutError):
        await pool.request("GET", "/ari/a")
    gate.set()
    assert (await pool.request("GET", "/ari/b")).status == 200
    assert server.connections == 2


async def test_an_answer_that_came_in_time_is_read_after_a_stall() -> None:
    # On the lab the ari service was frozen (SIGSTOP) for longer than the 10 s timeout: the
    # answers were in the sockets, but the timeouts fired first (calls failed with 503, a
    # trunk was skipped). The server is a thread: it answers while the loop is stalled.
    def answer_during_the_stall(sock: socket.socket) -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            time.sleep(0.1)
            conn.sendall(ok())
            conn.recv(1)  # until the client closes

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = threading.Thread(target=answer_during_the_stall, args=(sock,), daemon=True)
        server.start()
        pool = HttpPool("127.0.0.1", sock.getsockname()[1], headers={}, timeout=0.2)
        asyncio.get_running_loop().call_later(0.05, time.sleep, 1.0)  # the whole loop stalls
        try:
            assert (await pool.request("GET", "/ari/a")).status == 200
        finally:
            await pool.close()
        await asyncio.to_thread(server.join, 5)


async def test_nothing_listening_is_an_http_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    pool = HttpPool("127.0.0.1", port)
    with pytest.raises(HttpError, match="cannot connect"):
        await pool.request("GET", "/ari/a")
    await pool.close()


async def test_garbage_instead_of_http_is_an_error(serve) -> None:
    _, pool = await serve(lambda req, n: b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(HttpError, match="not an HTTP answer"):
        await pool.request("GET", "/ari/a")


def test_the_pool_runs_on_uvloop_as_the_service_does() -> None:
    import uvloop

    async def main() -> int:
        server = RawServer(lambda req, n: ok())
        port = await server.start()
        pool = HttpPool("127.0.0.1", port, limit=2)
        try:
            results = await asyncio.gather(*(pool.request("GET", f"/ari/{i}") for i in range(10)))
            assert all(r.status == 200 for r in results)
            return server.connections
        finally:
            await pool.close()
            await server.close()

    assert uvloop.run(main()) <= 2


async def test_an_interim_100_continue_is_skipped(serve) -> None:
    _, pool = await serve(lambda req, n: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"[]"))
    resp = await pool.request("GET", "/ari/a")
    assert (resp.status, resp.body) == (200, b"[]")


async def test_a_bad_content_length_is_an_error_not_a_crash(serve) -> None:
    _, pool = await serve(lambda req, n: b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n")
    with pytest.raises(HttpError, match="not an HTTP answer"):
        await pool.request("GET", "/ari/a")


async def test_a_request_waiting_for_a_connection_is_not_overtaken_for_ever(serve) -> None:
    # The pool is full (Asterisk slow, many calls): a call whose request waits for a free
    # connection must get one. Calls that send their requests back to back (create, dial,
    # set variables...) took every freed connection before the waiting one woke up: it
    # timed out (the call failed) while those behind it went through.
    server, pool = await serve(lambda req, n: ok(), limit=2, timeout=1.0)
    stop = asyncio.Event()
    done = 0

    async def busy_call() -> None:
        nonlocal done
        while not stop.is_set():
            await pool.request("POST", "/ari/busy")
            done += 1

    busy = [asyncio.create_task(busy_call()) for _ in range(4)]
    await asyncio.sleep(0.05)
    try:
        resp = await pool.request("POST", "/ari/waiting")  # TimeoutError when starved
        assert resp.status == 200
    finally:
        stop.set()
        await asyncio.gather(*busy, return_exceptions=True)
    assert done > 0


async def test_a_request_that_found_no_free_connection_in_time_says_it_was_not_sent(
        serve) -> None:
    # Every connection busy with a request the server is slow to answer: a request that
    # timed out waiting for one never left, but it timed out like one sent and unanswered,
    # which callers take for done (a hangup that was never sent, taken as delivered).
    server, pool = await serve(lambda req, n: ok() if b"/ari/slow" not in req else b"",
                               limit=1, timeout=0.3)
    with pytest.raises(TimeoutError) as sent:  # sent, never answered: no NotSent for it
        await pool.request("GET", "/ari/slow")
    assert not isinstance(sent.value, NotSent)
    # Its connection, the only one, waits for the late answer meanwhile.
    with pytest.raises(NotSent):
        await pool.request("DELETE", "/ari/channels/x")
    assert not any(b"/ari/channels/x" in r for r in server.requests)
    server.writers[0].write(ok())  # the slow answer, at last
    assert (await pool.request("DELETE", "/ari/channels/x")).status == 200
    assert server.connections == 1


async def test_a_timed_out_request_keeps_its_connection_until_its_late_answer(serve) -> None:
    # Closed at once, the server went on with the request all the same while a new
    # connection took its place: an overloaded Asterisk had 500 sessions of a pool of 64
    # and closed requests unanswered. The connection keeps its place and is reused.
    server, pool = await serve(lambda req, n: b"" if b"/ari/slow" in req else ok(),
                               limit=1, timeout=0.3)
    with pytest.raises(TimeoutError):
        await pool.request("POST", "/ari/slow")
    waiting = asyncio.create_task(pool.request("GET", "/ari/b"))
    await asyncio.sleep(0.05)
    assert not waiting.done() and server.connections == 1  # no second session meanwhile
    server.writers[0].write(ok(b'{"late": true}'))
    assert (await waiting).body == b'{"ok": true}'  # not the late answer
    assert server.connections == 1


async def test_a_late_answer_that_never_comes_frees_the_place_after_drain_max(
        serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ari_app.http.DRAIN_MAX", 0.2)
    server, pool = await serve(lambda req, n: b"" if b"/ari/slow" in req else ok(),
                               limit=1, timeout=0.5)
    with pytest.raises(TimeoutError):
        await pool.request("POST", "/ari/slow")
    assert (await pool.request("GET", "/ari/b")).status == 200  # after 0.2 s, a new one
    assert server.connections == 2
