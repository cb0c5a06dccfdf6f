"""FastAGI protocol tests: a fake Asterisk over a real socket against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable

import pytest

from agi.scripts import Scripts
from agi.server import AgiReply, AgiRequest, AgiServer, AgiSession, Limits, set_variable_lines
from redis_seed.routes_file import parse_routes
from routing.snapshot import Snapshot

from .agi_fake_asterisk import AGI_BUF_LEN, FakeChannel, ServerFactory, header_block

USAGE_520 = (
    b"520-Invalid command syntax.  Proper usage follows:\n"
    b" Usage: GET VARIABLE <variablename>\n"
    b"Returns 0 if variablename is not set. Returns 1 if variablename is set and\n"
    b"returns the variable in parentheses. Example return code: 200 result=1 (testvariable)\n"
    b"520 End of proper usage.\n"
)


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a condition that has no event to await, with a deadline."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Recorder:
    """A handler that runs a list of commands and keeps each reply."""

    def __init__(self, *commands: str) -> None:
        self.commands = commands
        self.replies: list[AgiReply] = []
        self.sessions: list[AgiSession] = []
        self.requests: list[AgiRequest] = []

    async def __call__(self, session: AgiSession) -> None:
        self.sessions.append(session)
        self.requests.append(session.request)
        for command in self.commands:
            self.replies.append(await session.command(command))


# -- a normal session ------------------------------------------------------------------------


async def test_route_session_sets_every_router_variable_and_status_last(router: AgiServer) -> None:
    ch = await FakeChannel(router.port, args=["911234567"]).run()

    v = ch.variables
    assert v["ROUTER_STATUS"] == "OK"
    assert v["ROUTER_NUMBER"] == "+34911234567"
    assert v["ROUTER_COUNT"] == "3"
    assert {v["ROUTER_DIAL_1"], v["ROUTER_DIAL_2"]} == {
        "PJSIP/+34911234567@carrier-a", "PJSIP/+34911234567@carrier-b"}
    assert v["ROUTER_DIAL_3"] == "PJSIP/990034911234567@carrier-c"
    assert [v[f"ROUTER_CARRIER_{n}"] for n in (1, 2, 3)] == ["peering", "peering", "cheap"]
    assert (v["ROUTER_TIMEOUT_1"], v["ROUTER_SETUP_TIMEOUT_1"]) == ("30", "5")  # seconds
    assert ch.set_order[-1] == "ROUTER_STATUS"
    assert ch.closed_by_server
    assert router.stats.served == 1


async def test_route_sets_all_its_variables_in_one_command(router: AgiServer) -> None:
    ch = await FakeChannel(router.port, args=["911234567"]).run()
    sets = [c for c in ch.commands if c.startswith("SET VARIABLE")]
    assert len(sets) == 1 and sets[0].startswith("SET VARIABLE ARRAY(")
    # 6 per attempt, NUMBER, COUNT, VERSION, the CDR's NUMBER, VERSION and STATUS, STATUS
    assert len(ch.set_order) == 25


async def test_script_is_chosen_by_path_and_gets_query_and_numbered_args(
        agi_server: ServerFactory) -> None:
    rec = Recorder()
    server = await agi_server({"route": rec})
    headers = header_block("route", args=["0033123", "acme", "x"], query="tenant=t1&flag")
    await FakeChannel(server.port, headers=headers).run()
    # Without agi_network_script (AGI(agi://host) with no path) Asterisk sends only agi_request.
    raw = header_block("route", args=["1"]).replace(b"agi_network_script: route\n", b"")
    await FakeChannel(server.port, headers=raw).run()

    first, second = rec.requests
    assert first.script == "route"
    assert first.args == ("0033123", "acme", "x")
    assert dict(first.query) == {"tenant": "t1", "flag": ""}
    assert first.channel == "PJSIP/phone-agi-0000016a"
    assert second.script == "route" and second.args == ("1",)


async def test_more_than_nine_args_keep_their_numeric_order(agi_server: ServerFactory) -> None:
    rec = Recorder()
    server = await agi_server({"s": rec})
    await FakeChannel(server.port, script="s", args=[str(i) for i in range(1, 13)]).run()
    assert rec.requests[0].args == tuple(str(i) for i in range(1, 13))


async def test_unknown_script_is_closed_without_commands(agi_server: ServerFactory) -> None:
    server = await agi_server({"route": Recorder()})
    ch = await FakeChannel(server.port, script="nope").run()
    assert ch.closed_by_server and ch.commands == []
    assert server.stats.unknown_script == 1


# -- what real Asterisk sends ----------------------------------------------------------------


async def test_multiline_520_reply_is_read_whole_and_the_next_reply_is_not_shifted(
        agi_server: ServerFactory) -> None:
    rec = Recorder("GET VARIABLE", 'GET VARIABLE "X"')
    server = await agi_server({"s": rec})

    def respond(ch: FakeChannel, line: str) -> bytes | None:
        return USAGE_520 if line == "GET VARIABLE" else b"200 result=1 (transfer)\n"

    await FakeChannel(server.port, script="s", respond=respond).run()
    usage, value = rec.replies
    assert usage.code == 520
    assert "Usage: GET VARIABLE" in usage.text and usage.text.endswith("End of proper usage.")
    assert value.code == 200 and value.data == "transfer"


async def test_a_refused_command_is_logged_on_one_line(
        agi_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    async def checked(session: AgiSession) -> None:
        await session.checked("GET VARIABLE")

    server = await agi_server({"s": checked})
    await FakeChannel(server.port, script="s", respond=lambda ch, line: USAGE_520).run()
    assert server.stats.dropped == 1
    [line] = _warnings(caplog)
    assert line.endswith(" s: Asterisk refused a command: ['GET', 'VARIABLE'] -> 520 "
                         "'Invalid command syntax.  Proper usage follows:' (+4 more lines)")


async def test_hangup_line_marks_the_session_and_does_not_shift_replies(
        agi_server: ServerFactory) -> None:
    rec = Recorder('GET VARIABLE "A"', 'GET VARIABLE "B"')
    server = await agi_server({"s": rec})

    def respond(ch: FakeChannel, line: str) -> bytes | None:
        if line.endswith('"A"'):
            return b"HANGUP\n200 result=1 (a)\n"
        return b"200 result=1 (b)\n"

    await FakeChannel(server.port, script="s", respond=respond).run()
    assert [r.data for r in rec.replies] == ["a", "b"]
    assert rec.sessions[0].hung_up


async def test_hangup_then_511_ends_the_route_script_quietly(router: AgiServer) -> None:
    def respond(ch: FakeChannel, line: str) -> bytes | None:
        prefix = b"HANGUP\n" if len(ch.commands) == 1 else b""
        return prefix + b"511 Command Not Permitted on a dead channel or intercepted channel\n"

    ch = await FakeChannel(router.port, args=["911234567"], respond=respond).run()
    assert len(ch.commands) == 1  # the script stopped at the first refusal
    assert ch.closed_by_server
    assert router.stats.dropped == 1 and router.stats.served == 0


async def test_100_trying_is_an_interim_reply(agi_server: ServerFactory) -> None:
    rec = Recorder("EXEC Gosub sub,s,1", 'GET VARIABLE "X"')
    server = await agi_server({"s": rec})

    def respond(ch: FakeChannel, line: str) -> bytes | None:
        if line.startswith("EXEC"):
            return b"100 result=0 Trying...\n200 result=0 Gosub complete\n"
        return b"200 result=1 (x)\n"

    await FakeChannel(server.port, script="s", respond=respond).run()
    assert [(r.code, r.result, r.extra) for r in rec.replies] == [
        (200, "0", "Gosub complete"), (200, "1", "")]


@pytest.mark.parametrize(("text", "result", "data", "extra"), [
    ("result=1", "1", None, ""),
    ("result=1 (value)", "1", "value", ""),
    ("result=1 (f(x) (nested))", "1", "f(x) (nested)", ""),
    ("result=1 ()", "1", "", ""),
    ("result= (timeout)", "", "timeout", ""),
    ("result=-1", "-1", None, ""),
    ("result=49 endpos=8640", "49", None, "endpos=8640"),
    ("result=1 (speech) endpos=1234 results=2", "1", "speech", "endpos=1234 results=2"),
    ("result=0 Gosub complete", "0", None, "Gosub complete"),
    ("Invalid or unknown command", None, None, "Invalid or unknown command"),
])
def test_reply_parser(text: str, result: str | None, data: str | None, extra: str) -> None:
    reply = AgiReply.parse(200, text)
    assert (reply.result, reply.data, reply.extra) == (result, data, extra)


async def test_non_utf8_header_bytes_do_not_kill_the_session(router: AgiServer) -> None:
    headers = (header_block("route", args=["PLACEHOLDER"])
               .replace(b"PLACEHOLDER", b"91\xff1234567")
               .replace(b"Lab Caller", b"Jos\xe9 \xc3"))
    ch = await FakeChannel(router.port, headers=headers).run()
    assert ch.variables["ROUTER_STATUS"] == "INVALID"  # never dialled with a bad byte
    assert ch.variables["ROUTER_CAUSE"] == "28"
    assert "ROUTER_DIAL_1" not in ch.variables


@pytest.mark.parametrize("value", ["acme ", " acme", "", "  "])
async def test_a_header_value_is_taken_as_asterisk_wrote_it(agi_server: ServerFactory,
                                                            value: str) -> None:
    # Spaces around values were stripped: a tenant "acme " routed as tenant "acme" on this
    # path and as no known tenant on the ARI path and in explain.
    rec = Recorder()
    server = await agi_server({"route": rec})
    await FakeChannel(server.port, args=["911234567", value]).run()
    [request] = rec.requests
    assert request.arg(2) == value
    assert request.arg(1) == "911234567"


async def test_non_utf8_reply_bytes_are_replaced_not_fatal(agi_server: ServerFactory) -> None:
    rec = Recorder('GET VARIABLE "CALLERID(name)"', 'GET VARIABLE "X"')
    server = await agi_server({"s": rec})

    def respond(ch: FakeChannel, line: str) -> bytes | None:
        return b"200 result=1 (Jos\xe9)\n" if "CALLERID" in line else b"200 result=1 (ok)\n"

    await FakeChannel(server.port, script="s", respond=respond).run()
    assert [r.data for r in rec.replies] == ["Jos\ufffd", "ok"]


# -- broken and hostile peers ----------------------------------------------------------------


async def test_peer_closing_before_headers_end_does_not_stop_other_sessions(
        router: AgiServer) -> None:
    # One peer sends half a header block and closes; another stalls mid-header (a port scan,
    # a crashed box). Neither may hold up the next call.
    r1, w1 = await asyncio.open_connection("127.0.0.1", router.port)
    w1.write(b"agi_network: yes\nagi_network_script: route\nagi_chan")
    await w1.drain()
    w1.close()
    r2, w2 = await asyncio.open_connection("127.0.0.1", router.port)
    w2.write(b"agi_network: yes\n")
    await w2.drain()

    ch = await FakeChannel(router.port, args=["911234567"]).run(within=2.0)
    assert ch.variables["ROUTER_STATUS"] == "OK"
    await until(lambda: router.stats.dropped == 1)  # the closed one; the stalled one waits
    assert router.stats.served == 1
    w2.close()


async def test_slow_peer_hits_the_header_timeout(
        agi_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # No upper wall-clock bound (a loaded machine stalls the loop): the cause is checked
    # instead. The default header timeout (5 s) is past the 3 s deadline, so the 0.3 s one is
    # in use; the lower bound (the timer does not fire early) no slow machine can break.
    server = await agi_server({"route": Recorder()}, limits=Limits(header_timeout=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network: yes\nagi_network_script: ro")
    await writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 3.0) == b""  # the server hung up on us
    assert time.monotonic() - started > 0.25
    assert server.stats.dropped == 1
    [line] = _warnings(caplog)
    assert line.endswith("dropped before it began: headers incomplete after 0.3 s (1 lines)")
    writer.close()


async def _asked_one_command(agi_server: ServerFactory, read_timeout: float) -> tuple[
        AgiServer, asyncio.StreamReader, asyncio.StreamWriter]:
    """A session whose script sent its one command, which we have not answered."""
    server = await agi_server({"s": Recorder('GET VARIABLE "X"')},
                              limits=Limits(read_timeout=read_timeout))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(header_block("s"))
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 3.0) == b'GET VARIABLE "X"\n'
    return server, reader, writer


async def test_peer_that_never_replies_hits_the_read_timeout(agi_server: ServerFactory) -> None:
    server, reader, writer = await _asked_one_command(agi_server, 0.3)
    assert await asyncio.wait_for(reader.read(), 3.0) == b""
    assert server.stats.dropped == 1
    writer.close()


@pytest.mark.parametrize("interim", [b"100 result=0 Trying...\n", b"HANGUP\n",
                                     b"520-Invalid command syntax.\n"],
                         ids=["trying", "hangup", "520 block"])
async def test_a_peer_that_keeps_sending_lines_before_its_reply_hits_the_read_timeout(
        agi_server: ServerFactory, interim: bytes) -> None:
    # Each line started the read timeout again: a peer sending a line every 3 s held its
    # place with a 10 s timeout for as long as it liked (a 520 block for 512 lines).
    server, reader, writer = await _asked_one_command(agi_server, 0.5)
    started = time.monotonic()

    async def keep_sending() -> None:
        while True:
            writer.write(interim)
            await writer.drain()
            await asyncio.sleep(0.1)  # the pace of the peer under test, not a wait

    sender = asyncio.create_task(keep_sending())
    try:
        # closed by the server: an end of file, or a reset (it aborts with our lines unread)
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
    assert time.monotonic() - started < 2.0
    assert server.stats.dropped == 1
    writer.close()


async def test_over_long_header_line_is_refused(agi_server: ServerFactory) -> None:
    server = await agi_server({"route": Recorder()}, limits=Limits(max_line=1024))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network_script: " + b"x" * 5000 + b"\n\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 3.0) == b""
    assert server.stats.dropped == 1
    writer.close()


@pytest.mark.parametrize("name", [b"agi_x%d", b"agi_x"], ids=["distinct", "one name repeated"])
async def test_endless_header_block_is_refused(agi_server: ServerFactory, name: bytes) -> None:
    # The limit counted distinct names: 10,000 lines of one name were taken in.
    server = await agi_server({"route": Recorder()}, limits=Limits(max_headers=50))
    lines = [(name % i if b"%" in name else name) + b": y\n" for i in range(60)]
    ch = FakeChannel(server.port, headers=b"".join(lines) + b"\n")
    await ch.run()
    assert ch.closed_by_server and ch.commands == []
    assert server.stats.dropped == 1


async def test_a_header_block_past_its_byte_budget_is_refused(agi_server: ServerFactory) -> None:
    # 255 lines of 8 KB each were taken in: 400 such peers held 880 MB of the server.
    server = await agi_server({"route": Recorder()},
                              limits=Limits(max_header_bytes=4096, max_line=1024))
    lines = [b"agi_x%d: " % i + b"y" * 900 + b"\n" for i in range(8)]
    ch = FakeChannel(server.port, headers=b"".join(lines) + b"\n")
    await ch.run()
    assert ch.closed_by_server and ch.commands == []
    assert server.stats.dropped == 1


async def test_a_connection_past_those_beginning_at_once_closes_the_oldest(
        agi_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # A local peer holding max_beginning idle connections (reopening those the header timeout
    # closes) kept every call out when the newest was the one closed: Asterisk's.
    async def served(session: AgiSession) -> None:
        await session.set_variable("SERVED", "1")

    server = await agi_server({"s": served}, limits=Limits(max_beginning=2, header_timeout=3,
                                                           evict_after=0))  # (however new)
    stalled = []
    try:
        for n in (1, 2):  # one after the other: the first is the oldest
            stalled.append(await asyncio.open_connection("127.0.0.1", server.port))
            stalled[-1][1].write(b"agi_network_script: s\n")  # half a header block, no more
            await stalled[-1][1].drain()
            await until(lambda n=n: server.stats.accepted == n)
        ch = await FakeChannel(server.port, script="s").run(within=1)  # not after the 3 s
        assert ch.variables == {"SERVED": "1"}
        oldest, newer = stalled[0][0], stalled[1][0]
        assert await asyncio.wait_for(oldest.read(), 1.0) == b""  # closed by the server
        assert not newer.at_eof()
        assert server.stats.dropped == 1
        assert "closed after" in caplog.text
        assert "2 connections are sending theirs" in caplog.text
        assert "dropped before it began" not in caplog.text  # one line for the closed one
    finally:
        for _, writer in stalled:
            writer.close()
    await until(lambda: server.stats.dropped == 2)  # the other one, once closed


async def test_a_burst_of_calls_past_max_beginning_is_served_whole(
        agi_server: ServerFactory) -> None:
    # Calls that connect while the event loop is busy wait in the kernel's backlog, their
    # headers sent; the server then accepts them all before it reads any. Past max_beginning
    # they looked like peers that never finish: 1,200 calls at once from another process lost
    # 200 to "closed after 0.0 s without its headers" (a code review).
    async def served(session: AgiSession) -> None:
        await session.set_variable("SERVED", "1")

    server = await agi_server({"s": served}, limits=Limits(max_beginning=5))
    socks = []
    try:
        for _ in range(20):  # the loop does not run meanwhile: a burst, all in the backlog
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(header_block("s"))
            socks.append(sock)

        async def answer(sock: socket.socket) -> list[bytes]:
            reader, writer = await asyncio.open_connection(sock=sock)
            commands = []
            try:
                while line := await reader.readline():
                    commands.append(line)
                    writer.write(b"200 result=1\n")
            except ConnectionResetError:  # closed by the server with our headers unread
                pass
            writer.close()
            return commands

        sessions = await asyncio.wait_for(asyncio.gather(*(answer(s) for s in socks)), 10)
    finally:
        for sock in socks:
            sock.close()
    assert [len(commands) for commands in sessions] == [1] * 20
    assert server.stats.dropped == 0


async def test_garbage_reply_ends_the_session(agi_server: ServerFactory) -> None:
    rec = Recorder('GET VARIABLE "X"', 'GET VARIABLE "Y"')
    server = await agi_server({"s": rec})
    ch = await FakeChannel(server.port, script="s",
                           respond=lambda ch, line: b"hello there\n").run()
    assert len(ch.commands) == 1 and ch.closed_by_server
    assert server.stats.dropped == 1


async def test_peer_outside_the_allow_list_is_refused(agi_server: ServerFactory) -> None:
    rec = Recorder()
    server = await agi_server({"route": rec}, allow=["127.0.0.2/32"])
    refused = await FakeChannel(server.port).run()
    assert refused.closed_by_server and rec.requests == []
    assert server.stats.refused == 1

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port,
                                                   local_addr=("127.0.0.2", 0))
    writer.write(header_block("route"))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 3.0) == b""
    assert len(rec.requests) == 1 and rec.requests[0].peer == "127.0.0.2"
    writer.close()


def test_a_bad_allow_entry_is_rejected_at_start_up() -> None:
    with pytest.raises(ValueError):
        AgiServer({}, allow=["not-an-address"])


# -- load ------------------------------------------------------------------------------------


async def test_a_thousand_concurrent_route_sessions_are_all_served(router: AgiServer) -> None:
    channels = [FakeChannel(router.port, args=[f"91{i:07d}"]) for i in range(1000)]
    await asyncio.gather(*(ch.run(within=60) for ch in channels))

    assert all(ch.variables["ROUTER_STATUS"] == "OK" for ch in channels)
    assert all(ch.variables["ROUTER_NUMBER"] == f"+3491{i:07d}" for i, ch in enumerate(channels))
    assert router.stats.served == 1000 and router.stats.dropped == 0


async def test_sessions_beyond_max_sessions_wait_for_a_place(agi_server: ServerFactory) -> None:
    running = 0
    most = 0

    async def slow(session: AgiSession) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await session.get_variable("X")
        await asyncio.sleep(0.01)  # hold the place a moment so the sessions overlap
        running -= 1

    server = await agi_server({"s": slow}, limits=Limits(max_sessions=20))
    channels = [FakeChannel(server.port, script="s") for _ in range(200)]
    await asyncio.gather(*(ch.run(within=30) for ch in channels))
    assert server.stats.served == 200
    assert most == 20 and server.stats.peak == 20


async def test_connections_get_dropped_when_no_place_frees_up_in_time(
        agi_server: ServerFactory) -> None:
    release = asyncio.Event()

    async def stuck(session: AgiSession) -> None:
        await release.wait()

    server = await agi_server({"s": stuck}, limits=Limits(max_sessions=1, queue_timeout=0.2))
    first = asyncio.create_task(FakeChannel(server.port, script="s").run())
    await until(lambda: server.stats.active == 1)
    second = await FakeChannel(server.port, script="s").run()
    assert second.closed_by_server and server.stats.overloaded == 1
    release.set()
    await first
    assert server.stats.served == 1


async def test_connections_that_send_nothing_do_not_keep_sessions_from_a_place(
        agi_server: ServerFactory) -> None:
    # An audit's 1,100 silent connections took every place (1,000) for the header timeout,
    # and each real call queued behind them was dropped after the queue timeout.
    async def served(session: AgiSession) -> None:
        await session.set_variable("SERVED", "1")

    server = await agi_server({"s": served},
                              limits=Limits(max_sessions=1, queue_timeout=0.3, header_timeout=3))
    silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    try:
        await until(lambda: server.stats.accepted == 3)
        ch = await FakeChannel(server.port, script="s").run(within=2)
        assert ch.variables == {"SERVED": "1"}
        assert server.stats.overloaded == 0
    finally:
        for _, writer in silent:
            writer.close()


async def test_closing_with_sessions_past_their_grace_logs_one_line_and_no_traceback(
        agi_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # On Python 3.11 every connection task cancelled at shutdown made asyncio log an
    # "Exception in callback ... CancelledError" traceback (CPython gh-113538).
    async def stuck(session: AgiSession) -> None:
        await asyncio.Event().wait()

    server = await agi_server({"s": stuck})
    channels = [asyncio.create_task(FakeChannel(server.port, script="s").run()) for _ in range(3)]
    await until(lambda: server.stats.active == 3)
    await server.close(grace=0.05)
    await asyncio.gather(*channels)
    await asyncio.sleep(0)  # the connection tasks' done-callbacks
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "FastAGI: 3 session(s) still running after 0.05 s: closed"]
    # and counted: the stop line said "0 served, 0 dropped" of sessions it had closed
    assert (server.stats.served, server.stats.dropped) == (0, 3)


async def _junk_connections(port: int, count: int) -> None:
    """``count`` connections that send a line that is not a header, one after the other."""
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\n")
        await reader.read()  # the server drops it: EOF
        writer.close()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def _two_lines_then_how_many_more(server: AgiServer, caplog: pytest.LogCaptureFixture,
                                        each: str, summary: str) -> None:
    """Five of one kind under ``log_burst=2``: two lines saying ``each``, and at close one
    line with the three held back."""
    lines = _warnings(caplog)
    assert len(lines) == 2 and all(each in line for line in lines), lines
    await server.close()
    assert _warnings(caplog)[2:] == [
        f"FastAGI: 3 more {summary} within 60 s, not logged one by one"]


async def test_a_flood_of_bad_connections_logs_a_few_lines_and_how_many_more(
        agi_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # An audit's 1,100 silent connections wrote 1,100 warning lines.
    server = await agi_server({}, limits=Limits(log_burst=2, log_window=60))
    await _junk_connections(server.port, 5)
    assert server.stats.dropped == 5
    await _two_lines_then_how_many_more(server, caplog, "dropped before it began",
                                        "sessions dropped before they began")


async def test_sessions_for_an_unknown_script_log_a_few_lines_and_how_many_more(
        agi_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # A dialplan naming a wrong script (`routee`) wrote a line per call: 2,000 in an audit.
    server = await agi_server({"route": Recorder()}, limits=Limits(log_burst=2, log_window=60))
    for _ in range(5):
        await FakeChannel(server.port, script="routee").run()
    assert server.stats.unknown_script == 5
    await _two_lines_then_how_many_more(server, caplog, "no FastAGI script 'routee'",
                                        "sessions for no known script")


async def test_refused_commands_log_a_few_errors_and_how_many_more(
        agi_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # One ERROR line per session: a peer refusing every command wrote 46,000 (audit).
    async def checked(session: AgiSession) -> None:
        await session.checked("GET VARIABLE")

    server = await agi_server({"s": checked}, limits=Limits(log_burst=2, log_window=60))
    for _ in range(5):
        await FakeChannel(server.port, script="s", respond=lambda ch, line: USAGE_520).run()
    assert [r.levelno for r in caplog.records if r.levelno >= logging.WARNING] == [
        logging.ERROR, logging.ERROR]
    await _two_lines_then_how_many_more(server, caplog, "Asterisk refused a command",
                                        "sessions whose command Asterisk refused")


async def test_a_peer_that_closes_instead_of_replying_is_logged_in_plain_words(
        agi_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # It logged asyncio's own "0 bytes read on a total of undefined expected bytes".
    server = await agi_server({"s": Recorder('GET VARIABLE "X"')})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(header_block("s"))
    await writer.drain()
    assert (await reader.readline()).startswith(b"GET VARIABLE")
    writer.close()
    await until(lambda: server.stats.dropped == 1)
    [line] = [x for x in _warnings(caplog) if "ended early" in x]
    assert line.endswith("s session ended early: Asterisk closed the connection before its "
                         "reply"), line


async def test_a_held_back_count_is_reported_when_its_window_ends_and_logging_starts_again(
        agi_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    server = await agi_server({}, limits=Limits(log_burst=1, log_window=3.0,
                                                header_timeout=0.5))
    await _junk_connections(server.port, 3)
    await until(lambda: len(_warnings(caplog)) == 2)  # the server's sweeper reports it
    assert _warnings(caplog)[1] == (
        "FastAGI: 2 more sessions dropped before they began within 3 s, not logged one by one")
    await _junk_connections(server.port, 1)
    assert len(_warnings(caplog)) == 3 and "dropped before it began" in _warnings(caplog)[2]


LONG_PLAN = "\n".join([
    'defaults: {country_code: "34", setup_timeout: 2, ring_timeout: 10, max_attempts: 40}',
    "carriers:",
    *(f"  carrier{i:02}: {{trunks: [trunk-{i:02}-of-a-carrier-with-a-long-name]}}"
      for i in range(1, 31)),
    "target_patterns:",
    '  spain: {prefix: "+34"}',
    "outgoing_routes:",
    *(f"  - {{name: r{i:02}, pattern: spain, carrier: carrier{i:02}, priority: {i}}}"
      for i in range(1, 31)),
]) + "\n"


async def test_route_of_a_plan_past_asterisks_limits_sets_every_variable(
        agi_server: ServerFactory) -> None:
    # 30 attempts: 187 variables and some 6,900 bytes, past ARRAY()'s 100 variables and the
    # 2,048 bytes res_agi reads a command into. Both cut silently: ROUTER_STATUS was never set
    # and the dialplan took the call for a router error (503, no trunk tried).
    snapshot = Snapshot.build(parse_routes(LONG_PLAN, "long.yaml"), "v-long")
    server = await agi_server(Scripts(lambda: snapshot, random.Random(1)).handlers())
    ch = await FakeChannel(server.port, args=["911234567"]).run()
    v = ch.variables
    assert (v["ROUTER_STATUS"], v["ROUTER_COUNT"]) == ("OK", "30")
    assert [v[f"ROUTER_TRUNK_{n}"] for n in range(1, 31)] == [
        f"trunk-{n:02}-of-a-carrier-with-a-long-name" for n in range(1, 31)]
    assert ch.set_order[-1] == "ROUTER_STATUS"
    assert len(ch.set_order) == 6 * 30 + 7
    assert all(len(c) < AGI_BUF_LEN - 1 for c in ch.commands)


def test_set_variable_lines_is_one_line_for_an_ordinary_plan_and_never_passes_the_limits(
        ) -> None:
    assert len(set_variable_lines([("A", "1"), ("B", "x,y")])) == 1
    assert set_variable_lines([]) == []
    many = [(f"V{i}", "v" * 30) for i in range(250)]
    lines = set_variable_lines(many)
    assert all(len(line) <= AGI_BUF_LEN - 1 and line.endswith(b"\n") for line in lines)
    assert all(line.split(b" ")[2].count(b",") < 100 for line in lines)  # ARRAY(<= 100 names)
    with pytest.raises(ValueError, match="too long"):
        set_variable_lines([("V", "v" * 3000)])


@pytest.mark.parametrize("headers", [
    header_block("route", ["911234567"], extra={"agi_arg_\u00b2": "x"}),  # int() refuses "²"
    b"agi_request: agi://[::1/route\nagi_channel: PJSIP/x-1\n\n",  # urlsplit() refuses it
])
async def test_headers_that_do_not_parse_end_the_session_without_a_traceback(
        agi_server: ServerFactory, headers: bytes) -> None:
    # AgiRequest.from_env() raised before the session's error handling: the exception left
    # the connection's task, a traceback per connection, counted nowhere (a code review).
    loop = asyncio.get_running_loop()
    escaped: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    try:
        served: list[AgiRequest] = []

        async def route(session: AgiSession) -> None:
            served.append(session.request)

        server = await agi_server({"route": route})
        ch = await FakeChannel(server.port, headers=headers).run()
        assert ch.closed_by_server
        await until(lambda: server.stats.served + server.stats.unknown_script == 1)
    finally:
        loop.set_exception_handler(None)
    assert escaped == []
    assert [r.args for r in served] in ([("911234567",)], [])  # "²" is no argument number


async def test_the_service_s_last_figures_count_the_sessions_it_let_finish(
        redis_server: str, caplog: pytest.LogCaptureFixture) -> None:
    # SIGTERM while a call's route session waits for Asterisk's reply: that session is let
    # finish (up to 5 s), and the "stopped" line counts it ("0 sessions served" before: the
    # figures were logged before the running sessions were waited for).
    from agi.main import serve
    from outbound_router.settings import Settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="agi")
    heard = _Heard("FastAGI listening", "FastAGI stopping")  # serve() tells nothing else
    logging.getLogger("agi").addHandler(heard)
    try:
        service = asyncio.create_task(serve(
            Settings(redis_url=redis_server, agi_host="127.0.0.1", agi_port=port), stop))
        async with asyncio.timeout(10):
            await heard.events["FastAGI listening"].wait()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(header_block("route", ["911234567"]))
            line = await reader.readline()  # the session waits for this command's reply now
            stop.set()
            await heard.events["FastAGI stopping"].wait()
            while line:
                writer.write(b"200 result=1\n")
                line = await reader.readline()
            writer.close()
            assert await service == 0
    finally:
        logging.getLogger("agi").removeHandler(heard)
    assert "FastAGI stopping: 1 session(s) running" in caplog.text
    assert ("FastAGI stopped: 1 sessions served, 0 dropped, 0 turned away with every place "
            "busy, 0 refused") in caplog.text


class _Heard(logging.Handler):
    """An event per text, set once a log message holds it."""

    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.events = {text: asyncio.Event() for text in texts}

    def emit(self, record: logging.LogRecord) -> None:
        for text, event in self.events.items():
            if text in record.getMessage():
                event.set()
