"""Small builders of routing tables for the core's tests (no YAML, no I/O)."""

from __future__ import annotations

from routing.model import Carrier, Defaults, FailoverPolicy, Route, RoutingTable, TargetPattern
from routing.snapshot import Snapshot

PATTERNS = {
    "spain": TargetPattern("spain", prefix="+34"),
    "france": TargetPattern("france", prefix="+33"),
    "madrid": TargetPattern("madrid", prefix="+3491"),
    "premium": TargetPattern("premium", regex=r"^\+3490[0-9]{6}$"),
}
GROUPS = {"europe": ("spain", "france")}


def carrier(name: str, *trunks: str, number_format: str = "+E164", prefix: str = "",
            failover: FailoverPolicy | None = None) -> Carrier:
    return Carrier(name, tuple(trunks) or (name,), number_format, prefix,
                   failover or FailoverPolicy())


def route(name: str, *, pattern: str | None = None, group: str | None = None,
          carrier: str | None = None, priority: int = 1, metric: int = 1,
          tenant: str | None = None, stopper: bool = False, block: bool = False) -> Route:
    return Route(name=name, priority=priority, carrier=carrier,
                 metric=metric, pattern=pattern, group=group, tenant=tenant,
                 stopper=stopper, block=block)


def snapshot(routes: list[Route], carriers: list[Carrier] | None = None,
             defaults: Defaults | None = None, version: str = "v1") -> Snapshot:
    if carriers is None:
        names = sorted({r.carrier for r in routes if r.carrier})
        carriers = [carrier(n) for n in names]
    table = RoutingTable(defaults=defaults or Defaults(), carriers={c.name: c for c in carriers},
                         patterns=PATTERNS, groups=GROUPS, routes=tuple(routes))
    return Snapshot.build(table, version)
