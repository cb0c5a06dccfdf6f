"""Drive SIPp (Debian's `sip-tester`) as lab carriers and phones.

Carriers are SIPp servers (UAS) on the trunk addresses of `outbound_router.topology`; phones are
SIPp clients (UAC) calling Asterisk from a phone address. Scenarios are the XML files in
`tests/sipp/`, templates with `@NAME@` placeholders rendered per run. Everything this module
reports about a call is read from SIPp's own message trace (`-trace_msg`), never from the
router's log.

Carrier behaviours: `answer`, `busy` (486), `unavailable` (503), `not_found` (404), `ring`
(180, never answers; CANCEL gets 200 + 487), `early_503` (183 with SDP, 503 one second later),
`progress_503` (183 without SDP, 503 one second later), `silent` (never responds), `trying`
(100 only, never a final answer), `redirect` (302 to carrier-c's address), `answer_after:N`
(180, 200 after N seconds), `error:CODE` (any final code), `ring_then:CODE[:SECONDS]` (180,
that final code 0.5 s or SECONDS later).

Run as a module to start one carrier in the foreground (what docker-compose does):
    python -m outbound_router.sipp carrier b unavailable
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from outbound_router import topology

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "tests" / "sipp"

REASONS = {
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    480: "Temporarily Unavailable", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

_NAMED = {
    "answer": ("uas_answer.xml", None, 0),
    "busy": ("uas_reject.xml", 486, 0),
    "unavailable": ("uas_reject.xml", 503, 0),
    "not_found": ("uas_reject.xml", 404, 0),
    "ring": ("uas_ring.xml", None, 0),
    "early_503": ("uas_early_reject.xml", 503, 1000),
    "progress_503": ("uas_progress_reject.xml", 503, 1000),
    "silent": ("uas_silent.xml", None, 0),
    "trying": ("uas_trying.xml", None, 0),
    "redirect": ("uas_redirect.xml", None, 0),
    "answer_no_sdp": ("uas_answer_no_sdp.xml", None, 0),  # a 200 Asterisk ACKs and BYEs
}


class SippError(RuntimeError):
    """SIPp is missing, refused a scenario, or did not come up."""


@dataclass(frozen=True)
class Behaviour:
    """What a carrier does with every INVITE: one scenario template and its parameters."""

    name: str
    template: str
    code: int | None = None
    delay_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> Behaviour:
        if text in _NAMED:
            template, code, delay = _NAMED[text]
            return cls(text, template, code, delay)
        kind, _, arg = text.partition(":")
        try:
            if kind == "answer_after" and arg:
                return cls(text, "uas_answer_after.xml", None, round(float(arg) * 1000))
            if kind == "error" and arg and 300 <= int(arg) <= 699:
                return cls(text, "uas_reject.xml", int(arg), 0)
            if kind == "ring_then" and arg:
                final, _, seconds = arg.partition(":")
                if 300 <= int(final) <= 699:
                    return cls(text, "uas_ring_reject.xml", int(final),
                               round(float(seconds or 0.5) * 1000))
        except ValueError:
            pass
        raise ValueError(
            f"unknown carrier behaviour {text!r}: use one of {', '.join(_NAMED)}, "
            "answer_after:SECONDS, error:CODE or ring_then:CODE[:SECONDS] (300-699)"
        )

    def values(self) -> dict[str, str]:
        values = {"DELAY_MS": str(max(self.delay_ms, 1))}
        if self.code is not None:
            values["CODE"] = str(self.code)
            values["REASON"] = REASONS.get(self.code, "Failure")
        return values


def render(template: str, values: dict[str, str], *, drop_lines: Iterable[str] = ()) -> str:
    """The scenario `template` (a file name in SCENARIO_DIR) with `@NAME@` replaced."""
    text = (SCENARIO_DIR / template).read_text()
    for needle in drop_lines:
        text = "\n".join(line for line in text.split("\n") if needle not in line)
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = sorted(set(re.findall(r"@([A-Z_]+)@", text)))
    if left:
        raise SippError(f"scenario {template}: no value for {', '.join(left)}")
    return text


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SippError("sipp not found: install Debian's sip-tester (apt-get install sip-tester)")
    return path


# ---- the message trace -------------------------------------------------------------------


@dataclass(frozen=True)
class SipMessage:
    sent: bool
    time: str  # SIPp's timestamp, "YYYY-MM-DD HH:MM:SS.ffffff"
    first_line: str
    headers: dict[str, str]  # lower-case name -> first value
    raw: str

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        if self.is_request:
            return self.first_line.split(" ", 1)[0]
        return self.headers.get("cseq", " ").split()[-1]

    @property
    def status(self) -> int | None:
        return None if self.is_request else int(self.first_line.split()[1])

    @property
    def request_uri(self) -> str:
        return self.first_line.split()[1]

    @property
    def call_id(self) -> str:
        return self.headers.get("call-id", "")

    @property
    def stamp(self) -> float:
        """:attr:`time` in seconds since the epoch (0.0 if SIPp wrote something else)."""
        try:
            return (time.mktime(time.strptime(self.time[:19], "%Y-%m-%d %H:%M:%S"))
                    + float(self.time[19:]))
        except ValueError:
            return 0.0

    def has_to_tag(self) -> bool:
        return ";tag=" in self.headers.get("to", "")


def header_values(message: SipMessage, name: str) -> list[str]:
    """Every value of the header `name` in `message`, in order (`headers` keeps the first)."""
    values = []
    for line in message.raw.split("\n")[1:]:
        if not line.strip():
            break
        header, _, value = line.partition(":")
        if header.strip().lower() == name.lower():
            values.append(value.strip())
    return values


_SEPARATOR = re.compile(r"^-{40,} ?(.*)$", re.M)
_DIRECTION = re.compile(r"^\w+ message (sent|received)\b.*$", re.M)


def _complete(direction: str, message: str) -> bool:
    """Whether a traced message is all there: SIPp writes the trace through a stdio buffer, so
    a file read while SIPp runs can end in the middle of a message. Its header block must end,
    and its text must have the size of the direction line ("UDP message received [870] bytes
    :"), counting every line end as the CRLF it was on the wire (the trace keeps some)."""
    text = message.replace("\r\n", "\n")
    if "\n\n" not in text:
        return False
    size = re.search(r"[\[(](\d+)[\])] bytes", direction)
    return size is None or len(text) + text.count("\n") >= int(size.group(1))


def parse_trace(text: str) -> list[SipMessage]:
    """Messages of a SIPp `-trace_msg` file, in order (SIPp's 'Unexpected' copies skipped, and
    a last message SIPp has not finished writing left out)."""
    messages = []
    parts = _SEPARATOR.split(text)  # [before, stamp1, chunk1, stamp2, chunk2, ...]
    chunks = list(zip(parts[1::2], parts[2::2], strict=True))
    for n, (stamp, chunk) in enumerate(chunks, 1):
        head = _DIRECTION.search(chunk)
        if head is None or chunk.lstrip().startswith("Unexpected"):
            continue
        if n == len(chunks) and not _complete(head.group(0), chunk[head.end():].lstrip("\n")):
            continue
        body = chunk[head.end():].strip("\r\n").replace("\r\n", "\n")
        lines = body.split("\n")
        if not lines or not lines[0]:
            continue
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line.strip():
                break
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        messages.append(
            SipMessage(head.group(1) == "sent", stamp.strip(), lines[0].strip(), headers, body)
        )
    return messages


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def read_trace(path: Path) -> list[SipMessage]:
    """The messages of the SIPp `-trace_msg` file `path` (:func:`parse_trace`); [] while SIPp
    has not created it yet."""
    return parse_trace(_read(path))


def uri_user(uri: str) -> str:
    """The user part of a SIP URI: "sip:+34911@127.0.0.11:5060" -> "+34911" ("" if none)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0] if "@" in rest else ""


# ---- processes ---------------------------------------------------------------------------


def udp_bound(address: str, port: int) -> bool:
    want = f"{''.join(f'{int(b):02X}' for b in reversed(address.split('.')))}:{port:04X}"
    with open("/proc/net/udp") as f:
        return any(line.split()[1] == want for line in f.readlines()[1:])


def free_udp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


#: SIPp's media sockets from -mp BASE: audio RTP and RTCP, video RTP and RTCP.
MEDIA_PORTS = 4


def free_udp_ports(address: str, avoid: int) -> int:
    """A first port of MEDIA_PORTS free UDP ports in a row, none of them ``avoid`` (the
    SIP port). Two ports asked of the kernel one after the other are often neighbours: SIPp
    then failed to bind its video socket on the phone's own SIP port (errno 98, no call)."""
    for _ in range(100):
        base = free_udp_port(address)
        ports = range(base, base + MEDIA_PORTS)
        if avoid in ports or ports[-1] > 65535:
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in ports:
                    held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)).bind(
                        (address, port))
            except OSError:
                continue
        return base
    raise SippError(f"no {MEDIA_PORTS} free UDP ports in a row on {address}")


