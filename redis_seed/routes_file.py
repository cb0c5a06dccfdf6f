"""The routes file (SPEC section 1): safe YAML in, a validated :class:`RoutingTable` out.

The whole file is checked before anything is returned, and every problem found is reported
with its line (``FILE:LINE: message``) in one :class:`RoutesFileError`. YAML is read with the
safe loader only; the document is composed into nodes first so that every value keeps the line
it came from, and so that duplicate mapping keys (which PyYAML silently overwrites) are caught.
"""

from __future__ import annotations

import difflib
import math
import re
import re._constants as sre_constants  # the parse tree of a regex, for _backtracks_badly
import re._parser as sre_parser
import reprlib
import warnings
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from routing.model import (
    E164_PREFIX_RE,
    MAX_ATTEMPTS_MAX,
    MAX_FAILOVER_CODES,
    NUMBER_FORMATS,
    TECH_PREFIX_RE,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    TRUNK_NAME_RE,
    Carrier,
    Defaults,
    FailoverPolicy,
    Route,
    RoutingTable,
    TargetPattern,
)
from routing.numbers import all_digits

from .errors import Problem, RoutesFileError
from .gc_pause import collector_paused
from .regex_cost import MAX_PATHS, regex_cost

__all__ = ["load_routes_file", "parse_routes", "RoutesFileError", "Problem"]

# libyaml's parser is ~10x faster on large tables and keeps the same marks.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Names of carriers, patterns, groups, routes and tenants end up in channel variables and
#: in the attempt trace: the same safe alphabet as trunk names.
NAME_RE = TRUNK_NAME_RE
_NAME_RULE = "letters, digits, '_', '.', '-', starting with a letter or digit, at most 80"

TOP_KEYS = ("defaults", "carriers", "target_patterns", "target_pattern_groups", "outgoing_routes")
DEFAULTS_KEYS = (
    "country_code",
    "international_prefix",
    "national_prefix",
    "setup_timeout",
    "ring_timeout",
    "max_attempts",
)
#: ``retry_after_early_media`` may be written in the carrier or in its ``failover`` (SPEC 3
#: names it beside ``failover``; the policy it belongs to is the failover one).
CARRIER_KEYS = ("trunks", "number_format", "prefix", "failover", "retry_after_early_media")
FAILOVER_KEYS = ("retry", "stop", "retry_after_early_media")
PATTERN_KEYS = ("prefix", "regex")
ROUTE_KEYS = ("name", "pattern", "group", "carrier", "priority", "metric", "tenant", "stopper",
              "action")
ROUTE_ACTIONS = ("block",)

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
#: The longest number a routes file may hold (its characters): Python refuses ints of more
#: than 4,300 digits with a ValueError, and no metric or code needs 100.
MAX_PLAIN_LENGTH = 100
#: How deep a routes file may nest mappings and lists (it needs 4); deeper, the conversion's
#: recursion would end in a RecursionError before libyaml's own limit (1,000).
MAX_DEPTH = 50
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


