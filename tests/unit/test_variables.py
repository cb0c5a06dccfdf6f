"""routing.variables: the text of ROUTER_FAILOVER_n, written by ``route`` and read back by
``outcome`` (tests/agi/test_agi_scripts.py has the scripts' side)."""

from __future__ import annotations

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
