"""The no-agent timeout, and agent hours (`AGENT_HOURS`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from prompts import load_prompts
from tests.handoff.helpers import agent_call, conv_path, detail, wait_status
from tests.harness import start_broker

TEXTS = load_prompts()


async def test_no_agent_within_the_timeout_returns_the_conversation_to_the_bot(redis_url: str) -> None:
    async with start_broker(redis_url, handoff_timeout_s=0.6) as broker:
        await broker.say("agent")
        replies = await broker.replies("u-123", 2)
        assert replies == [TEXTS.text("handoff"), TEXTS.text("handoff_no_agent")]
        view = await detail(broker, "u-123")
        assert view["status"] == "bot" and view["waiting_since"] is None
        last = [a for a in view["audit"] if a["event"] == "status"][-1]
        assert (last["from"], last["to"], last["by"]) == ("waiting", "bot", "system:timeout")
        assert view["messages"][-2]["marker"] == "human_end"

        await broker.say("ok, where is my parcel?")
        assert (await broker.replies("u-123", 3))[-1] == "Echo: ok, where is my parcel?"
        await broker.settle(0.8)
        assert len(broker.braze.messages_for("u-123")) == 3, "timed out once, not again"


async def test_a_claimed_conversation_never_times_out(redis_url: str) -> None:
    async with start_broker(redis_url, handoff_timeout_s=0.4) as broker:
        await broker.say("agent")
        await broker.replies("u-123", 1)
        code, _ = await agent_call(broker, "POST", conv_path("u-123", "/claim"))
        assert code == 200
        await asyncio.sleep(1.0)
        assert (await detail(broker, "u-123"))["status"] == "with_agent"
        assert TEXTS.text("handoff_no_agent") not in broker.braze.messages_for("u-123")


async def test_outside_agent_hours_the_user_is_told_when_agents_are_back_and_the_request_waits(
    redis_url: str,
) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    # Open one hour tomorrow only (UTC), so now is outside the hours whatever the time of day.
    hours = f"{tomorrow.strftime('%a')} 09:00-10:00 UTC"
    async with start_broker(redis_url, agent_hours=hours, handoff_timeout_s=0.3) as broker:
        await broker.say("agent")
        [told] = await broker.replies("u-123", 1)
        assert told == TEXTS.text("handoff_out_of_hours", back="tomorrow at 09:00")
        await asyncio.sleep(1.0)
        view = await wait_status(broker, "u-123", "waiting")
        assert view["status"] == "waiting", "closed time does not count toward the no-agent timeout"
        assert broker.braze.messages_for("u-123") == [told]
