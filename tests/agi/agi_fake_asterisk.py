"""A fake Asterisk speaking FastAGI over a real socket, for the protocol tests.

It connects like res_agi does, sends the ``agi_*`` header block, then answers each command
line. By default it behaves like a live channel: ``SET VARIABLE`` stores, ``GET VARIABLE``
reads back (``200 result=1 (value)`` / ``200 result=0``), ``VERBOSE`` succeeds, anything else
gets ``510``. A test can script odd replies through ``respond``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agi.server import AgiServer
from tests.asterisk_args import assign

#: res_agi.c's command buffer.
AGI_BUF_LEN = 2048
#: What res_agi's GET VARIABLE answers of a value at most (its buffer of 1,024 bytes).
GET_VARIABLE_MAX = 1023

Responder = Callable[["FakeChannel", str], bytes | None]
#: The ``agi_server`` fixture: ``await agi_server(handlers, limits=..., allow=...)``.
ServerFactory = Callable[..., Awaitable[AgiServer]]


def agi_split(line: str) -> list[str]:
    """Split a command line as res_agi's parse_args does: spaces, double quotes, backslashes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = escaped = started = False
    for ch in line:
        if escaped:
            cur.append(ch)
            escaped = False
            started = True
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            started = True
        elif ch == " " and not quoted:
            if started:
                out.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        out.append("".join(cur))
    return out


def header_block(script: str = "route", args: Sequence[str] = (), query: str = "",
                 uniqueid: str = "1795706968.362", extra: Mapping[str, str] | None = None,
                 ) -> bytes:
    path = script + (f"?{query}" if query else "")
    env = {
        "agi_network": "yes",
        "agi_network_script": path,
        "agi_request": f"agi://127.0.0.1:4573/{path}",
        "agi_channel": "PJSIP/phone-agi-0000016a",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": uniqueid,
        "agi_version": "GIT-22-69535d4837",
        "agi_callerid": "caller",
        "agi_calleridname": "Lab Caller",
        "agi_context": "from-agi-phones",
        "agi_extension": args[0] if args else "s",
        "agi_priority": "1",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140389128836800",
    }
    env.update(extra or {})
    lines = [f"{k}: {v}\n" for k, v in env.items()]
    lines += [f"agi_arg_{i}: {a}\n" for i, a in enumerate(args, 1)]
    return "".join(lines).encode() + b"\n"


@dataclass
class FakeChannel:
    port: int
    script: str = "route"
    args: Sequence[str] = ()
    query: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    respond: Responder | None = None
    headers: bytes | None = None  # raw header block, overrides script/args/query
    commands: list[str] = field(default_factory=list)
    set_order: list[str] = field(default_factory=list)
    closed_by_server: bool = False

    async def run(self, within: float = 10.0) -> FakeChannel:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            async with asyncio.timeout(within):
                writer.write(self.headers if self.headers is not None
                             else header_block(self.script, self.args, self.query))
                await writer.drain()
                while True:
                    try:
                        raw = await reader.readline()
                    except ConnectionResetError:  # closed with our bytes unread
                        raw = b""
                    if not raw:
                        self.closed_by_server = True
                        return self
                    # res_agi reads a command into a buffer of AGI_BUF_LEN: a longer line is
                    # cut, and its rest read as the next command.
                    for at in range(0, len(raw), AGI_BUF_LEN - 1):
                        line = raw[at:at + AGI_BUF_LEN - 1].decode("utf-8", "replace")
                        line = line.rstrip("\n")
                        self.commands.append(line)
                        reply = self.respond(self, line) if self.respond else None
                        writer.write(reply if reply is not None else self.default_reply(line))
                    await writer.drain()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass  # the server closed first

    def default_reply(self, line: str) -> bytes:
        words = agi_split(line)
        verb = " ".join(w.upper() for w in words[:2])
        if verb == "SET VARIABLE" and len(words) == 4:
            self.set_order += assign(self.variables, words[2], words[3])
            return b"200 result=1\n"
        if verb == "GET VARIABLE" and len(words) == 3:
            value = self.variables.get(words[2])
            if value is None:
                return b"200 result=0\n"
            # res_agi reads the value into a buffer of 1,024 bytes
            return f"200 result=1 ({value[:GET_VARIABLE_MAX]})\n".encode()
        if verb == "GET FULL" and len(words) == 4 and words[2].upper() == "VARIABLE":
            value = re.sub(r"\$\{([^}]*)\}", lambda m: self.variables.get(m[1], ""), words[3])
            return f"200 result=1 ({value})\n".encode()
        if words and words[0].upper() == "VERBOSE":
            return b"200 result=1\n"
        return b"510 Invalid or unknown command\n"
