"""An immutable, indexed routing table: what every call is routed against.

Built whole from a validated :class:`RoutingTable`, then swapped in by the reader (Kamailio's
dispatcher does the same): a snapshot is never modified after :meth:`Snapshot.build`.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from routing.model import Carrier, Defaults, Route, RoutingTable

#: Bound on the memo of selections per snapshot (distinct prefixes x tenants seen).
MEMO_LIMIT = 16_384


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: str
    table: RoutingTable
    #: E.164 prefix ("+34") -> indices into ``table.routes`` of the routes that cover it.
    #: A number matches the routes of every prefix of it that is present; the longest one
    #: present names the whole chain (the memo's key).
    by_prefix: Mapping[str, tuple[int, ...]]
    #: The distinct prefix lengths present, longest first, so a lookup probes at most 16
    #: slices of the number whatever the table's size.
    prefix_lengths: tuple[int, ...]
    #: Regex patterns with the indices of the routes that cover them.
    by_regex: tuple[tuple[re.Pattern[str], tuple[int, ...]], ...]
    #: Memo of deterministic selections (``routing.plan.select``) by (prefix, regex hits,
    #: tenant). Only a cache: it never changes what a lookup answers.
    memo: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)

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
        groups = table.groups
        for i, route in enumerate(table.routes):
            covered = (route.pattern,) if route.pattern is not None else groups[route.group or ""]
            for pattern_name in covered:
                covering.setdefault(pattern_name, []).append(i)
        own: dict[str, set[int]] = {}
        by_regex: list[tuple[re.Pattern[str], tuple[int, ...]]] = []
        for name, pattern in table.patterns.items():
            routes = covering.get(name)
            if not routes:
                continue
            if pattern.prefix is not None:
                own.setdefault(pattern.prefix, set()).update(routes)
            elif pattern.regex is not None:
                by_regex.append((re.compile(pattern.regex), tuple(sorted(set(routes)))))
        lengths = sorted({len(p) for p in own}, reverse=True)
        # Only each prefix's own routes are kept (not those of its shorter prefixes too):
        # at 100,000 prefixes that is 5 MB less, and the union is made once per memo entry.
        by_prefix = {prefix: tuple(sorted(idx)) for prefix, idx in own.items()}
        return cls(version=version, table=table, by_prefix=by_prefix,
                   prefix_lengths=tuple(lengths), by_regex=tuple(by_regex))

    def longest_prefix(self, number: str) -> str | None:
        """The longest prefix of ``number`` present in the table, if any."""
        by_prefix = self.by_prefix
        n = len(number)
        for length in self.prefix_lengths:
            if length <= n and number[:length] in by_prefix:
                return number[:length]
        return None

    def prefix_hits(self, number: str) -> tuple[int, ...]:
        """Indices of the routes that cover any prefix of ``number``, in file order."""
        by_prefix = self.by_prefix
        n = len(number)
        found: set[int] = set()
        for length in self.prefix_lengths:
            if length <= n:
                hit = by_prefix.get(number[:length])
                if hit is not None:
                    found.update(hit)
        return tuple(sorted(found))

    def regex_hits(self, number: str) -> tuple[int, ...]:
        """Indices of the routes whose regex patterns match ``number``."""
        if not self.by_regex:
            return ()
        return tuple(i for regex, idx in self.by_regex
                     if regex.search(number) is not None for i in idx)

    def routes_for(self, hits: tuple[int, ...], regex_hits: tuple[int, ...],
                   tenant: str | None) -> list[Route]:
        routes = self.table.routes
        found = sorted(set(hits).union(regex_hits)) if regex_hits else hits
        return [
            routes[i]
            for i in found
            if routes[i].tenant is None or routes[i].tenant == tenant
        ]