# -- YAML with lines ------------------------------------------------------------------------


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers its line and the line of each key (1-based).

    Keys are always the text as written (a carrier or pattern named ``1001`` or ``no`` is not
    the number 1001 or the boolean false), and :attr:`texts` keeps, for each value written
    without quotes that YAML read as a number or a boolean, the text as written (see
    :func:`_text`)."""

    line: int
    key_lines: dict[Any, int]
    texts: dict[Any, str]
    #: entries whose key repeats an earlier one (reported, and still checked)
    dupes: list[tuple[Any, Any, int]]


class _Seq(list[Any]):
    """A YAML sequence that remembers its line and the line of each item (1-based), and like
    :class:`_Map` the text as written of its unquoted numbers and booleans."""

    line: int
    item_lines: list[int]
    item_texts: dict[int, str]


def _new_map(line: int) -> _Map:
    m = _Map()
    m.line = line
    m.key_lines = {}
    m.texts = {}
    m.dupes = []
    return m


def _plain_text(node: Node) -> str | None:
    """The text of a scalar written without quotes and not read as a string, else None."""
    if isinstance(node, ScalarNode) and not node.style and node.tag != _STR_TAG:
        return str(node.value)
    return None


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Composer:
    """Turns composed YAML nodes into plain data with lines, collecting problems."""

    def __init__(self, loader: yaml.SafeLoader, report: Callable[[int, str], None]) -> None:
        self._loader = loader
        self._report = report
        self._done: dict[int, Any] = {}  # shared (aliased) nodes are converted once
        self._open: set[int] = set()  # nodes being converted: a recursive alias
        self._depth = 0

    def convert(self, node: Node) -> Any:
        key = id(node)
        if key in self._done:
            return self._done[key]
        if key in self._open:
            self._report(_line(node), "recursive YAML alias")
            return None
        if self._depth >= MAX_DEPTH:
            self._report(_line(node), f"nested more than {MAX_DEPTH} levels deep (a routes "
                                      "file needs 4)")
            return None
        self._open.add(key)
        self._depth += 1
        try:
            if isinstance(node, MappingNode | SequenceNode) and node.tag not in _PLAIN_TAGS:
                self._report(_line(node), f"unsupported YAML tag {_shown(node.tag)}")
                value: Any = None
            elif isinstance(node, MappingNode):
                value = self._mapping(node)
            elif isinstance(node, SequenceNode):
                value = self._sequence(node)
            else:
                value = self._scalar(node)
        finally:
            self._open.discard(key)
            self._depth -= 1
        self._done[key] = value
        return value

    def _scalar(self, node: Node) -> Any:
        # Fast paths for the two commonest tags (a 100,000-route file has millions of scalars);
        # everything else goes through the safe constructor.
        tag = node.tag
        if tag == _STR_TAG:
            return node.value
        value = node.value
        if tag in (_INT_TAG, _FLOAT_TAG) and len(value) > MAX_PLAIN_LENGTH:
            self._report(_line(node), f"a number of {len(value)} characters: no value of a "
                                      "routes file is that long")
            return None
        # (all_digits inline: this runs for millions of scalars in a big file)
        if tag == _INT_TAG and value.isascii() and value.isdigit() and value[0] != "0":
            return int(value)
        try:
            return self._loader.construct_object(node)
        except yaml.YAMLError as exc:
            self._report(_line(node), f"cannot read value: {_yaml_problem(exc)}")
        except (ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError) as exc:  # an explicit tag on a value it does not fit: !!int abc
            kind = tag.rsplit(":", 1)[-1]
            self._report(_line(node), f"cannot read {_shown(value)} as {kind} "
                                      f"({type(exc).__name__})")
        return None

    def _sequence(self, node: SequenceNode) -> _Seq:
        seq = _Seq()
        seq.line = _line(node)
        seq.item_lines = []
        seq.item_texts = {}
        for index, item in enumerate(node.value):
            seq.append(self.convert(item))
            seq.item_lines.append(_line(item))
            text = _plain_text(item)
            if text is not None:
                seq.item_texts[index] = text
        return seq

    def _mapping(self, node: MappingNode) -> _Map:
        result = _new_map(_line(node))
        first: dict[Any, Node] = {}  # own keys (not merged in with '<<'), first occurrence
        repeated: set[int] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = key_node.value
            if key in first:
                self._report(_line(key_node),
                             f"duplicate key {_shown(key)} (first at line {_line(first[key])})")
                repeated.add(id(key_node))
            else:
                first[key] = key_node
        try:
            self._loader.flatten_mapping(node)  # resolves '<<' merge keys
        except yaml.YAMLError as exc:
            self._report(_line(node), f"bad merge key: {_yaml_problem(exc)}")
            return result
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._report(_line(key_node), "a mapping key must be a plain value")
                continue
            key = key_node.value  # names are text: a carrier '1001', a pattern 'no' (Norway)
            if id(key_node) in repeated:
                result.dupes.append((key, self.convert(value_node), _line(key_node)))
                continue
            if key in first and first[key] is not key_node:
                continue  # merged in with '<<', overridden by the mapping's own entry
            result[key] = self.convert(value_node)
            result.key_lines[key] = _line(key_node)
            text = _plain_text(value_node)
            if text is not None:
                result.texts[key] = text
        return result


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        return ", ".join(parts) or str(exc)
    return str(exc)


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str) -> tuple[int, str]:
    """The line (1-based) and message of a YAML syntax error.

    The problem mark says where the parser gave up. When that is the end of the file (an
    unclosed quote or bracket), the line after the last one is no help: the context mark says
    where the unclosed thing opened, or failing that the last line with something on it. A
    bracket not closed before the next line is named with the line it opened on. A tab where
    YAML wanted indentation is named as such."""
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return 1, _yaml_problem(exc)
    last_line = max(1, len(text.rstrip().splitlines()))  # blank lines at the end do not count

    def at_end(m: yaml.Mark) -> bool:
        return m.index >= len(text) or m.line + 1 > last_line

    if at_end(mark):
        context = exc.context_mark
        if context is not None and not at_end(context):
            return (context.line + 1,
                    f"{_yaml_problem(exc)} (what starts on this line is never closed)")
        return last_line, _yaml_problem(exc)
    if text[mark.index] == "\t":
        return mark.line + 1, (f"tab character (column {mark.column + 1}): YAML indentation "
                               "must use spaces")
    message = _yaml_problem(exc)
    context = exc.context_mark
    if context is not None and context.line != mark.line and "flow" in (exc.context or ""):
        # `- {pattern: s, priority: 1` is seen on the next line: name both
        message += f" (the one opened on line {context.line + 1})"
    return mark.line + 1, message


# -- entry points ---------------------------------------------------------------------------


def load_routes_file(path: str | Path) -> RoutingTable:
    """Read and validate a routes file; raise :class:`RoutesFileError` listing every problem."""
    name = str(path)
    if not name:  # Path("") is the current directory
        raise RoutesFileError([Problem("''", 0, "no file given (the file name is empty)")])
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RoutesFileError([Problem(name, 0, "no such file")]) from None
    except IsADirectoryError:
        raise RoutesFileError([Problem(name, 0, "a directory, not a routes file")]) from None
    except OSError as exc:
        raise RoutesFileError([Problem(name, 0, f"cannot read: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RoutesFileError([_not_utf8(name, data, exc)]) from None
    return parse_routes(text, name)


def _not_utf8(name: str, data: bytes, exc: UnicodeDecodeError) -> Problem:
    """Where the first byte that is not UTF-8 is: its line, and its column in bytes."""
    # (latin-1: one character a byte, so the column is in bytes)
    line, column = _position(data[:exc.start].decode("latin-1"), exc.start)
    return Problem(name, line, f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column "
                               f"{column} ({exc.reason}); save the file as UTF-8")


def notes(table: RoutingTable) -> list[str]:
    """What a valid table does that may not be meant: two carriers that dial one trunk with the
    same number format and prefix. A call whose routes reach both INVITEs that trunk twice with
    the same number (SPEC section 2 skips a carrier already tried, not a trunk)."""
    carriers_of: dict[tuple[str, str, str], list[str]] = {}
    for carrier in table.carriers.values():
        for trunk in carrier.trunks:
            key = (trunk, carrier.number_format, carrier.prefix)
            carriers_of.setdefault(key, []).append(carrier.name)
    return [f"carriers {', '.join(names)} dial trunk {trunk} with the same number format and "
            f"prefix: a call whose routes reach more than one of them sends {trunk} the same "
            "INVITE again (a carrier already tried is skipped, its trunk is not)"
            for (trunk, _, _), names in carriers_of.items() if len(names) > 1]


def parse_routes(text: str, filename: str = "<routes>") -> RoutingTable:
    """Validate the text of a routes file; raise :class:`RoutesFileError` listing every problem."""
    with collector_paused():  # (three times as fast for big files: gc_pause.py)
        return _parse_routes(text, filename)


#: Characters YAML refuses (control characters), and those it takes for line breaks where
#: editors see none (NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR: every line number after one
#: would be off).
_UNREADABLE_RE = re.compile(f"{yaml.reader.Reader.NON_PRINTABLE.pattern}|[\x85\u2028\u2029]")


#: YAML's line breaks: LF, CRLF and a lone CR (an old Mac tool's; editors show it as one too)
_BREAK_RE = re.compile(r"\r\n|\r|\n")


def _position(text: str, at: int) -> tuple[int, int]:
    """The line and column (1-based) of ``text[at]``, counted with YAML's line breaks."""
    breaks = len(_BREAK_RE.findall(text, 0, at))
    start = max(text.rfind("\n", 0, at), text.rfind("\r", 0, at)) + 1
    return breaks + 1, at - start + 1


