"""Routes files and checks shared by the ARI and the FastAGI lab tests: both paths must make
the same decisions, so they are tested against the same tables."""

from __future__ import annotations

from typing import Any

import pytest

NUMBER = "911234567"
E164 = "+34911234567"


def tiers_routes(*, ring_timeout: int, setup_timeout: int = 2) -> str:
    """Three tiers, one carrier each: the attempts go a, b, c whatever the dice. Short timers.
    France goes to a carrier that stops after early media; the UK only for tenant acme."""
    return f"""
defaults: {{country_code: "34", setup_timeout: {setup_timeout}, ring_timeout: {ring_timeout},
           max_attempts: 6}}
carriers:
  first: {{trunks: [carrier-a]}}
  second: {{trunks: [carrier-b]}}
  third: {{trunks: [carrier-c]}}
  picky:
    trunks: [carrier-d]
    failover: {{retry_after_early_media: false}}
target_patterns:
  spain: {{prefix: "+34"}}
  madrid: {{prefix: "+3491"}}
  france: {{prefix: "+33"}}
  uk: {{prefix: "+44"}}
  premium: {{regex: '^\\+3490[0-9]{{7}}$'}}
outgoing_routes:
  - {{name: a, pattern: spain, carrier: first, priority: 1}}
  - {{name: b, pattern: spain, carrier: second, priority: 2}}
  - {{name: c, pattern: spain, carrier: third, priority: 3}}
  - {{name: early, pattern: france, carrier: picky, priority: 1}}
  - {{name: early-next, pattern: france, carrier: second, priority: 2}}
  - {{name: acme-only, pattern: uk, carrier: third, priority: 1, tenant: acme}}
  - {{name: no-premium, pattern: premium, action: block, priority: 0}}
"""


#: What carrier-a's answer alone decides, on both paths: (carrier-a, carrier-b) behaviours,
#: the phone's final code, and the INVITEs (a, b) got. SPEC section 3.
FIRST_TRUNK_OUTCOMES = [
    pytest.param(("unavailable", "answer"), 200, (1, 1), id="503-then-200"),
    pytest.param(("not_found", "answer"), 200, (1, 1), id="404-then-200"),
    pytest.param(("busy", "answer"), 486, (1, 0), id="486-stops-the-phone-hears-busy"),
]


#: One tier of two routes with metrics 1 and 2, a second tier behind it.
WEIGHTED = """
defaults: {country_code: "34", setup_timeout: 2, ring_timeout: 3, max_attempts: 6}
carriers:
  light: {trunks: [carrier-a]}
  heavy: {trunks: [carrier-b]}
  backup: {trunks: [carrier-c]}
target_patterns:
  spain: {prefix: "+34"}
outgoing_routes:
  - {name: light, pattern: spain, carrier: light, priority: 1, metric: 1}
  - {name: heavy, pattern: spain, carrier: heavy, priority: 1, metric: 2}
  - {name: backup, pattern: spain, carrier: backup, priority: 2}
"""

#: Calls of the 1:2 check. Binomial(600, 1/3) has an sd of 0.019: the issues' tolerance of
#: 0.06 is 3.1 sd, a 1-in-500 chance to fail by luck (300 calls would be 1 in 35).
WEIGHTED_CALLS = 600


def assert_shares_one_to_two(light: Any, heavy: Any, calls: int) -> None:
    """Every call was exactly one INVITE at ``light`` or ``heavy`` (both answer): its first
    attempt. Their shares are within 0.06 of 1/3 and 2/3."""
    a, b = light.invites(), heavy.invites()
    assert a + b == calls, (a, b)
    assert abs(a / calls - 1 / 3) <= 0.06, (a, b)
    assert abs(b / calls - 2 / 3) <= 0.06, (a, b)
