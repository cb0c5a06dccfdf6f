"""What a target pattern's regex can cost per call, and whether it can match at all.

Every call's number is searched with every regex of the table (``re.search``), on the router's
event loop. Python's ``re`` backtracks: when a number does not match, it tries every way the
regex could have matched a part of it. Numbers are short and plain (E.164: ``+`` and 1 to 15
ASCII digits), so that work can be counted before a regex is accepted: the regex is turned
into a position automaton (Glushkov's: one state per character the regex can match) over the
11 characters a number has, and the ways of matching a number's beginning (paths through it)
are counted for the worst number found. ``(1|11|\\d|[0-9])*2`` counts about 10**8 on
``+111111111111111``: seconds on every such call, during which the router serves nobody.

It is an estimate of the work, on purpose on the high side where it must guess: anchors
(``^``, ``$``, ``\\b``) and back references count as if they were not there, an atomic
group or a possessive repeat (``(?>...)``, ``\\d++``) as one character there (they match in
one way once they have matched), and what a lookaround, an atomic group or a possessive
repeat holds is counted on its own, as the regex it is. Regexes it cannot judge (too big
to build, past 4,000 positions) are left to the other checks.
"""

from __future__ import annotations

import functools
import re._constants as sre_constants
import re._parser as sre_parser
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: What a number is made of, after normalisation (routing/numbers.py).
ALPHABET = "+0123456789"
_ALL = (1 << len(ALPHABET)) - 1
_DIGITS = _ALL & ~1
_PLUS = 1
#: A number's length at most: '+' and 15 digits.
MAX_LENGTH = 16
#: Ways of matching the beginning of one number that one regex may have (counted over the
#: worst number found, every starting point of the search together). Python's ``re`` goes
#: through one in 2 to 50 ns (``bench/regex_cost.py``): a regex at the limit costs a call up
#: to about 10 ms when a number does not match. ``^\+(1|11|\d)*2`` counts 1.1 million (34 ms
#: measured), ``^\+(1|11|\d|[0-9])*2`` 10**8 (4 s), ``^\+34\d?\d?\d?\d?\d?\d*$`` 371.
MAX_PATHS = 250_000
#: Copies of a repeated part the automaton is built with at most: no number is longer.
_REPEAT_CAP = MAX_LENGTH + 1
#: Positions an automaton may have before the count is given up (the regex is then judged by
#: the other checks only).
_MAX_POSITIONS = 4000
#: Candidate numbers kept at each length while looking for the worst one.
_BEAM = 48


class _Unjudged(Exception):
    """A regex this count cannot model (left to the other checks)."""


def _bit(ch: int) -> int:
    index = ALPHABET.find(chr(ch))
    return 0 if index < 0 else 1 << index


_CATEGORIES = {
    sre_constants.CATEGORY_DIGIT: _DIGITS,
    sre_constants.CATEGORY_NOT_DIGIT: _PLUS,
    sre_constants.CATEGORY_WORD: _DIGITS,
    sre_constants.CATEGORY_NOT_WORD: _PLUS,
    sre_constants.CATEGORY_SPACE: 0,
    sre_constants.CATEGORY_NOT_SPACE: _ALL,
    sre_constants.CATEGORY_LINEBREAK: 0,
    sre_constants.CATEGORY_NOT_LINEBREAK: _ALL,
}


def _class_mask(items: Iterable[tuple[Any, Any]]) -> int:
    mask, negate = 0, False
    for op, av in items:
        if op is sre_constants.NEGATE:
            negate = True
        elif op is sre_constants.LITERAL:
            mask |= _bit(av)
        elif op is sre_constants.RANGE:
            lo, hi = av
            mask |= sum(1 << i for i, ch in enumerate(ALPHABET) if lo <= ord(ch) <= hi)
        elif op is sre_constants.CATEGORY and av in _CATEGORIES:
            mask |= _CATEGORIES[av]
        else:
            raise _Unjudged(f"class item {op}")
    return _ALL & ~mask if negate else mask


@dataclass
class _Fragment:
    nullable: bool
    first: frozenset[int]
    last: frozenset[int]


_EMPTY = _Fragment(True, frozenset(), frozenset())


