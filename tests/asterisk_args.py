"""Asterisk's argument splitting, for the fakes of Asterisk in the protocol tests."""

from __future__ import annotations


def separate_args(text: str, max_args: int | None = None) -> list[str]:
    """Asterisk's ``ast_app_separate_args`` (with ``remove_chars``): split on commas outside
    quotes, parentheses and brackets; quotes are dropped, a backslash keeps the next character.
    With ``max_args``, the last argument is the rest of the text, unsplit (as Asterisk fills
    an argument array of that size)."""
    args: list[str] = []
    current: list[str] = []
    paren = bracket = 0
    quote = False
    i = 0
    while i < len(text):
        if max_args is not None and len(args) == max_args - 1:
            args.append(text[i:])
            return args
        c = text[i]
        i += 1
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
            current.append(text[i:i + 1])
            i += 1
            continue
        elif c == "," and not (paren or quote or bracket):
            args.append("".join(current))
            current = []
            continue
        current.append(c)
    args.append("".join(current))
    return args


#: ``ARRAY()`` fills arrays of 100 (func_strings.c: ``AST_APP_ARG(var)[100]``).
ARRAY_MAX = 100


def assign(variables: dict[str, str], name: str, value: str) -> list[str]:
    """What ``pbx_builtin_setvar_helper`` does with ``name=value``, ``ARRAY(a,b)=1,2`` included;
    the names set, in order."""
    if not (name.startswith("ARRAY(") and name.endswith(")")):
        variables[name] = value
        return [name]
    names = separate_args(name[len("ARRAY("):-1], ARRAY_MAX)
    values = separate_args(value, ARRAY_MAX)
    for i, var in enumerate(names):
        variables[var] = values[i] if i < len(values) else ""
    return names
