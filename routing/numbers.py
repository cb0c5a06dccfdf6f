"""Number normalisation to E.164 and formatting for a carrier (SPEC 2.1)."""

from __future__ import annotations

from routing.errors import InvalidNumber
from routing.model import Carrier, Defaults

MAX_E164_DIGITS = 15


def all_digits(s: str) -> bool:
    """Whether ``s`` is made of the digits 0-9 only: ``str.isdigit()`` alone takes non-ASCII
    digits too ("٣" Arabic-Indic, "²" superscript), which ``int()`` reads as numbers or
    refuses with a ValueError. Every place that reads text as a number asks this."""
    return s.isascii() and s.isdigit()


def normalise(digits: str, defaults: Defaults) -> str:
    """Return the E.164 form (``+`` and 1 to 15 digits) of what the caller dialled.

    ``+...`` and ``<international_prefix>...`` are international; anything else made of digits
    is national and gets the country code (after removing the national prefix, if any).
    Surrounding spaces, tabs and line ends are ignored; anything else (letters, ``&``, ``,``,
    ``/``, inner spaces, other control characters or Unicode spaces around it, too long,
    empty) raises :class:`InvalidNumber`.
    """
    raw = digits.strip(" \t\r\n")  # str.strip() also took \x1c-\x1f, \v and Unicode spaces
    if not raw:
        raise InvalidNumber(digits, "empty")
    if raw[0] == "+":
        national = None
        rest = raw[1:]
    elif defaults.international_prefix and raw.startswith(defaults.international_prefix):
        national = None
        rest = raw[len(defaults.international_prefix):]
    else:
        national = raw
        rest = ""
    if national is not None:
        if not all_digits(national):
            raise InvalidNumber(digits, "only digits, or + and digits, can be dialled")
        if defaults.national_prefix and national.startswith(defaults.national_prefix):
            national = national[len(defaults.national_prefix):]
        rest = defaults.country_code + national
        if not national:
            raise InvalidNumber(digits, "no digits after the national prefix")
    if not rest:  # "+" or the international prefix alone: all digits, yet none to dial
        raise InvalidNumber(digits, "no digits after the international prefix")
    if not all_digits(rest):
        raise InvalidNumber(digits, "only digits, or + and digits, can be dialled")
    if rest[0] == "0":
        raise InvalidNumber(digits, "an E.164 number cannot start with 0")
    if len(rest) > MAX_E164_DIGITS:
        raise InvalidNumber(digits, f"more than {MAX_E164_DIGITS} digits")
    return "+" + rest


def format_number(e164: str, number_format: str, defaults: Defaults) -> str:
    """Format an E.164 number the way a carrier wants it (``number_format`` of SPEC 1)."""
    digits = e164[1:]
    if number_format == "+E164":
        return e164
    if number_format == "E164":
        return digits
    if number_format == "00E164":
        return "00" + digits
    if number_format == "national":
        cc = defaults.country_code
        if digits.startswith(cc):
            return defaults.national_prefix + digits[len(cc):]
        return defaults.international_prefix + digits
    raise ValueError(f"unknown number_format {number_format!r}")


def format_for_carrier(e164: str, carrier: Carrier, defaults: Defaults) -> str:
    """What goes before ``@trunk`` in the dial string: the carrier's prefix and the number."""
    return carrier.prefix + format_number(e164, carrier.number_format, defaults)