def _proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name ([] when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def proc_state(pid: int) -> str | None:
    """The state letter of a process in ``/proc/PID/stat`` ("R", "S", "Z"...), None when gone."""
    fields = _proc_stat(pid)
    return fields[0] if fields else None


def proc_parent(pid: int) -> int | None:
    """The parent PID of a process, None when gone."""
    fields = _proc_stat(pid)
    return int(fields[1]) if len(fields) > 1 else None


def proc_argv(pid: int) -> list[str]:
    """The command line of a live process ([] if gone or a zombie).

    A process we just spawned has an empty command line until its exec() completes: that is
    waited for (up to 0.2 s) rather than reported as "not that program".
    """
    deadline = time.monotonic() + 0.2
    while True:
        if proc_state(pid) in (None, "Z"):
            return []
        try:
            argv = read_cmdline(pid)
        except (FileNotFoundError, ProcessLookupError):
            return []
        if argv or time.monotonic() > deadline:
            return argv
        time.sleep(0.002)


def read_cmdline(pid: int | str) -> list[str]:
    """``/proc/PID/cmdline`` as it is now ([] for a kernel thread or a process before its
    exec); raises OSError when there is no such process."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def pid_is_sipp(pid: int) -> bool:
    argv = proc_argv(pid) if pid else []
    return bool(argv) and os.path.basename(argv[0]) == "sipp"


def stop_pid(pid: int, *, timeout: float = 3.0) -> None:
    """Stop the SIPp with this PID (and nothing else: the PID must still be a sipp)."""
    if not pid_is_sipp(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_is_sipp(pid):
            return
        time.sleep(0.02)
    if pid_is_sipp(pid):
        os.kill(pid, signal.SIGKILL)


def spawn_detached(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a process in its own session that outlives this one; stdout/stderr to `log`.

    No Popen object is kept (it would warn when collected while the child runs): the caller
    tracks the PID, and `exit_status` reaps it if it dies while we still run.
    """
    path = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0])
    if path is None:
        raise SippError(f"{argv[0]} not found")
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(path, list(argv), dict(os.environ if env is None else env),
                          file_actions=actions, setsid=True)