@dataclass
class _Automaton:
    """Glushkov's position automaton: ``masks[p]``, the characters position p matches (p >= 1;
    0 is the start); ``follow[p]``, the positions that can come next."""

    masks: list[int] = field(default_factory=lambda: [0])
    follow: list[set[int]] = field(default_factory=lambda: [set()])
    #: parts counted on their own: what lookarounds, atomic groups and possessive repeats hold
    inner: list[Any] = field(default_factory=list)

    def position(self, mask: int) -> _Fragment:
        if len(self.masks) > _MAX_POSITIONS:
            raise _Unjudged("too many positions")
        self.masks.append(mask)
        self.follow.append(set())
        p = frozenset({len(self.masks) - 1})
        return _Fragment(False, p, p)

    def then(self, a: _Fragment, b: _Fragment) -> _Fragment:
        for p in a.last:
            self.follow[p] |= b.first
        return _Fragment(a.nullable and b.nullable,
                         a.first | b.first if a.nullable else a.first,
                         a.last | b.last if b.nullable else b.last)

    def either(self, parts: list[_Fragment]) -> _Fragment:
        return _Fragment(any(f.nullable for f in parts),
                         frozenset().union(*(f.first for f in parts)),
                         frozenset().union(*(f.last for f in parts)))

    def sequence(self, items: Iterable[tuple[Any, Any]]) -> _Fragment:
        result = _EMPTY
        for op, av in items:
            result = self.then(result, self.item(op, av))
        return result

    def repeat(self, low: int, high: int, body: Any) -> _Fragment:
        low = min(low, _REPEAT_CAP)
        unbounded = high >= _REPEAT_CAP
        high = min(high, _REPEAT_CAP)
        result = _EMPTY
        for _ in range(low):
            result = self.then(result, self.sequence(body))
        if unbounded:
            loop = self.sequence(body)
            for p in loop.last:
                self.follow[p] |= loop.first
            return self.then(result, _Fragment(True, loop.first, loop.last))
        optional: list[_Fragment] = []
        for _ in range(high - low):
            optional.append(self.sequence(body))
        # x{0,3} is (x(x(x)?)?)?: each copy may stop the repeat
        tail = _EMPTY
        for copy in reversed(optional):
            tail = self.then(copy, tail)
            tail = _Fragment(True, tail.first, tail.last)
        return self.then(result, tail)

    def one_way(self, body: Any) -> _Fragment:
        """An atomic group or a possessive repeat: counted on its own; here one character
        of those it can start with (it matches in one way once it has matched)."""
        self.inner.append(body)
        probe = _Automaton()
        inside = probe.sequence(body)
        mask = 0
        for p in inside.first:
            mask |= probe.masks[p]
        if not inside.first:
            return _EMPTY
        here = self.position(mask)
        return _Fragment(inside.nullable, here.first, here.last)

    def item(self, op: Any, av: Any) -> _Fragment:
        if op is sre_constants.LITERAL:
            return self.position(_bit(av))
        if op is sre_constants.NOT_LITERAL:
            return self.position(_ALL & ~_bit(av))
        if op is sre_constants.ANY:
            return self.position(_ALL)
        if op is sre_constants.IN:
            return self.position(_class_mask(av))
        if op is sre_constants.SUBPATTERN:
            return self.sequence(av[3])
        if op is sre_constants.BRANCH:
            return self.either([self.sequence(alt) for alt in av[1]])
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            return self.repeat(av[0], av[1], av[2])
        if op is sre_constants.POSSESSIVE_REPEAT:
            return self.one_way([(sre_constants.MAX_REPEAT, av)])
        if op is sre_constants.ATOMIC_GROUP:
            return self.one_way(av)
        if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            self.inner.append(av[1])
            return _EMPTY
        if op in (sre_constants.AT, sre_constants.GROUPREF):
            return _EMPTY
        if op is sre_constants.GROUPREF_EXISTS:
            return self.either([self.sequence(branch) if branch is not None else _EMPTY
                                for branch in av[1:]])
        raise _Unjudged(f"regex item {op}")


def _anchored(items: Any) -> bool:
    """Whether the regex starts with ``^`` or ``\\A`` (also inside a group): ``re.search``
    then fails at once wherever else it starts."""
    first = list(items)[:1]
    if first and first[0][0] is sre_constants.SUBPATTERN:
        return _anchored(first[0][1][3])
    return bool(first) and first[0][0] is sre_constants.AT and first[0][1] in (
        sre_constants.AT_BEGINNING, sre_constants.AT_BEGINNING_STRING)


