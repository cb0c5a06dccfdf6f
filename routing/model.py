"""Domain objects of the routing model (SPEC section 1).

Everything here is immutable and free of I/O: a routes file is parsed and validated by
``redis_seed.routes_file`` into a :class:`RoutingTable`; a :class:`routing.snapshot.Snapshot`
indexes one table for fast selection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NUMBER_FORMATS = ("+E164", "E164", "00E164", "national")

#: Asterisk endpoint names we accept for trunks: they end up in dial strings, so no
#: characters with a meaning to Dial() or to PJSIP (``&``, ``,``, ``/``, ``@``, spaces...).
TRUNK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}\Z")
#: A carrier's technical prefix, put before the formatted number.
TECH_PREFIX_RE = re.compile(r"^[0-9*#+]{0,16}\Z")
#: A target pattern's E.164 prefix.
#: "+" alone matches every number (a default route); no country code starts with 0.
E164_PREFIX_RE = re.compile(r"^\+(?:[1-9][0-9]{0,14})?\Z")

#: The setup and ring timeouts a routes file may give, in seconds (a day at most).
TIMEOUT_MIN, TIMEOUT_MAX = 0.1, 86400.0
#: SIP codes and causes one carrier's failover override may list (retry and stop together):
#: the FastAGI path carries the policy in one channel variable, set by one AGI command of at
#: most 2,047 bytes (about 4 bytes a code).
MAX_FAILOVER_CODES = 400
#: Trunk attempts a call may make at most. Far past what a call should try (each attempt
#: can take its setup timeout), and it keeps the FastAGI path's replies short.
MAX_ATTEMPTS_MAX = 100


@dataclass(frozen=True, slots=True)
class Defaults:
    country_code: str = "34"
    international_prefix: str = "00"
    national_prefix: str = ""
    setup_timeout: float = 5.0
    ring_timeout: float = 45.0
    max_attempts: int = 6


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    """A carrier's override of the default outcome policy (SPEC section 3).

    ``retry`` and ``stop`` hold SIP codes (300..699) or Q.850 causes (1..127); the two ranges
    do not overlap, so one integer set serves both.
    """

    retry: frozenset[int] = frozenset()
    stop: frozenset[int] = frozenset()
    retry_after_early_media: bool = True


DEFAULT_FAILOVER = FailoverPolicy()


@dataclass(frozen=True, slots=True)
class Carrier:
    name: str
    trunks: tuple[str, ...]
    number_format: str = "+E164"
    prefix: str = ""
    failover: FailoverPolicy = DEFAULT_FAILOVER


@dataclass(frozen=True, slots=True)
class TargetPattern:
    """Exactly one of ``prefix`` (E.164, with ``+``) or ``regex`` is set."""

    name: str
    prefix: str | None = None
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """One outgoing route: it covers its ``pattern``, or every pattern of its ``group``."""

    name: str
    priority: int
    carrier: str | None = None  # None only for block routes
    metric: int = 1
    pattern: str | None = None
    group: str | None = None
    tenant: str | None = None
    stopper: bool = False
    block: bool = False


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """A complete, validated routes file."""

    defaults: Defaults = field(default_factory=Defaults)
    carriers: Mapping[str, Carrier] = field(default_factory=dict)
    patterns: Mapping[str, TargetPattern] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()

    # -- plain-data form, used to store a version in Redis (JSON) -------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "defaults": defaults_to_dict(self.defaults),
            "carriers": carriers_to_dict(self.carriers),
            "target_patterns": {
                p.name: ({"prefix": p.prefix} if p.prefix is not None else {"regex": p.regex})
                for p in self.patterns.values()
            },
            "target_pattern_groups": {name: list(m) for name, m in self.groups.items()},
            "outgoing_routes": [_route_to_dict(r) for r in self.routes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingTable:
        """Rebuild a table written by :meth:`to_dict` (trusted input: it was validated)."""
        defaults = Defaults(**data["defaults"])
        carriers = carriers_from_dict(data["carriers"])
        patterns = {
            name: TargetPattern(name=name, prefix=p.get("prefix"), regex=p.get("regex"))
            for name, p in data["target_patterns"].items()
        }
        groups = {name: tuple(m) for name, m in data["target_pattern_groups"].items()}
        routes = tuple(
            Route(
                name=r["name"],
                priority=r["priority"],
                carrier=r.get("carrier"),
                metric=r.get("metric", 1),
                pattern=r.get("pattern"),
                group=r.get("group"),
                tenant=r.get("tenant"),
                stopper=r.get("stopper", False),
                block=r.get("block", False),
            )
            for r in data["outgoing_routes"]
        )
        return cls(defaults=defaults, carriers=carriers, patterns=patterns, groups=groups,
                   routes=routes)


def defaults_to_dict(d: Defaults) -> dict[str, Any]:
    return {
        "country_code": d.country_code,
        "international_prefix": d.international_prefix,
        "national_prefix": d.national_prefix,
        "setup_timeout": d.setup_timeout,
        "ring_timeout": d.ring_timeout,
        "max_attempts": d.max_attempts,
    }


def carriers_to_dict(carriers: Mapping[str, Carrier]) -> dict[str, Any]:
    return {
        c.name: {
            "trunks": list(c.trunks),
            "number_format": c.number_format,
            "prefix": c.prefix,
            "failover": {
                "retry": sorted(c.failover.retry),
                "stop": sorted(c.failover.stop),
                "retry_after_early_media": c.failover.retry_after_early_media,
            },
        }
        for c in carriers.values()
    }


def carriers_from_dict(data: Mapping[str, Any]) -> dict[str, Carrier]:
    return {
        name: Carrier(
            name=name,
            trunks=tuple(c["trunks"]),
            number_format=c["number_format"],
            prefix=c["prefix"],
            failover=FailoverPolicy(
                retry=frozenset(c["failover"]["retry"]),
                stop=frozenset(c["failover"]["stop"]),
                retry_after_early_media=c["failover"]["retry_after_early_media"],
            ),
        )
        for name, c in data.items()
    }


def _route_to_dict(r: Route) -> dict[str, Any]:
    d: dict[str, Any] = {"name": r.name, "priority": r.priority}
    if r.carrier is not None:
        d["carrier"] = r.carrier
        d["metric"] = r.metric
    for key in ("pattern", "group", "tenant"):
        value = getattr(r, key)
        if value is not None:
            d[key] = value
    if r.stopper:
        d["stopper"] = True
    if r.block:
        d["block"] = True
    return d
