"""The lab (SPEC section 7): real Asterisk 22 in a debootstrap chroot, Redis, the router's ARI
and FastAGI services and SIPp demo carriers, all on loopback.

    outbound-router lab up [--no-carriers]   idempotent: starts what is not running yet
    outbound-router lab status               what runs
    outbound-router lab call NUMBER [--via ari|agi|baseline] [--tenant T]
    outbound-router lab demo                 calls showing load balancing and failover
    outbound-router lab down                 stops what `up` started (by PID), unmounts

The chroot (Debian sid's `asterisk`) is built once into the cache directory
(`$OUTBOUND_ROUTER_CACHE`, default `~/.cache/outbound-router`) and reused; it is built in a
temporary directory and renamed into place when complete, so an interrupted build is never
taken for a good one. State (PIDs, logs, the Redis URL) lives in `<cache>/lab/`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from outbound_router import sipp, topology
from outbound_router.settings import DEFAULT_REDIS_PREFIX, Settings, SettingsError

REPO = Path(__file__).resolve().parent.parent
CONF_SRC = REPO / "asterisk_conf"
ROUTES_EXAMPLE = REPO / "redis_seed" / "routes.example.yaml"
#: Where debootstrap fetches Debian sid: OUTBOUND_ROUTER_DEBIAN_MIRROR, else the first Debian
#: archive this machine's apt sources use, else Debian's default mirror.
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "sid"
DEBOOTSTRAP_PACKAGES = ("asterisk", "asterisk-modules")
CHROOT_MARKER = ".outbound-router-chroot.json"
ASTERISK = "/usr/sbin/asterisk"
#: The Asterisk major version the lab is made for (SPEC section 7).
ASTERISK_MAJOR = "22"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ENVIRONMENT = 2  # a setting to fix (REDIS_URL...), as the other commands
EXIT_NOT_RUNNING = 3


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says why and what to do."""


class LabSettingError(LabError):
    """A setting to fix (REDIS_URL...): exit status 2, as the other commands."""


class AsteriskExited(LabError):
    """The Asterisk the lab waited for exited."""


# ---- paths and state ---------------------------------------------------------------------


