"""Which Redis `lab up` gives the lab's services."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbound_router import lab
from outbound_router.local_redis import RedisProcess


def _paths(tmp_path: Path) -> lab.Paths:
    p = lab.Paths(tmp_path / "cache")
    p.state_dir.mkdir(parents=True)
    return p


def test_lab_up_again_keeps_the_redis_the_running_lab_uses(
        tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Brought up with REDIS_URL=X, the lab's services read X; a second `lab up` from a
    shell without REDIS_URL (to restart a service, to add the carriers) must not start the
    missing ones on the default Redis (127.0.0.1:6379, which answers on this machine kind)."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    p = _paths(tmp_path)
    state = {"redis": {"url": redis_server, "pid": None}}
    assert lab.ensure_redis(p, state, say=lambda _: None) == redis_server
    assert lab.load_state(p)["redis"] == {"url": redis_server, "pid": None}


def test_redis_url_given_wins_over_the_one_recorded(
        tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    other = RedisProcess(tmp_path / "other")
    other.start()
    try:
        monkeypatch.setenv("REDIS_URL", other.url)
        said: list[str] = []
        state = {"redis": {"url": redis_server, "pid": None}}
        assert lab.ensure_redis(_paths(tmp_path), state, say=said.append) == other.url
        assert said == [f"redis: using {other.url} (answers PING)"]
    finally:
        other.kill()
