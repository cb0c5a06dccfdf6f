"""Redis down under the real lab (SPEC section 5): both router services go on routing from the
version they hold, say so once, and take the next version once Redis is back, even when it
came back empty (no persistence) and numbers its versions from v000001 again."""

from __future__ import annotations

import os
import signal

import pytest

from .observer import logged_since, wait_for
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


def test_services_restarted_while_redis_is_away_route_with_their_cached_version(
        lab, carrier, phone) -> None:  # type: ignore[no-untyped-def]
    # Started while Redis was away (a crash or a reboot during an outage), a service had no
    # routes: every call got ERROR (503) until Redis came back.
    from outbound_router import lab as lab_mod
    from redis_seed import cache

    if lab.redis is None:
        pytest.skip("the lab was already running, on a Redis this session did not start")
    version = lab.seed(only_to("carrier-a"))
    paths = lab_mod.paths()
    for via in PATHS:
        kept = lab_mod.routes_cache(paths, via)
        wait_for(f"{via}'s cache to hold {version}", lambda kept=kept: kept.exists() and (
            cache.read(kept).fields[b"version"] == version.encode()))
    a = carrier("a", "answer")
    logs = {via: lab.state_dir / f"{via}.log" for via in PATHS}
    offsets = {via: log.stat().st_size for via, log in logs.items()}
    lab.redis.kill()
    try:
        for via in PATHS:
            worker = lab_mod.service_worker(via)
            assert worker is not None
            os.kill(worker, signal.SIGKILL)  # its supervisor starts it again after 1 s
        ready = {"ari": "ARI events connected", "agi": "FastAGI listening"}
        for via, log in logs.items():
            wait_for(f"{via} to be back", lambda via=via, log=log: ready[via] in logged_since(
                log, offsets[via]).split("killed by SIGKILL", 1)[-1])
            said = logged_since(log, offsets[via])
            assert f"routing from version {version} of the routes cache" in said, said
        for via in PATHS:
            assert phone(via).call(NUMBER).final_code == 200
        assert a.invites() == 2
    finally:
        lab.redis.start()
        lab.seed(only_to("carrier-a"))
