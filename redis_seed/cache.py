"""A router's own copy, on local disk, of the last routing version it loaded from Redis.

A router that starts while Redis is away (a crash, a deploy, a reboot during a Redis
outage) has no version in memory: every call got ERROR until Redis came back. With a cache
file (``ROUTES_CACHE``) it routes with the version it last loaded, and says so. The file
holds that version's Redis hash as it was read (checked against its SHA-256 again when
loaded), under a header; it is replaced whole (written beside it, then renamed), so a
crash while writing leaves the previous copy.

Format: the line ``outbound-router routes cache 1``, a JSON line ``{"prefix", "written",
"fields": [[name, length], ...]}``, then the fields' bytes one after the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

MAGIC = b"outbound-router routes cache 1\n"


@dataclass(frozen=True, slots=True)
class Cached:
    prefix: str  # the REDIS_PREFIX the version was read under
    written: str  # when, UTC, ISO 8601
    fields: dict[bytes, bytes]  # the version's hash, as HGETALL gave it


def write(path: Path, prefix: str, fields: Mapping[bytes, bytes]) -> None:
    """Replace the cache at ``path`` with ``fields`` (mode 0600: routes are the operator's
    business). OSError when it cannot be written."""
    names = sorted(fields)
    header = {"prefix": prefix,
              "written": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "fields": [[name.decode("utf-8", "replace"), len(fields[name])] for name in names]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # One service writes a cache: a copy in the making of another PID is one a crash left.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if stale != tmp:
            stale.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(json.dumps(header).encode() + b"\n")
            for name in names:
                f.write(fields[name])
        os.replace(tmp, path)  # (no fsync: after a power cut a cut copy is not used, said)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read(path: Path) -> Cached:
    """The cache at ``path``. FileNotFoundError when there is none; ValueError when the file
    is not one (or was cut short)."""
    blob = path.read_bytes()
    if not blob.startswith(MAGIC):
        raise ValueError("not a routes cache of outbound-router")
    line, _, body = blob[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(line)
        names = [(str(name), int(length)) for name, length in header["fields"]]
        prefix, written = str(header["prefix"]), str(header["written"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"its header cannot be read ({exc})") from None
    fields, at = {}, 0
    for name, length in names:
        fields[name.encode()] = body[at:at + length]
        at += length
    if at != len(body):
        raise ValueError(f"it holds {len(body)} bytes of data where its header says {at}: "
                         "cut short or damaged")
    return Cached(prefix, written, fields)
