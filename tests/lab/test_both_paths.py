"""Lab tests that are the same on both router paths (SPEC sections 2 and 3): one test each,
run through the ARI phones (127.0.0.10) and the FastAGI phones (127.0.0.20)."""

from __future__ import annotations

import pytest

from .routes import (
    FIRST_TRUNK_OUTCOMES,
    NUMBER,
    WEIGHTED,
    WEIGHTED_CALLS,
    assert_shares_one_to_two,
    tiers_routes,
)

pytestmark = [pytest.mark.lab, pytest.mark.parametrize("via", ["ari", "agi"])]


@pytest.mark.parametrize(("behaviours", "code", "invites"), FIRST_TRUNK_OUTCOMES)
def test_the_first_trunk_s_answer_decides(lab, carrier, phone, via, behaviours, code,
                                          invites) -> None:  # type: ignore[no-untyped-def]
    lab.seed(tiers_routes(ring_timeout=4))
    a, b = (carrier(name, how) for name, how in zip("ab", behaviours, strict=True))
    assert phone(via).call(NUMBER).final_code == code
    assert (a.invites(), b.invites()) == invites


def test_a_tier_is_exhausted_before_the_next(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    lab.seed(WEIGHTED)
    a, b, c = carrier("a", "unavailable"), carrier("b", "unavailable"), carrier("c", "answer")
    assert phone(via).call(NUMBER).final_code == 200
    assert (a.invites(), b.invites(), c.invites()) == (1, 1, 1)


def test_metrics_1_and_2_share_the_first_attempts_1_to_2(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    lab.seed(WEIGHTED)
    a, b = carrier("a", "answer"), carrier("b", "answer")
    result = phone(via).load(NUMBER, calls=WEIGHTED_CALLS, rate=40, concurrent=40, talk=0.2)
    assert result.successful == WEIGHTED_CALLS, result.final_codes
    assert_shares_one_to_two(a, b, WEIGHTED_CALLS)


def test_the_tenant_comes_from_the_x_tenant_header(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    lab.seed(tiers_routes(ring_timeout=4))  # +44 routes for tenant acme only
    c = carrier("c", "answer")
    assert phone(via).call("00441234567890", tenant="acme").final_code == 200
    assert phone(via).call("00441234567890", tenant="other").final_code == 404
    assert c.invites() == 1


def test_a_plan_of_thirty_attempts_is_followed_to_its_end(lab, carrier, phone, via) -> None:  # type: ignore[no-untyped-def]
    # 29 trunks that are no PJSIP endpoint (each attempt fails at once), then carrier-a. On
    # the AGI path `route` sets 157 variables, some 4.8 KB: past what one ARRAY() and one AGI
    # command line take (tests/agi: test_route_of_a_plan_past_asterisks_limits...).
    dead = [f"dead-trunk-{i:02}" for i in range(1, 30)]
    lab.seed("\n".join([
        'defaults: {country_code: "34", setup_timeout: 2, ring_timeout: 4, max_attempts: 30}',
        "carriers:",
        *(f"  {name}: {{trunks: [{name}]}}" for name in dead),
        "  live: {trunks: [carrier-a]}",
        "target_patterns:",
        '  spain: {prefix: "+34"}',
        "outgoing_routes:",
        *(f"  - {{pattern: spain, carrier: {name}, priority: {i}}}"
          for i, name in enumerate(dead, 1)),
        "  - {pattern: spain, carrier: live, priority: 30}",
    ]) + "\n")
    a = carrier("a", "answer")
    assert phone(via).call(NUMBER).final_code == 200
    assert a.invites() == 1
