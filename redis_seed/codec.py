"""How a routing table is stored in a version's ``data`` field.

Format ``2`` (written): columns. Rather than one JSON object per route and pattern (format
``1``, ``RoutingTable.to_dict()``), each field is one list, and routes refer to patterns,
groups and carriers by index. Every router loads every version, so this matters: for 100,000
routes the decoded JSON has a few large lists instead of 200,000 small dicts, routes share the
name strings and group tuples of the patterns they cover, and the reader's resident memory and
load time drop by about a third.

Format ``1`` (still read): ``RoutingTable.to_dict()`` as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routing.model import (
    Defaults,
    Route,
    RoutingTable,
    TargetPattern,
    carriers_from_dict,
    carriers_to_dict,
    defaults_to_dict,
)

FORMAT_DICT = "1"
FORMAT_COLUMNS = "2"
_STOPPER, _BLOCK = 1, 2


def to_columns(table: RoutingTable) -> dict[str, Any]:
    """The plain data of format 2 (JSON-ready)."""
    pnames = list(table.patterns)
    pindex = {name: i for i, name in enumerate(pnames)}
    gnames = list(table.groups)
    gindex = {name: i for i, name in enumerate(gnames)}
    cindex = {name: i for i, name in enumerate(table.carriers)}
    routes = table.routes
    return {
        "defaults": defaults_to_dict(table.defaults),
        "carriers": carriers_to_dict(table.carriers),
        "patterns": {
            "name": pnames,
            "prefix": [p.prefix for p in table.patterns.values()],
            "regex": [p.regex for p in table.patterns.values()],
        },
        "groups": {
            "name": gnames,
            "members": [[pindex[m] for m in table.groups[g]] for g in gnames],
        },
        "routes": {
            "name": [r.name for r in routes],
            "priority": [r.priority for r in routes],
            "metric": [r.metric for r in routes],
            "carrier": [cindex[r.carrier] if r.carrier is not None else -1 for r in routes],
            "pattern": [pindex[r.pattern] if r.pattern is not None else -1 for r in routes],
            "group": [gindex[r.group] if r.group is not None else -1 for r in routes],
            "tenant": [r.tenant for r in routes],
            "flags": [(_STOPPER if r.stopper else 0) | (_BLOCK if r.block else 0)
                      for r in routes],
        },
    }


def from_columns(data: Mapping[str, Any]) -> RoutingTable:
    """Rebuild a table from format 2. Raises KeyError, IndexError, TypeError or ValueError on
    malformed data."""
    defaults = Defaults(**data["defaults"])
    carriers = carriers_from_dict(data["carriers"])
    cnames = list(carriers)
    p = data["patterns"]
    pnames: list[str] = p["name"]
    patterns = {
        name: TargetPattern(name=name, prefix=prefix, regex=regex)
        for name, prefix, regex in zip(pnames, p["prefix"], p["regex"], strict=True)
    }
    g = data["groups"]
    gnames: list[str] = g["name"]
    members = [tuple(pnames[i] for i in m) for m in g["members"]]
    groups = dict(zip(gnames, members, strict=True))
    r = data["routes"]
    tenants: dict[str, str] = {}
    routes = []
    columns = zip(r["name"], r["priority"], r["metric"], r["carrier"], r["pattern"], r["group"],
                  r["tenant"], r["flags"], strict=True)
    for name, priority, metric, ci, pi, gi, tenant, flags in columns:
        routes.append(Route(
            name=name,
            priority=priority,
            carrier=cnames[ci] if ci >= 0 else None,
            metric=metric,
            pattern=pnames[pi] if pi >= 0 else None,
            group=gnames[gi] if gi >= 0 else None,
            tenant=tenants.setdefault(tenant, tenant) if tenant is not None else None,
            stopper=bool(flags & _STOPPER),
            block=bool(flags & _BLOCK),
        ))
    return RoutingTable(defaults=defaults, carriers=carriers, patterns=patterns, groups=groups,
                        routes=tuple(routes))


def to_data(table: RoutingTable, fmt: str = FORMAT_COLUMNS) -> dict[str, Any]:
    if fmt == FORMAT_COLUMNS:
        return to_columns(table)
    if fmt == FORMAT_DICT:
        return table.to_dict()
    raise ValueError(f"unknown data format {fmt!r}")


def from_data(data: Mapping[str, Any], fmt: str) -> RoutingTable:
    if fmt == FORMAT_COLUMNS:
        return from_columns(data)
    if fmt == FORMAT_DICT:
        return RoutingTable.from_dict(data)
    raise ValueError(f"unknown data format {fmt!r}")
