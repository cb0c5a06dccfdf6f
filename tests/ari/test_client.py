"""The ARI client against the fake server: errors, credentials, reconnect."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from ari_support import wait_for
from fake_ari import Behaviour, FakeAsterisk
from hypothesis import given
from hypothesis import strategies as st

from ari_app.client import (
    AriClient,
    AriConflict,
    AriError,
    AriNotFound,
    AriRefused,
    AriUnavailable,
    Backoff,
    ari_base_url,
)
from routing.variables import array_assignment, with_cdr
from tests.asterisk_args import separate_args


@pytest.fixture
async def fake() -> FakeAsterisk:
    server = FakeAsterisk()
    await server.start()
    yield server
    await server.close()


def client_for(fake: FakeAsterisk, password: str | None = None) -> AriClient:
    assert fake.server is not None
    return AriClient(f"http://127.0.0.1:{fake.server.port}", fake.username,
                     password or fake.password, fake.app, heartbeat=1.0,
                     backoff=Backoff(initial=0.02, maximum=0.05))


@pytest.mark.parametrize(
    ("url", "base"),
    [("http://127.0.0.1:8088", "http://127.0.0.1:8088/ari"),
     ("http://127.0.0.1:8088/", "http://127.0.0.1:8088/ari"),
     ("http://127.0.0.1:8088/ari", "http://127.0.0.1:8088/ari"),
     ("https://user:pw@pbx.example:8089/asterisk", "https://pbx.example:8089/asterisk/ari")],
)
def test_base_url_gets_ari_path_and_loses_credentials(url: str, base: str) -> None:
    assert str(ari_base_url(url)) == base


def test_non_http_url_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        ari_base_url("ws://127.0.0.1:8088")


async def test_rest_errors_map_to_exceptions(fake: FakeAsterisk) -> None:
    fake.trunks["carrier-a"] = Behaviour.recorded("a200", "carrier-a")
    async with client_for(fake) as ari:
        with pytest.raises(AriNotFound):
            await ari.hangup("no-such-channel")
        with pytest.raises(AriError) as err:
            await ari.create_channel("PJSIP/1@no-such-trunk", channel_id="x")
        assert err.value.status == 500 and "Allocation failed" in err.value.message
        await ari.create_channel("PJSIP/1@carrier-a", channel_id="probe")
        with pytest.raises(AriConflict):  # not in Stasis yet, or dialled twice
            await ari.dial("probe")
            await ari.dial("probe")


async def test_an_error_page_that_is_not_json_becomes_one_short_line(fake: FakeAsterisk) -> None:
    # Asterisk's HTTP server answers HTML, not ARI's JSON, for what it refuses itself (a
    # request line too long, a shutdown's 503): the page went into the log, over nine lines.
    async with client_for(fake) as ari:
        with pytest.raises(AriError) as err:
            await ari.get_variable("x", "V" * 5000)
    assert err.value.status == 400 and err.value.message == "Request line too long"


async def test_a_success_that_is_not_json_is_an_ari_error() -> None:
    # A proxy in front of Asterisk answering 200 with its own page: the ValueError of the
    # JSON parser escaped the calls' `except AriError` and ended the call's task.
    page = b"<html><body><h1>Welcome</h1> to the proxy</body></html>"

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(page), page))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with AriClient(f"http://127.0.0.1:{port}", "u", "p", "app") as ari:
            with pytest.raises(AriError) as err:
                await ari.list_channels()
    finally:
        server.close()
    assert err.value.status == 200
    assert err.value.message == "not ARI's JSON: Welcome to the proxy"


async def test_wrong_password_is_an_error_that_does_not_show_the_password(
    fake: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ari = client_for(fake, password="wrong-secret")
    with pytest.raises(AriError) as err:
        await ari.list_channels()
    assert err.value.status == 401
    task = asyncio.create_task(ari.run_events(lambda raw: None))
    await wait_for(lambda: "refused" in caplog.text)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ari.close()
    assert "ARI_PASSWORD" in caplog.text
    assert "wrong-secret" not in caplog.text and fake.password not in caplog.text


async def test_an_asterisk_not_ready_yet_is_a_warning_not_an_error(
    fake: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    # Every Asterisk restart answers the events websocket with 503 for a moment: an ERROR
    # line each time woke whoever alerts on errors for a hiccup that passes by itself.
    caplog.set_level(logging.DEBUG)
    fake.accepting = False
    ari = client_for(fake)
    task = asyncio.create_task(ari.run_events(lambda raw: None))
    await wait_for(lambda: "not ready" in caplog.text)
    fake.accepting = True
    await ari.connected.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ari.close()
    assert [r.levelname for r in caplog.records if "not ready (HTTP 503)" in r.message] == [
        "WARNING"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_unreachable_asterisk_raises_unavailable() -> None:
    ari = AriClient("http://127.0.0.1:9", "u", "p", "app", request_timeout=1.0)
    with pytest.raises(AriUnavailable):
        await ari.list_channels()
    await ari.close()


@contextlib.asynccontextmanager
async def events_from(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    **client: Any,
) -> AsyncIterator[int]:
    """The client's events websocket against a server of the test's own; yields its port."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ari = AriClient(f"http://127.0.0.1:{port}", "u", "p", "app",
                    backoff=Backoff(initial=0.01, maximum=0.01), **client)
    task = asyncio.create_task(ari.run_events(lambda raw: None))
    try:
        yield port
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ari.close()
        server.close()


