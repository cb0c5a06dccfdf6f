"""The counted cost of a target pattern's regex, and whether any number can match it."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_seed.regex_cost import MAX_PATHS, regex_cost


def ways(singles: int, doubles: int, digits: int) -> int:
    """Ways of matching the first 1..``digits`` digits of a number of ones with a repeat of
    ``singles`` one-digit and ``doubles`` two-digit alternatives, plus the start and the '+',
    worked out by their recurrence rather than by an automaton: a(k) ways end an iteration
    after k digits, a(k) = s*a(k-1) + d*a(k-2), and d*a(k-1) are halfway through a two-digit
    alternative."""
    a = [1, singles]
    for _ in range(2, digits + 1):
        a.append(singles * a[-1] + doubles * a[-2])
    return 2 + sum(a[k] + doubles * a[k - 1] for k in range(1, digits + 1))


@pytest.mark.parametrize(("regex", "singles", "doubles"), [
    (r"^\+(1|11|2)*3", 1, 1),             # Fibonacci: harmless on 15 digits
    (r"^\+(1|11|\d)*2", 2, 1),            # '1' two ways at every digit: 34 ms on the lab
    (r"^\+(1|11|\d|[0-9])*2", 3, 1),      # three: 4 s
])
def test_the_count_is_the_ways_of_matching_the_worst_number(regex: str, singles: int,
                                                            doubles: int) -> None:
    # (alternatives with a common start are not used: Python's parser takes it out first,
    # (1|11) is 1(|1))
    assert regex_cost(regex).paths == ways(singles, doubles, 15)


def test_overlapping_alternatives_in_a_repeat_pass_the_limit_and_plain_regexes_do_not() -> None:
    for regex in (r"^\+(1|11|\d)*2", r"^\+(1|11|\d|[0-9])*2", r"(1|11|111|\d)+x",
                  r"^\+(?=((1|11|\d)*2))"):
        assert regex_cost(regex).paths > MAX_PATHS, regex
    for regex in (r"^\+3490[0-9]{6}$", r"^\+34(80[36]|90[57])[0-9]{6}$", r"^\+(34|33)\d+$",
                  r"34\d+$", r"^\+34\d?\d?\d?\d?\d?\d*$", r"^\+(\d|\d\d)+x"):
        assert regex_cost(regex).paths < 10_000, regex


def test_a_regex_anchored_inside_a_group_is_counted_from_the_start_only() -> None:
    # re.search fails at once where '^' does not hold: (^...) costs what ^... costs
    assert regex_cost(r"(^\+(1|11|2)*3)").paths == regex_cost(r"^\+(1|11|2)*3").paths
    assert regex_cost(r"(\+(1|11|2)*3)").paths > regex_cost(r"^\+(1|11|2)*3").paths


def test_a_regex_whose_first_way_always_matches_costs_one_way() -> None:
    # re.search stops at its first match: optional repeats of one character never fail.
    assert regex_cost(r"\d*\d*\d*\d*\d*\d*\d*").paths == 1
    # An optional part that fails inside first is tried in full before the empty match.
    assert regex_cost(r"((1|11)*2)?").paths > 1_000


def test_atomic_groups_and_possessive_repeats_count_as_one_way_outside() -> None:
    assert regex_cost(r"^\+(?>\d+)+$").paths < 1_000
    assert regex_cost(r"^\+(\d++)+$").paths < 1_000
    # ...and what they hold is counted on its own
    assert regex_cost(r"^\+(?>(1|11|\d)*2)").paths > MAX_PATHS


@pytest.mark.parametrize("regex", [
    "abc", r"^\+34[[:digit:]]{9}$", "^\\+\u0663\u0664", r"^\+34 9", r"\d+x", r"^\+[a-z]"])
def test_a_regex_no_number_can_match_is_found(regex: str) -> None:
    assert regex_cost(regex).can_match is False


@pytest.mark.parametrize("regex", [
    r"^\+3490[0-9]{6}$", r"^\+34(?!90[57])\d{9}$", r"^\+(\d)\1", r".*", r"^(\+|00)34",
    r"^\+34(x|9)", r"\b34", r"^\+?\d{1,15}$"])
def test_a_regex_some_number_matches_is_not_found_unmatchable(regex: str) -> None:
    # (anchors, lookarounds and back references are taken as matching: on the side of yes)
    assert regex_cost(regex).can_match is True


# -- "can never match" is never said of a regex that some number matches --------------------

_ATOMS = [r"\+", "1", "2", "x", r"\d", ".", "[12]", "[^1]", r"\D", " ", "^", "$", r"\b"]


@st.composite
def small_regexes(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 5 if depth < 2 else 0))
        if kind <= 1:
            part = draw(st.sampled_from(_ATOMS))
        elif kind == 2:
            part = "(" + draw(small_regexes(depth + 1)) + "|" + draw(small_regexes(depth + 1)) + ")"
        elif kind == 3:
            part = "(" + draw(small_regexes(depth + 1)) + ")" + draw(
                st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "*?"]))
        elif kind == 4:
            part = "(?=" + draw(small_regexes(depth + 1)) + ")"
        else:
            part = "(?>" + draw(small_regexes(depth + 1)) + ")"
        parts.append(part)
    return "".join(parts)


#: Every number of up to 7 digits made of 1, 2 and 3: the regexes above tell no other digits
#: apart from 3 (1 and 2 are their only digits).
_NUMBERS = ["+" + "".join(digits) for k in range(1, 8)
            for digits in itertools.product("123", repeat=k)]


@settings(max_examples=300, deadline=None)
@given(regex=small_regexes())
def test_a_regex_found_unmatchable_matches_no_number(regex: str) -> None:
    if regex_cost(regex).can_match is False:
        compiled = re.compile(regex)
        assert not [n for n in _NUMBERS if compiled.search(n)], regex
