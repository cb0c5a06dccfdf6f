"""The routes file (SPEC section 1): the example loads; every bad file is rejected whole, each
problem reported as FILE:LINE: message, all of them in one run."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import pytest

import redis_seed
from redis_seed.errors import Problem, RoutesFileError
from redis_seed.routes_file import TOP_KEYS, load_routes_file, parse_routes
from routing.model import FailoverPolicy, RoutingTable
from routing.plan import Status, plan
from routing.snapshot import Snapshot

PACKAGE = Path(redis_seed.__file__).parent
EXAMPLE = PACKAGE / "routes.example.yaml"
SCHEMA = PACKAGE / "schema.json"

# A small valid file; the bad cases below each change one thing in it.
GOOD = """\
defaults:
  country_code: "34"
  max_attempts: 4
carriers:
  peering:
    trunks: [peering-mad, peering-bcn]
  cheap:
    trunks: [cheap]
    number_format: "00E164"
    prefix: "1010"
    failover: {retry: [486], stop: [503, 34], retry_after_early_media: false}
target_patterns:
  spain: {prefix: "+34"}
  france: {prefix: "+33"}
  premium: {regex: '^\\+3490[0-9]{6}$'}
target_pattern_groups:
  europe: [spain, france]
outgoing_routes:
  - {name: spain-peering, pattern: spain, carrier: peering, priority: 1, metric: 1}
  - {name: europe-cheap, group: europe, carrier: cheap, priority: 2, metric: 2}
  - {name: no-premium, pattern: premium, action: block, priority: 0}
  - {pattern: spain, carrier: cheap, priority: 3, tenant: acme, stopper: true}
"""


def problems_of(text: str, filename: str = "routes.yaml") -> list[Problem]:
    with pytest.raises(RoutesFileError) as info:
        parse_routes(text, filename)
    return list(info.value.problems)


def test_good_file_gives_the_table_it_describes() -> None:
    table = parse_routes(GOOD, "good.yaml")
    assert table.defaults.country_code == "34"
    assert table.defaults.max_attempts == 4
    assert table.defaults.ring_timeout == 45.0  # not in the file: the default
    assert table.carriers["peering"].trunks == ("peering-mad", "peering-bcn")
    assert table.carriers["cheap"].failover == FailoverPolicy(
        retry=frozenset({486}), stop=frozenset({503, 34}), retry_after_early_media=False)
    assert table.patterns["premium"].regex == r"^\+3490[0-9]{6}$"
    assert table.groups == {"europe": ("spain", "france")}
    by_name = {r.name: r for r in table.routes}
    assert by_name["europe-cheap"].group == "europe"
    assert by_name["europe-cheap"].metric == 2
    assert by_name["no-premium"].block and by_name["no-premium"].stopper
    assert by_name["no-premium"].carrier is None
    derived = table.routes[3]
    assert derived.name == "spain-cheap-p3-acme"
    assert (derived.tenant, derived.stopper, derived.priority) == ("acme", True, 3)


def test_a_block_route_needs_no_priority_but_a_dialling_route_does() -> None:
    # A matching block route blocks whatever its priority (SPEC 2.3): it defaults to 0.
    table = parse_routes(GOOD.replace("action: block, priority: 0", "action: block"))
    block = next(r for r in table.routes if r.block)
    assert (block.name, block.priority) == ("no-premium", 0)
    problems = problems_of(GOOD.replace("carrier: peering, priority: 1,", "carrier: peering,"))
    assert [(p.line, "needs 'priority'" in p.message) for p in problems] == [(19, True)]


def test_derived_route_names_are_unique_and_avoid_explicit_ones() -> None:
    text = GOOD.replace(
        "  - {pattern: spain, carrier: cheap, priority: 3, tenant: acme, stopper: true}\n",
        "  - {name: spain-cheap-p3, pattern: france, carrier: cheap, priority: 3}\n"
        "  - {pattern: spain, carrier: cheap, priority: 3}\n"
        "  - {pattern: spain, carrier: cheap, priority: 3}\n")
    names = [r.name for r in parse_routes(text).routes]
    assert names[-3:] == ["spain-cheap-p3", "spain-cheap-p3-2", "spain-cheap-p3-3"]


def test_example_file_loads_with_the_seeds_examples() -> None:
    table = load_routes_file(EXAMPLE)
    trunks = {t for c in table.carriers.values() for t in c.trunks}
    assert trunks == {"carrier-a", "carrier-b", "carrier-c", "carrier-d"}
    tiers: dict[tuple[str | None, int], list[int]] = {}
    for r in table.routes:
        if r.pattern == "spain" and r.tenant is None:
            tiers.setdefault((r.pattern, r.priority), []).append(r.metric)
    assert tiers[("spain", 1)] == [1, 2]  # the seed's 1:2 example
    assert ("spain", 2) in tiers  # a failover tier
    assert any(r.block for r in table.routes)
    assert any(r.tenant for r in table.routes)
    europe = [r.metric for r in table.routes if r.group == "europe"]
    assert europe == [1, 1]  # the seed's 1:1 example


def test_table_survives_the_json_round_trip_used_for_redis() -> None:
    table = load_routes_file(EXAMPLE)
    assert RoutingTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table


def test_schema_is_json_schema_covering_every_section() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == set(TOP_KEYS)
    assert schema["additionalProperties"] is False
    route = schema["$defs"]["route"]
    assert set(route["properties"]) == {"name", "pattern", "group", "carrier", "priority",
                                        "metric", "tenant", "stopper", "action"}


def test_schema_accepts_the_example_when_jsonschema_is_installed() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(EXAMPLE.read_text()), schema)


def test_schema_bounds_max_attempts_as_validate_does() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    from routing.model import MAX_ATTEMPTS_MAX

    schema = json.loads(SCHEMA.read_text())
    example = yaml.safe_load(EXAMPLE.read_text())
    for value, ok in ((1, True), (MAX_ATTEMPTS_MAX, True), (0, False),
                      (MAX_ATTEMPTS_MAX + 1, False)):
        example["defaults"]["max_attempts"] = value
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(example))
        assert (not errors) is ok, (value, errors)


def test_schema_takes_the_unquoted_values_validate_takes() -> None:
    # The README says `country_code: 34`, `prefix: +34`... may go unquoted; an editor using
    # the schema flagged each of them as an error.
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    text = """\
defaults: {country_code: 34, international_prefix: 00, national_prefix: 0}
carriers: {c: {trunks: [t], prefix: 1010}, on: {trunks: [yes]}}
target_patterns: {es: {prefix: +34}, no: {prefix: +47}}
outgoing_routes:
  - {pattern: es, carrier: c, priority: 1, tenant: 0042}
  - {name: 1.5, pattern: no, carrier: on, priority: 1}