def _worst_paths(auto: _Automaton, start: _Fragment, first_chars: int,
                 length: int) -> tuple[int, str]:
    """The most ways of matching the beginning of one text of ``length`` characters, the
    first of them one of ``first_chars`` and the others digits, and that text, found by a
    beam search over the characters' classes (digits no position tells apart are one)."""
    follow = [sorted(s) for s in auto.follow]
    follow[0] = sorted(start.first)
    # Digits no position tells apart are one (often '1' and the other digits); '+' is '+'.
    classes: dict[tuple[bool, ...], int] = {}
    for i in range(len(ALPHABET)):
        classes.setdefault((i == 0, *(bool(m >> i & 1) for m in auto.masks)), i)
    chars = sorted(classes.values())
    masks = auto.masks
    # (vectors are sparse: state -> ways; a long alternation has thousands of positions)
    beam: list[tuple[int, dict[int, int], str]] = [(0, {0: 1}, "")]
    worst, worst_text = 0, ""
    for step in range(length):
        allowed = first_chars if step == 0 else _DIGITS
        candidates: dict[tuple[tuple[int, int], ...], tuple[int, dict[int, int], str]] = {}
        for total, vector, text in beam:
            for i in chars:
                if not allowed >> i & 1:
                    continue
                bit = 1 << i
                new: dict[int, int] = {}
                for s, count in vector.items():
                    for q in follow[s]:
                        if masks[q] & bit:
                            new[q] = new.get(q, 0) + count
                if not new:
                    continue
                key = tuple(sorted(new.items()))
                score = total + sum(new.values())
                if key not in candidates or candidates[key][0] < score:
                    candidates[key] = (score, new, text + ALPHABET[i])
        if not candidates:
            break
        ranked = sorted(candidates.values(), key=lambda c: (sum(c[1].values()), c[0]),
                        reverse=True)
        beam = ranked[:_BEAM]
        best = max(ranked, key=lambda c: c[0])
        if best[0] > worst:
            worst, worst_text = best[0], best[2]
    return worst, worst_text


def _cost(items: Any, *, inner: bool = False) -> tuple[int, bool, str]:
    """(the paths counted, whether some number can be matched, the worst text found), for
    one parsed regex and what it holds that is counted on its own. ``inner``: a part matched
    where the regex around it has got to (a lookaround's or an atomic group's content), not
    searched for."""
    auto = _Automaton()
    whole = auto.sequence(items)
    matches = whole.nullable or _can_match(auto, whole)
    if _succeeds_at_once(items):
        return 1, matches, ""  # its first way matches (\d*\d*...): nothing else is tried
    # (paths, the text with the most) of each part of the count
    parts = [_worst_paths(auto, whole, _ALL if inner else _PLUS, MAX_LENGTH)]
    if not inner and not _anchored(items):  # re.search starts again at every character
        paths, text = _worst_paths(auto, whole, _DIGITS, MAX_LENGTH - 1)
        parts.append(((MAX_LENGTH - 1) * (1 + paths), text))
    for part in auto.inner:
        paths, _, text = _cost(part, inner=True)
        parts.append((paths * MAX_LENGTH, text))  # (tried at every character, at worst)
    text = max(parts)[1]
    return 1 + sum(paths for paths, _ in parts), matches, text


_SINGLE = (sre_constants.LITERAL, sre_constants.NOT_LITERAL, sre_constants.ANY,
           sre_constants.IN)


def _succeeds_at_once(items: Any) -> bool:
    """Whether the first way ``re`` tries always matches: every part an optional repeat of
    one character (``\\d*``, ``x?``), which takes what it can and fails nowhere."""
    for op, av in items:
        if op is sre_constants.SUBPATTERN:
            if not _succeeds_at_once(av[3]):
                return False
        elif not (op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT,
                        sre_constants.POSSESSIVE_REPEAT)
                  and av[0] == 0 and len(av[2]) == 1 and av[2][0][0] in _SINGLE):
            return False
    return True


def _can_match(auto: _Automaton, whole: _Fragment) -> bool:
    """Whether some part of some number ('+' and digits) takes the automaton from its start
    to an end, anchors left out (so on the side of yes)."""
    follow = [set(s) for s in auto.follow]
    follow[0] = set(whole.first)
    ends = whole.last
    current = {0}
    for step in range(MAX_LENGTH):  # a '+' or a digit first, then digits
        allowed = _ALL if step == 0 else _DIGITS
        current = {q for s in current for q in follow[s] if auto.masks[q] & allowed}
        if current & ends:
            return True
        if not current:
            break
    return False


@dataclass(frozen=True)
class RegexCost:
    #: ways of matching counted for the worst number found (None: not judged)
    paths: int | None
    #: False when no number can match it (None: not judged)
    can_match: bool | None
    #: a number on which the most ways were counted ("" when not judged or harmless)
    worst: str = ""

    @property
    def too_slow(self) -> bool:
        """More ways than MAX_PATHS (what `validate` refuses and the reader warns of)."""
        return self.paths is not None and self.paths > MAX_PATHS


@functools.lru_cache(maxsize=1024)
def regex_cost(regex: str) -> RegexCost:
    """The count for one regex (already known to compile)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # (validate reports those)
            parsed = sre_parser.parse(regex)
        paths, matches, worst = _cost(parsed)
    except (_Unjudged, RecursionError):
        return RegexCost(None, None)
    if worst and not worst.startswith("+"):  # (found where the search started again)
        worst = ("+" + worst)[:MAX_LENGTH]
    return RegexCost(paths, matches, worst)
