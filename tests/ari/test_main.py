"""``outbound-router ari``'s serve(): what it closes when the app ends."""

from __future__ import annotations

import pytest

from ari_app import main
from outbound_router.settings import Settings


class Closed:
    """Stands for the Redis reader and the ARI client: notes that it was closed."""

    snapshot = None

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        self.closed = False
        made.append(self)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


made: list[Closed] = []


class FailingApp:
    def __init__(self, *_args: object) -> None:
        pass

    async def run(self) -> None:
        raise RuntimeError("the app failed")


async def test_an_app_that_fails_is_raised_and_its_client_and_reader_are_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The failure was raised before the closes: an open HTTP session and reader task at exit.
    made.clear()
    monkeypatch.setattr("redis_seed.reader.SnapshotReader", Closed)
    monkeypatch.setattr(main, "AriClient", Closed)
    monkeypatch.setattr(main, "RouterApp", FailingApp)
    with pytest.raises(RuntimeError, match="the app failed"):
        await main.serve(Settings())
    assert [c.closed for c in made] == [True, True]


def test_the_settings_repr_shows_no_redis_password() -> None:
    settings = Settings(redis_url="redis://:s3cret@127.0.0.1:6379/0", ari_password="hunter2")
    assert "s3cret" not in repr(settings) and "hunter2" not in repr(settings)