"""
    parse_routes(text, "unquoted.yaml")
    jsonschema.validate(yaml.safe_load(text), json.loads(SCHEMA.read_text()))


# -- bad files: (what is changed, replaced text, replacement, line, words of the message) ----

BAD = [
    ("yaml syntax", "  max_attempts: 4\n", "  max_attempts: [4\n", 4, "YAML syntax"),
    ("unknown top key", "defaults:\n", "defualts:\n", 1, "did you mean 'defaults'"),
    ("unknown defaults key", "  max_attempts: 4", "  max_attempt: 4", 3,
     "unknown key 'max_attempt'"),
    ("country code with a 0", 'country_code: "34"', "country_code: 034", 2, "not starting with 0"),
    ("country code a list", 'country_code: "34"', "country_code: [34]", 2, "string of digits"),
    ("country code too long", 'country_code: "34"', 'country_code: "3412"', 2, "1 to 3 digits"),
    ("max_attempts zero", "max_attempts: 4", "max_attempts: 0", 3, "max_attempts"),
    ("max_attempts bool", "max_attempts: 4", "max_attempts: yes", 3, "boolean"),
    # (each attempt reads back the channels of the call's Dials on the FastAGI path: past
    # about 300 attempts that reply was longer than an AGI line may be)
    ("max_attempts too many", "max_attempts: 4", "max_attempts: 101", 3, "from 1 to 100"),
    ("duplicate carrier", "target_patterns:\n", "  peering:\n    trunks: [x]\ntarget_patterns:\n",
     12, "duplicate key 'peering' (first at line 5)"),
    ("unknown carrier key", "    trunks: [cheap]", "    trunk: [cheap]", 8,
     "did you mean 'trunks'"),
    ("no trunks", "    trunks: [cheap]\n", "", 7, "needs 'trunks'"),
    ("unsafe trunk with &", "[peering-mad, peering-bcn]", "[peering-mad, 'bcn&x']", 6,
     "not a safe Asterisk endpoint name"),
    ("unsafe trunk with slash", "trunks: [cheap]", "trunks: [cheap/1]", 8, "safe"),
    ("unsafe trunk with space", "trunks: [cheap]", "trunks: ['che ap']", 8, "safe"),
    ("empty trunks", "trunks: [cheap]", "trunks: []", 8, "at least one trunk"),
    ("bad number format", '"00E164"', '"E.164"', 9, "number_format"),
    ("bad tech prefix", 'prefix: "1010"', 'prefix: "10a"', 10, "prefix of carrier 'cheap'"),
    ("failover code out of range", "retry: [486]", "retry: [200]", 11, "neither a SIP code"),
    ("failover code both", "stop: [503, 34]", "stop: [503, 486]", 11, "both retry and stop"),
    ("failover unknown key", "retry_after_early_media: false", "retry_after_early: false", 11,
     "did you mean 'retry_after_early_media'"),
    ("failover early media not bool", "retry_after_early_media: false",
     "retry_after_early_media: 0", 11, "true or false"),
    ("carrier early media not bool", "    prefix: \"1010\"\n",
     "    prefix: \"1010\"\n    retry_after_early_media: sometimes\n", 11, "true or false"),
    ("early media given twice", "    prefix: \"1010\"\n",
     "    prefix: \"1010\"\n    retry_after_early_media: true\n", 12, "given twice"),
    ("failover code text", "retry: [486]", "retry: [busy]", 11, "neither a SIP code"),
    # The FastAGI path carries the policy in one channel variable, set by one AGI command.
    ("failover too long", "retry: [486]",
     f"retry: {[c for c in range(300, 700) if c != 503]}", 11,
     "lists 401 codes: at most 400"),
    ("prefix without +", '{prefix: "+33"}', '{prefix: "33"}', 14, "'+' and up to 15 digits"),
    ("prefix with letters", '{prefix: "+33"}', '{prefix: "+33a"}', 14, "'+' and up to 15 digits"),
    ("bad regex", "{regex: '^\\+3490[0-9]{6}$'}", "{regex: '^\\+3490[0-9'}", 15, "bad regex"),
    ("prefix +0", '{prefix: "+33"}', '{prefix: "+033"}', 14, "the first not 0"),
    # a repeat of a part that can match in several ways: 10 s per number for this one
    ("regex with nested repeats", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^(\\+?(\\d?)*)*x$'}", 15, "a repeat inside a repeat, as in (\\d+)+"),
    ("regex with a repeat of a repeat", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^\\+34(\\d+)+0$'}", 15, "write it without the nesting"),
    ("regex repeating what can match nothing", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^\\+34(9|)*$'}", 15, "a part that can match nothing"),
    # the same hidden where an earlier check did not look, or as alternatives that are the
    # same: 2 to 21 s on one 14-character number, on every call
    ("regex with nested repeats in a lookahead", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '(?=^(\\+?(\\d?)*)*x$)'}", 15, "also inside a lookahead"),
    ("regex with nested repeats in a negative lookahead", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '(?!^(\\+?(\\d?)*)*x$)'}", 15, "also inside a lookahead"),
    ("regex with nested repeats in an atomic group", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^(?>(\\+?(\\d?)*)*x)$'}", 15, "also inside a lookahead"),
    ("regex with nested repeats in a conditional", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^(\\+)?(?(1)((\\d?)*)*x|y)$'}", 15, "also inside a lookahead"),
    ("regex repeating alternatives that are the same", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^\\+(\\d|\\d|\\d|\\d)+x$'}", 15, "alternatives that are the same"),
    # Alternatives that overlap inside a repeat, which the checks above miss: 3 to 6 s per
    # number on the lab (+111111111111111), every other call waiting meanwhile.
    ("regex repeating alternatives that overlap", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^\\+(1|11|\\d|[0-9])*2'}", 15, "can take too long to match"),
    ("regex repeating overlapping alternatives, unanchored", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '(1|11|111|1111|\\d)+2'}", 15, "can take too long to match"),
    ("regex with a POSIX class", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^\\+34[[:digit:]]{9}$'}", 15, "POSIX classes are not classes in Python's re"),
    ("regex of letters", "{regex: '^\\+3490[0-9]{6}$'}", "{regex: 'abc'}", 15,
     "can never match"),
    ("regex of non-ASCII digits", "{regex: '^\\+3490[0-9]{6}$'}", "{regex: '^\\+\u0663\u0664'}",
     15, "can never match"),
    ("regex with a space", "{regex: '^\\+3490[0-9]{6}$'}", "{regex: '^\\+34 9'}", 15,
     "can never match"),
    ("national prefix the international one", "  max_attempts: 4\n",
     "  max_attempts: 4\n  national_prefix: \"00\"\n", 4,
     "national_prefix '00' is the international_prefix too"),
    ("national prefix after the international one", "  max_attempts: 4\n",
     "  max_attempts: 4\n  national_prefix: \"001\"\n", 4,
     "national_prefix '001' starts with the international_prefix '00'"),
    ("empty group", "[spain, france]", "[]", 17, "not an empty list"),
    ("pattern with both", '{prefix: "+33"}', '{prefix: "+33", regex: "^x"}', 14,
     "exactly one of 'prefix' or 'regex'"),
    ("pattern with neither", '{prefix: "+33"}', "{}", 14, "exactly one"),
    ("group names unknown pattern", "[spain, france]", "[spain, italy]", 17,
     "unknown target pattern 'italy'"),
    ("route unknown carrier", "carrier: peering, priority: 1", "carrier: peerin, priority: 1",
     19, "unknown carrier 'peerin'"),
    ("route carrier left empty", "carrier: peering, priority: 1", "carrier: ~, priority: 1",
     19, "'carrier' of route 'spain-peering' must be a carrier's name, not nothing"),
    ("route unknown pattern", "pattern: spain, carrier: peering",
     "pattern: spian, carrier: peering", 19, "unknown target pattern 'spian'"),
    ("route unknown group", "group: europe", "group: eu", 20, "unknown target pattern group 'eu'"),
    ("route both pattern and group", "pattern: spain, carrier: peering",
     "pattern: spain, group: europe, carrier: peering", 19, "both a pattern and a group"),
    ("route neither pattern nor group", "pattern: spain, carrier: peering", "carrier: peering",
     19, "needs a 'pattern' or a 'group'"),
    ("metric zero", "priority: 1, metric: 1", "priority: 1, metric: 0", 19, "metric"),
    ("metric negative", "priority: 1, metric: 1", "priority: 1, metric: -2", 19, ">= 1"),
    ("metric float", "priority: 1, metric: 1", "priority: 1, metric: 1.5", 19, "whole number"),
    ("metric bool", "priority: 1, metric: 1", "priority: 1, metric: true", 19, "boolean"),
    ("metric text", "priority: 1, metric: 1", "priority: 1, metric: high", 19, "whole number"),
    ("priority text", "priority: 1, metric: 1", "priority: first, metric: 1", 19,
     "priority of route 'spain-peering'"),
    ("priority missing", "priority: 1, metric: 1", "metric: 1", 19, "needs 'priority'"),
    ("route typo", "priority: 1, metric: 1", "priority: 1, metirc: 1", 19,
     "did you mean 'metric'"),
    ("duplicate route name", "{name: europe-cheap,", "{name: spain-peering,", 20,
     "duplicate route name 'spain-peering' (first at line 19)"),
    ("unsafe route name", "{name: europe-cheap,", "{name: 'europe cheap',", 20, "safe name"),
    ("block with carrier", "action: block, priority: 0",
     "action: block, priority: 0, carrier: cheap", 21, "must not name a carrier"),
    ("block with metric", "action: block, priority: 0", "action: block, priority: 0, metric: 2",
     21, "must not have a metric"),
    ("unknown action", "action: block", "action: drop", 21, "must be 'block'"),
    ("route without carrier", "group: europe, carrier: cheap,", "group: europe,", 20,
     "needs a 'carrier'"),
    ("tenant unsafe", "tenant: acme", "tenant: 'a,b'", 22, "safe name"),
    ("stopper not bool", "stopper: true", "stopper: maybe", 22, "true or false"),
    ("duplicate key in a route", "priority: 1, metric: 1", "priority: 1, metric: 1, priority: 2",
     19, "duplicate key 'priority'"),
    # YAML 1.1 reads 010 as octal 8 (and 09 as text): a number field says what to write
    ("priority with a leading zero", "priority: 1, metric: 1", "priority: 010, metric: 1", 19,
     "priority of route 'spain-peering': write 10, not 010"),
    ("metric with a leading zero", "priority: 1, metric: 1", "priority: 1, metric: 010", 19,
     "metric of route 'spain-peering': write 10, not 010"),
    ("max_attempts with a leading zero", "max_attempts: 4", "max_attempts: 010", 3,
     "max_attempts: write 10, not 010"),
    ("ring_timeout with a leading zero", "  max_attempts: 4\n",
     "  max_attempts: 4\n  ring_timeout: 045\n", 4, "ring_timeout: write 45, not 045"),
    ("setup_timeout with a leading zero", "  max_attempts: 4\n",
     "  max_attempts: 4\n  setup_timeout: 09\n", 4, "setup_timeout: write 9, not 09"),
    ("failover code with a leading zero", "retry: [486]", "retry: [0503]", 11,
     "write 503, not 0503"),
    ("failover cause with a leading zero", "stop: [503, 34]", "stop: [503, 034]", 11,
     "write 34, not 034"),
    ("failover code with a leading zero read as text", "retry: [486]", "retry: [0486]", 11,
     "write 486, not 0486"),
    # and YAML 1.1's other ways of writing a number
    ("priority in hexadecimal", "priority: 1, metric: 1", "priority: 0x10, metric: 1", 19,
     "priority of route 'spain-peering': write 16, not 0x10"),
    ("metric with an underscore", "priority: 1, metric: 1", "priority: 1, metric: 1_0", 19,
     "metric of route 'spain-peering': write 10, not 1_0"),
    ("ring_timeout in base 60", "  max_attempts: 4\n", "  max_attempts: 4\n  ring_timeout: 1:30\n",
     4, "ring_timeout: write 90, not 1:30"),
    # (it said "write inf, not .inf", and then refused inf as text)
    ("ring_timeout infinite", "  max_attempts: 4\n", "  max_attempts: 4\n  ring_timeout: .inf\n",
     4, "ring_timeout: write a plain decimal number, not .inf"),
    ("ring_timeout past a day", "  max_attempts: 4\n",
     "  max_attempts: 4\n  ring_timeout: 100000\n", 4,
     "ring_timeout must be a number of seconds from 0.1 to 86400 (a day), not the int"),
    # (Dial() got 1e-05 on the FastAGI path: a value it does not read as a number)
    ("setup_timeout of a hundred-thousandth", "  max_attempts: 4\n",
     "  max_attempts: 4\n  setup_timeout: 0.00001\n", 4,
     "setup_timeout must be a number of seconds from 0.1 to 86400 (a day), not the float 1e-05"),
    # a regex of many repeats side by side: 3 s per number for 16 of them
    ("regex with 7 repeats of variable length", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^\\+34\\d*\\d*\\d*\\d*\\d*\\d*\\d*x$'}", 15,
     "more than 6 repeats of variable length"),
    # numbers are matched with their '+': these never matched any, without a word
    ("regex anchored on a digit", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^3490[0-9]{6}$'}", 15, "can never match: numbers are matched in E.164"),
    ("regex anchored on a digit class", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '\\A[0-9]\\d+$'}", 15, "write '^\\+34...', not '^34...'"),
    ("regex too big to compile", "{regex: '^\\+3490[0-9]{6}$'}",
     "{regex: '^a{99999999999999999999}$'}", 15, "bad regex"),
    ("failover code in other digits", "retry: [486]", "retry: ['\u0664\u0668\u0666']", 11,
     "neither a SIP code"),
    ("failover code with a superscript", "retry: [486]", "retry: ['48\u00b2']", 11,
     "neither a SIP code"),
    ("a value with an explicit tag it does not fit", "priority: 1, metric: 1",
     "priority: 1, metric: !!int abc", 19, "cannot read 'abc' as int"),
    ("a bool tag on a word", "priority: 1, metric: 1", "priority: 1, metric: !!bool maybe",
     19, "cannot read 'maybe' as bool"),
    ("a number of 5,000 digits", "priority: 1, metric: 1",
     "priority: 1, metric: " + "9" * 5000, 19, "a number of 5000 characters"),
    ("a control character", "  max_attempts: 4\n", "  max_attempts: 4\x1b[0m\n", 3,
     "U+001B (a control character) at column 18 is not allowed in YAML"),
    ("a Unicode line separator", "  max_attempts: 4\n", "  max_attempts: 4 # \u2028x\n", 3,
     "U+2028 (a Unicode line break) at column 21"),
]


@pytest.mark.parametrize(("old", "new", "line", "words"),
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_file_reports_the_problem_at_its_line(old: str, new: str, line: int,
                                                  words: str) -> None:
    assert old in GOOD, "the case must change the good file"
    problems = problems_of(GOOD.replace(old, new, 1))
    found = [p for p in problems if words in p.message]
    assert found, f"no problem says {words!r}: {[str(p) for p in problems]}"
    assert found[0].line == line, [str(p) for p in problems]
    assert str(found[0]) == f"routes.yaml:{line}: {found[0].message}"


@pytest.mark.parametrize("regex", [
    r"^\+3490[0-9]{6}$", r"^\+34(6|7)\d{8}$", r"^(\+34)?9[0-9]{8}$", r"^\+1(\d{3})*$",
    r"^(\d{2})+$", r"^\+(34|33)\d+$", r"^\+(?>\d+)+$", r"^\+(\d++)+$", r"^\+(\d|\d\d)+$",
    r"^\+34\d?\d?\d?\d?\d?\d*$", r"^\+34(?>\d*\d*\d*\d*\d*\d*\d*)$",
    r"^[+]34\d+$", r"^\+?34", r"^[^0]", r"^.34", r"34\d+$",
    # (the counted cost: harmless alternatives, and what matches in its first way)
    r"^(\+|00)34", r"^\+(1|2|3)*4", r"^\+(12|1|2)*3", r"^\+34(\d|\d\d)+$", r".*",
    r"\d*\d*\d*\d*\d*\d*", r"^\+1(800|888|877|866)\d{7}$", r"(?=\+34)\+\d+",
    r"^\+34(?!90[57])\d{9}$"])
def test_regexes_that_cannot_backtrack_badly_are_accepted(regex: str) -> None:
    table = parse_routes(GOOD.replace(r"^\+3490[0-9]{6}$", regex))
    assert table.patterns["premium"].regex == regex


def test_a_national_prefix_the_start_of_the_international_one_is_accepted() -> None:
    table = parse_routes(GOOD.replace("  max_attempts: 4\n",
                                      '  max_attempts: 4\n  national_prefix: "0"\n'))
    assert (table.defaults.national_prefix, table.defaults.international_prefix) == ("0", "00")


def test_an_empty_national_prefix_is_none_like_an_empty_carrier_prefix() -> None:
    # `national_prefix:` with nothing after it was refused ("must be a string of digits, not
    # nothing") while `prefix:` of a carrier was taken as "".
    text = GOOD.replace('country_code: "34"', 'country_code: "34"\n  national_prefix:')
    assert parse_routes(text).defaults.national_prefix == ""


def test_numbers_written_without_quotes_keep_the_text_as_written() -> None:
    # YAML would read these as 34, 0, 33, 0o42 = 34, 1001 and false (the "Norway problem");
    # each is a text field, and the operator meant what is written.
    text = (GOOD.replace('country_code: "34"', "country_code: 34\n  international_prefix: 00\n"
                                                "  national_prefix: 0")
                .replace('prefix: "1010"', "prefix: 0034")
                .replace('{prefix: "+33"}', "{prefix: +33}")
                .replace("  premium:", "  no: {prefix: +47}\n  premium:")
                .replace("[spain, france]", "[spain, france, no]")
                .replace("trunks: [cheap]", "trunks: [1001, 0x2a]")
                .replace("tenant: acme", "tenant: 0042")
                .replace("  - {name: no-premium", "  - {pattern: no, carrier: 1001, priority: 4}\n"
                                                   "  - {name: no-premium")
                .replace("  cheap:\n", "  1001:\n    trunks: [true]\n  cheap:\n"))
    table = parse_routes(text)
    d = table.defaults
    assert (d.country_code, d.international_prefix, d.national_prefix) == ("34", "00", "0")
    assert table.carriers["cheap"].prefix == "0034"
    assert table.carriers["cheap"].trunks == ("1001", "0x2a")
    assert table.carriers["1001"].trunks == ("true",)
    assert table.patterns["france"].prefix == "+33"
    assert table.patterns["no"].prefix == "+47"
    assert table.groups["europe"] == ("spain", "france", "no")
    assert [r.tenant for r in table.routes if r.tenant] == ["0042"]
    norway = next(r for r in table.routes if r.pattern == "no")
    assert (norway.carrier, norway.name) == ("1001", "no-1001-p4")


def test_dates_written_without_quotes_keep_the_text_as_written() -> None:
    # YAML reads 2001-01-01 as a date: a pattern of that name (a key, always text) was
    # accepted and a route naming it was not ("unknown target pattern datetime.date(...)").
    text = (GOOD.replace("  premium:", "  2001-01-01: {prefix: +47}\n  premium:")
                .replace("[spain, france]", "[spain, france, 2001-01-01]")
                .replace("  cheap:\n", "  2001-01-02:\n    trunks: [2001-01-03]\n  cheap:\n")
                .replace("tenant: acme", "tenant: 2001-01-04")
                .replace("  - {name: no-premium",
                         "  - {name: 2001-01-05, pattern: 2001-01-01, carrier: 2001-01-02, "
                         "priority: 4}\n  - {name: no-premium"))
    table = parse_routes(text)
    assert table.groups["europe"] == ("spain", "france", "2001-01-01")
    assert table.carriers["2001-01-02"].trunks == ("2001-01-03",)
    assert [r.tenant for r in table.routes if r.tenant] == ["2001-01-04"]
    route = next(r for r in table.routes if r.pattern == "2001-01-01")
    assert (route.name, route.carrier) == ("2001-01-05", "2001-01-02")
    # Where a date is no text field, it is named as a date, not with Python's repr.
    problems = problems_of(GOOD.replace("max_attempts: 4", "max_attempts: 2001-01-01"))
    assert "not the date 2001-01-01" in problems[0].message, problems


def test_zero_and_text_fields_with_leading_zeros_stay_valid() -> None:
    text = (GOOD.replace("priority: 1, metric: 1", "priority: 0, metric: 1")
                .replace("trunks: [cheap]", "trunks: [0042]")
                .replace("tenant: acme", "tenant: 007"))
    table = parse_routes(text)
    assert table.routes[0].priority == 0
    assert table.carriers["cheap"].trunks == ("0042",)
    assert [r.tenant for r in table.routes if r.tenant] == ["007"]
    assert table.carriers["cheap"].prefix == "1010"


def test_retry_after_early_media_may_be_written_in_the_carrier_or_its_failover() -> None:
    # SPEC 3 names it beside `failover: {retry, stop}`; the issue says "the carrier has
    # retry_after_early_media: false". Both places work, and codes may be quoted.
    failover = "    failover: {retry: [486], stop: [503, 34], retry_after_early_media: false}"
    text = GOOD.replace(failover, "    retry_after_early_media: false\n"
                                  "    failover: {retry: ['486'], stop: [\"503\", 34]}")
    assert parse_routes(text) == parse_routes(GOOD)
    alone = GOOD.replace(failover, "    retry_after_early_media: false")
    assert parse_routes(alone).carriers["cheap"].failover == FailoverPolicy(
        retry_after_early_media=False)
    same_twice = GOOD.replace("    failover:", "    retry_after_early_media: false\n    failover:")
    assert parse_routes(same_twice) == parse_routes(GOOD)


def test_several_problems_are_all_reported_in_line_order() -> None:
    text = (GOOD.replace("max_attempts: 4", "max_attempts: 0")
                .replace("trunks: [cheap]", "trunks: [che&ap]")
                .replace('{prefix: "+33"}', '{prefix: "33"}')
                .replace("carrier: peering, priority: 1, metric: 1",
                         "carrier: nobody, priority: 1, metric: 0"))
    problems = problems_of(text)
    assert [p.line for p in problems] == [3, 8, 14, 19, 19]
    assert all(str(p).startswith(f"routes.yaml:{p.line}: ") for p in problems)
    assert str(problems_of(text)[0]) in str(RoutesFileError(problems))


def test_the_national_prefix_is_checked_when_another_default_is_wrong() -> None:
    # A bad country_code hid the clash of the two prefixes until it was fixed: SPEC
    # section 1 wants every problem found reported at once.
    text = GOOD.replace('country_code: "34"',
                        'country_code: "abc"\n  national_prefix: "00"')
    assert [(p.line, p.message.split(" ")[0]) for p in problems_of(text)] == [
        (2, "country_code"), (3, "national_prefix")]


def test_both_entries_of_a_duplicated_name_are_checked() -> None:
    text = GOOD.replace("target_patterns:\n",
                        "  peering:\n    trunks: [bad/trunk]\ntarget_patterns:\n")
    lines = {p.line: p.message for p in problems_of(text)}
    assert "duplicate key 'peering'" in lines[12]
    assert "safe Asterisk endpoint name" in lines[13]


@pytest.mark.parametrize(("text", "line", "words"), [
    ("", 1, "empty"),
    ("# only a comment\n", 1, "empty"),
    ("- a\n- b\n", 1, "mapping of sections"),
    ("carriers: {}\n", 1, "needs 'outgoing_routes'"),
    ("outgoing_routes: []\n", 1, "every call would get NO_ROUTE"),
    ("outgoing_routes:\n  - just-a-name\n", 2, "must be a mapping"),
    ("carriers: [a, b]\noutgoing_routes: []\n", 1, "carriers must be a mapping"),
    ("a: &x [*x]\noutgoing_routes: []\n", 1, "unknown key 'a'"),
    ("outgoing_routes: !!python/object:os.system {}\n", 1, "unsupported YAML tag"),
    ("outgoing_routes: [!!python/name:os.system x]\n", 1, "constructor for the tag"),
])
def test_malformed_file_shapes_are_reported(text: str, line: int, words: str) -> None:
    problems = problems_of(text)
    assert any(words in p.message and p.line == line for p in problems), \
        [str(p) for p in problems]


@pytest.fixture(params=["libyaml", "python"])
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both YAML parsers: their messages differ, their marks must lead to the same line."""
    import yaml

    from redis_seed import routes_file

    if request.param == "libyaml":
        if not hasattr(yaml, "CSafeLoader"):
            pytest.skip("PyYAML without libyaml")
        monkeypatch.setattr(routes_file, "_Loader", yaml.CSafeLoader)
    else:
        monkeypatch.setattr(routes_file, "_Loader", yaml.SafeLoader)