def exit_status(pid: int) -> int | None:
    """The exit status of our child `pid` if it has ended (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (or already reaped): look at /proc
        return None if os.path.exists(f"/proc/{pid}") else 0
    return os.waitstatus_to_exitcode(status) if done else None


STRAY_CANCEL_MS = 50
#: An unanswered INVITE's first retransmission comes T1 (0.5 s) after it; a stray's next copy
#: 1 s or more after the first this carrier got.
OWN_RETRANSMIT_S = 0.8


def _is_stray(invite: SipMessage, messages: Sequence[SipMessage], now: float) -> bool:
    """A retransmitted INVITE of an attempt Asterisk abandoned before this carrier started.

    When nothing answered an INVITE (a silent or absent carrier), Asterisk cannot CANCEL it and
    retransmits it until pjsip's timer B (32 s: at 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s), also
    after the call is gone. If another carrier starts on that address meanwhile, it gets those
    retransmissions:

    * a carrier that replies gets a CANCEL from pjsip within a millisecond of its first reply
      (a real attempt is never cancelled that fast);
    * a carrier that never replies sees the next copy 1 s or more after the first it got, or
      none, where its own INVITE is retransmitted 0.5 s after it came.
    """
    first_reply = next((m for m in messages if m.sent and m.call_id == invite.call_id), None)
    if first_reply is None:
        key = _transaction(invite)
        copies = [m.stamp for m in messages if not m.sent and _transaction(m) == key]
        after = copies[1] if len(copies) > 1 else now
        return after - copies[0] > OWN_RETRANSMIT_S
    cancel = next((m for m in messages if not m.sent and m.is_request and m.method == "CANCEL"
                   and m.call_id == invite.call_id), None)
    if cancel is None:
        return False
    return 0 <= cancel.stamp - first_reply.stamp < STRAY_CANCEL_MS / 1000


def _undecided_for(messages: Sequence[SipMessage], now: float) -> float:
    """How long until `_is_stray` can tell every INVITE in ``messages`` (0: now)."""
    copies: dict[tuple[str, str, str], list[float]] = {}
    first_replies: dict[str, float] = {}
    cancelled = {m.call_id for m in messages
                 if not m.sent and m.is_request and m.method == "CANCEL"}
    for m in messages:
        if m.sent:
            first_replies.setdefault(m.call_id, m.stamp)
    for m in messages:
        if (not m.sent and m.is_request and m.method == "INVITE" and not m.has_to_tag()
                and m.call_id not in first_replies):
            copies.setdefault(_transaction(m), []).append(m.stamp)
    # (just past the window: `_is_stray` wants more than OWN_RETRANSMIT_S without a copy)
    waits = [c[0] + OWN_RETRANSMIT_S + 0.05 - now for c in copies.values() if len(c) == 1]
    # A replied INVITE whose CANCEL may still be on its way: a stray's comes within
    # STRAY_CANCEL_MS of the reply (read in between, a stray passed for an attempt).
    waits += [stamp + STRAY_CANCEL_MS / 1000 - now for call_id, stamp in first_replies.items()
              if call_id not in cancelled]
    return max([0.0, *waits])


def _transaction(m: SipMessage) -> tuple[str, str, str]:
    return m.call_id, m.headers.get("cseq", ""), m.headers.get("via", "")


@dataclass(frozen=True)
class CarrierAttempt:
    """One attempt a carrier received (an initial INVITE of :meth:`Carrier.invites`), as its
    trace shows it."""

    call_id: str
    request_uri: str
    invited_at: float  # the INVITE's arrival (epoch seconds, SIPp's clock)
    #: when the attempt ended for the carrier: its final answer sent, or a CANCEL received
    #: first; None while it is still going (or the carrier never ended it)
    ended_at: float | None
    final: int | None  # the final answer it sent (None: none, e.g. CANCELled while ringing)


@dataclass
class Carrier:
    """A SIPp UAS listening on one carrier trunk address with one behaviour."""

    trunk: topology.CarrierTrunk
    behaviour: Behaviour
    workdir: Path
    pid: int
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def trace_path(self) -> Path:
        return self.workdir / f"carrier-{self.trunk.letter}-messages.log"

    def messages(self) -> list[SipMessage]:
        return read_trace(self.trace_path)

    def _settled_messages(self) -> tuple[list[SipMessage], float]:
        """The trace and the time it was read, once every INVITE in it can be told from a stray
        (`_is_stray`): an unanswered INVITE seen once, less than OWN_RETRANSMIT_S ago, may be
        this carrier's own (its retransmission is due) or a stray's last copy. Its
        retransmission timer is what decides, so this waits out the rest of that window (at
        most OWN_RETRANSMIT_S) and reads again."""
        messages, now = self.messages(), time.time()
        wait = _undecided_for(messages, now)
        if wait > 0:
            time.sleep(wait)
            messages, now = self.messages(), time.time()
        return messages, now

    def _initial_invites(self, settled: tuple[list[SipMessage], float] | None = None,
                         ) -> list[SipMessage]:
        messages, now = settled or self._settled_messages()
        seen: set[tuple[str, str, str]] = set()
        invites = []
        for m in messages:
            if m.sent or not m.is_request or m.method != "INVITE" or m.has_to_tag():
                continue
            key = _transaction(m)
            if key not in seen:  # retransmissions of one INVITE count once
                seen.add(key)
                if not _is_stray(m, messages, now):
                    invites.append(m)
        return invites

    def invites(self) -> int:
        """Initial INVITEs received so far (retransmissions, re-INVITEs and the stray INVITEs
        of attempts abandoned before this carrier started not counted, see `_is_stray`)."""
        return len(self._initial_invites())

    def request_uris(self) -> list[str]:
        return [m.request_uri for m in self._initial_invites()]

    def attempts(self) -> list[CarrierAttempt]:
        """Every attempt of :meth:`invites`, in order, with when and how it ended: the first
        final answer to its INVITE this carrier sent, or the CANCEL it got before that."""
        settled = self._settled_messages()
        by_call: dict[str, list[SipMessage]] = collections.defaultdict(list)
        for m in settled[0]:
            by_call[m.call_id].append(m)
        out = []
        for invite in self._initial_invites(settled):
            ended, final = None, None
            for m in by_call[invite.call_id]:
                if m.sent and not m.is_request and m.method == "INVITE" and (m.status or 0) >= 200:
                    ended, final = m.stamp, m.status
                    break
                if not m.sent and m.is_request and m.method == "CANCEL":
                    ended = m.stamp
                    break
            out.append(CarrierAttempt(invite.call_id, invite.request_uri, invite.stamp, ended,
                                      final))
        return out

    def invite_header(self, name: str) -> list[list[str]]:
        """Every value of the header `name` in each initial INVITE of :meth:`invites`, in
        order (a header that came twice has two values; one that never came, none)."""
        return [header_values(m, name) for m in self._initial_invites()]

    def requests(self, method: str) -> int:
        """``method`` requests (CANCEL, BYE...) received in the calls of :meth:`invites`, each
        transaction once: the CANCEL of a stray INVITE and retransmissions are not counted."""
        settled = self._settled_messages()
        messages = settled[0]
        calls = {m.call_id for m in self._initial_invites(settled)}
        seen = {_transaction(m) for m in messages
                if not m.sent and m.is_request and m.method == method and m.call_id in calls}
        return len(seen)

    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        exit_status(self.pid)  # reap it if it was our child and died
        return pid_is_sipp(self.pid)

    def kill(self, timeout: float = 3.0) -> None:
        """End the carrier as a crash would (SIGKILL: no goodbye to anything), and return once
        it is gone and its trunk address is free for another carrier."""
        if not self.running():
            return
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while self.running() or udp_bound(self.trunk.address, self.trunk.port):
            if time.monotonic() > deadline:
                raise SippError(f"carrier {self.trunk.letter} (pid {self.pid}) still there "
                                f"{timeout:g} s after SIGKILL")
            time.sleep(0.01)  # polling: the kernel tells no one else when it is reaped

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(3)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        else:
            stop_pid(self.pid)
            exit_status(self.pid)


def carrier_command(
    trunk: topology.CarrierTrunk, scenario: Path, workdir: Path
) -> list[str]:
    return [
        sipp_binary(), "-sf", str(scenario),
        "-i", trunk.address, "-p", str(trunk.port), "-bind_local",
        "-ci", trunk.address,  # the remote-control socket: on 0.0.0.0 without it
        "-mi", trunk.address, "-mp", str(10000 + 100 * (ord(trunk.letter) - ord("a") + 1)),
        "-aa", "-nostdin", "-skip_rlimit",
        "-trace_msg", "-message_file", str(workdir / f"carrier-{trunk.letter}-messages.log"),
        "-trace_err", "-error_file", str(workdir / f"carrier-{trunk.letter}-errors.log"),
    ]


def start_carrier(
    name: str | topology.CarrierTrunk,
    behaviour: str | Behaviour,
    workdir: Path,
    *,
    detach: bool = False,
    ready_timeout: float = 5.0,
) -> Carrier:
    """Start a SIPp carrier on the trunk `name` ("a", "carrier-a" or its address; or a
    CarrierTrunk of another address).

    `detach`: the carrier outlives this process (own session); stop it later by PID.
    """
    trunk = name if isinstance(name, topology.CarrierTrunk) else topology.carrier(name)
    b = behaviour if isinstance(behaviour, Behaviour) else Behaviour.parse(behaviour)
    workdir.mkdir(parents=True, exist_ok=True)
    if udp_bound(trunk.address, trunk.port):
        raise SippError(
            f"{trunk.address}:{trunk.port} is already in use: another carrier "
            f"(`outbound-router lab up` starts demo carriers; `lab up --no-carriers` stops them)"
        )
    scenario = workdir / f"carrier-{trunk.letter}.xml"
    scenario.write_text(render(b.template, b.values()))
    for stale in (workdir / f"carrier-{trunk.letter}-messages.log",
                  workdir / f"carrier-{trunk.letter}-errors.log"):
        stale.unlink(missing_ok=True)
    command = carrier_command(trunk, scenario, workdir)
    out_path = workdir / f"carrier-{trunk.letter}.out"
    if detach:
        carrier = Carrier(trunk, b, workdir, spawn_detached(command, out_path))
    else:
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=workdir)
        carrier = Carrier(trunk, b, workdir, proc.pid, proc)
    deadline = time.monotonic() + ready_timeout
    while not udp_bound(trunk.address, trunk.port):
        if not carrier.running() or time.monotonic() > deadline:
            carrier.stop()
            detail = _read(workdir / f"carrier-{trunk.letter}-errors.log").strip()
            raise SippError(f"carrier {trunk.letter} ({b.name}) did not start: {detail[-500:]}")
        time.sleep(0.02)
    return carrier


# ---- phones ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallResult:
    """What the phone saw of one call."""

    number: str
    final_code: int | None  # the INVITE's final response; None if there was none
    codes: tuple[int, ...]  # every INVITE response, in order, retransmissions once
    cancelled: bool  # the phone sent CANCEL (cancel_after, or no answer in time)
    duration: float
    trace: Path

    @property
    def answered(self) -> bool:
        return self.final_code == 200


@dataclass(frozen=True)
class LoadResult:
    calls: int
    final_codes: dict[int | None, int]  # final code -> number of calls (None: no final)
    elapsed: float

    @property
    def successful(self) -> int:
        return self.final_codes.get(200, 0)

    @property
    def failed(self) -> int:
        return self.calls - self.successful


def _phone_scenario(workdir: Path, *, tenant: str | None, answer_ms: int, talk_ms: int,
                    max_forwards: int | None = 70, numbered: bool = False) -> Path:
    drop = [] if tenant else ["X-Tenant:"]
    if max_forwards is None:
        drop.append("Max-Forwards: @MAX_FORWARDS@")
    text = render(
        "uac_call.xml",
        {"ANSWER_TIMEOUT_MS": str(max(answer_ms, 1)), "TALK_MS": str(max(talk_ms, 1)),
         "MAX_FORWARDS": str(max_forwards)},
        drop_lines=drop,
    )
    if numbered:  # every call its own number: the number given, then SIPp's call number
        text = text.replace("sip:[service]@", "sip:[service][call_number]@")
    return _scenario_file(workdir, text)


def _scenario_file(workdir: Path, text: str) -> Path:
    """A phone scenario of its own in `workdir` (its trace is named after it)."""
    fd, name = tempfile.mkstemp(prefix="phone-", suffix=".xml", dir=workdir)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(name)


def _phone_command(
    source: str, number: str, scenario: Path, trace: Path, *,
    tenant: str | None, extra: Sequence[str],
) -> list[str]:
    sip_port = free_udp_port(source)
    cmd = [
        sipp_binary(), f"{topology.SIP_HOST}:{topology.SIP_PORT}", "-sf", str(scenario),
        "-s", number, "-i", source, "-p", str(sip_port), "-bind_local", "-ci", source,
        "-mi", source, "-mp", str(free_udp_ports(source, avoid=sip_port)),
        "-aa", "-nostdin", "-skip_rlimit", "-trace_msg", "-message_file", str(trace),
        "-trace_err", "-error_file", str(trace.with_suffix(".errors.log")),
        *extra,
    ]
    if tenant:
        cmd += ["-key", "tenant", tenant]
    return cmd


@dataclass
class PhoneCall:
    """One call of a phone's trace, as the phone saw it."""

    call_id: str
    number: str  # the user part of the INVITE's request URI
    invited_at: float  # the first INVITE sent (epoch seconds, SIPp's clock)
    codes: list[int] = field(default_factory=list)  # INVITE responses, retransmissions once
    final_at: float | None = None  # when the first final response came
    bye_sent: bool = False  # the phone hung up
    bye_received: bool = False  # the network hung up on the phone
    bye_answered: bool = False  # the phone's BYE got 200

    @property
    def final(self) -> int | None:
        """The INVITE's final response (None: none came)."""
        return next((c for c in self.codes if c >= 200), None)


