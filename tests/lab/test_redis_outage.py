"""Redis down under the real lab (SPEC section 5): both router services go on routing from the
version they hold, say so once, and take the next version once Redis is back, even when it
came back empty (no persistence) and numbers its versions from v000001 again."""

from __future__ import annotations

import pytest

from .observer import logged_since
from .routes import NUMBER

pytestmark = pytest.mark.lab

PATHS = ("ari", "agi")


def only_to(trunk: str) -> str:
    return f"""
defaults: {{country_code: "34", setup_timeout: 2, ring_timeout: 10}}
carriers: {{only: {{trunks: [{trunk}]}}}}
target_patterns: {{spain: {{prefix: "+34"}}}}
outgoing_routes:
  - {{name: spain, pattern: spain, carrier: only, priority: 1, metric: 1}}
"""


def test_calls_route_through_a_redis_outage_and_the_next_seed_applies(lab, carrier, phone) -> None:  # type: ignore[no-untyped-def]
    if lab.redis is None:
        pytest.skip("the lab was already running, on a Redis this session did not start")
    logs = {via: lab.state_dir / f"{via}.log" for via in PATHS}
    assert set(lab.services_running()) == set(PATHS)
    lab.seed(only_to("carrier-a"))
    a, b = carrier("a", "answer"), carrier("b", "answer")
    offsets = {via: log.stat().st_size for via, log in logs.items()}

    lab.redis.kill()
    for _ in range(2):
        for via in PATHS:
            assert phone(via).call(NUMBER).final_code == 200
    assert (a.invites(), b.invites()) == (4, 0)

    lab.redis.start()  # the same port, empty: the current version is gone with the data
    lab.seed(only_to("carrier-b"))  # waits until both services logged that they loaded it
    for via in PATHS:
        assert phone(via).call(NUMBER).final_code == 200
    assert (a.invites(), b.invites()) == (4, 2)

    for via, log in logs.items():
        said = logged_since(log, offsets[via])
        assert said.count("is unavailable") == 1, said  # once, not per retry or per call
        assert "routing continues from version" in said, said
        assert "is available again" in said, said
        assert "Traceback" not in said, said
