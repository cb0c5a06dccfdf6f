"""Fixtures for the ARI protocol tests: a fake Asterisk replaying recorded carriers and the
router app connected to it, with a routing table of short timers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from ari_support import ROUTES, Lab, snapshot_of
from fake_ari import FakeAsterisk

from ari_app.app import RouterApp
from ari_app.client import AriClient, Backoff


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    fake = FakeAsterisk()
    url = await fake.start()
    ari = AriClient(url, fake.username, fake.password, fake.app, heartbeat=1.0,
                    backoff=Backoff(initial=0.05, maximum=0.2))
    snapshots = [snapshot_of(ROUTES)]
    app = RouterApp(ari, lambda: snapshots[-1], rng=random.Random(7))
    runner = asyncio.create_task(app.run())
    await fake.connected.wait()
    await app.reconciled.wait()
    try:
        yield Lab(fake, ari, app, snapshots, runner)
        # A call that has finished keeps no channel in the app's registry: the service runs
        # for months, and a registry entry left per call is a leak that no ARI check shows.
        left = {cid for cid, owner in app.owners.items() if owner in app.finished}
        assert not left, f"finished calls still own channels {sorted(left)}"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await ari.close()
        await fake.close()