def phone_calls(messages: Iterable[SipMessage]) -> list[PhoneCall]:
    """The calls of a phone trace (one per initial INVITE the phone sent), in order."""
    calls: dict[str, PhoneCall] = {}
    seen: set[str] = set()
    for m in messages:
        call = calls.get(m.call_id)
        if m.sent and m.is_request and m.method == "INVITE" and not m.has_to_tag():
            if call is None:
                calls[m.call_id] = PhoneCall(m.call_id, uri_user(m.request_uri), m.stamp)
        elif call is None:
            continue
        elif not m.is_request and m.method == "INVITE" and not m.sent:
            if m.raw in seen:  # a retransmitted response
                continue
            seen.add(m.raw)
            call.codes.append(int(m.status or 0))
            if (m.status or 0) >= 200 and call.final_at is None:
                call.final_at = m.stamp
        elif m.is_request and m.method == "BYE":
            if m.sent:
                call.bye_sent = True
            else:
                call.bye_received = True
        elif not m.is_request and m.method == "BYE" and not m.sent and m.status == 200:
            call.bye_answered = True
    return list(calls.values())


def invite_codes(messages: Iterable[SipMessage]) -> list[int]:
    """Every response the INVITE of a one-call phone trace got, in order, retransmissions
    once."""
    calls = phone_calls(messages)
    return calls[0].codes if calls else []


