"""Routing tables for the Redis tests: a generation number is written into every part of a
table (names, metrics, timeouts), so that a snapshot mixing two versions is detectable."""

from __future__ import annotations

from routing.model import Carrier, Defaults, Route, RoutingTable, TargetPattern
from routing.snapshot import Snapshot


def generation_table(g: int, n_routes: int = 4) -> RoutingTable:
    carriers = {f"c{g}-{i}": Carrier(f"c{g}-{i}", (f"t{g}-{i}",)) for i in range(n_routes)}
    patterns = {f"p{g}": TargetPattern(f"p{g}", prefix="+34"),
                f"q{g}": TargetPattern(f"q{g}", prefix="+3491")}
    routes = tuple(
        Route(name=f"r{g}-{i}",
              pattern=f"p{g}" if i % 2 else f"q{g}", carrier=f"c{g}-{i}",
              priority=1 + i // 2, metric=g)
        for i in range(n_routes)
    )
    defaults = Defaults(max_attempts=g % 50 + 1, ring_timeout=float(g))
    return RoutingTable(defaults=defaults, carriers=carriers, patterns=patterns, groups={},
                        routes=routes)


def generation_of(snapshot: Snapshot) -> int:
    """The generation every part of the snapshot's table belongs to; AssertionError if mixed."""
    table = snapshot.table
    g = int(table.defaults.ring_timeout)
    assert table.defaults.max_attempts == g % 50 + 1
    assert {r.metric for r in table.routes} == {g}
    assert all(r.name.startswith(f"r{g}-") for r in table.routes)
    assert all(r.carrier is not None and r.carrier.startswith(f"c{g}-") for r in table.routes)
    assert set(table.carriers) == {r.carrier for r in table.routes}
    assert set(table.patterns) == {f"p{g}", f"q{g}"}
    return g
