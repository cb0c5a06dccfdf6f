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


def test_names_and_prefixes_ending_in_a_newline_are_refused() -> None:
    """``$`` also matches before a final newline: ``carrier-a\\n`` passed as a trunk name
    and went into the dial string (``PJSIP/...@carrier-a\\n``)."""
    import pytest

    from redis_seed.keys import Keys
    from redis_seed.routes_file import RoutesFileError, parse_routes
    from routing.model import E164_PREFIX_RE, TECH_PREFIX_RE, TRUNK_NAME_RE

    for regex, good in ((TRUNK_NAME_RE, "carrier-a"), (TECH_PREFIX_RE, "12"),
                        (E164_PREFIX_RE, "+34")):
        assert regex.match(good)
        assert not regex.match(good + "\n")
    text = ('carriers: {"peer\\n": {trunks: ["carrier-a\\n"], prefix: "12\\n"}}\n'
            'target_patterns: {spain: {prefix: "+34\\n"}}\n'
            'outgoing_routes:\n'
            '  - {name: "r1\\n", pattern: spain, carrier: "peer\\n", tenant: "t\\n"}\n')
    with pytest.raises(RoutesFileError) as refused:
        parse_routes(text, "nl.yaml")
    lines = str(refused.value).splitlines()
    for what in ("peer", "carrier-a", "12", "+34", "r1", "t"):
        assert any(repr(what + "\n") in line for line in lines), (what, lines)
    with pytest.raises(ValueError):
        Keys(prefix="outbound-router\n")
