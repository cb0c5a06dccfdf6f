"""The stored data formats give back exactly the table that was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis_tables import generation_table

import redis_seed
from redis_seed.codec import FORMAT_COLUMNS, FORMAT_DICT, from_data, to_data
from redis_seed.routes_file import load_routes_file
from routing.model import RoutingTable

EXAMPLE = Path(redis_seed.__file__).parent / "routes.example.yaml"


@pytest.mark.parametrize("fmt", [FORMAT_COLUMNS, FORMAT_DICT])
@pytest.mark.parametrize("make", [lambda: load_routes_file(EXAMPLE), lambda: generation_table(5),
                                  RoutingTable],
                         ids=["example", "generation", "empty"])
def test_round_trip_through_json_gives_the_same_table(fmt: str, make) -> None:  # type: ignore[no-untyped-def]
    table = make()
    data = json.loads(json.dumps(to_data(table, fmt)))
    assert from_data(data, fmt) == table


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown data format"):
        from_data({}, "9")
