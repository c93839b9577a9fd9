"""The Braze sender under faults: fencing holds across retries; rows are in flight only on the wire."""

from __future__ import annotations

import asyncio
import time

from prompts import load_prompts
from tests.harness import AGENT_TOKEN, Broker

TRIGGER = "/campaigns/trigger/send"


async def test_a_takeover_during_a_rate_limit_wait_drops_the_bot_reply(broker: Broker) -> None:
    broker.braze.fail_next(TRIGGER, 429, reset_in_s=1.5)
    assert (await broker.say("where is my parcel", user_id="u-wait"))[0] == 202
    await broker.wait_for(lambda: any(r["status"] == 429 for r in broker.braze.requests), what="the 429")
    async with broker.http.post(
        broker.url + "/agent/conversations/u-wait/claim", headers={"Authorization": f"Bearer {AGENT_TOKEN}"}
    ) as resp:
        assert resp.status == 200
    joined = load_prompts().text("agent_joined", agent="Alice")
    assert await broker.replies("u-wait", timeout=10) == [joined]
    await broker.settle(0.5)
    assert broker.braze.messages_for("u-wait") == [joined]


async def test_rows_waiting_between_attempts_are_not_marked_in_flight(broker: Broker) -> None:
    broker.braze.fail_next(TRIGGER, 500, times=2)
    broker.braze.fail_next(TRIGGER, 429, reset_in_s=1.0)
    assert (await broker.say("hello", user_id="u-mark"))[0] == 202
    await broker.wait_for(lambda: any(r["status"] == 429 for r in broker.braze.requests), what="the 429")
    part = broker.runtime.store.keys("u-mark").part
    # waiting out the 429: nothing is on the wire, so a crash now would resend rather than give up
    redis = broker.runtime.redis
    deadline = time.monotonic() + 0.3
    while await redis.hlen(part.outbox_state):
        assert time.monotonic() < deadline, "the failed attempt left its rows marked in flight"
        await asyncio.sleep(0.01)
    until = time.monotonic() + 0.4
    while time.monotonic() < until:
        assert await redis.hlen(part.outbox_state) == 0
        await asyncio.sleep(0.02)
    assert await broker.replies("u-mark") == ["Echo: hello"]
