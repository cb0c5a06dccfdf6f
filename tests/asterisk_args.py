"""Asterisk's argument splitting, for the fakes of Asterisk in the protocol tests."""

from __future__ import annotations


def separate_args(text: str) -> list[str]:
    """Asterisk's ``ast_app_separate_args`` (with ``remove_chars``): split on commas outside
    quotes, parentheses and brackets; quotes are dropped, a backslash keeps the next character."""
    args: list[str] = []
    current: list[str] = []
    paren = bracket = 0
    quote = False
    chars = iter(text)
    for c in chars:
        if c == "(":
            paren += 1
        elif c == ")":
            paren = max(paren - 1, 0)
        elif c == "[":
            bracket += 1
        elif c == "]":
            bracket = max(bracket - 1, 0)
        elif c == '"':
            quote = not quote
            continue
        elif c == "\\":
            current.append(next(chars, ""))
            continue
        elif c == "," and not (paren or quote or bracket):
            args.append("".join(current))
            current = []
            continue
        current.append(c)
    args.append("".join(current))
    return args


def assign(variables: dict[str, str], name: str, value: str) -> list[str]:
    """What ``pbx_builtin_setvar_helper`` does with ``name=value``, ``ARRAY(a,b)=1,2`` included;
    the names set, in order."""
    if not (name.startswith("ARRAY(") and name.endswith(")")):
        variables[name] = value
        return [name]
    names = separate_args(name[len("ARRAY("):-1])
    values = separate_args(value)
    for i, var in enumerate(names):
        variables[var] = values[i] if i < len(values) else ""
    return names