async def test_an_events_handshake_that_never_comes_back_is_retried_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Asterisk with its ARI stuck (docs/ari.md) accepts the connection and never answers the
    # websocket handshake: the service waited on it silently (aiohttp's default is 5 min).
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read()  # until the client gives up and closes
        writer.close()

    async with events_from(silent, connect_timeout=0.2) as port:
        await wait_for(lambda: connections >= 2)
    assert (f"ARI not reachable at http://127.0.0.1:{port}/ari/events "
            "(no answer within 0.2 s); retrying with backoff") in caplog.text


@pytest.mark.parametrize("up_for", [0.0, 1000.0])
async def test_a_websocket_that_was_up_is_made_again_at_once_after_a_drop_else_after_backoff(
        fake: FakeAsterisk, monkeypatch: pytest.MonkeyPatch, up_for: float) -> None:
    # Until the app is connected again Stasis() cannot hand calls over: the backoff's first
    # delay (0.2 s) failed 9 calls of 60 at 10 calls/s with six cuts on the lab.
    import ari_app.client

    monkeypatch.setattr(ari_app.client, "RECONNECT_AT_ONCE_AFTER", up_for)
    assert fake.server is not None
    ari = AriClient(f"http://127.0.0.1:{fake.server.port}", fake.username, fake.password,
                    fake.app, backoff=Backoff(initial=0.5, maximum=0.5, jitter=0.0))
    connects: list[float] = []

    async def on_connected() -> None:
        connects.append(asyncio.get_running_loop().time())

    task = asyncio.create_task(ari.run_events(lambda raw: None, on_connected))
    try:
        await wait_for(lambda: len(connects) == 1)
        dropped = asyncio.get_running_loop().time()
        await fake.drop_websockets()
        await wait_for(lambda: len(connects) == 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ari.close()
    gap = connects[1] - dropped
    assert gap < 0.3 if up_for == 0.0 else gap >= 0.5, gap


async def test_a_websocket_closed_at_once_every_time_is_made_again_ever_later(
        fake: FakeAsterisk, monkeypatch: pytest.MonkeyPatch) -> None:
    # Asterisk, or a proxy in front of it, takes the upgrade and closes at once, again and
    # again: the backoff started over at every upgrade, so the app reconnected (reconciled,
    # logged two lines) at its first delay for ever, about 5 times a second.
    import ari_app.client

    monkeypatch.setattr(ari_app.client, "RECONNECT_AT_ONCE_AFTER", 1000.0)  # never up long
    assert fake.server is not None
    ari = AriClient(f"http://127.0.0.1:{fake.server.port}", fake.username, fake.password,
                    fake.app, backoff=Backoff(initial=0.05, maximum=0.4, jitter=0.0))
    loop = asyncio.get_running_loop()
    connects: list[float] = []
    drops: list[float] = []

    async def on_connected() -> None:
        connects.append(loop.time())

    task = asyncio.create_task(ari.run_events(lambda raw: None, on_connected))
    try:
        for n in range(1, 5):
            await wait_for(lambda: len(connects) == n)  # noqa: B023 (n is this round's)
            drops.append(loop.time())
            await fake.drop_websockets()
        await wait_for(lambda: len(connects) == 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ari.close()
    gaps = [again - dropped for dropped, again in zip(drops, connects[1:], strict=True)]
    assert all(gap >= delay for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.4], strict=True)), gaps


