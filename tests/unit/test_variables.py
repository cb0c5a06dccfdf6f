"""routing.variables: the text of ROUTER_FAILOVER_n, written by ``route`` and read back by
``outcome`` (tests/agi/test_agi_scripts.py has the scripts' side)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing import variables as V
from routing.model import DEFAULT_FAILOVER, FailoverPolicy

codes = st.frozensets(st.integers(1, 127) | st.integers(300, 699), max_size=8)


@given(retry=codes, stop=codes, early=st.booleans())
def test_a_failover_policy_reads_back_as_written(retry: frozenset[int], stop: frozenset[int],
                                                 early: bool) -> None:
    policy = FailoverPolicy(retry=retry, stop=stop, retry_after_early_media=early)
    text = V.format_failover(policy)
    assert "," not in text  # one value of an ARRAY() assignment
    assert V.parse_failover(text) == policy


def test_the_default_policy_is_written_as_nothing() -> None:
    assert V.format_failover(DEFAULT_FAILOVER) == ""
    assert V.parse_failover("") == DEFAULT_FAILOVER


def test_the_written_form() -> None:
    policy = FailoverPolicy(retry=frozenset({487, 480}), stop=frozenset({503, 21}),
                            retry_after_early_media=False)
    assert V.format_failover(policy) == "retry=480/487 stop=21/503 retry_after_early_media=no"


@pytest.mark.parametrize("text", [
    "retry", "retry=", "retry=48x", "retry=1 retry=2", "stop=503,480", "other=1",
    "retry_after_early_media=maybe", "retry=١",
])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a failover policy"):
        V.parse_failover(text)


# -- the dialplans spell the same names ------------------------------------------------------

#: ROUTER_* names only the dialplans use: set by an operator (ROUTER_TENANT, an endpoint's
#: set_var) or by the dialplan for itself ([globals]).
DIALPLAN_ONLY = {"ROUTER_TENANT", "ROUTER_ARI_APP", "ROUTER_AGI_URL"}
CONF = Path(__file__).resolve().parents[2] / "asterisk_conf"
#: A name, and whether an attempt number follows it (``ROUTER_DIAL_${RTR_I}``).
NAME_IN_CONF = re.compile(r"(ROUTER_[A-Z0-9_]*[A-Z0-9])(_\$\{)?")


def _names_in_conf() -> dict[str, set[str]]:
    """{name or ``FAMILY_n``: the files that spell it}, comments left out."""
    found: dict[str, set[str]] = {}
    for path in sorted(CONF.glob("extensions*.conf")):
        for line in path.read_text().splitlines():
            code = line.split(";", 1)[0]
            for name, numbered in NAME_IN_CONF.findall(code):
                found.setdefault(f"{name}_n" if numbered else name, set()).add(path.name)
    return found


def _names_in_module() -> set[str]:
    constants = {v for k, v in vars(V).items()
                 if k.isupper() and isinstance(v, str) and v.startswith("ROUTER_")}
    families = {V.dial, V.carrier, V.trunk, V.timeout, V.setup_timeout, V.failover, V.result}
    return constants | {f(1).removesuffix("_1") + "_n" for f in families}


def test_every_router_variable_of_the_dialplans_is_one_of_the_module_s() -> None:
    # A name mistyped on either side is an empty variable at run time, without a word.
    unknown = {n: files for n, files in _names_in_conf().items()
               if n not in _names_in_module() | DIALPLAN_ONLY}
    assert unknown == {}


def test_every_variable_the_scripts_hand_the_dialplan_is_read_there() -> None:
    handed = {V.STATUS, V.NUMBER, V.COUNT, V.CALLER_CAUSE, V.NEXT, V.HANGUP_CAUSE,
              V.LAST_ATTEMPT, V.ATTEMPTS_ABANDONED, V.ATTEMPT_CARRIER, V.DIAL_START,
              V.DIAL_END, V.CAUSE_BEFORE, *(f(1).removesuffix("_1") + "_n" for f in (
                  V.dial, V.carrier, V.trunk, V.timeout, V.setup_timeout))}
    assert handed - set(_names_in_conf()) == set()
