from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.errors import InvalidNumber
from routing.model import Defaults
from routing.numbers import format_number, normalise

SPAIN = Defaults(country_code="34", international_prefix="00", national_prefix="")
UK = Defaults(country_code="44", international_prefix="00", national_prefix="0")
US = Defaults(country_code="1", international_prefix="011", national_prefix="1")


@pytest.mark.parametrize(
    ("dialled", "defaults", "expected"),
    [
        ("+34911234567", SPAIN, "+34911234567"),
        ("0034911234567", SPAIN, "+34911234567"),
        ("911234567", SPAIN, "+34911234567"),
        ("0033123456789", SPAIN, "+33123456789"),
        ("  +34911234567 ", SPAIN, "+34911234567"),
        ("\t911234567\r\n", SPAIN, "+34911234567"),
        ("02071234567", UK, "+442071234567"),
        ("00442071234567", UK, "+442071234567"),
        ("+14155550100", US, "+14155550100"),
        ("01133123456789", US, "+33123456789"),
        ("14155550100", US, "+14155550100"),
        ("+123456789012345", SPAIN, "+123456789012345"),  # 15 digits: the maximum
    ],
)
def test_normalise_gives_e164(dialled: str, defaults: Defaults, expected: str) -> None:
    assert normalise(dialled, defaults) == expected


@pytest.mark.parametrize(
    "dialled",
    [
        "", "   ", "+", "00", "91a234567", "9112&34567", "91,1234567", "91/1234567",
        "911 234 567", "+34 911234567", "+1234567890123456", "003412345678901234",
        "*21#", "+34911234567;", "PJSIP/123@x", "１２３", "٣٤٥", "+0123", "0000123",
        "91\n1234567", "+34911234567\x00", "91-123-45-67",
        # around it, only spaces, tabs and line ends are ignored (a security audit found
        # these routed as OK through FastAGI and explain)
        "\x1c911234567\x1f", "911234567\u00a0", "\v911234567", "\u2003911234567", "911234567\x0c",
    ],
)
def test_normalise_rejects_anything_else(dialled: str) -> None:
    with pytest.raises(InvalidNumber):
        normalise(dialled, SPAIN)


@given(st.text())
def test_normalise_returns_plus_and_1_to_15_ascii_digits_or_raises(text: str) -> None:
    for defaults in (SPAIN, UK, US):
        try:
            e164 = normalise(text, defaults)
        except InvalidNumber:
            continue
        assert e164[0] == "+"
        assert 1 <= len(e164) - 1 <= 15
        assert all(c in "0123456789" for c in e164[1:])


@given(st.from_regex(r"\A\+[1-9][0-9]{0,14}\Z"))
def test_normalise_keeps_valid_e164(e164: str) -> None:
    assert normalise(e164, SPAIN) == e164


@pytest.mark.parametrize(
    ("fmt", "e164", "expected"),
    [
        ("+E164", "+34911234567", "+34911234567"),
        ("E164", "+34911234567", "34911234567"),
        ("00E164", "+34911234567", "0034911234567"),
        ("national", "+34911234567", "911234567"),
        ("national", "+33123456789", "0033123456789"),
    ],
)
def test_format_number_per_carrier_format(fmt: str, e164: str, expected: str) -> None:
    assert format_number(e164, fmt, SPAIN) == expected


def test_national_format_adds_national_prefix() -> None:
    assert format_number("+442071234567", "national", UK) == "02071234567"


@pytest.mark.parametrize("dialled", ["+", "00", " 00 "])
def test_the_international_prefix_alone_is_invalid_for_having_no_digits(dialled: str) -> None:
    # explain shows the reason: "only digits, or + and digits, can be dialled" told the
    # operator who passed "00" (all digits) the wrong thing
    with pytest.raises(InvalidNumber, match="no digits after the international prefix"):
        normalise(dialled, SPAIN)
