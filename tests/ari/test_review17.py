"""Races found in review 17, each proved against the fake Asterisk."""

from __future__ import annotations

import pytest
from ari_support import Lab, snapshot_of, wait_for

NUMBER = "911234567"

RETRY_ON_NO_ANSWER = """
defaults: {country_code: "34", setup_timeout: 0.5, ring_timeout: 0.5, max_attempts: 6}
carriers:
  alpha: {trunks: [carrier-a], failover: {retry: [480]}}
  bravo: {trunks: [carrier-b]}
target_patterns:
  spain: {prefix: "+34"}
outgoing_routes:
  - {name: first, pattern: spain, carrier: alpha, priority: 1}
  - {name: second, pattern: spain, carrier: bravo, priority: 2}
"""


async def test_an_answer_that_crosses_the_ring_timer_s_hangup_does_not_ring_the_callee_again(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # carrier-a rings past ring_timeout; its callee picks up just as the app's DELETE leaves
    # (the 200 crosses the CANCEL: ACK and BYE). The carrier retries on no-answer (480), as
    # a carrier whose "no answer" is often a dead leg is configured; but this callee did
    # answer: carrier-b must not ring them again (as after the setup timer).
    fake = lab.fake
    lab.snapshots.append(snapshot_of(RETRY_ON_NO_ANSWER))
    lab.carriers("a480-noanswer_b200")
    hangup = lab.ari.hangup

    async def answer_first(channel_id: str, reason_code: int | None = None) -> None:
        ch = fake.channels.get(channel_id)
        if ch is not None and ch.name.startswith("PJSIP/carrier-a-") and ch.state != "Up":
            fake.answer(channel_id)  # the 200 reaches Asterisk just before the DELETE
        await hangup(channel_id, reason_code)

    monkeypatch.setattr(lab.ari, "hangup", answer_first)
    caller = fake.new_caller(NUMBER)
    call = await lab.started(caller)
    await wait_for(lambda: call in lab.app.finished or fake.dials["carrier-b"])
    assert fake.dials == {"carrier-a": 1}  # the callee who picked up is not rung again
    await lab.finished(caller)
    assert call.result is not None and call.result.trace == "carrier-a:answered:16:200"
    assert fake.ended[call.caller_id].hangup_reason == "16"
    await wait_for(lambda: fake.leftovers() == ([], []))
