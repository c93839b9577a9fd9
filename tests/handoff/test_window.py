"""Agent replies after the 24-hour window closed: the template campaign, or 409 and nothing sent."""

from __future__ import annotations

import time

from prompts import load_prompts
from tests.handoff.helpers import agent_call, conv_path, detail
from tests.harness import TEMPLATE_CAMPAIGN, Broker, start_broker

HANDOFF = load_prompts().text("handoff")


async def _close_window(broker: Broker, conv_id: str) -> None:
    """As if the user's last message came 25 hours ago."""
    keys = broker.runtime.store.keys(conv_id)
    await broker.runtime.redis.hset(keys.conv, "last_in", repr(time.time() - 25 * 3600))


async def test_agent_reply_after_the_window_goes_through_the_template_campaign(broker: Broker) -> None:
    await broker.say("agent")
    await broker.replies("u-123", 1)
    await _close_window(broker, "u-123")
    assert (await detail(broker, "u-123"))["window_open"] is False

    code, body = await agent_call(
        broker,
        "POST",
        conv_path("u-123", "/messages"),
        body={"text": "Sorry for the wait, your refund is done."},
    )
    assert code == 202 and body["campaign"] == "template"
    assert body["conversation"]["status"] == "with_agent"
    await broker.replies("u-123", 2)
    await broker.settle()
    delivered = [d for d in broker.braze.delivered if d.user == "u-123"]
    # The "agent joined" notice is not worth a paid template message: only the reply goes.
    assert [(d.text, d.campaign_id) for d in delivered[1:]] == [
        ("Sorry for the wait, your refund is done.", TEMPLATE_CAMPAIGN)
    ]
    audit = (await detail(broker, "u-123"))["audit"]
    assert any(a["event"] == "notice_skipped" for a in audit)


async def test_without_a_template_campaign_a_closed_window_refuses_and_sends_nothing(redis_url: str) -> None:
    async with start_broker(redis_url, braze_template_campaign_id=None) as broker:
        await broker.say("agent")
        await broker.replies("u-123", 1)
        await _close_window(broker, "u-123")
        before = await detail(broker, "u-123")

        code, body = await agent_call(
            broker, "POST", conv_path("u-123", "/messages"), body={"text": "Are you still there?"}
        )
        assert code == 409 and body["error"]["code"] == "window_closed"
        await broker.settle()
        assert broker.braze.messages_for("u-123") == [HANDOFF]
        after = await detail(broker, "u-123")
        assert after["status"] == "waiting" and after["assigned_agent"] is None, "not even claimed"
        assert after["messages"] == before["messages"] and after["audit"] == before["audit"]
