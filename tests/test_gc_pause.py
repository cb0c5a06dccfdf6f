"""The garbage collector pause around reading and building big tables (redis_seed/gc_pause.py):
off while a routes file is parsed, back on afterwards, also when the file is bad; overlapping
pauses (readers build in worker threads) end with the last one; a process that keeps the
collector off keeps it off."""

from __future__ import annotations

import gc

import pytest
import yaml

from redis_seed import routes_file
from redis_seed.errors import RoutesFileError
from redis_seed.gc_pause import collector_paused
from redis_seed.routes_file import parse_routes

GOOD = """\
carriers: {peering: {trunks: [carrier-a]}}
target_patterns: {spain: {prefix: "+34"}}
outgoing_routes: [{pattern: spain, carrier: peering, priority: 1, metric: 1}]
"""


@pytest.fixture
def collector_seen(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the collector was on each time the routes file parser composed a document."""
    seen: list[bool] = []
    real = routes_file._Loader.get_single_node

    def get_single_node(self: yaml.Loader) -> object:
        seen.append(gc.isenabled())
        return real(self)

    monkeypatch.setattr(routes_file._Loader, "get_single_node", get_single_node)
    return seen


def test_a_routes_file_is_parsed_with_the_collector_paused(collector_seen: list[bool]) -> None:
    assert gc.isenabled()
    parse_routes(GOOD)
    assert collector_seen == [False]
    assert gc.isenabled()


def test_the_collector_is_back_after_a_bad_routes_file(collector_seen: list[bool]) -> None:
    with pytest.raises(RoutesFileError):
        parse_routes(GOOD.replace("carrier: peering", "carrier: nobody"))
    with pytest.raises(RoutesFileError):
        parse_routes("carriers: [")
    assert collector_seen == [False, False]
    assert gc.isenabled()


def test_overlapping_pauses_turn_the_collector_back_on_when_the_last_ends() -> None:
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second build still runs
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_process_that_keeps_the_collector_off_keeps_it_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