@pytest.mark.parametrize(("text", "line", "words"), [
    # an unclosed quote or bracket: where it opened, not the line after the end of the file
    ('defaults:\n  country_code: "34\ncarriers: {}\noutgoing_routes: []\n', 2,
     "quoted scalar"),
    ('defaults:\n  country_code: "34\ncarriers: {}\noutgoing_routes: []', 2, "quoted scalar"),
    ("outgoing_routes: [a,\n  b\n", 1, "flow sequence"),
    ("outgoing_routes: {a: b,\n\n\n", 1, "flow node"),
    ("outgoing_routes: 'abc\n", 1, "quoted scalar"),
    # the problem's own line when it is inside the file
    ("defaults:\n  country_code: 34: 1\noutgoing_routes: []\n", 2,
     "mapping values are not allowed"),
    ('defaults:\n  country_code: "34"\n  max_attempts: [4\ncarriers: {}\n', 4,
     "flow sequence"),
    ('defaults:\n  country_code: "34"\n  max_attempts: [4\ncarriers: {}\n', 4,
     "(the one opened on line 3)"),
    ("outgoing_routes:\n  - {pattern: s, priority: 1\n  - {pattern: s, priority: 2}\n", 3,
     "flow mapping"),
    ("outgoing_routes:\n  - {pattern: s, priority: 1\n  - {pattern: s, priority: 2}\n", 3,
     "(the one opened on line 2)"),
    # a tab used for indentation is named
    ('defaults:\n\tcountry_code: "34"\noutgoing_routes: []\n', 2,
     "tab character (column 1): YAML indentation must use spaces"),
    ("outgoing_routes:\n  - {pattern: a}\n\t- {pattern: b}\n", 3, "tab character"),
    # (after a byte order mark the tab went unnamed: libyaml's positions leave the mark out)
    ('\ufeffdefaults:\n\tcountry_code: "34"\noutgoing_routes: []\n', 2,
     "tab character (column 1): YAML indentation must use spaces"),
])
@pytest.mark.usefixtures("yaml_loader")
def test_a_yaml_syntax_error_points_at_the_line_to_fix(text: str, line: int, words: str) -> None:
    problems = problems_of(text, "q.yaml")
    assert len(problems) == 1
    assert problems[0].line == line and words in problems[0].message, str(problems[0])
    assert problems[0].line <= max(1, len(text.splitlines()))
    assert str(problems[0]).startswith(f"q.yaml:{line}: YAML syntax: ")