def _unreadable(text: str, filename: str) -> list[Problem]:
    """The characters of ``text`` that YAML cannot read as the operator sees them, at the
    line and column an editor shows (YAML's own error names line 1 and an offset)."""
    problems = []
    for match in _UNREADABLE_RE.finditer(text):
        line, column = _position(text, match.start())
        char = f"U+{ord(match.group()):04X}"
        if match.group() in "\x85\u2028\u2029":
            message = (f"{char} (a Unicode line break) at column {column}: YAML takes it for "
                       "a new line where editors show none; replace it with a space")
        else:
            message = (f"{char} (a control character) at column {column} is not allowed in "
                       "YAML: remove it")
        problems.append(Problem(filename, line, message))
        if len(problems) == 20:
            break
    return problems


def _parse_routes(text: str, filename: str) -> RoutingTable:
    # A byte order mark is no character an editor shows, and libyaml's positions leave it
    # out: kept, it put the column of every error on line 1 and the tab check one off.
    text = text.removeprefix("\ufeff")
    if unreadable := _unreadable(text, filename):
        raise RoutesFileError(unreadable)
    problems: list[Problem] = []

    def report(line: int, message: str) -> None:
        problems.append(Problem(filename, line, message))

    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else _Composer(loader, report).convert(node)
    except yaml.MarkedYAMLError as exc:
        line, message = _syntax_problem(exc, text)
        raise RoutesFileError([Problem(filename, line, f"YAML syntax: {message}")]) from None
    except yaml.YAMLError as exc:
        raise RoutesFileError([Problem(filename, 1, f"YAML syntax: {exc}")]) from None
    finally:
        loader.dispose()

    table = _Validator(report).table(data)
    if problems or table is None:
        if not problems:  # pragma: no cover - the validator always says why
            report(1, "invalid routes file")
        problems.sort(key=lambda p: p.line)
        raise RoutesFileError(problems)
    return table


# -- validation -----------------------------------------------------------------------------


def _entries(section: _Map) -> list[tuple[Any, Any, int, bool]]:
    """(name, value, line, first?) of a named section, repeated names included, by line."""
    entries = [(k, v, section.key_lines[k], True) for k, v in section.items()]
    entries += [(k, v, line, False) for k, v, line in section.dupes]
    return sorted(entries, key=lambda e: e[2])


def _text(m: _Map, key: Any, default: Any = None) -> Any:
    """The value of a field that is text, as the operator wrote it.

    YAML reads ``country_code: 34`` as the number 34, ``international_prefix: 00`` as 0,
    ``prefix: +34`` as 34, ``tenant: 0042`` as 34 (octal), ``pattern: no`` as false and
    ``tenant: 2001-01-01`` as a date; what was meant is the text, and the file keeps it: a
    number, boolean or date written without quotes gives its text as written (as a key
    does: keys are always text)."""
    if key not in m:
        return default
    value = m[key]
    if isinstance(value, _READ_AS_TEXT):
        return m.texts.get(key, value)
    return value


#: What YAML reads an unquoted text value as, other than a string (bool is an int; datetime
#: a date).
_READ_AS_TEXT = (int, float, date)


