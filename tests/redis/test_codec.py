"""The stored data formats give back exactly the table that was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis_tables import generation_table

import redis_seed
from redis_seed.codec import FORMAT_COLUMNS, FORMAT_DICT, from_data, to_data
from redis_seed.routes_file import load_routes_file
from routing.model import Route, RoutingTable, TargetPattern

EXAMPLE = Path(redis_seed.__file__).parent / "routes.example.yaml"


def odd_table() -> RoutingTable:
    """A route covering patterns that are neither its pattern nor its group's (built in code)."""
    base = load_routes_file(EXAMPLE)
    extra = Route(name="odd", patterns=("spain", "uk"), priority=7, carrier="peering",
                  pattern="spain", metric=3)
    patterns = dict(base.patterns) | {"lonely": TargetPattern("lonely", regex="^\\+999")}
    return RoutingTable(defaults=base.defaults, carriers=base.carriers, patterns=patterns,
                        groups=base.groups, routes=base.routes + (extra,))


@pytest.mark.parametrize("fmt", [FORMAT_COLUMNS, FORMAT_DICT])
@pytest.mark.parametrize("make", [lambda: load_routes_file(EXAMPLE), lambda: generation_table(5),
                                  RoutingTable],
                         ids=["example", "generation", "empty"])
def test_round_trip_through_json_gives_the_same_table(fmt: str, make) -> None:  # type: ignore[no-untyped-def]
    table = make()
    data = json.loads(json.dumps(to_data(table, fmt)))
    assert from_data(data, fmt) == table


def test_columns_keep_covered_patterns_that_differ_from_pattern_or_group() -> None:
    table = odd_table()
    data = json.loads(json.dumps(to_data(table, FORMAT_COLUMNS)))
    assert from_data(data, FORMAT_COLUMNS) == table


def test_group_routes_share_the_groups_tuple_after_decoding() -> None:
    table = load_routes_file(EXAMPLE)
    decoded = from_data(json.loads(json.dumps(to_data(table))), FORMAT_COLUMNS)
    europe = [r for r in decoded.routes if r.group == "europe"]
    assert europe and all(r.patterns is decoded.groups["europe"] for r in europe)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown data format"):
        from_data({}, "9")