async def test_a_websocket_gone_silent_after_the_upgrade_is_made_again() -> None:
    # The far end took the upgrade, then nothing more ever comes (the host went away without
    # a reset, a stuck proxy): the heartbeat notices it and the app connects again.
    connections = 0
    done = asyncio.Event()

    async def silent_after_upgrade(reader: asyncio.StreamReader,
                                   writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        await done.wait()
        writer.close()

    try:
        async with events_from(silent_after_upgrade, heartbeat=0.3):
            await wait_for(lambda: connections >= 2)
    finally:
        done.set()


async def test_events_websocket_reconnects_after_a_drop_and_calls_on_connected(
    fake: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ari = client_for(fake)
    seen: list[str] = []
    connects: list[int] = []

    async def on_connected() -> None:
        connects.append(ari.connections)

    task = asyncio.create_task(ari.run_events(lambda raw: seen.append(raw["type"]), on_connected))
    await fake.connected.wait()
    fake.new_caller("911234567")
    await wait_for(lambda: seen == ["StasisStart"])
    await fake.drop_websockets()
    await wait_for(lambda: len(connects) == 2)
    fake.new_caller("911234568")
    await wait_for(lambda: seen == ["StasisStart", "StasisStart"])
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ari.close()
    assert connects == [1, 2]
    assert fake.password not in caplog.text


async def test_a_failure_after_connecting_is_logged_when_it_happens(
        fake: FakeAsterisk, caplog: pytest.LogCaptureFixture) -> None:
    # The reconcile failing on something else than an ARI error (a reply of an unexpected
    # shape) showed only as "Task exception was never retrieved" when the task was collected.
    ari = client_for(fake)
    failed = asyncio.Event()

    async def on_connected() -> None:
        failed.set()
        raise KeyError("id")

    task = asyncio.create_task(ari.run_events(lambda raw: None, on_connected))
    try:
        await failed.wait()
        await wait_for(lambda: "after connecting to ARI: KeyError: 'id'" in caplog.text)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ari.close()


async def test_a_failing_event_handler_does_not_stop_the_reader(fake: FakeAsterisk) -> None:
    ari = client_for(fake)
    seen: list[str] = []

    def handler(raw: dict) -> None:
        seen.append(raw["channel"]["id"])
        if len(seen) == 1:
            raise RuntimeError("bug in a handler")

    task = asyncio.create_task(ari.run_events(handler))
    await fake.connected.wait()
    first, second = fake.new_caller("1"), fake.new_caller("2")
    await wait_for(lambda: seen == [first, second])
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ari.close()


@given(st.lists(st.text(), min_size=2, max_size=8))
def test_array_assignment_keeps_every_value_whole(values):
    names = [f"V{i}" for i in range(len(values))]
    name, value = array_assignment(dict(zip(names, values, strict=True)))
    assert separate_args(name.removeprefix("ARRAY(").removesuffix(")")) == names
    assert separate_args(value) == values


@pytest.mark.parametrize("bad", ["", "A,B", "A)", "A B", "X(1)", "CDR()", "CDR(A,B)", "CDR(A))"])
def test_array_assignment_refuses_names_that_are_not_plain(bad):
    with pytest.raises(ValueError):
        array_assignment({bad: "1", "B": "2"})


def test_the_outcome_is_written_on_the_cdr_too():
    values = with_cdr({"ROUTER_STATUS": "OK", "ROUTER_ATTEMPTS": "a:answered:16:200",
                       "ROUTER_CAUSE": "21"})
    assert values == {"ROUTER_STATUS": "OK", "ROUTER_ATTEMPTS": "a:answered:16:200",
                      "ROUTER_CAUSE": "21", "CDR(ROUTER_STATUS)": "OK",
                      "CDR(ROUTER_ATTEMPTS)": "a:answered:16:200"}
    name, _ = array_assignment(values)
    assert separate_args(name.removeprefix("ARRAY(").removesuffix(")"))[-1] == (
        "CDR(ROUTER_ATTEMPTS)")  # a CDR() name stays one argument of ARRAY()


async def test_set_variables_is_one_request(fake: FakeAsterisk) -> None:
    caller = fake.new_caller("911234567")
    async with client_for(fake) as ari:
        await ari.set_variables(caller, {"ROUTER_STATUS": "OK", "ROUTER_TRUNK": "a,b"})
    assert fake.channels[caller].variables == {"ROUTER_STATUS": "OK", "ROUTER_TRUNK": "a,b"}
    assert fake.paths("POST") == [f"/channels/{caller}/variable"]


async def test_variables_past_asterisk_s_body_limit_are_set_in_several_requests(
        fake: FakeAsterisk) -> None:
    # Asterisk refuses a request body past 40,960 bytes (413, measured on 22.10): the ROUTER_*
    # of a plan of many long-named attempts (its ROUTER_RESUME, traces and their CDR copies)
    # were one request, refused whole: nothing of the call was recorded.
    caller = fake.new_caller("911234567")
    values = {f"ROUTER_X{i}": ('{"a":"b",' * 2_000)[:18_000] for i in range(3)}
    async with client_for(fake) as ari:
        await ari.set_variables(caller, values)
    assert fake.channels[caller].variables == values
    assert fake.paths("POST") == [f"/channels/{caller}/variable"] * 3


async def test_a_refusal_while_the_websocket_was_down_is_forgotten_at_the_next_connect(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Credentials changed in ari.conf, then fixed. While the websocket was refused, a call's
    # check got 401 too; nothing cleared that when the next websocket opened. That one,
    # dropped hours later (Asterisk restarted), was taken for a refusal: no reconnect at once
    # but after the backoff's delay (up to 2 s of 503s to new calls), logged as "ARI refuses
    # our requests" (review of the ARI client).
    import ari_app.client

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(ari_app.client, "RECONNECT_AT_ONCE_AFTER", 0.0)  # each one "up long"
    fake = FakeAsterisk()
    await fake.start()
    assert fake.server is not None
    ari = AriClient(f"http://127.0.0.1:{fake.server.port}", fake.username, fake.password,
                    fake.app, heartbeat=1.0, backoff=Backoff(initial=0.5, maximum=0.5, jitter=0))
    connects: list[None] = []

    async def on_connected() -> None:
        connects.append(None)

    task = asyncio.create_task(ari.run_events(lambda raw: None, on_connected))
    try:
        await wait_for(lambda: len(connects) == 1)
        right = fake.password
        fake.password = "changed-in-ari.conf"
        with pytest.raises(AriRefused):
            await ari.list_channels()  # closes the websocket; its handshakes get 401 now
        await wait_for(lambda: not ari.connected.is_set())
        with pytest.raises(AriRefused):
            await ari.list_channels()  # a call's check while the websocket is down
        fake.password = right
        await wait_for(lambda: len(connects) == 2)
        caplog.clear()
        await fake.drop_websockets()  # later: Asterisk restarts, say
        await wait_for(lambda: len(connects) == 3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ari.close()
        await fake.close()
    assert "ARI refuses our requests" not in caplog.text