def _item_texts(seq: _Seq) -> list[Any]:
    """The items of a list of text values, as written (see :func:`_text`)."""
    return [seq.item_texts.get(i, v) if isinstance(v, _READ_AS_TEXT) else v
            for i, v in enumerate(seq)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _ShortRepr(reprlib.Repr):
    def repr1(self, x: Any, level: int) -> str:
        # _Seq and _Map (the loader's list and dict with lines) are cut short like their bases
        if isinstance(x, list):
            return self.repr_list(x, level)
        if isinstance(x, dict):
            return self.repr_dict(x, level)
        return super().repr1(x, level)


_SHOWN = _ShortRepr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict = 2, 4, 4
_SHOWN.maxstring = _SHOWN.maxother = 120


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, cut short: a value may be any YAML structure, and
    anchors and aliases can make a small file hold a list of a billion items (which
    ``repr`` would take for ever to write)."""
    return _SHOWN.repr(value)


_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)


def _misses_the_plus(regex: str) -> bool:
    """Whether ``regex`` is anchored at the start (``^``, ``\\A``) and then requires a first
    character that is no ``+`` (a digit, ``\\d``, ``[0-9]``): numbers are matched in E.164
    with their ``+``, so ``^34`` never matches any. Only these plain cases are judged."""
    items = list(sre_parser.parse(regex))
    if len(items) < 2 or items[0][0] is not sre_constants.AT or items[0][1] not in (
            sre_constants.AT_BEGINNING, sre_constants.AT_BEGINNING_STRING):
        return False
    op, av = items[1]
    plus = ord("+")
    if op is sre_constants.LITERAL:
        return bool(av != plus)
    if op is not sre_constants.IN:
        return False
    for what, value in av:
        if what is sre_constants.LITERAL and value != plus:
            continue
        if what is sre_constants.RANGE and not value[0] <= plus <= value[1]:
            continue
        if what is sre_constants.CATEGORY and value is sre_constants.CATEGORY_DIGIT:
            continue
        return False  # '+' may be in the class (or a negation, a category): not judged
    return True


def _backtracks_badly(regex: str) -> bool:
    """Whether ``regex`` repeats (``+``, ``*``, ``{2,}``) a part that can match the same text
    in several ways: one with a variable repeat of its own (``(\\d+)+``, ``(\\d{2,3})*``) or
    one that can match nothing (``(a|)+``). Python's ``re`` backtracks through every way of
    splitting a number that does not match among them: ``^(\\+?(\\d?)*)*x$`` took 10 s on
    one 16-character number, ``^\\+34(\\d+)+0$`` 0.4 s; alternatives that are the same
    (``(\\d|\\d|\\d|\\d)+``: 4 s on 13 digits). Or more than MAX_VARIABLE_REPEATS variable repeats
    side by side, which backtrack the same way. Lookarounds, atomic groups, possessive
    repeats and conditionals are looked into: what they hold backtracks while it matches."""
    def parts(op: Any, av: Any, *, one_way_too: bool = True) -> list[Any]:
        """The item lists inside one item; with ``one_way_too=False`` not those of an atomic
        group or a possessive repeat, which match in one way only once they have matched
        (what they hold backtracks while it matches, though: walk() looks into them)."""
        if op in _REPEATS:
            return [av[2]]
        if op is sre_constants.SUBPATTERN:
            return [av[3]]
        if op is sre_constants.BRANCH:
            return list(av[1])
        if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            return [av[1]]
        if op is sre_constants.GROUPREF_EXISTS:
            return [branch for branch in av[1:] if branch is not None]
        if not one_way_too:
            return []
        if op is sre_constants.POSSESSIVE_REPEAT:
            return [av[2]]
        return [av] if op is sre_constants.ATOMIC_GROUP else []

    def ambiguous(op: Any, av: Any) -> bool:
        """Alternatives of which two can match nothing: what is left of alternatives that
        are the same (the parser moves their common start out: ``\\d|\\d`` is
        ``\\d(?:|)``)."""
        return op is sre_constants.BRANCH and sum(
            1 for alt in av[1] if sre_parser.SubPattern(sre_parser.State(), alt).getwidth()[0]
            == 0) > 1

    def variable(items: Any) -> bool:
        return any(op in _REPEATS and av[0] != av[1] or ambiguous(op, av)
                   or any(map(variable, parts(op, av, one_way_too=False)))
                   for op, av in items)

    def walk(items: Any) -> bool:
        return any(op in _REPEATS and av[1] > 1
                   and (variable(av[2]) or av[2].getwidth()[0] == 0)
                   or any(map(walk, parts(op, av)))
                   for op, av in items)

    def count(items: Any) -> int:
        return sum((op in _REPEATS and av[0] != av[1])
                   + sum(map(count, parts(op, av, one_way_too=False)))
                   for op, av in items)

    tree = sre_parser.parse(regex)
    return walk(tree) or count(tree) > MAX_VARIABLE_REPEATS


#: Repeats of variable length (``*``, ``+``, ``?``, ``{2,5}``) one regex may have. Side by
#: side they backtrack too, through every way of splitting a number among them: 6 ``\d*``
#: took 0.3 ms on a 15-digit number that did not match, 8 took 3 ms, 16 took 3 s.
MAX_VARIABLE_REPEATS = 6


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, str):
        return f"the text {_shown(value)}"
    if isinstance(value, date):  # (its repr is Python's: datetime.date(2001, 1, 1))
        return f"the date {value.isoformat()}"
    return f"the {type(value).__name__} {_shown(value)}"


#: a whole number written with a leading zero: YAML 1.1 reads ``010`` as octal 8, ``09`` as text
_LEADING_ZERO_RE = re.compile(r"[-+]?0[0-9_]+")


#: a number as an operator writes it: 45, 2.5, -1
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


def _leading_zero(written: Any, value: Any) -> str | None:
    """What to write instead, when a number is ``written`` in one of YAML 1.1's other forms:
    with a leading zero (``010``, which YAML reads as the octal number 8), in hexadecimal
    (``0x10``), with ``_`` (``1_000``) or in base 60 (``1:30`` is 90); else None."""
    if not isinstance(written, str):
        return None
    if _LEADING_ZERO_RE.fullmatch(written):
        read = f"the octal number {value}" if _is_int(value) else "text"
        return (f"write {int(written.replace('_', ''))}, not {written} "
                f"(YAML reads {written} as {read})")
    if _is_number(value) and not _PLAIN_NUMBER_RE.fullmatch(written):
        if isinstance(value, float) and not math.isfinite(value):  # .inf, .nan
            return f"write a plain decimal number, not {written} (YAML reads it as {value})"
        return f"write {value}, not {written} (YAML reads {written} as {value})"
    return None


def _is_failover_code(code: int) -> bool:
    return 1 <= code <= 127 or 300 <= code <= 699


class _Validator:
    def __init__(self, report: Callable[[int, str], None]) -> None:
        self.report = report

    # helpers

    def keys(self, m: _Map, allowed: Iterable[str], what: str,
             required: Iterable[str] = (), at: int | None = None) -> None:
        """Unknown keys (with a suggestion), and missing ones (reported at ``at``)."""
        allowed = tuple(allowed)
        for key, line in m.key_lines.items():
            if key in allowed:
                continue
            hint = ""
            if isinstance(key, str):
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                if close:
                    hint = f" (did you mean {_shown(close[0])}?)"
            if not hint:
                hint = f" (expected one of: {', '.join(allowed)})"
            self.report(line, f"unknown key {_shown(key)} in {what}{hint}")
        for key in required:
            if key not in m:
                self.report(m.line if at is None else at, f"{what} needs {_shown(key)}")

    def leading_zero(self, m: _Map, key: str, what: str) -> bool:
        """Report a number field written with a leading zero (see :func:`_leading_zero`)."""
        value = m[key]
        hint = _leading_zero(m.texts.get(key, value), value)
        if hint is not None:
            self.report(m.key_lines[key], f"{what}: {hint}")
        return hint is not None

    def mapping(self, value: Any, line: int, what: str) -> _Map | None:
        if isinstance(value, _Map):
            return value
        self.report(line, f"{what} must be a mapping, not {_describe(value)}")
        return None

    def name(self, value: Any, line: int, what: str) -> str | None:
        if not isinstance(value, str):
            self.report(line, f"{what} must be a text name, not {_describe(value)}")
            return None
        if not NAME_RE.match(value):
            self.report(line, f"{what} {_shown(value)} is not a safe name ({_NAME_RULE})")
            return None
        return value

    def digits(self, m: _Map, key: str, what: str, pattern: str, rule: str) -> str | None:
        value = _text(m, key)
        line = m.key_lines[key]
        if not isinstance(value, str):
            self.report(line, f"{what} must be a string of digits, not {_describe(value)}")
            return None
        if not re.fullmatch(pattern, value):
            self.report(line, f"{what} {_shown(value)} must be {rule}")
            return None
        return value

    def sections(self, data: _Map, key: str) -> _Map:
        """An optional top-level mapping section; absent or empty means no entries."""
        value = data.get(key)
        if value is None:
            return _new_map(data.key_lines.get(key, data.line))
        checked = self.mapping(value, data.key_lines[key], key)
        return _new_map(data.key_lines[key]) if checked is None else checked

    # the file

    def table(self, data: Any) -> RoutingTable | None:
        if data is None:
            self.report(1, "the file is empty: it needs at least 'carriers', 'target_patterns' "
                           "and 'outgoing_routes'")
            return None
        if not isinstance(data, _Map):
            self.report(1, f"the file must be a mapping of sections "
                           f"({', '.join(TOP_KEYS)}), not {_describe(data)}")
            return None
        # Top-level keys starting with "x-" are free, to hold YAML anchors (as in Compose files).
        extensions = tuple(k for k in data if isinstance(k, str) and k.startswith("x-"))
        self.keys(data, TOP_KEYS + extensions, "the file", required=("outgoing_routes",))

        defaults = self.defaults(data)
        carriers_section = self.sections(data, "carriers")
        patterns_section = self.sections(data, "target_patterns")
        groups_section = self.sections(data, "target_pattern_groups")

        carriers = {}
        for name, value, line, first in _entries(carriers_section):
            carrier = self.carrier(name, value, line)
            if carrier is not None and first:
                carriers[carrier.name] = carrier
        patterns = {}
        for name, value, line, first in _entries(patterns_section):
            pattern = self.pattern(name, value, line)
            if pattern is not None and first:
                patterns[pattern.name] = pattern
        known_patterns = set(patterns_section)
        groups = {}
        for name, value, line, first in _entries(groups_section):
            members = self.group(name, value, line, known_patterns)
            if members is not None and first:
                groups[name] = members

        routes = self.routes(data, set(carriers_section), known_patterns, set(groups_section),
                             groups, patterns)
        if defaults is None or routes is None:
            return None
        return RoutingTable(defaults=defaults, carriers=carriers, patterns=patterns,
                            groups=groups, routes=routes)

    def defaults(self, data: _Map) -> Defaults | None:
        if data.get("defaults") is None:
            return Defaults()
        m = self.mapping(data["defaults"], data.key_lines["defaults"], "defaults")
        if m is None:
            return None
        self.keys(m, DEFAULTS_KEYS, "defaults")
        ok = True
        kwargs: dict[str, Any] = {}
        if "country_code" in m:
            kwargs["country_code"] = self.digits(
                m, "country_code", "country_code", r"[1-9][0-9]{0,2}",
                "1 to 3 digits, not starting with 0")
        if "international_prefix" in m:
            kwargs["international_prefix"] = self.digits(
                m, "international_prefix", "international_prefix", r"[0-9]{1,4}",
                "1 to 4 digits")
        if "national_prefix" in m and m["national_prefix"] is None:
            kwargs["national_prefix"] = ""  # `national_prefix:` left empty: none, as ""
        elif "national_prefix" in m:
            kwargs["national_prefix"] = self.digits(
                m, "national_prefix", "national_prefix", r"[0-9]{0,4}",
                "0 to 4 digits")
        for key in ("setup_timeout", "ring_timeout"):
            if key in m:
                value = m[key]
                if self.leading_zero(m, key, key):
                    kwargs[key] = None
                elif not _is_number(value) or not TIMEOUT_MIN <= value <= TIMEOUT_MAX:
                    self.report(m.key_lines[key],
                                f"{key} must be a number of seconds from {TIMEOUT_MIN:g} to "
                                f"{TIMEOUT_MAX:g} (a day), not {_describe(value)}")
                    kwargs[key] = None
                else:
                    kwargs[key] = float(value)
        if "max_attempts" in m:
            value = m["max_attempts"]
            if self.leading_zero(m, "max_attempts", "max_attempts"):
                kwargs["max_attempts"] = None
            elif not _is_int(value) or not 1 <= value <= MAX_ATTEMPTS_MAX:
                self.report(m.key_lines["max_attempts"],
                            f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_MAX}, "
                            f"not {_describe(value)}")
                kwargs["max_attempts"] = None
            else:
                kwargs["max_attempts"] = value
        if any(v is None for v in kwargs.values()):
            ok = False
        # (checked whenever both prefixes are fine themselves, whatever else is wrong here)
        national = kwargs.get("national_prefix")
        international = kwargs.get("international_prefix", Defaults().international_prefix)
        if national is not None and international is not None:
            if national and national == international:
                # 00911234567 would be read as international (+911234567), never as national
                self.report(m.key_lines["national_prefix"],
                            f"national_prefix {national!r} is the international_prefix too: "
                            "a number dialled with it cannot be told apart")
                ok = False
            elif national and international and national.startswith(international):
                # international 0, national 00: every national number is read as international
                self.report(m.key_lines["national_prefix"],
                            f"national_prefix {national!r} starts with the international_prefix "
                            f"{international!r}: every number dialled with it would be read as "
                            "international")
                ok = False
        return Defaults(**kwargs) if ok else None

    def carrier(self, name: Any, value: Any, line: int) -> Carrier | None:
        checked_name = self.name(name, line, "carrier name")
        m = self.mapping(value, line, f"carrier {_shown(name)}")
        if m is None:
            return None
        what = f"carrier {_shown(name)}"
        self.keys(m, CARRIER_KEYS, what, required=("trunks",), at=line)
        ok = checked_name is not None
        trunks: list[str] = []
        if "trunks" in m:
            raw = _text(m, "trunks")
            tline = m.key_lines["trunks"]
            if isinstance(raw, str):  # one trunk written without brackets
                raw = [raw]
                lines = [tline]
            elif isinstance(raw, _Seq):
                lines = raw.item_lines
                raw = _item_texts(raw)
            else:
                self.report(tline, f"trunks of {what} must be a list of PJSIP endpoint names, "
                                   f"not {_describe(raw)}")
                raw, lines, ok = [], [], False
            if isinstance(m["trunks"], _Seq) and not m["trunks"]:
                self.report(tline, f"{what} needs at least one trunk")
                ok = False
            for trunk, tl in zip(raw, lines, strict=True):
                if not isinstance(trunk, str) or not TRUNK_NAME_RE.match(trunk):
                    self.report(tl, f"trunk {_shown(trunk)} of {what} is not a safe Asterisk "
                                    f"endpoint name ({_NAME_RULE})")
                    ok = False
                elif trunk in trunks:
                    self.report(tl, f"trunk {_shown(trunk)} appears twice in {what}")
                    ok = False
                else:
                    trunks.append(trunk)
        else:
            ok = False
        number_format = _text(m, "number_format", "+E164")
        if number_format not in NUMBER_FORMATS or not isinstance(number_format, str):
            self.report(m.key_lines["number_format"],
                        f"number_format of {what} must be one of {', '.join(NUMBER_FORMATS)}, "
                        f"not {_describe(number_format)}")
            ok = False
        prefix = _text(m, "prefix", "")
        if prefix is None:
            prefix = ""
        if not isinstance(prefix, str) or not TECH_PREFIX_RE.match(prefix):
            self.report(m.key_lines["prefix"],
                        f"prefix of {what} must be a string of up to 16 digits, '*', '#' "
                        f"or '+', not {_describe(prefix)}")
            ok = False
        failover = self.failover(m, what)
        if failover is None or not ok:
            return None
        return Carrier(name=str(name), trunks=tuple(trunks), number_format=number_format,
                       prefix=prefix, failover=failover)

    def failover(self, carrier: _Map, what: str) -> FailoverPolicy | None:
        early = self.early_media(carrier, what)
        if carrier.get("failover") is None:
            return None if early is None else FailoverPolicy(retry_after_early_media=early)
        m = self.mapping(carrier["failover"], carrier.key_lines["failover"], f"failover of {what}")
        if m is None:
            return None
        self.keys(m, FAILOVER_KEYS, f"failover of {what}")
        ok = early is not None
        if "retry_after_early_media" in m:
            inner = self.early_media(m, f"failover of {what}")
            if inner is None:
                ok = False
            elif "retry_after_early_media" in carrier and inner != early:
                self.report(m.key_lines["retry_after_early_media"],
                            f"retry_after_early_media of {what} is given twice, as "
                            f"{str(early).lower()} (line "
                            f"{carrier.key_lines['retry_after_early_media']}) and as "
                            f"{str(inner).lower()}: keep one")
                ok = False
            else:
                early = inner
        sets: dict[str, frozenset[int]] = {}
        for key in ("retry", "stop"):
            raw = m.get(key)
            if raw is None:
                sets[key] = frozenset()
                continue
            line = m.key_lines[key]
            if not isinstance(raw, _Seq):
                self.report(line, f"failover {key} of {what} must be a list of SIP codes "
                                  f"(300-699) or Q.850 causes (1-127), not {_describe(raw)}")
                ok = False
                continue
            codes = set()
            for index, (code, cl) in enumerate(zip(raw, raw.item_lines, strict=True)):
                hint = _leading_zero(raw.item_texts.get(index, code), code)
                if isinstance(code, str) and all_digits(code):  # retry: ["503"]
                    code = int(code)
                if hint is not None:  # retry: [0503] is octal 323, [0486] the text '0486'
                    self.report(cl, f"failover {key} of {what}: {hint}")
                    ok = False
                elif not _is_int(code) or not _is_failover_code(code):
                    self.report(cl, f"failover {key} of {what}: {_describe(code)} is neither a "
                                    f"SIP code (300-699) nor a Q.850 cause (1-127)")
                    ok = False
                else:
                    codes.add(code)
            sets[key] = frozenset(codes)
        listed = len(sets.get("retry", ())) + len(sets.get("stop", ()))
        if listed > MAX_FAILOVER_CODES:
            self.report(carrier.key_lines["failover"], f"failover of {what} lists {listed} "
                        f"codes: at most {MAX_FAILOVER_CODES} (retry and stop together); list "
                        "only what differs from the default policy")
            ok = False
        both = sets.get("retry", frozenset()) & sets.get("stop", frozenset())
        if both:
            self.report(m.key_lines["stop"], f"failover of {what} lists "
                        f"{', '.join(str(c) for c in sorted(both))} in both retry and stop")
            ok = False
        if not ok or early is None:
            return None
        return FailoverPolicy(retry=sets["retry"], stop=sets["stop"],
                              retry_after_early_media=early)

    def early_media(self, m: _Map, what: str) -> bool | None:
        """``retry_after_early_media`` of a carrier or of its failover (default true)."""
        early = m.get("retry_after_early_media", True)
        if not isinstance(early, bool):
            self.report(m.key_lines["retry_after_early_media"],
                        f"retry_after_early_media of {what} must be true or false, not "
                        f"{_describe(early)}")
            return None
        return early

    def pattern(self, name: Any, value: Any, line: int) -> TargetPattern | None:
        checked_name = self.name(name, line, "target pattern name")
        what = f"target pattern {_shown(name)}"
        m = self.mapping(value, line, what)
        if m is None:
            return None
        self.keys(m, PATTERN_KEYS, what)
        has_prefix, has_regex = "prefix" in m, "regex" in m
        if has_prefix == has_regex:
            self.report(m.line, f"{what} needs exactly one of 'prefix' or 'regex'")
            return None
        if has_prefix:
            prefix = _text(m, "prefix")
            pline = m.key_lines["prefix"]
            if not isinstance(prefix, str) or not E164_PREFIX_RE.match(prefix):
                self.report(pline, f"prefix of {what} must be '+' and up to 15 digits, the "
                                   "first not 0 (no E.164 number starts +0; '+' alone "
                                   f"matches every number), not {_describe(prefix)}")
                return None
            return TargetPattern(name=name, prefix=prefix) if checked_name else None
        regex = _text(m, "regex")
        rline = m.key_lines["regex"]
        if not isinstance(regex, str) or not regex:
            self.report(rline, f"regex of {what} must be a non-empty string, not "
                               f"{_describe(regex)}")
            return None
        try:
            with warnings.catch_warnings():
                # "Possible nested set" ([[:digit:]]) and the like: refused, not printed
                warnings.simplefilter("error", FutureWarning)
                sre_parser.parse(regex)  # (re.compile would not warn for a cached regex)
            re.compile(regex)
            slow = _backtracks_badly(regex)
        except FutureWarning as exc:
            hint = (" ([[:digit:]] and other POSIX classes are not classes in Python's re: "
                    "write [0-9] or \\d)" if "[:" in regex else "")
            self.report(rline, f"bad regex in {what}: {exc}{hint}")
            return None
        except (re.error, OverflowError, RecursionError) as exc:
            self.report(rline, f"bad regex in {what}: {exc}")
            return None
        if _misses_the_plus(regex):
            self.report(rline, f"regex of {what} can never match: numbers are matched in "
                               "E.164 with their '+' (+34911234567), and it requires another "
                               "first character; write '^\\+34...', not '^34...'")
            return None
        if slow:
            self.report(rline, f"regex of {what} repeats a part that can itself match in "
                               "several ways (a repeat inside a repeat, as in (\\d+)+, a "
                               "part that can match nothing, as in (\\d?)*, or alternatives "
                               "that are the same, as in (\\d|\\d)+; also inside a lookahead "
                               "or an atomic group), or has more than "
                               f"{MAX_VARIABLE_REPEATS} repeats of variable length (* + ? "
                               "{2,5}): one number can then take seconds to match, and every "
                               "call is matched against it; write it without the nesting "
                               "(\\d+), with fewer repeats")
            return None
        cost = regex_cost(regex)
        if cost.too_slow:
            self.report(rline, f"regex of {what} can take too long to match: on a number "
                               f"such as {cost.worst} Python's re tries about {cost.paths:,} "
                               f"ways (at most {MAX_PATHS:,}), and every call is matched "
                               "against it. Parts that can match the same digits in several "
                               "ways multiply them: alternatives inside a repeat (as in "
                               "(1|11|\\d)*: write alternatives that start differently, or a "
                               "class such as [0-9]), or many repeats side by side")
            return None
        if cost.can_match is False:
            self.report(rline, f"regex of {what} can never match: numbers are matched in "
                               "E.164, '+' and ASCII digits only (+34911234567), and it needs "
                               "another character")
            return None
        return TargetPattern(name=name, regex=regex) if checked_name else None

    def group(self, name: Any, value: Any, line: int,
              known_patterns: set[Any]) -> tuple[str, ...] | None:
        checked_name = self.name(name, line, "target pattern group name")
        what = f"target pattern group {_shown(name)}"
        if not isinstance(value, _Seq) or not value:
            self.report(line, f"{what} must be a non-empty list of target pattern names, not "
                              f"{_describe(value)}")
            return None
        ok = checked_name is not None
        members: list[str] = []
        for member, ml in zip(_item_texts(value), value.item_lines, strict=True):
            if not isinstance(member, str) or member not in known_patterns:
                self.report(ml, f"{what} names unknown target pattern {_shown(member)}")
                ok = False
            elif member in members:
                self.report(ml, f"{what} names {_shown(member)} twice")
                ok = False
            else:
                members.append(member)
        return tuple(members) if ok else None

    def routes(self, data: _Map, known_carriers: set[Any], known_patterns: set[Any],
               known_groups: set[Any], groups: dict[str, tuple[str, ...]],
               patterns: dict[str, TargetPattern]) -> tuple[Route, ...] | None:
        if "outgoing_routes" not in data:
            return None
        raw = data["outgoing_routes"]
        line = data.key_lines["outgoing_routes"]
        if raw is None or (isinstance(raw, _Seq) and not raw):
            self.report(line, "outgoing_routes is empty: every call would get NO_ROUTE")
            return None
        if not isinstance(raw, _Seq):
            self.report(line, f"outgoing_routes must be a list of routes, not {_describe(raw)}")
            return None

        # Explicit names first, so that derived names never take one of them.
        taken: dict[str, int] = {}
        for item in raw:
            if isinstance(item, _Map) and "name" in item:
                nline = item.key_lines["name"]
                name = self.name(_text(item, "name"), nline, "route name")
                if name is None:
                    continue
                if name in taken:
                    self.report(nline, f"duplicate route name {_shown(name)} (first at line "
                                       f"{taken[name]})")
                else:
                    taken[name] = nline

        routes: list[Route] = []
        ok = True
        for index, (item, il) in enumerate(zip(raw, raw.item_lines, strict=True), 1):
            route = self.route(item, il, index, known_carriers, known_patterns, known_groups,
                               groups, patterns, taken)
            if route is None:
                ok = False
            else:
                routes.append(route)
        return tuple(routes) if ok else None

    def route(self, item: Any, line: int, index: int, known_carriers: set[Any],
              known_patterns: set[Any], known_groups: set[Any], groups: dict[str, tuple[str, ...]],
              patterns: dict[str, TargetPattern], taken: dict[str, int]) -> Route | None:
        m = self.mapping(item, line, f"route #{index}")
        if m is None:
            return None
        name = _text(m, "name")
        label = f"route {_shown(name)}" if isinstance(name, str) else f"route #{index}"
        ok = True
        block = False
        if "action" in m:
            action = _text(m, "action")
            if action not in ROUTE_ACTIONS or not isinstance(action, str):
                self.report(m.key_lines["action"],
                            f"action of {label} must be 'block', not {_describe(action)}")
                ok = False
            else:
                block = True
        # A matching block route blocks the call whatever its priority (SPEC 2.3): a block
        # route may leave it out (0). A route that dials needs one.
        self.keys(m, ROUTE_KEYS, label, required=() if block else ("priority",))

        target: str | None = None
        has_pattern, has_group = "pattern" in m, "group" in m
        if has_pattern and has_group:
            self.report(m.key_lines["group"], f"{label} names both a pattern and a group: "
                                              f"keep one")
            ok = False
        elif not has_pattern and not has_group:
            self.report(m.line, f"{label} needs a 'pattern' or a 'group'")
            ok = False
        elif has_pattern:
            target = _text(m, "pattern")
            if not isinstance(target, str) or target not in known_patterns:
                self.report(m.key_lines["pattern"],
                            f"{label} names unknown target pattern {_shown(target)}")
                ok = False
        else:
            target = _text(m, "group")
            if not isinstance(target, str) or target not in known_groups:
                self.report(m.key_lines["group"],
                            f"{label} names unknown target pattern group {_shown(target)}")
                ok = False

        carrier = _text(m, "carrier")
        if block:
            if "carrier" in m:
                self.report(m.key_lines["carrier"], f"block {label} must not name a carrier")
                ok = False
            if "metric" in m:
                self.report(m.key_lines["metric"], f"block {label} must not have a metric")
                ok = False
            if m.get("stopper", True) is not True:
                self.report(m.key_lines["stopper"],
                            f"block {label} is always a stopper: remove 'stopper: false'")
                ok = False
            carrier = None
        elif "carrier" not in m:
            self.report(m.line, f"{label} needs a 'carrier' (or 'action: block')")
            ok = False
        elif not isinstance(carrier, str):
            self.report(m.key_lines["carrier"],
                        f"'carrier' of {label} must be a carrier's name, not {_describe(carrier)}")
            ok = False
        elif carrier not in known_carriers:
            self.report(m.key_lines["carrier"], f"{label} names unknown carrier {_shown(carrier)}")
            ok = False

        priority: Any = m.get("priority", 0 if block else None)
        if "priority" in m and self.leading_zero(m, "priority", f"priority of {label}"):
            ok = False
        elif "priority" in m and (not _is_int(priority) or priority < 0):
            self.report(m.key_lines["priority"],
                        f"priority of {label} must be a whole number >= 0, not "
                        f"{_describe(priority)}")
            ok = False

        metric = m.get("metric", 1)
        if not block and "metric" in m and self.leading_zero(m, "metric", f"metric of {label}"):
            ok = False
        elif not block and (not _is_int(metric) or metric < 1):
            self.report(m.key_lines["metric"],
                        f"metric of {label} must be a whole number >= 1, not {_describe(metric)}")
            ok = False

        tenant = _text(m, "tenant")
        if "tenant" in m and self.name(tenant, m.key_lines["tenant"], f"tenant of {label}") is None:
            ok = False

        stopper = m.get("stopper", False)
        if not isinstance(stopper, bool):
            self.report(m.key_lines["stopper"],
                        f"stopper of {label} must be true or false, not {_describe(stopper)}")
            ok = False

        if not ok or priority is None:
            return None
        if name is None:
            name = _derive_name(target, carrier, priority, tenant, taken, line)
        elif not isinstance(name, str) or not NAME_RE.match(name):
            return None
        return Route(name=name, priority=priority, carrier=carrier,
                     metric=1 if block else metric,
                     pattern=target if has_pattern else None,
                     group=target if has_group else None,
                     tenant=tenant, stopper=block or stopper, block=block)


def _derive_name(target: Any, carrier: str | None, priority: int, tenant: str | None,
                 taken: dict[str, int], line: int) -> str:
    """``<pattern|group>-<carrier|block>-p<priority>[-<tenant>]``, made unique with ``-2``..."""
    base = f"{target}-{carrier or 'block'}-p{priority}"
    if tenant:
        base = f"{base}-{tenant}"
    base = base[:72]
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken[name] = line
    return name


def to_routes_dict(table: RoutingTable) -> dict[str, Any]:
    """A table as the plain data of a routes file (``yaml.safe_dump`` it to write one back).

    The inverse of :func:`parse_routes`: derived names are written out, so reading the result
    gives the same table.
    """
    data = table.to_dict()
    routes = []
    for r in table.routes:
        route: dict[str, Any] = {"name": r.name}
        if r.pattern is not None:
            route["pattern"] = r.pattern
        if r.group is not None:
            route["group"] = r.group
        if r.block:
            route["action"] = "block"
        else:
            route["carrier"] = r.carrier
            route["metric"] = r.metric
        route["priority"] = r.priority
        if r.tenant is not None:
            route["tenant"] = r.tenant
        if r.stopper and not r.block:
            route["stopper"] = True
        routes.append(route)
    data["outgoing_routes"] = routes
    return data
