"""An immutable, indexed routing table: what every call is routed against.

Built whole from a validated :class:`RoutingTable`, then swapped in by the reader (Kamailio's
dispatcher does the same): a snapshot is never modified after :meth:`Snapshot.build`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from routing.model import Carrier, Defaults, Route, RoutingTable


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: str
    table: RoutingTable
    #: E.164 prefix ("+34") -> indices into ``table.routes`` of the routes that cover it.
    by_prefix: Mapping[str, tuple[int, ...]]
    #: The distinct prefix lengths present, so a lookup probes at most 16 slices of the
    #: number whatever the table's size.
    prefix_lengths: tuple[int, ...]
    #: Regex patterns with the indices of the routes that cover them.
    by_regex: tuple[tuple[re.Pattern[str], tuple[int, ...]], ...]

    @property
    def defaults(self) -> Defaults:
        return self.table.defaults

    @property
    def carriers(self) -> Mapping[str, Carrier]:
        return self.table.carriers

    @property
    def routes(self) -> tuple[Route, ...]:
        return self.table.routes

    @classmethod
    def build(cls, table: RoutingTable, version: str) -> Snapshot:
        covering: dict[str, list[int]] = {}
        for i, route in enumerate(table.routes):
            for pattern_name in route.patterns:
                covering.setdefault(pattern_name, []).append(i)
        by_prefix: dict[str, list[int]] = {}
        by_regex: list[tuple[re.Pattern[str], tuple[int, ...]]] = []
        for name, pattern in table.patterns.items():
            routes = covering.get(name)
            if not routes:
                continue
            if pattern.prefix is not None:
                by_prefix.setdefault(pattern.prefix, []).extend(routes)
            elif pattern.regex is not None:
                by_regex.append((re.compile(pattern.regex), tuple(sorted(set(routes)))))
        frozen = {p: tuple(sorted(set(idx))) for p, idx in by_prefix.items()}
        lengths = tuple(sorted({len(p) for p in frozen}))
        return cls(version=version, table=table, by_prefix=frozen, prefix_lengths=lengths,
                   by_regex=tuple(by_regex))

    def match(self, number: str, tenant: str | None = None) -> list[Route]:
        """Every route whose pattern (or a pattern of whose group) matches ``number``.

        Routes without a tenant apply to everybody; tenant routes only to their tenant.
        Returned in file order, each route once.
        """
        found: set[int] = set()
        by_prefix = self.by_prefix
        n = len(number)
        for length in self.prefix_lengths:
            if length > n:
                break
            hit = by_prefix.get(number[:length])
            if hit is not None:
                found.update(hit)
        for regex, idx in self.by_regex:
            if regex.search(number) is not None:
                found.update(idx)
        routes = self.table.routes
        return [
            routes[i]
            for i in sorted(found)
            if routes[i].tenant is None or routes[i].tenant == tenant
        ]