def cache_dir() -> Path:
    env = os.environ.get("OUTBOUND_ROUTER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "outbound-router"


@dataclasses.dataclass(frozen=True)
class Paths:
    cache: Path

    @property
    def chroot(self) -> Path:
        return self.cache / "chroot"

    @property
    def state_dir(self) -> Path:
        return self.cache / "lab"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def carriers_dir(self) -> Path:
        return self.state_dir / "carriers"

    @property
    def calls_dir(self) -> Path:
        return self.state_dir / "calls"

    def service_log(self, name: str) -> Path:
        """The log the lab's service ``name`` (its supervisor, and the service) writes to."""
        return self.state_dir / f"{name}.log"

    def in_chroot(self, path: str) -> Path:
        return self.chroot / path.lstrip("/")

    @property
    def asterisk_log(self) -> Path:
        return self.in_chroot("/var/log/asterisk/messages.log")

    @property
    def cdr_csv(self) -> Path:
        """The lab's CDRs, a line per record with the ROUTER_* columns (cdr_custom.conf)."""
        return self.in_chroot("/var/log/asterisk/cdr-custom/Master.csv")


def paths() -> Paths:
    return Paths(cache_dir())


def load_state(p: Paths) -> dict[str, Any]:
    try:
        return dict(json.loads(p.state_file.read_text()))
    except FileNotFoundError:
        return {}


def save_state(p: Paths, state: dict[str, Any]) -> None:
    """Written by its owner only, readable by its owner only: it holds the Redis URL, with
    its password when it has one."""
    p.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = p.state_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # (a .tmp left by an older version may have been 0644)
        f.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(p.state_file)


Say = Callable[[str], None]


def _say(text: str) -> None:
    print(text, flush=True)


# ---- processes and mounts ----------------------------------------------------------------


def _proc_argv(pid: int) -> list[str]:
    return sipp.proc_argv(pid)


def _proc_root(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return ""


def is_asterisk(pid: int | None, chroot: Path) -> bool:
    """PID is the lab's Asterisk: an asterisk process whose root is our chroot (or, for the
    first milliseconds, the `chroot` command about to exec it)."""
    if not pid:
        return False
    argv = _proc_argv(pid)
    if not argv:
        return False
    if os.path.basename(argv[0]) == "chroot":
        return argv[1:3] == [str(chroot), ASTERISK]
    return os.path.basename(argv[0]) == "asterisk" and _proc_root(pid) == str(chroot)


def is_service(pid: int | None, name: str, log: Path | None = None) -> bool:
    """PID is a lab's `name` service (its supervisor, or the service it runs): the argv of
    one, writing to a lab's log of it (``log``, when given: that very file). A PID taken since
    by another `outbound_router.cli NAME` (a developer's, logging to a terminal or a file of
    its own) is not."""
    if not pid:
        return False
    argv = _proc_argv(pid)
    if not ("outbound_router.cli" in argv and name in argv):
        return False
    out = _stdout_of(pid)
    if log is not None:
        return out == str(log.resolve())
    return out is not None and os.path.basename(out) == f"{name}.log"


def _stdout_of(pid: int) -> str | None:
    """The file PID writes its standard output to (a lab service: its log)."""
    try:
        return os.readlink(f"/proc/{pid}/fd/1")
    except OSError:
        return None


def service_worker(name: str) -> int | None:
    """The PID of the lab's `name` service itself: the process its supervisor (whose PID the
    lab keeps, outbound_router/supervise.py) runs now. None when it does not run."""
    keeper = ((load_state(paths()).get("services") or {}).get(name) or {}).get("pid")
    if keeper is None or not is_service(keeper, name):
        return None
    return worker_of(keeper, name)


def worker_of(keeper: int, name: str) -> int | None:
    """The `name` service its supervisor ``keeper`` runs now, if any."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and sipp.proc_parent(int(entry)) == keeper \
                and is_service(int(entry), name):
            return int(entry)
    return None


def is_redis(pid: int | None, p: Paths) -> bool:
    """The lab's own redis-server (its data in the lab's directory), not any redis-server
    that got the PID of a dead one."""
    if not pid:
        return False
    argv = _proc_argv(pid)
    if not argv or "redis-server" not in os.path.basename(argv[0]):
        return False
    try:  # (redis-server rewrites its command line; it works in its --dir)
        return os.readlink(f"/proc/{pid}/cwd") == str((p.state_dir / "redis").resolve())
    except OSError:
        return False


def is_lab_carrier(pid: int | None, p: Paths) -> bool:
    """A demo carrier of the lab (its files in the lab's directory), not any SIPp that got
    the PID of a dead one (a test's own carrier)."""
    return _carrier_argv(_proc_argv(pid) if pid else [], p)


def _carrier_argv(argv: list[str], p: Paths) -> bool:
    return (bool(argv) and os.path.basename(argv[0]) == "sipp"
            and any(a.startswith(f"{p.carriers_dir}/") for a in argv))


def asterisks_in(chroot: Path) -> list[int]:
    """PIDs of Asterisk daemons running in the chroot (remote consoles `-r`/`-rx` excluded)."""
    return sorted(pid for pid, argv in _command_lines()
                  if os.path.basename(argv[0]) == "asterisk"
                  and not {"-r", "-rx", "-R"} & set(argv) and _proc_root(pid) == str(chroot))


@contextlib.contextmanager
def locked(p: Paths, say: Say = _say) -> Iterator[None]:
    """One `lab up` / `lab down` at a time per cache directory (tests and users share a lab);
    one that has to wait says so (a chroot build takes a minute)."""
    p.cache.mkdir(parents=True, exist_ok=True)
    with open(p.cache / "lab.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"lab: waiting for another `lab up` or `lab down` to finish ({p.cache})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def stop_process(pid: int, check: Callable[[int], bool], *, timeout: float = 10.0,
                 group: bool = False) -> bool:
    """SIGTERM the process if `check(pid)` still holds, then SIGKILL after `timeout`: the
    process alone, or with ``group`` its whole process group (a supervisor, which leads its
    own session: the service it runs may not have acted on the SIGTERM passed on either)."""
    if not check(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while check(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling: another session's process cannot be waited for
    if check(pid):
        with contextlib.suppress(ProcessLookupError):
            if group and os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        while check(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
    # An exiting process stops looking like itself (its cmdline reads empty) before the
    # kernel closes its sockets: wait until it has really exited, or a `lab up` right after
    # finds 5060 and 8088 still taken.
    _wait_exited(pid, timeout)
    sipp.exit_status(pid)  # reap it when it was our own child
    return True


#: How long `lab down` waits, for all it stopped together, for the parent (PID 1 for what an
#: earlier `lab up` started) to reap them: until then `ps` and `pgrep asterisk` still list them
#: as <defunct>.
REAP_WAIT = 5.0


def wait_reaped(pids: Iterable[int], timeout: float = REAP_WAIT) -> None:
    """Until none of ``pids`` is a zombie any more: reaped, or the number taken by a new
    process. Only their parent can wait for them, so this polls."""
    left = set(pids)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = {pid for pid in left if sipp.proc_state(pid) in ("Z", "X")}
        if left:
            time.sleep(0.02)


def _wait_exited(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling: another session's process cannot be waited for


def _exited(pid: int) -> bool:
    """Gone, or a zombie with no thread left (its files, sockets included, are closed). The
    main thread of a process turns zombie before the others have exited, and the files they
    share stay open until the last one has: a big Asterisk takes seconds for that."""
    state = sipp.proc_state(pid)
    if state is None:
        return True
    if state not in ("Z", "X"):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    root = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def is_mounted(path: Path) -> bool:
    return str(path.resolve()) in mounts_under(path)


def _port_in_use(kind: int, host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _tcp_listener_inodes(host: str, port: int) -> list[str]:
    """The socket inodes listening on host:port, or on every address at that port
    (/proc/net/tcp)."""
    want = f"{''.join(f'{int(b):02X}' for b in reversed(host.split('.')))}:{port:04X}"
    any_addr = f"00000000:{port:04X}"
    with open("/proc/net/tcp") as f:
        return [fields[9] for fields in (line.split() for line in f.readlines()[1:])
                if fields[3] == "0A" and fields[1] in (want, any_addr)]


def tcp_listening(host: str, port: int) -> bool:
    """Something listens on host:port (read from /proc/net/tcp: probing would open a session)."""
    return bool(_tcp_listener_inodes(host, port))


def tcp_listener_pid(host: str, port: int) -> int | None:
    """The PID of the process listening on host:port (its socket among the process's open
    files); None when nothing listens, or the process is not ours to see."""
    sockets = {f"socket:[{inode}]" for inode in _tcp_listener_inodes(host, port)}
    for entry in os.listdir("/proc") if sockets else []:
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in sockets for fd in fds):
                return int(entry)
        except OSError:  # gone meanwhile, or not ours
            continue
    return None


# ---- the chroot --------------------------------------------------------------------------


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"{what} needs root (chroot, mount): run it as root, e.g. with sudo")


def chroot_ready(p: Paths) -> bool:
    return (p.chroot / CHROOT_MARKER).is_file() and p.in_chroot(ASTERISK).is_file()


def _clean_stale_builds(p: Paths, say: Say) -> None:
    """Remove what interrupted builds left. Called under the lab's lock, which every build
    holds: whatever PID a build directory is named after (a PID taken by another process
    since, after a reboot), no build of it runs. An orphaned debootstrap still working in
    one (its `lab up` killed) is killed first."""
    for stale in p.cache.glob("chroot.build-*"):
        for pid in _processes_naming(stale):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for point in mounts_under(stale):
            subprocess.run(["umount", "-l", point], check=False)
        say(f"chroot: removing an interrupted build {stale}")
        shutil.rmtree(stale, ignore_errors=True)


def _processes_naming(path: Path) -> list[int]:
    """PIDs of the processes whose command line holds ``path``."""
    return [pid for pid, argv in _command_lines() if any(str(path) in a for a in argv)]


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive for debootstrap (see DEFAULT_DEBIAN_MIRROR)."""
    configured = os.environ.get("OUTBOUND_ROUTER_DEBIAN_MIRROR")
    if configured:
        return configured
    sources = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            # one-line format: deb [opts] URI suite ...; deb822 format: URIs: URI ...
            uris = words[1:] if words[:1] in (["deb"], ["URIs:"]) else []
            for uri in uris:
                if uri.startswith("http") and uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return DEFAULT_DEBIAN_MIRROR


def build_chroot(p: Paths, say: Say = _say) -> float:
    """debootstrap Debian sid with Asterisk into the cache; returns the build time in seconds."""
    _require_root("building the chroot")
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.path.exists(debootstrap):
        raise LabError("debootstrap not found: apt-get install debootstrap")
    p.cache.mkdir(parents=True, exist_ok=True)
    _clean_stale_builds(p, say)
    build = p.cache / f"chroot.build-{os.getpid()}"
    mirror = debian_mirror()
    cmd = [debootstrap, "--variant=minbase", f"--include={','.join(DEBOOTSTRAP_PACKAGES)}",
           DEBIAN_SUITE, str(build), mirror]
    say(f"chroot: building Debian {DEBIAN_SUITE} with {' '.join(DEBOOTSTRAP_PACKAGES)} into "
        f"{p.chroot} (about a minute)")
    started = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "LC_ALL": "C"}) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        stage = ""
        tty = sys.stdout.isatty()
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            if not line.startswith("I: "):
                continue
            words = line[3:].split()
            new_stage = words[0] if words else ""
            elapsed = time.monotonic() - started
            if tty:
                sys.stdout.write(f"\r  [{elapsed:4.0f}s] {line[3:][:70]:<70}")
                sys.stdout.flush()
            elif new_stage != stage:
                say(f"  [{elapsed:4.0f}s] {line[3:]}")
            stage = new_stage
        rc = proc.wait()
    if tty:
        sys.stdout.write("\n")
    leftovers = mounts_under(build)
    for point in leftovers:
        subprocess.run(["umount", "-l", point], check=False)
    if rc != 0:
        shutil.rmtree(build, ignore_errors=True)
        raise LabError(f"debootstrap failed (is {mirror} reachable? set "
                       "OUTBOUND_ROUTER_DEBIAN_MIRROR to use another mirror):\n  "
                       + "\n  ".join(tail))
    subprocess.run(["chroot", str(build), "apt-get", "clean"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    version = subprocess.run(["chroot", str(build), ASTERISK, "-V"], capture_output=True,
                             text=True, check=False).stdout.strip()
    (build / CHROOT_MARKER).write_text(json.dumps({
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 1),
        "suite": DEBIAN_SUITE, "packages": list(DEBOOTSTRAP_PACKAGES), "asterisk": version,
    }) + "\n")
    if p.chroot.exists():  # a chroot without marker: an old or broken one
        shutil.rmtree(p.chroot)
    build.rename(p.chroot)
    say(f"chroot: built in {seconds:.0f} s ({version})")
    return seconds


def asterisk_version_warning(version: str) -> str | None:
    """What to say when the lab's Asterisk (ARI's ``system.version``, "22.10.1") is not of the
    major version SPEC section 7 names: debootstrap takes whatever Debian sid ships that day."""
    if version.split(".", 1)[0] == ASTERISK_MAJOR:
        return None
    return (f"this is Asterisk {version or '(version unknown)'}, the lab and its tests are made "
            f"for Asterisk {ASTERISK_MAJOR}: Debian {DEBIAN_SUITE} has moved "
            f"on; its behaviour may differ. For Asterisk {ASTERISK_MAJOR} again: `lab down`, "
            f"remove the chroot's {CHROOT_MARKER}, point OUTBOUND_ROUTER_DEBIAN_MIRROR at an "
            "archive that still ships it (snapshot.debian.org keeps dated copies of sid), and "
            "`lab up` builds the chroot again")


def chroot_info(p: Paths) -> dict[str, Any]:
    try:
        return dict(json.loads((p.chroot / CHROOT_MARKER).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _chroot_ids(p: Paths, user: str) -> tuple[int, int]:
    for line in p.in_chroot("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise LabError(f"no user {user!r} in the chroot: rebuild it (lab down; rm -r {p.chroot})")


def ari_credentials() -> tuple[str, str]:
    user = os.environ.get("ARI_USERNAME") or topology.LAB_ARI_USERNAME
    password = os.environ.get("ARI_PASSWORD") or topology.LAB_ARI_PASSWORD
    if not user.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise LabSettingError(f"ARI_USERNAME={user!r}: use letters, digits, '-', '_' and '.' "
                              "only")
    if any(c in password for c in ";\n\r[]") or password != password.strip():
        raise LabSettingError("ARI_PASSWORD: no ';', '[', ']', newline or surrounding spaces "
                              "(Asterisk's config syntax)")
    return user, password


def render_ari_conf(user: str, password: str) -> str:
    text = (CONF_SRC / "ari.conf.template").read_text()
    return text.replace("@ARI_USERNAME@", user).replace("@ARI_PASSWORD@", password)


def read_ari_conf(p: Paths) -> tuple[str, str] | None:
    """The credentials the running lab's ari.conf holds (the source of truth for `status`)."""
    try:
        text = p.in_chroot(f"{topology.ASTERISK_CONFIG_DIR}/ari.conf").read_text()
    except (FileNotFoundError, PermissionError):
        return None
    user = password = None
    for line in text.splitlines():
        line = line.split(";", 1)[0].strip()
        if line.startswith("[") and line.endswith("]") and line != "[general]":
            user = line[1:-1]
        elif user and line.replace(" ", "").startswith("password="):
            password = line.split("=", 1)[1].strip()
    return (user, password) if user and password else None


def install_config(p: Paths, say: Say = _say) -> bool:
    """Copy asterisk_conf/ into the chroot; True when anything changed."""
    user, password = ari_credentials()
    uid, gid = _chroot_ids(p, "asterisk")
    wanted: dict[str, tuple[str, int]] = {}
    for src in sorted(CONF_SRC.glob("*.conf")):
        wanted[src.name] = (src.read_text(), 0o644)
    wanted["ari.conf"] = (render_ari_conf(user, password), 0o640)
    conf_dir = p.in_chroot(topology.ASTERISK_CONFIG_DIR)
    conf_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, (text, mode) in wanted.items():
        target = conf_dir / name
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            changed.append(name)
        os.chmod(target, mode)
        os.chown(target, 0, gid)
    for extra in conf_dir.glob("*.conf"):
        if extra.name not in wanted:
            extra.unlink()
            changed.append(f"-{extra.name}")
    system = {
        "/etc/hosts": f"127.0.0.1 localhost {socket.gethostname()}\n::1 localhost ip6-localhost\n",
        # All addresses are IP literals; one nameserver must be listed or chan_pjsip logs an
        # error. pjproject still opens its DNS client socket (0.0.0.0, ephemeral port).
        "/etc/resolv.conf": "# outbound-router lab: nothing is resolved over DNS\n"
                            "nameserver 127.0.0.1\n",
    }
    for path, text in system.items():
        target = p.in_chroot(path)
        if target.is_symlink():
            target.unlink()
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            changed.append(path)
    run_dir = p.in_chroot("/run/asterisk")
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chown(run_dir, uid, gid)
    if changed:
        say(f"config: installed {', '.join(changed)} into {conf_dir}")
    return bool(changed)


def _rasterisk(p: Paths, command: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(p.chroot), ASTERISK, "-C", topology.ASTERISK_CONFIG_FILE, "-rx", command],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def asterisk_cli(command: str, timeout: float = 10) -> str:
    """What the lab's Asterisk answers to one CLI command ("" when it does not run)."""
    return _rasterisk(paths(), command, timeout).stdout


# ---- ARI ---------------------------------------------------------------------------------


def ari_request(path: str, auth: tuple[str, str] | None, *, method: str = "GET",
                timeout: float = 3.0, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
    """(status, decoded JSON or None) of one ARI request; status 0 when nothing answers.
    ``body``: sent as JSON (what ARI takes only there, such as an originate's variables)."""
    req = urllib.request.Request(f"{topology.ARI_URL}/ari{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = resp.read()
            return resp.status, json.loads(answer) if answer else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


# ---- Asterisk ----------------------------------------------------------------------------


def start_asterisk(p: Paths, state: dict[str, Any], say: Say = _say) -> None:
    _require_root("starting Asterisk in the chroot")
    proc_dir = p.in_chroot("/proc")
    if not is_mounted(proc_dir):
        subprocess.run(["mount", "-t", "proc", "proc", str(proc_dir)], check=True)
    if str(proc_dir) not in state.setdefault("mounts", []):
        # (also when it was mounted already: by a lab whose state.json was lost)
        state["mounts"].append(str(proc_dir))
        save_state(p, state)
    previous = state.get("asterisk_pid")
    if is_asterisk(previous, p.chroot):
        return
    if previous:  # it died (killed, crashed): its sockets close only with its last thread
        _wait_exited(previous, 15)
    busy = []
    if _port_in_use(socket.SOCK_DGRAM, topology.SIP_HOST, topology.SIP_PORT):
        busy.append(f"udp {topology.SIP_HOST}:{topology.SIP_PORT}")
    if _port_in_use(socket.SOCK_STREAM, topology.HTTP_HOST, topology.HTTP_PORT):
        busy.append(f"tcp {topology.HTTP_HOST}:{topology.HTTP_PORT}")
    if busy:
        raise LabError(f"{' and '.join(busy)} already in use: another Asterisk or another lab "
                       f"(with another OUTBOUND_ROUTER_CACHE?) runs; stop it first")
    log_path = p.asterisk_log
    if log_path.exists():
        log_path.rename(log_path.with_suffix(".log.previous"))
    p.state_dir.mkdir(parents=True, exist_ok=True)
    out = p.state_dir / "asterisk.out"
    if out.exists():  # the console output of the instance before (one that crashed, say)
        out.rename(out.with_suffix(".out.previous"))
    pid = sipp.spawn_detached(
        ["/usr/sbin/chroot", str(p.chroot), ASTERISK, "-f", "-C", topology.ASTERISK_CONFIG_FILE],
        out, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
    )
    state["asterisk_pid"] = pid
    save_state(p, state)
    say(f"asterisk: started (pid {pid}), waiting until fully booted")


#: What Asterisk's console says as it begins to shut down (SIGTERM, `core stop now`), and as
#: it boots, again after a `core restart`.
_ENDING = re.compile(rb"Asterisk (?:un)?cleanly ending \(")
_READY = b"Asterisk Ready."


def asterisk_ending(p: Paths, tail: int = 65536) -> bool:
    """The running Asterisk has begun to shut down: its console output (`asterisk.out`, its
    own since it started) says "Asterisk cleanly ending" after its last "Asterisk Ready.".
    Until it has unloaded its modules, it still answers ARI and its CLI, the same as one
    that runs on."""
    try:
        with open(p.state_dir / "asterisk.out", "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail))
            text = f.read()
    except FileNotFoundError:
        return False
    ends = [m.start() for m in _ENDING.finditer(text)]
    return bool(ends) and ends[-1] > text.rfind(_READY)


def wait_asterisk(p: Paths, state: dict[str, Any], auth: tuple[str, str],
                  timeout: float = 60.0) -> dict[str, Any]:
    """Wait until Asterisk is fully booted and ARI answers; returns /asterisk/info."""
    deadline = time.monotonic() + timeout
    pid = state.get("asterisk_pid")
    booted = False
    while time.monotonic() < deadline:
        if not is_asterisk(pid, p.chroot):
            raise AsteriskExited(f"Asterisk exited during start-up; see "
                                 f"{p.state_dir / 'asterisk.out'} and {p.asterisk_log}")
        if not booted:
            try:
                r = _rasterisk(p, "core waitfullybooted",
                               timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break  # (a hung Asterisk: its CLI never answers)
            booted = r.returncode == 0 and "fully booted" in r.stdout
        if booted:
            status, info = ari_request("/asterisk/info", auth)
            if status == 200:
                return dict(info or {})
            if status == 401:
                raise LabError("ARI refuses the lab's credentials: ari.conf was not reloaded?")
        time.sleep(0.1)  # polling: Asterisk has no readiness event we can await from here
    raise LabError(f"Asterisk (pid {pid}) did not finish booting, or does not answer its CLI "
                   f"and ARI, within {timeout:.0f} s; see {p.asterisk_log} (`outbound-router "
                   "lab down`, then `lab up` starts it again)")


def startup_problems(p: Paths) -> list[str]:
    """ERROR lines of the current Asterisk log up to "Asterisk Ready." (a clean start has none).

    Errors logged later (a benchmark that ran Asterisk out of file descriptors, a test's
    deliberate failure) are not start-up problems and must not make a reused lab look broken.
    """
    try:
        lines = p.asterisk_log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    problems = []
    for line in lines:
        if "] ERROR[" in line:
            problems.append(line)
        elif "Asterisk Ready." in line:
            break
    return problems


# ---- Redis, seed, services ---------------------------------------------------------------


def redis_error(url: str) -> Exception | None:
    """None when the Redis at ``url`` answers PING, else what went wrong."""
    import redis

    from redis_seed.connection import sync_client

    # the project's one way to open a REDIS_URL (rediss://, redis+sentinel:// included)
    client = sync_client(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        client.ping()
        return None
    except (redis.RedisError, OSError) as exc:
        return exc
    finally:
        client.close()


def redis_ping(url: str) -> bool:
    return redis_error(url) is None


def _nothing_answers(exc: Exception) -> bool:
    """No Redis there at all, as opposed to one that answered and refused (a password
    missing or wrong, no such database...)."""
    import redis

    return (isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError))
            and not isinstance(exc, redis.AuthenticationError))


def _redis_problem(exc: Exception, url: str) -> str:
    from outbound_router.cli import redis_problem

    return redis_problem(exc, Settings(redis_url=url))


def _own_redis_address(url: str) -> tuple[int, int, bool]:
    """Port and database for the lab's own redis-server: those of ``url`` when it names a
    free port on this machine's loopback without a password (then `outbound-router seed`
    with the same REDIS_URL, or none at all, reaches it: True), else a free port and db 0
    (False)."""
    parts = urlsplit(url)
    port = _loopback_port(url)
    try:
        db = int(parts.path.strip("/") or 0)
    except ValueError:
        port = None
    if (port and not parts.password and not parts.query
            and not _port_in_use(socket.SOCK_STREAM, "127.0.0.1", port)):
        return port, db, True
    port = sipp.free_udp_port("127.0.0.1")
    while _port_in_use(socket.SOCK_STREAM, "127.0.0.1", port):
        port = sipp.free_udp_port("127.0.0.1")
    return port, 0, False


def _loopback_port(url: str) -> int | None:
    """The port of a plain ``redis://`` URL on this machine's loopback, else None."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        return None
    if parts.scheme != "redis" or parts.hostname not in ("127.0.0.1", "localhost"):
        return None
    return port


def _same_local_server(a: str, b: str) -> bool:
    """Both URLs name the same redis-server on this machine's loopback (any database)."""
    port = _loopback_port(a)
    return port is not None and port == _loopback_port(b)


def ensure_redis(p: Paths, state: dict[str, Any], say: Say = _say) -> str:
    own = state.get("redis") or {}
    # REDIS_URL when given; else the one this lab already uses (services running on it), so
    # that a second `lab up` from another shell does not switch half the lab to another Redis
    given = os.environ.get("REDIS_URL")
    if own.get("pid") and is_redis(own["pid"], p) and redis_ping(own["url"]):
        if not given or given == own["url"]:
            return str(own["url"])
        if _same_local_server(given, own["url"]) and redis_ping(given):
            state["redis"] = {"url": given, "pid": own["pid"]}
            save_state(p, state)
            return given
        # Another Redis named: the services move there (ensure_services), and nothing would
        # track the own redis-server any more. Unless that one cannot be used: exit 2 then
        # changes nothing (it stopped the running lab's Redis first, under its services).
        problem = _unusable(given, given=True)
        if problem is not None:
            raise problem
        say(f"redis: REDIS_URL names {_mask(given)}; stopping the lab's own redis-server at "
            f"{_mask(own['url'])} (pid {own['pid']})")
        stop_process(own["pid"], lambda pid: is_redis(pid, p))
        own = {}
        state["redis"] = {}
        save_state(p, state)
    url = given or own.get("url") or topology.DEFAULT_REDIS_URL
    error = redis_error(url)
    if error is None:
        if own.get("url") != url:
            say(f"redis: using {_mask(url)} (answers PING)")
        state["redis"] = {"url": url, "pid": None}
        save_state(p, state)
        return url
    problem = _unusable(url, given=bool(given), error=error)
    if problem is not None:
        raise problem
    server = _redis_server()
    port, db, there = _own_redis_address(url)
    redis_dir = p.state_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    # Persistent (an append-only file in the lab's state directory, written every second), as
    # docs/redis.md asks of a production Redis: routes seeded survive `lab down`, `lab up` and
    # a restart of this redis-server, instead of the example routes replacing them.
    pid = sipp.spawn_detached(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(redis_dir),
         "--daemonize", "no"],
        p.state_dir / "redis.log",
    )
    own_url = f"redis://127.0.0.1:{port}/{db}"
    state["redis"] = {"url": own_url, "pid": pid}
    save_state(p, state)
    deadline = time.monotonic() + 10
    while not redis_ping(own_url):
        if sipp.exit_status(pid) is not None or time.monotonic() > deadline:
            raise LabError(f"redis-server did not start; see {p.state_dir / 'redis.log'}")
        time.sleep(0.05)
    where = "there" if there else f"at {own_url}"
    say(f"redis: nothing answers at {_mask(url)}; started redis-server {where} (pid {pid})")
    return own_url


def _redis_server() -> str:
    """The redis-server binary the lab starts (it may not be installed)."""
    from outbound_router.local_redis import REDIS_SERVER  # (it imports redis)

    return REDIS_SERVER


def _unusable(url: str, *, given: bool, error: Exception | None = None
              ) -> LabSettingError | None:
    """Why `lab up` can neither use the Redis of ``url`` nor start one of its own there;
    None when it can. ``error``: what ``redis_error(url)`` gave, when it was just asked."""
    error = error if error is not None else redis_error(url)
    if error is None:
        return None
    if not _nothing_answers(error):
        # A Redis answered and refused: a Redis of the lab's own elsewhere would route calls
        # from the example routes while `seed` with REDIS_URL fails against that one.
        return LabSettingError(f"{_redis_problem(error, url)} (`lab up` starts a Redis of "
                               "its own only where nothing answers.)")
    if not os.path.exists(_redis_server()):
        return LabSettingError(f"Redis does not answer at {_mask(url)} and redis-server is "
                               "not installed: apt-get install redis-server, or set REDIS_URL")
    if given and not _own_redis_address(url)[2]:
        return LabSettingError(
            f"nothing answers at {_mask(url)} (REDIS_URL), and the lab can start a Redis of "
            "its own only where `outbound-router seed` with that REDIS_URL reaches it: a free "
            "port on 127.0.0.1, no password, no TLS or Sentinel. Start the Redis of REDIS_URL, "
            "or unset REDIS_URL for the lab's own.")
    return None


def _mask(url: str) -> str:
    from redis_seed.urls import mask_url

    return mask_url(url)


def cli_command(*args: str) -> list[str]:
    # -P: the services run this installation's code, not an `outbound_router` that happens
    # to be in the directory `lab up` was run from (another checkout).
    return [sys.executable, "-P", "-m", "outbound_router.cli", *args]


def supervised(argv: Sequence[str]) -> list[str]:
    """``argv`` restarted when it crashes (outbound_router/supervise.py); the PID the lab
    keeps is the supervisor's, which stops the service with it."""
    return [sys.executable, "-P", "-m", "outbound_router.supervise", *argv]


def seed(redis_url: str, routes: Path | str) -> str:
    """Publish a routes file with `outbound-router seed`; returns the new version."""
    r = subprocess.run(cli_command("seed", str(routes)), capture_output=True, text=True,
                       check=False, timeout=60, cwd=REPO,
                       env={**os.environ, "REDIS_URL": redis_url})
    if r.returncode != 0:
        raise LabError(f"seed {routes} failed:\n{(r.stderr or r.stdout).strip()}")
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""


def seed_and_wait(p: Paths, state: dict[str, Any], routes: Path) -> str:
    """Seed ``routes`` into the lab's Redis; return the version once every running router
    service logged that it loaded it."""
    offsets = service_log_offsets(p, state)
    version = seed(str((state.get("redis") or {}).get("url", topology.DEFAULT_REDIS_URL)),
                   routes)
    wait_loaded(offsets, version)
    return version


def ensure_seeded(p: Paths, state: dict[str, Any], redis_url: str, say: Say = _say) -> None:
    # Only into a Redis with no routes: never over routes someone seeded (a `lab down` and
    # `lab up` keeps them), and again when Redis lost them (a restart without persistence).
    try:
        current = routes_version(redis_url)
    except LabError as exc:
        say(f"seed: {exc}; no routes seeded")
        return
    if current is not None:
        say(f"routes: version {current} current in Redis, kept")
        return
    try:
        version = seed(redis_url, ROUTES_EXAMPLE)
    except LabError as exc:
        last = str(exc).strip().splitlines()[-1]
        say(f"seed: FAILED, no routes seeded ({last}); the lab goes on without them")
        return
    say(f"seed: Redis held no routes: {ROUTES_EXAMPLE.relative_to(REPO)} -> {version}")


#: What the ari service logs once its events websocket is open: from then on Stasis() hands
#: calls to it. (GET /applications/APP answers 200 before that: the application stays
#: registered in Asterisk without a websocket, and calls then fail.)
ARI_CONNECTED = "ARI events connected"


def file_size(path: Path) -> int:
    """Where ``path`` ends now, 0 while it does not exist: an offset for logged_since."""
    return path.stat().st_size if path.exists() else 0


def logged_since(log: Path, offset: int) -> bytes:
    """What ``log`` got after byte ``offset``."""
    with open(log, "rb") as f:
        f.seek(offset)
        return f.read()


def cdr_rows_since(offset: int) -> list[list[str]]:
    """The lab's CDR records (Paths.cdr_csv, a CSV line each) written after byte ``offset``."""
    text = logged_since(paths().cdr_csv, offset).decode(errors="replace")
    return list(csv.reader(io.StringIO(text)))


def _service_ready(name: str, log: Path, offset: int) -> bool:
    if name == "agi":
        return tcp_listening(topology.AGI_HOST, topology.AGI_PORT)
    return ARI_CONNECTED.encode() in logged_since(log, offset)


def running_services(state: dict[str, Any]) -> list[str]:
    return [name for name in topology.SERVICES
            if is_service(((state.get("services") or {}).get(name) or {}).get("pid"), name)]


def service_log_offsets(p: Paths, state: dict[str, Any]) -> dict[Path, int]:
    """Where the running router services' logs end now (for :func:`wait_loaded`)."""
    logs = [p.service_log(name) for name in running_services(state)]
    return {log: file_size(log) for log in logs}


def wait_loaded(offsets: dict[Path, int], version: str, timeout: float = 10.0) -> None:
    """Return once every log of ``offsets`` says, after its offset, that it loaded
    ``version`` (after a Redis restart version ids start again from v000001)."""
    needle = f"routing version {version} loaded".encode()
    deadline = time.monotonic() + timeout
    for log, offset in offsets.items():
        while needle not in logged_since(log, offset):
            if time.monotonic() > deadline:
                raise LabError(f"{log.name}: routing version {version} not loaded within "
                               f"{timeout:g} s")
            time.sleep(0.02)  # polling: the services say it only in their logs


def _redis_place(url: str, prefix: str) -> str:
    if prefix == DEFAULT_REDIS_PREFIX:
        return _mask(url)
    return f"{_mask(url)} under REDIS_PREFIX {prefix!r}"


def routes_cache(p: Paths, name: str) -> Path:
    """Where the lab's service ``name`` keeps the last routing version it loaded."""
    return p.state_dir / f"routes-{name}.cache"


def ensure_services(p: Paths, state: dict[str, Any], redis_url: str, auth: tuple[str, str],
                    say: Say = _say, *, wanted: Sequence[str] = topology.SERVICES) -> None:
    services = state.setdefault("services", {})
    prefix = redis_prefix()  # inherited by the services with the rest of the environment
    # The shell's own ARI_PASSWORD and the like are left out: each service gets its own.
    inherited = {k: v for k, v in os.environ.items() if k not in topology.SERVICE_VARIABLES}
    for name in wanted:
        env = {**inherited, **topology.service_env(
            name, redis_url=redis_url, ari_username=auth[0], ari_password=auth[1]),
               # the last version loaded, to route with when started while Redis is away
               "ROUTES_CACHE": str(routes_cache(p, name))}
        current = services.get(name) or {}
        digest = _credentials_digest(auth) if name == "ari" else None
        if is_service(current.get("pid"), name):
            was = (current.get("redis_url", redis_url), current.get("redis_prefix", prefix))
            same_auth = current.get("ari_auth", digest) == digest
            if was == (redis_url, prefix) and same_auth:
                continue
            if was != (redis_url, prefix):
                # `lab up` with another REDIS_URL or REDIS_PREFIX: seed, status and demo use
                # it from now on, and so must the services, or routes seeded there would
                # never be used.
                say(f"{name}: restarting it on {_redis_place(redis_url, prefix)} (it ran on "
                    f"{_redis_place(*was)})")
            else:
                # ari.conf was rewritten with other ARI_USERNAME / ARI_PASSWORD and Asterisk
                # reloaded: the running service's requests would all get 401.
                say(f"{name}: restarting it with the new ARI credentials")
            stop_services(p, state, [name], say)
        if name == "agi" and _port_in_use(socket.SOCK_STREAM, topology.AGI_HOST,
                                          topology.AGI_PORT):
            services[name] = {"pid": None, "note": f"{topology.AGI_LISTEN} already in use"}
            save_state(p, state)
            say(f"agi: {topology.AGI_LISTEN} is already in use by another process; not started")
            continue
        log = _service_log(p, name)
        offset = file_size(log)
        pid = sipp.spawn_detached(supervised(cli_command(name)), log, env=env)
        services[name] = {"pid": pid, "redis_url": redis_url, "redis_prefix": prefix}
        if digest is not None:
            services[name]["ari_auth"] = digest
        save_state(p, state)
        deadline = time.monotonic() + 15
        code = None
        while not _service_ready(name, log, offset):
            code = sipp.exit_status(pid)
            if code is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling: readiness is a listening socket or a log line
        if code is not None:
            services[name] = {"pid": None, "note": f"exited with {code}, see {log}"}
            save_state(p, state)
            say(f"{name}: exited at start-up with {code}; see {log}")
        else:
            say(f"{name}: started (pid {pid}), log {log}")


#: A service's log is started afresh (the one before kept as NAME.log.previous) when the
#: service is started and its log has grown past this: a line per call and per attempt,
#: appended over every lab up/down, only ever grew.
SERVICE_LOG_MAX_BYTES = 64 * 1024 * 1024


def _service_log(p: Paths, name: str) -> Path:
    """The log of the service ``name``, about to be started (nothing writes to it now)."""
    log = p.service_log(name)
    with contextlib.suppress(FileNotFoundError):
        if log.stat().st_size > SERVICE_LOG_MAX_BYTES:
            log.rename(log.with_suffix(".log.previous"))
    return log


def _credentials_digest(auth: tuple[str, str]) -> str:
    """What the state keeps of the ARI credentials a service runs with: enough to tell a
    change, not the password."""
    return hashlib.sha256(f"{auth[0]}\0{auth[1]}".encode()).hexdigest()[:16]


def _service_check(name: str, p: Paths | None = None) -> Callable[[int], bool]:
    """Before a signal: the lab's own (``p``'s log of the service), not any lab's."""
    log = None if p is None else p.service_log(name)
    return lambda pid: is_service(pid, name, log)


def stop_services(p: Paths, state: dict[str, Any], names: Sequence[str] = topology.SERVICES,
                  say: Say = _say, *, timeout: float = 10.0) -> None:
    services = state.get("services") or {}
    for name in names:
        pid = (services.get(name) or {}).get("pid")
        if pid and stop_process(pid, _service_check(name, p), group=True, timeout=timeout):
            say(f"{name}: stopped (pid {pid})")
        services.pop(name, None)
    save_state(p, state)


# ---- demo carriers -----------------------------------------------------------------------


def ensure_carriers(p: Paths, state: dict[str, Any], want: bool, say: Say = _say) -> None:
    carriers = state.setdefault("carriers", {})
    if not want:
        stop_carriers(p, state, say)
        return
    for trunk in topology.CARRIERS:
        pid = (carriers.get(trunk.letter) or {}).get("pid")
        if is_lab_carrier(pid, p):
            continue
        try:
            c = sipp.start_carrier(trunk.letter, trunk.demo, p.carriers_dir, detach=True)
        except sipp.SippError as exc:
            if not sipp.udp_bound(trunk.address, trunk.port):
                raise
            raise LabError(f"{trunk.address}:{trunk.port} is in use by a carrier that is not one "
                           f"of the lab's (a test's own?): stop it, or run `lab up "
                           f"--no-carriers` to keep it (the rest of the lab is up)") from exc
        carriers[trunk.letter] = {"pid": c.pid, "behaviour": trunk.demo}
        save_state(p, state)
        say(f"carrier-{trunk.letter}: {trunk.address}:{trunk.port} {trunk.demo} (pid {c.pid})")


def stop_carriers(p: Paths, state: dict[str, Any], say: Say = _say) -> None:
    carriers = state.get("carriers") or {}
    for letter, info in sorted(carriers.items()):
        pid = (info or {}).get("pid")
        if pid and is_lab_carrier(pid, p):
            sipp.stop_pid(pid)
            say(f"carrier-{letter}: stopped (pid {pid})")
    state["carriers"] = {}
    save_state(p, state)


def demo_carriers(p: Paths, state: dict[str, Any]) -> list[sipp.Carrier]:
    out = []
    for trunk in topology.CARRIERS:
        info = (state.get("carriers") or {}).get(trunk.letter)
        if info and is_lab_carrier(info.get("pid"), p):
            out.append(sipp.Carrier(trunk, sipp.Behaviour.parse(info["behaviour"]),
                                    p.carriers_dir, info["pid"]))
    return out


# ---- up / down / status ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabInfo:
    """What a running lab offers to its users (tests, `lab call`)."""

    ari_url: str
    ari_auth: tuple[str, str]
    redis_url: str
    asterisk_pid: int
    asterisk_version: str
    state_dir: Path
    asterisk_log: Path
    #: What is not as it should be: a service that did not start, a Stasis app that is not
    #: registered (`lab up` then says so and exits 1; the rest of the lab is up).
    problems: tuple[str, ...] = ()


def up(*, carriers: bool = True, services: bool = True, say: Say = _say) -> LabInfo:
    """Bring the lab up; what already runs is kept (idempotent), but a service on another
    Redis than now (restarted on it) and strays a lost state does not name (stopped)."""
    _require_root("lab up")
    Settings.redis_from_env()  # a malformed REDIS_URL: before anything is started
    p = paths()
    with locked(p, say):
        return _up(p, carriers=carriers, services=services, say=say)


def _up(p: Paths, *, carriers: bool, services: bool, say: Say, again: bool = True) -> LabInfo:
    p.state_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(p)
    first = not state
    # Settings first: ARI credentials or a REDIS_URL to fix (a password refused) stop `lab
    # up` before a chroot build or an Asterisk is started for nothing.
    auth = ari_credentials()
    redis_url = ensure_redis(p, state, say)
    if chroot_ready(p):
        info = chroot_info(p)
        if first:
            say(f"chroot: cached at {p.chroot} ({info.get('asterisk', 'asterisk')})")
    else:
        build_chroot(p, say)
    started = time.monotonic()  # (the boot time said below leaves the build out)
    state["chroot"] = str(p.chroot)
    changed = install_config(p, say)
    running = is_asterisk(state.get("asterisk_pid"), p.chroot)
    strays = [pid for pid in asterisks_in(p.chroot) if pid != state.get("asterisk_pid")]
    if strays:  # e.g. left by an interrupted `lab up`: nobody else runs Asterisk in our chroot
        say(f"asterisk: stray Asterisk in the chroot (pid {', '.join(map(str, strays))}); "
            "restarting it cleanly")
        for pid in [*strays, *([state["asterisk_pid"]] if running else [])]:
            stop_process(pid, lambda q: is_asterisk(q, p.chroot), timeout=15)
        running = False
    _stop_strays(_strays(p, state), say)
    if running and changed:
        _rasterisk(p, "core reload")
        say("asterisk: configuration changed, reloaded")
    start_asterisk(p, state, say)
    try:
        # (one that runs answers at once: a hung one is not waited for as long as a boot)
        ari_info = wait_asterisk(p, state, auth, timeout=15.0 if running else 60.0)
        if running and asterisk_ending(p):
            raise AsteriskExited("shutting down")
    except AsteriskExited:
        if not running:
            raise
        # The Asterisk that ran was shutting down (SIGTERM, `core stop`): it has gone, or
        # answered ARI on its way out. A new one, as for an Asterisk found dead (unless it
        # was a `core restart`, which boots again under the same PID).
        pid = state["asterisk_pid"]
        deadline = time.monotonic() + 30
        while (is_asterisk(pid, p.chroot) and asterisk_ending(p)
               and time.monotonic() < deadline):
            time.sleep(0.05)  # polling: another session's process cannot be waited for
        if is_asterisk(pid, p.chroot):
            say(f"asterisk: the running Asterisk (pid {pid}) was restarting")
        else:
            say(f"asterisk: the running Asterisk (pid {pid}) was stopping and has exited; "
                "starting a new one")
        running = False
        start_asterisk(p, state, say)
        ari_info = wait_asterisk(p, state, auth)
    version = str((ari_info.get("system") or {}).get("version", ""))
    if not running:
        problems = startup_problems(p)
        boot = time.monotonic() - started
        say(f"asterisk: Asterisk {version} fully booted, ARI answers at {topology.ARI_URL} "
            f"({boot:.1f} s)")
        for line in problems:
            say(f"asterisk: start-up ERROR: {line}")
        if warning := asterisk_version_warning(version):
            say(f"asterisk: WARNING: {warning}")
    ensure_seeded(p, state, redis_url, say)
    problems = []
    if services:
        ensure_services(p, state, redis_url, auth, say)
        problems = [f"{name} not running" for name in topology.SERVICES
                    if name not in running_services(state)]
        if not problems and not wait_app_registered(state, auth, say):
            problems.append(f"the Stasis app {topology.ARI_APP!r} not registered")
    ensure_carriers(p, state, carriers, say)
    state["up_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save_state(p, state)
    if running and again and (asterisk_ending(p)
                              or not is_asterisk(state["asterisk_pid"], p.chroot)):
        # The Asterisk kept began to shut down while the rest came up (a SIGTERM just before
        # `lab up`): once more, which starts a new one; returning now would leave the lab down.
        return _up(p, carriers=carriers, services=services, say=say, again=False)
    return LabInfo(topology.ARI_URL, auth, redis_url, int(state["asterisk_pid"]), version,
                   p.state_dir, p.asterisk_log, tuple(problems))


def wait_app_registered(state: dict[str, Any], auth: tuple[str, str], say: Say = _say,
                        timeout: float = 15.0) -> bool:
    """Return once Asterisk knows the Stasis app, so that `lab up` means calls route. The ari
    service may already run while Asterisk was restarted: it reconnects within its backoff
    (up to a few seconds), and until then Stasis() fails and the phone gets 503. False when
    it is not registered after ``timeout`` (said), or the ari service does not run."""
    ari = (state.get("services") or {}).get("ari") or {}
    if not is_service(ari.get("pid"), "ari"):
        return False
    deadline = time.monotonic() + timeout
    while (code := ari_request(f"/applications/{topology.ARI_APP}", auth)[0]) != 200:
        if time.monotonic() > deadline:
            if code == 0:
                say(f"ari: ARI did not answer GET /applications for {timeout:g} s: Asterisk's "
                    "ARI is stuck (docs/ari.md); restart Asterisk: lab down, lab up")
            else:
                say(f"ari: the Stasis app {topology.ARI_APP!r} is not registered in Asterisk "
                    f"after {timeout:g} s; see {paths().state_dir / 'ari.log'}")
            return False
        time.sleep(0.05)  # polling: nothing outside the service tells when it reconnected
    return True


def running_info() -> LabInfo | None:
    """The running lab, or None."""
    p = paths()
    state = load_state(p)
    pid = state.get("asterisk_pid")
    if pid is None or not is_asterisk(pid, p.chroot):
        return None
    auth = read_ari_conf(p) or ari_credentials()
    redis_url = str((state.get("redis") or {}).get("url", topology.DEFAULT_REDIS_URL))
    return LabInfo(topology.ARI_URL, auth, redis_url, int(pid), "", p.state_dir, p.asterisk_log)


def services_redis(running: LabInfo) -> dict[str, str]:
    """REDIS_URL (and REDIS_PREFIX, when they have one) of a running lab's services: what to
    keep in the environment of a `lab up` that should leave them where they are. `lab up`
    follows REDIS_URL; with it unset, a running lab keeps the Redis it uses (ensure_redis),
    but the services may also differ in REDIS_PREFIX."""
    state = load_state(paths())
    services = [s for s in (state.get("services") or {}).values() if s and s.get("redis_url")]
    url = str(services[0]["redis_url"]) if services else running.redis_url
    prefix = services[0].get("redis_prefix") if services else None
    return {"REDIS_URL": url, **({"REDIS_PREFIX": str(prefix)} if prefix else {})}


def _strays(p: Paths, state: dict[str, Any]) -> list[tuple[str, int]]:
    """(what, PID) of the lab's services and carriers that its state does not name: left by a
    lab whose state.json was lost (a cleaned cache directory). A service's supervisor is
    this lab's when it writes to this lab's log of the service, a carrier when its files are
    in this lab's directory."""
    known = {info.get("pid") for group in ("services", "carriers")
             for info in (state.get(group) or {}).values() if info}
    found = []
    for pid, argv in _command_lines():
        if pid in known:
            continue
        if "outbound_router.supervise" in argv and argv[-1] in topology.SERVICES:
            if _stdout_of(pid) == str(p.service_log(argv[-1]).resolve()):
                found.append((argv[-1], pid))
        elif _carrier_argv(argv, p):
            found.append(("carrier", pid))
    return found


def _stop_strays(strays: list[tuple[str, int]], say: Say) -> None:
    for what, pid in strays:
        check = sipp.pid_is_sipp if what == "carrier" else _service_check(what)
        if stop_process(pid, check, group=what != "carrier"):
            say(f"{what}: stopped a stray one the lab's state did not name (pid {pid})")


def _command_lines() -> Iterator[tuple[int, list[str]]]:
    """(PID, argv) of every process with a command line (read as it is, without waiting for
    an exec: kernel threads have none)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = sipp.read_cmdline(entry)
        except OSError:
            continue
        if argv:
            yield int(entry), argv


def down(say: Say = _say) -> bool:
    """Stop everything `up` started (by PID, and the strays of a lost state) and unmount;
    True if anything was running."""
    p = paths()
    with locked(p, say):
        return _down(p, say)


def _down(p: Paths, say: Say) -> bool:
    state = load_state(p)
    proc_dir = p.in_chroot("/proc")
    strays = _strays(p, state)
    if not state and not asterisks_in(p.chroot) and not strays and not is_mounted(proc_dir):
        say("lab: not running")
        return False
    stopping = [*(c.get("pid") for c in (state.get("carriers") or {}).values() if c),
                *(svc.get("pid") for svc in (state.get("services") or {}).values() if svc),
                state.get("asterisk_pid"), (state.get("redis") or {}).get("pid"),
                *(pid for _, pid in strays)]
    stop_carriers(p, state, say)
    stop_services(p, state, say=say)
    _stop_strays(strays, say)
    for pid in sorted({state.get("asterisk_pid") or 0, *asterisks_in(p.chroot)} - {0}):
        if stop_process(pid, lambda q: is_asterisk(q, p.chroot), timeout=15):
            say(f"asterisk: stopped (pid {pid})")
    state.pop("asterisk_pid", None)
    redis = state.get("redis") or {}
    if redis.get("pid") and stop_process(redis["pid"], lambda pid: is_redis(pid, p)):
        say(f"redis: stopped own redis-server (pid {redis['pid']})")
    state.pop("redis", None)
    # (/proc in the chroot whoever mounted it: a lab whose state was lost, too)
    stuck = []
    for point in dict.fromkeys([*state.get("mounts", []), str(proc_dir)]):
        if is_mounted(Path(point)):
            r = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                r = subprocess.run(["umount", "-l", point], capture_output=True, text=True,
                                   check=False)
            if is_mounted(Path(point)):
                stuck.append(f"{point} ({r.stderr.strip() or f'umount exit {r.returncode}'})")
            else:
                say(f"mount: unmounted {point}")
    p.state_file.unlink(missing_ok=True)
    wait_reaped(pid for pid in stopping if isinstance(pid, int) and pid > 0)
    if stuck:
        # Said, not hidden behind "unmounted": the next `lab down` tries again.
        raise LabError("still mounted: " + "; ".join(stuck)
                       + ". Unmount by hand (umount -l POINT), then `lab down` again")
    return True


def status(say: Say = _say) -> int:
    """What runs. Exit 0 when everything is up, 3 when Asterisk is down, 1 when Asterisk runs
    but a part does not (ARI, Redis, a service): each line says which."""
    p = paths()
    state = load_state(p)
    info = chroot_info(p)
    if chroot_ready(p):
        say(f"chroot     {p.chroot} (built {info.get('built', '?')} in "
            f"{info.get('seconds', '?')} s, {info.get('asterisk', '?')})")
    else:
        say(f"chroot     not built yet ({p.chroot}); `lab up` builds it")
    problems: list[str] = []
    pid = state.get("asterisk_pid")
    asterisk_up = is_asterisk(pid, p.chroot)
    if asterisk_up:
        auth = read_ari_conf(p) or ari_credentials()
        code, ari_info = ari_request("/asterisk/info", auth)
        version = ((ari_info or {}).get("system") or {}).get("version", "?")
        say(f"asterisk   running (pid {pid}), Asterisk {version}, log {p.asterisk_log}")
        say(f"sip        udp {topology.SIP_HOST}:{topology.SIP_PORT}")
        say(f"ari-http   {topology.ARI_URL} user {auth[0]!r}: "
            + ("answers" if code == 200 else f"HTTP {code or 'no answer'}"))
        if code != 200:
            problems.append("ARI does not answer")
        mounts = [m for m in state.get("mounts", []) if is_mounted(Path(m))]
        say(f"mounts     {', '.join(mounts) or 'none'}")
    else:
        say("asterisk   not running" + (" (exited)" if pid else ""))
    redis = state.get("redis") or {}
    if redis:
        own = redis.get("pid")
        kind = ("external" if not own else f"own redis-server (pid {own})" if is_redis(own, p)
                else f"own redis-server (pid {own}) exited")
        answers = redis_ping(redis["url"])
        say(f"redis      {_mask(redis['url'])} {kind}, "
            + ("answers" if answers else "DOES NOT ANSWER"))
        if not answers:
            problems.append("Redis does not answer")
        else:
            try:
                version = routes_version(redis["url"])
                say(f"routes     version {version} current in Redis" if version
                    else "routes     none in Redis: outbound-router seed FILE")
            except LabError as exc:
                say(f"routes     {exc}")
    for name in topology.SERVICES:
        s = (state.get("services") or {}).get(name) or {}
        if is_service(s.get("pid"), name):
            worker = worker_of(s["pid"], name)
            log = p.service_log(name)
            if worker is None:  # crashed: its supervisor starts it again in a moment
                say(f"{name:<10} restarting after a crash (kept up by pid {s['pid']}), log {log}")
                if asterisk_up:
                    problems.append(f"{name} restarting")
            else:
                say(f"{name:<10} running (pid {worker}, kept up by pid {s['pid']}), log {log}")
        else:
            why = "exited" if s.get("pid") else s.get("note", "not started")
            say(f"{name:<10} not running ({why}; `lab up` starts it)")
            if asterisk_up:
                problems.append(f"{name} not running")
    ari_service = (state.get("services") or {}).get("ari") or {}
    if asterisk_up and code == 200 and is_service(ari_service.get("pid"), "ari"):
        line, problem = stasis_app_status(ari_request(f"/applications/{topology.ARI_APP}", auth)[0])
        say(line)
        if problem:
            problems.append(problem)
    if asterisk_up:
        carriers = demo_carriers(p, state)
        for trunk in topology.CARRIERS:
            c = next((c for c in carriers if c.trunk == trunk), None)
            if c:
                n = c.invites()
                say(f"carrier-{trunk.letter}  {trunk.address}:{trunk.port} {c.behaviour.name} "
                    f"(pid {c.pid}), {n} call{'' if n == 1 else 's'} so far")
            else:
                say(f"carrier-{trunk.letter}  {trunk.address}:{trunk.port} no demo carrier")
    if not asterisk_up:
        say("lab        down" + (" (`lab up` starts it again, `lab down` stops what still runs)"
                                     if state else ""))
        return EXIT_NOT_RUNNING
    say("lab        up" if not problems else f"lab        up, but {', '.join(problems)}")
    return EXIT_OK if not problems else EXIT_FAILED


def stasis_app_status(code: int) -> tuple[str, str | None]:
    """`lab status`'s line on the router's Stasis app from the HTTP status of
    ``GET /applications/<app>`` (0: no answer), and the problem it names, if any."""
    if code == 200:
        return f"stasis     app {topology.ARI_APP!r} registered in Asterisk", None
    if code == 0:
        return ("stasis     ARI does not answer GET /applications: Asterisk's ARI is stuck (a "
                "known Asterisk deadlock, docs/ari.md); restart Asterisk: lab down, lab up",
                "ARI stuck")
    return (f"stasis     app {topology.ARI_APP!r} NOT registered in Asterisk (HTTP {code}); "
            f"see {paths().state_dir / 'ari.log'}", "the Stasis app not registered")


def redis_prefix() -> str:
    """REDIS_PREFIX, as `seed` and the services (which inherit it) read it: the lab's checks
    of what Redis holds must look under the same keys."""
    return Settings.redis_from_env().redis_prefix


def routes_version(redis_url: str) -> str | None:
    """The routing version Redis holds now under REDIS_PREFIX (None: no routes); LabError
    when it cannot be read."""
    import redis as redis_py

    from redis_seed.connection import sync_client
    from redis_seed.keys import Keys
    from redis_seed.store import current_version

    client = sync_client(redis_url)
    try:
        return current_version(client, keys=Keys(redis_prefix()))
    except (redis_py.RedisError, OSError) as exc:
        raise LabError(f"the current routes cannot be read ({exc})") from None
    finally:
        client.close()


# ---- calls -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attempt:
    carrier: str
    request_uri: str
    answer: int | None


def _attempts_since(carriers: Sequence[sipp.Carrier], before: dict[str, set[str]]
                    ) -> list[Attempt]:
    """INVITEs the demo carriers received after `before` (Call-IDs per carrier), in time order."""
    found: list[tuple[str, Attempt]] = []
    for c in carriers:
        messages = c.messages()
        for m in messages:
            if m.sent or m.method != "INVITE" or not m.is_request or m.has_to_tag():
                continue
            if m.call_id in before.get(c.trunk.letter, set()):
                continue
            if any(a.request_uri == m.request_uri and t == m.time for t, a in found):
                continue
            finals = [r.status for r in messages
                      if r.sent and not r.is_request and r.call_id == m.call_id
                      and r.method == "INVITE" and (r.status or 0) >= 200]
            found.append((m.time, Attempt(c.trunk.endpoint, m.request_uri,
                                          finals[0] if finals else None)))
            before.setdefault(c.trunk.letter, set()).add(m.call_id)
    return [a for _, a in sorted(found, key=lambda x: x[0])]


def _seen_call_ids(carriers: Sequence[sipp.Carrier]) -> dict[str, set[str]]:
    return {c.trunk.letter: {m.call_id for m in c.messages()} for c in carriers}


def _code_text(code: int | None) -> str:
    if code is None:
        return "no final answer"
    return f"{code} {'OK' if code == 200 else sipp.REASONS.get(code, '')}".strip()


#: The phone traces of the last calls `lab call` and `lab demo` keep (three files a call).
CALL_TRACES_KEPT = 100


def call_traces(p: Paths, keep: int = CALL_TRACES_KEPT) -> Path:
    """The directory of the phone traces, with room for the next call: the files of all but
    the ``keep`` - 1 newest calls are removed (they only ever grew, over every lab up/down)."""
    files: dict[str, list[Path]] = {}  # a call's files, by the name they share
    newest: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError):
        for f in p.calls_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                name = f.name.split(".", 1)[0]
                newest[name] = max(newest.get(name, 0.0), f.stat().st_mtime)
                files.setdefault(name, []).append(f)
    for name in sorted(newest, key=newest.__getitem__, reverse=True)[max(keep - 1, 0):]:
        for f in files[name]:
            f.unlink(missing_ok=True)
    return p.calls_dir


def call(number: str, *, via: str = "ari", tenant: str | None = None, say: Say = _say,
         hangup_after: float = 1.0, cancel_after: float | None = None) -> sipp.CallResult:
    p = paths()
    state = load_state(p)
    if not is_asterisk(state.get("asterisk_pid"), p.chroot):
        raise LabError("the lab is not running: outbound-router lab up")
    phone = topology.phone(via)
    carriers = demo_carriers(p, state)
    before = _seen_call_ids(carriers)
    result = sipp.place_call(phone.address, number, call_traces(p), tenant=tenant,
                             hangup_after=hangup_after, cancel_after=cancel_after)
    attempts = _attempts_since(carriers, before)
    who = f" tenant {tenant}" if tenant else ""
    say(f"call {number}{who} via {via} (phone {phone.address} -> "
        f"{topology.SIP_HOST}:{topology.SIP_PORT})")
    if not carriers:
        say("  (no demo carriers running: trunks tried are not shown)")
    for n, a in enumerate(attempts, 1):
        say(f"  {n}. {a.carrier:<10} {a.request_uri:<36} -> {_code_text(a.answer)}")
    if carriers and not attempts:
        say("  no trunk was tried")
    say(f"  final answer to the phone: {_code_text(result.final_code)}; the call lasted "
        f"{result.duration:.1f} s in all  (trace {result.trace})")
    return result


#: What the example routes and the demo carriers give a call to each demo number: Spain 200
#: (carrier-b's 503 fails over to carrier-a); France 200 or 486 (carrier-a or carrier-c, 1:1,
#: and a busy stops); a premium number is blocked (403); an invalid one gets 484.
DEMO_EXPECTED = {"911234567": {200}, "0033145678901": {200, 486}, "0034905123456": {403},
                 "12&34": {484}}


def demo(*, calls: int = 9, say: Say = _say) -> int:
    """Calls through the router showing load balancing (tier 1) and failover, summarised.
    EXIT_FAILED when a call did not get what the example routes promise, or a path's service
    was not running (the demo is the README's main job: it must not look fine when not)."""
    p = paths()
    state = load_state(p)
    if not is_asterisk(state.get("asterisk_pid"), p.chroot):
        raise LabError("the lab is not running: outbound-router lab up")
    carriers = demo_carriers(p, state)
    if len(carriers) < len(topology.CARRIERS):
        raise LabError("the demo needs the demo carriers: outbound-router lab up (without "
                       "--no-carriers)")
    say("Demo carriers: " + ", ".join(f"{c.trunk.endpoint} {c.behaviour.name}" for c in carriers))
    # The calls below rely on the example routes: `lab up` keeps whatever Redis holds.
    version = seed_and_wait(p, state, ROUTES_EXAMPLE)
    say(f"Routes: {ROUTES_EXAMPLE.relative_to(REPO)} seeded as {version}")
    plan = [("ari", "911234567")] * calls + [("agi", "911234567")] * 3 + [
        ("ari", "0033145678901"), ("ari", "0034905123456"), ("ari", "12&34")]
    first: dict[str, int] = {}
    failovers = 0
    finals: dict[str, int] = {}
    wrong: list[str] = []
    for via, number in plan:
        s = (state.get("services") or {}).get(via) or {}
        if not is_service(s.get("pid"), via):
            say(f"\n(skipping {via} calls: the {via} service is not running)")
            wrong.append(f"{via} {number}: not placed, the {via} service is not running")
            continue
        before = _seen_call_ids(carriers)
        result = sipp.place_call(topology.phone(via).address, number, call_traces(p),
                                 hangup_after=0.3, timeout=60)
        attempts = _attempts_since(carriers, before)
        path = " -> ".join(f"{a.carrier}({a.answer or '-'})" for a in attempts) or "no trunk"
        say(f"{via:<3} {number:<15} {path:<52} caller got {_code_text(result.final_code)}")
        if attempts:
            first[attempts[0].carrier] = first.get(attempts[0].carrier, 0) + 1
            failovers += len(attempts) > 1
        key = _code_text(result.final_code)
        finals[key] = finals.get(key, 0) + 1
        if result.final_code not in DEMO_EXPECTED[number]:
            wrong.append(f"{via} {number}: {key}, expected "
                         + " or ".join(map(_code_text, sorted(DEMO_EXPECTED[number]))))
    total = sum(first.values())
    say("\nSummary")
    for name, n in sorted(first.items()):
        share = 100 * n / max(total, 1)
        say(f"  first attempt on {name:<10} {n:3d} of {total} calls ({share:.0f}%)")
    say(f"  calls that failed over to another trunk: {failovers}")
    for key, n in sorted(finals.items()):
        say(f"  caller got {key:<28} {n:3d}")
    if wrong:
        say(f"\nFAILED: {len(wrong)} of {len(plan)} calls did not go as the example routes "
            f"promise (`outbound-router lab status`; the services' logs in {p.state_dir}):")
        for line in dict.fromkeys(wrong):
            count = wrong.count(line)
            say(f"  {line}" + (f" ({count} calls)" if count > 1 else ""))
        return EXIT_FAILED
    return EXIT_OK


# ---- command line ------------------------------------------------------------------------


def _run(fn: Callable[[], int]) -> int:
    try:
        return fn()
    except (LabSettingError, SettingsError) as exc:
        print(f"outbound-router lab: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except (LabError, sipp.SippError) as exc:
        print(f"outbound-router lab: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _dialled(text: str) -> str:
    if not text:  # a SIP URI with no user part: the call would wait 30 s for nothing
        raise argparse.ArgumentTypeError("an empty number cannot be dialled")
    return text


def cmd_up(args: argparse.Namespace) -> int:
    def go() -> int:
        started = time.monotonic()
        info = up(carriers=not args.no_carriers)
        if info.problems:
            _say(f"lab: up in {time.monotonic() - started:.1f} s, but with "
                 f"{' and '.join(info.problems)} (see above; `outbound-router lab status`)")
            return EXIT_FAILED
        _say(f"lab: up in {time.monotonic() - started:.1f} s "
             "(`outbound-router lab status`, `lab call NUMBER`, `lab down`)")
        return EXIT_OK
    return _run(go)


def cmd_down(args: argparse.Namespace) -> int:
    return _run(lambda: (down(), EXIT_OK)[1])


def cmd_status(args: argparse.Namespace) -> int:
    return _run(status)


def cmd_call(args: argparse.Namespace) -> int:
    def go() -> int:
        r = call(args.number, via=args.via, tenant=args.tenant)
        return EXIT_OK if r.final_code is not None else EXIT_FAILED
    return _run(go)


def cmd_demo(args: argparse.Namespace) -> int:
    return _run(lambda: demo(calls=args.calls))


def register(subparsers: Any) -> None:
    """Add `lab` and its subcommands to the `outbound-router` parser."""
    lab = subparsers.add_parser("lab", help="the local lab: real Asterisk, Redis, SIPp carriers")
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")
    p = sub.add_parser("up", help="bring the lab up (idempotent)")
    p.add_argument("--no-carriers", action="store_true",
                   help="no demo carriers (tests bring their own)")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop what `lab up` started and unmount")
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("status", help="what runs")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("call", help="place one call and show the trunks tried")
    p.add_argument("number", type=_dialled, help="what the phone dials (the R-URI user part)")
    p.add_argument("--via", choices=[ph.via for ph in topology.PHONES], default="ari",
                   help="the phone's path: the ARI app, the FastAGI dialplan, or a static "
                        "Dial() to carrier-a (default ari)")
    p.add_argument("--tenant", default=None, help="sent as SIP header X-Tenant")
    p.set_defaults(func=cmd_call)
    p = sub.add_parser("demo", help="calls showing load balancing and failover")
    from outbound_router.cli import at_least_one

    p.add_argument("--calls", type=at_least_one, default=9,
                   help="calls to the balanced tier (default 9)")
    p.set_defaults(func=cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m outbound_router.lab up` (or `... lab up`), as `outbound-router lab up`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["lab"]:
        argv = ["lab", *argv]
    parser = argparse.ArgumentParser(prog="outbound-router")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@contextlib.contextmanager
def service_stopped(name: str) -> Iterator[None]:
    """Stop the lab's `name` service for the duration (tests that stand in for it)."""
    p = paths()
    state = load_state(p)
    info = (state.get("services") or {}).get(name) or {}
    was_running = is_service(info.get("pid"), name)
    if was_running:
        stop_services(p, state, [name], say=lambda _: None)
    try:
        yield
    finally:
        if was_running:
            state = load_state(p)
            lab = running_info()
            if lab is not None:
                ensure_services(p, state, lab.redis_url, lab.ari_auth, say=lambda _: None,
                                wanted=[name])


if __name__ == "__main__":
    sys.exit(main())