def test_anchors_and_merge_keys_work_and_x_keys_hold_them() -> None:
    text = GOOD.replace("carriers:\n", "x-trunk-defaults: &common {number_format: E164}\n"
                                       "carriers:\n", 1)
    text = text.replace("    trunks: [peering-mad, peering-bcn]\n",
                        "    <<: *common\n    trunks: [peering-mad, peering-bcn]\n")
    table = parse_routes(text)
    assert table.carriers["peering"].number_format == "E164"


def test_missing_file_is_a_routes_file_error_without_a_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RoutesFileError) as info:
        load_routes_file(missing)
    assert str(info.value.problems[0]) == f"{missing}: no such file"


def test_an_empty_file_name_or_a_directory_is_named_as_such(tmp_path: Path) -> None:
    # Path("") is ".": both said "cannot read: Is a directory", the empty one as ": ...".
    with pytest.raises(RoutesFileError) as info:
        load_routes_file("")
    assert str(info.value) == "'': no file given (the file name is empty)"
    with pytest.raises(RoutesFileError) as info:
        load_routes_file(tmp_path)
    assert str(info.value) == f"{tmp_path}: a directory, not a routes file"


def test_a_file_that_is_not_utf8_names_the_line_and_column_of_the_first_bad_byte(
        tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    text = textwrap.dedent(GOOD).replace("peering-bcn", "peering-bcn-caf\u00e9", 1)
    path.write_bytes(text.encode("latin-1"))
    line = text.splitlines().index(next(x for x in text.splitlines() if "caf" in x)) + 1
    column = text.splitlines()[line - 1].index("\u00e9") + 1
    with pytest.raises(RoutesFileError) as info:
        load_routes_file(path)
    assert str(info.value) == (f"{path}:{line}: not UTF-8 text: byte 0xe9 at column {column} "
                               "(invalid continuation byte); save the file as UTF-8")


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_a_control_character_or_a_bad_byte_is_at_its_line_with_any_line_ending(
        tmp_path: Path, newline: str) -> None:
    # YAML (and editors) take a lone CR for a line break too: the file of an old Mac tool was
    # all on line 1, at column 45, for YAML's own problems on line 3.
    text = GOOD.replace("  max_attempts: 4\n", "  max_attempts: 4\x1b\n").replace("\n", newline)
    problems = problems_of(text)
    assert [(p.line, p.message.split(" is ")[0]) for p in problems] == [
        (3, "U+001B (a control character) at column 18")]
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("peering-bcn", "peering-bcn-caf\u00e9", 1)
                     .replace("\n", newline).encode("latin-1"))
    with pytest.raises(RoutesFileError) as info:
        load_routes_file(path)
    assert str(info.value).startswith(f"{path}:6: not UTF-8 text: byte 0xe9 at column 42 ")


