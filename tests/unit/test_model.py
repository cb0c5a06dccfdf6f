from __future__ import annotations

from routing.model import RoutingTable

from .tables import route, snapshot


def test_table_survives_its_plain_data_form() -> None:
    table = snapshot([route("es", pattern="spain", carrier="A", metric=3, tenant="t1"),
                      route("eu", group="europe", carrier="B", priority=2, stopper=True),
                      route("blk", pattern="premium", block=True, priority=0)]).table
    again = RoutingTable.from_dict(table.to_dict())
    assert again.routes == table.routes
    assert dict(again.carriers) == dict(table.carriers)
    assert dict(again.patterns) == dict(table.patterns)
    assert dict(again.groups) == dict(table.groups)
    assert again.defaults == table.defaults
