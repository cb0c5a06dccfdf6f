"""Helpers of the ARI protocol tests: the routing table, polling, and the Lab wrapper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fake_ari import Behaviour, FakeAsterisk

from ari_app.app import RouterApp
from ari_app.call import Call
from ari_app.client import AriClient
from redis_seed.routes_file import parse_routes
from routing.snapshot import Snapshot

# Two tiers, one carrier each, so the order of attempts is known: carrier-a, then carrier-b.
ROUTES = """
defaults: {country_code: "34", setup_timeout: 0.5, ring_timeout: 0.5, max_attempts: 6}
carriers:
  alpha: {trunks: [carrier-a]}
  bravo: {trunks: [carrier-b]}
target_patterns:
  spain: {prefix: "+34"}
  premium: {regex: '^\\+3490[0-9]{7}$'}
outgoing_routes:
  - {name: no-premium, pattern: premium, action: block, priority: 0}
  - {name: first, pattern: spain, carrier: alpha, priority: 1}
  - {name: second, pattern: spain, carrier: bravo, priority: 2}
"""


def snapshot_of(text: str, version: str = "v1") -> Snapshot:
    return Snapshot.build(parse_routes(text), version)


async def wait_for(predicate: Callable[[], object], within: float = 5.0) -> None:
    """Poll a condition that has no event to await (the fake's or the app's state)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@dataclass
class Lab:
    fake: FakeAsterisk
    ari: AriClient
    app: RouterApp
    snapshots: list[Snapshot]
    runner: asyncio.Task[None]  # the app's run(): cancelling it is what SIGTERM does

    def carriers(self, case: str, **more: Behaviour) -> None:
        """carrier-a and carrier-b behave as in recording ``case`` (``a503_b200``...)."""
        for trunk in ("carrier-a", "carrier-b"):
            try:
                self.fake.trunks[trunk] = Behaviour.recorded(case, trunk)
            except ValueError:
                self.fake.trunks.pop(trunk, None)
        self.fake.trunks.update(more)

    async def call(self, *args: str) -> Call:
        """Place a call and wait until the router has finished routing it."""
        caller = self.fake.new_caller(*args)
        return await self.finished(caller)

    async def started(self, caller: str) -> Call:
        await wait_for(lambda: caller in self.app.owners)
        call = self.app.owners[caller]
        assert isinstance(call, Call)
        return call

    async def finished(self, caller: str, within: float = 10.0) -> Call:
        await wait_for(lambda: any(c.caller_id == caller for c in self.app.finished), within)
        return next(c for c in self.app.finished if c.caller_id == caller)

    def vars_of(self, caller: str) -> dict[str, str]:
        ch = self.fake.channels.get(caller) or self.fake.ended[caller]
        return ch.variables




async def hang_up_answered(lab: Lab, caller: str) -> None:
    """Once the caller is answered, the phone hangs up: the call ends and leaves nothing."""
    call = await lab.started(caller)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    lab.fake.caller_hangup(caller)
    await lab.finished(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))
    assert call.result is not None


async def answer_resumed(lab: Lab, caller: str, leg: str) -> None:
    """The attempt ``leg``, resumed by a new instance, answers: the caller is connected with
    carrier-a INVITEd once (the callee rang once), and the phone's hang-up leaves nothing."""
    lab.fake.answer(leg)
    await wait_for(lambda: lab.fake.channels[caller].state == "Up")
    assert lab.fake.dials == {"carrier-a": 1}
    lab.fake.caller_hangup(caller)
    await wait_for(lambda: lab.fake.leftovers() == ([], []))


def answer_before_each_hangup(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on carrier-a's callee picks up just as the app hangs its channel up: the
    carrier's 200 reaches Asterisk just before the app's DELETE (ACK and BYE follow)."""
    fake, hangup = lab.fake, lab.ari.hangup

    async def answer_first(channel_id: str, reason_code: int | None = None) -> None:
        ch = fake.channels.get(channel_id)
        if ch is not None and ch.name.startswith("PJSIP/carrier-a-") and ch.state != "Up":
            fake.answer(channel_id)
        await hangup(channel_id, reason_code)

    monkeypatch.setattr(lab.ari, "hangup", answer_first)