def test_file_problems_name_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(GOOD).replace("metric: 1}", "metric: 0}", 1))
    with pytest.raises(RoutesFileError) as info:
        load_routes_file(path)
    assert str(info.value).startswith(f"{path}:19: metric of route 'spain-peering'")


def test_a_table_written_back_as_a_routes_file_reads_the_same() -> None:
    import yaml

    from redis_seed.routes_file import to_routes_dict

    for table in (load_routes_file(EXAMPLE), parse_routes(GOOD)):
        text = yaml.safe_dump(to_routes_dict(table), sort_keys=False)
        assert parse_routes(text, "written.yaml") == table


def test_a_file_that_aliases_a_huge_list_gets_short_messages() -> None:
    """Anchors and aliases let a few lines hold 9**6 items ("billion laughs"); a message
    quoting the value whole was megabytes long (at 9**10, validate never finished)."""
    levels = ['x-a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"x-a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 6)]
    text = "\n".join(levels) + textwrap.dedent("""
        carriers:
          c: {trunks: *a5}
        target_patterns:
          p: {prefix: "+34"}
        outgoing_routes:
          - {pattern: p, carrier: c, priority: 1}
        """)
    with pytest.raises(RoutesFileError) as refused:
        parse_routes(text, "laughs.yaml")
    problems = refused.value.problems
    assert any("trunk [[" in p.message for p in problems), problems[:3]
    assert max(len(p.message) for p in problems) < 500


def test_a_file_nested_past_any_routes_file_is_refused_at_its_line() -> None:
    # 500 to 999 levels: libyaml took them, the conversion's recursion raised
    # RecursionError (a traceback from validate).
    deep = "defaults:\n  x: " + "[" * 600 + "]" * 600 + "\n"
    problems = problems_of(deep)
    assert any(p.line == 2 and "nested more than 50 levels deep" in p.message
               for p in problems), [str(p) for p in problems]


def test_a_prefix_of_plus_alone_is_a_default_route_for_every_number() -> None:
    # `prefix: "+"` was refused ("1 to 15 digits"): a catch-all route, common in real
    # routers, had to be written as a regex.
    text = """\
defaults: {country_code: "34"}
carriers:
  peering: {trunks: [carrier-a]}
  fallback: {trunks: [carrier-b]}
target_patterns:
  spain: {prefix: "+34"}
  any: {prefix: "+"}
outgoing_routes:
  - {pattern: spain, carrier: peering, priority: 1, metric: 1}
  - {pattern: any, carrier: fallback, priority: 2, metric: 1}
"""
    snap = Snapshot.build(parse_routes(text, "default.yaml"), "v1")
    spain = plan(snap, "+34911234567", rng=random.Random(1))
    assert [a.carrier.name for a in spain.attempts] == ["peering", "fallback"]
    japan = plan(snap, "+81312345678", rng=random.Random(1))
    assert japan.status is Status.OK and [a.carrier.name for a in japan.attempts] == ["fallback"]


@pytest.mark.parametrize("section", ["defaults", "target_pattern_groups"])
def test_schema_accepts_a_section_left_empty_as_validate_does(section: str) -> None:
    # `defaults:` with nothing under it is valid for validate (no entries: the defaults); an
    # editor using the schema marked that file as wrong
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    text = (f"{section}:\n"
            "carriers:\n  a: {trunks: [carrier-a]}\n"
            "target_patterns:\n  spain: {prefix: '+34'}\n"
            "outgoing_routes:\n  - {pattern: spain, carrier: a, priority: 1}\n")
    parse_routes(text, "routes.yaml")  # validate takes it
    jsonschema.validate(yaml.safe_load(text), json.loads(SCHEMA.read_text()))