def run_phone(source: str, number: str, template: str, workdir: Path, *,
              values: dict[str, str] | None = None, timeout: float = 30.0,
              retransmit: bool = True) -> list[SipMessage]:
    """One call from the phone address `source` with the phone scenario `template` (a file
    in SCENARIO_DIR, its `@NAME@` parameters in `values`); the messages of its trace.

    `retransmit=False` runs SIPp with `-nr`: a request that gets no answer is sent once, so
    the scenario's own timeout takes over. With retransmissions, SIPp keeps resending it
    past that timeout and, once they are spent, aborts the call with a BYE of its own that
    reuses the unanswered request's CSeq, which Asterisk refuses (`500 Invalid CSeq`): a
    call left up by SIPp, not by anything a phone does.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    scenario = _scenario_file(workdir, render(template, values or {}))
    trace = _call_once(source, number, scenario, workdir, tenant=None, timeout=timeout,
                       extra=() if retransmit else ("-nr",))
    return read_trace(trace)


def _call_once(source: str, number: str, scenario: Path, workdir: Path, *,
               tenant: str | None, timeout: float, extra: Sequence[str] = ()) -> Path:
    """Run the phone `scenario` for one call, SIPp giving up after `timeout` s; its trace."""
    trace = scenario.with_suffix(".messages.log")
    cmd = _phone_command(source, number, scenario, trace, tenant=tenant,
                         extra=["-m", "1", "-timeout", f"{int(timeout)}s", *extra])
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=workdir, check=False, timeout=timeout + 20)
    return trace


def place_call(
    source: str,
    number: str,
    workdir: Path,
    *,
    tenant: str | None = None,
    hangup_after: float | None = None,
    cancel_after: float | None = None,
    timeout: float = 60.0,
    max_forwards: int | None = 70,
) -> CallResult:
    """One call from the phone address `source` to Asterisk; returns what the phone saw.

    `hangup_after`: talk time after the answer before the phone sends BYE (default 0.5 s).
    `cancel_after`: the phone CANCELs if there is no final answer by then.
    `max_forwards`: the INVITE's Max-Forwards (None: no such header).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    answer_s = cancel_after if cancel_after is not None else timeout
    talk_s = hangup_after if hangup_after is not None else 0.5
    scenario = _phone_scenario(
        workdir, tenant=tenant, answer_ms=round(answer_s * 1000), talk_ms=round(talk_s * 1000),
        max_forwards=max_forwards,
    )
    started = time.monotonic()
    trace = _call_once(source, number, scenario, workdir, tenant=tenant,
                       timeout=timeout + talk_s + 10)
    elapsed = time.monotonic() - started
    messages = read_trace(trace)
    seen = next(iter(phone_calls(messages)), None)
    codes, final = (seen.codes, seen.final) if seen else ([], None)
    cancelled = any(m.sent and m.is_request and m.method == "CANCEL" for m in messages)
    return CallResult(number, final, tuple(codes), cancelled, elapsed, trace)


