"""Every Redis key and channel name of the router, under one configurable prefix.

Layout (prefix ``outbound-router``)::

    outbound-router:counter          INCR counter giving version numbers (never reused)
    outbound-router:version:v000042  hash: one complete, immutable version
                                     (version, data, sha256, routes, created, source,
                                     encoding, format)
    outbound-router:versions         sorted set: kept version ids, scored by their number
    outbound-router:current          hash: the current version (version, sha256), switched
                                     atomically by a seed or a rollback
    outbound-router:history          list: the versions made current, newest first (a seed or
                                     `rollback VERSION` adds one; `rollback` goes back one)
    outbound-router:notify           pub/sub channel: the new current version id is published

A version is written whole under its own key before the current pointer names it, and never
changes afterwards: a reader that loads one key gets one version, never a mix of two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DEFAULT_PREFIX = "outbound-router"
#: Versions kept by default (the current one is always kept besides).
DEFAULT_KEEP = 20

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:{}-]{1,64}\Z")
_VERSION_RE = re.compile(r"^v[0-9]{6,}\Z")


def format_version(number: int) -> str:
    """``42`` -> ``v000042``: sortable as text up to a million versions, by number after."""
    return f"v{number:06d}"


def is_version_id(value: str) -> bool:
    """Whether ``value`` is a version id (``v000042``): a member of another program in the
    set of versions is none."""
    return _VERSION_RE.match(value) is not None


def version_number(version: str) -> int:
    """``v000042`` -> ``42``; ValueError for anything that is not a version id."""
    if not is_version_id(version):
        raise ValueError(f"not a version id: {version!r} (expected e.g. v000042)")
    return int(version[1:])


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"bad Redis key prefix {self.prefix!r}: use 1 to 64 of "
                             "letters, digits and _ . : { } -")

    @property
    def counter(self) -> str:
        return f"{self.prefix}:counter"

    @property
    def current(self) -> str:
        return f"{self.prefix}:current"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:versions"

    @property
    def history(self) -> str:
        return f"{self.prefix}:history"

    @property
    def notify(self) -> str:
        return f"{self.prefix}:notify"

    def version(self, version: str) -> str:
        return f"{self.prefix}:version:{version}"


# Fields of a version hash and of the current pointer.
F_DATA = "data"
F_SHA256 = "sha256"
F_ROUTES = "routes"
F_CREATED = "created"
F_SOURCE = "source"
F_ENCODING = "encoding"
F_FORMAT = "format"
F_VERSION = "version"


def text(value: Any) -> str:
    """A reply value as text (clients are made without ``decode_responses``)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def fields(reply: Any) -> dict[bytes, bytes]:
    """An ``HGETALL`` reply with bytes keys and values, whatever the client's decoding."""
    return {
        (k if isinstance(k, bytes) else str(k).encode()):
        (v if isinstance(v, bytes) else str(v).encode())
        for k, v in dict(reply).items()
    }