@dataclass
class PhoneLoad:
    """Calls a SIPp phone is placing (:func:`start_load`)."""

    calls: int
    trace: Path
    proc: subprocess.Popen[bytes] = field(repr=False)
    started: float = field(default_factory=time.monotonic)

    def messages(self) -> list[SipMessage]:
        return read_trace(self.trace)

    def wait(self, timeout: float | None = None) -> LoadResult:
        """Once SIPp has placed (and ended) every call, or ``timeout`` s have passed (then it
        is killed), what the phone saw of them."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        elapsed = time.monotonic() - self.started
        finals = collections.Counter(c.final for c in phone_calls(self.messages()))
        finals[None] += self.calls - finals.total()  # calls that never got out
        if not finals[None]:
            del finals[None]
        return LoadResult(self.calls, dict(finals), elapsed)


def start_load(
    source: str,
    number: str,
    workdir: Path,
    *,
    calls: int,
    rate: float,
    concurrent: int | None = None,
    tenant: str | None = None,
    talk: float = 0.5,
    timeout: float = 60.0,
    numbered: bool = False,
) -> PhoneLoad:
    """Start placing `calls` calls at `rate` calls/s (at most `concurrent` at once) from
    `source`, in the background (``start_load(...).wait()``: the calls, once done).
    `numbered`: each call dials `number` followed by its SIPp call number (1, 2...), so that
    every call of the load has a number of its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    scenario = _phone_scenario(workdir, tenant=tenant, answer_ms=round(timeout * 1000),
                               talk_ms=round(talk * 1000), numbered=numbered)
    trace = scenario.with_suffix(".messages.log")
    extra = ["-m", str(calls), "-r", str(rate), "-rp", "1000",
             "-timeout", f"{int(calls / max(rate, 0.001) + timeout + talk + 30)}s"]
    if concurrent:
        extra += ["-l", str(concurrent)]
    cmd = _phone_command(source, number, scenario, trace, tenant=tenant, extra=extra)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=workdir)
    return PhoneLoad(calls, trace, proc)


# ---- command line (docker-compose's carriers) --------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outbound_router.sipp")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("carrier", help="run one SIPp carrier in the foreground")
    c.add_argument("name", help="carrier letter, endpoint or address (a, carrier-a, 127.0.0.11)")
    c.add_argument("behaviour", nargs="?", help="default: the topology's demo behaviour")
    c.add_argument("--workdir", default=None, help="where scenario and traces go (default: temp)")
    args = parser.parse_args(argv)
    trunk = topology.carrier(args.name)
    behaviour = Behaviour.parse(args.behaviour or trunk.demo)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"carrier-{trunk.letter}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scenario = workdir / f"carrier-{trunk.letter}.xml"
    scenario.write_text(render(behaviour.template, behaviour.values()))
    print(f"carrier-{trunk.letter} on {trunk.address}:{trunk.port}: {behaviour.name}", flush=True)
    os.execv(sipp_binary(), carrier_command(trunk, scenario, workdir))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
