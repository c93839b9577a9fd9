"""Profile capture: the model's `update_profile` tool -> validated Braze attributes, refusals back to it."""

from __future__ import annotations

import json
from typing import Any

from bot.store.keys import PartitionKeys
from tests.fakes.llm import completion
from tests.harness import Broker, start_broker
from tests.regal.helpers import tracked


def profile_script(arguments: dict[str, Any]) -> Any:
    """The model saves `arguments` once, then answers with text after seeing the tool's result."""

    def script(body: dict[str, Any]) -> dict[str, Any]:
        if any(m["role"] == "tool" for m in body["messages"]):
            return completion("Thanks, noted!")
        return completion(None, [("update_profile", arguments)])

    return script


def tool_results(broker: Broker) -> list[dict[str, Any]]:
    return [
        json.loads(m["content"])
        for body in broker.llm.requests
        for m in body["messages"]
        if m["role"] == "tool"
    ]


async def test_a_name_and_email_become_attributes_on_the_users_braze_profile(redis_url: str) -> None:
    async with start_broker(redis_url) as broker:
        broker.llm.script = profile_script(
            {"first_name": "  Jane ", "last_name": "Doe", "email": "Jane.Doe@Example.com"}
        )
        await broker.say("I'm Jane Doe, my email is Jane.Doe@Example.com")
        assert await broker.replies("u-123") == ["Thanks, noted!"]
        await broker.wait_for(lambda: tracked(broker.braze, "attributes") != [], what="attributes at Braze")
        assert tracked(broker.braze, "attributes") == [
            {
                "external_id": "u-123",
                "first_name": "Jane",
                "last_name": "Doe",
                "email": "jane.doe@example.com",
            }
        ]
        assert tool_results(broker) == [{"saved": ["email", "first_name", "last_name"], "refused": {}}]


async def test_an_invalid_email_is_not_sent_and_the_model_is_told_why(redis_url: str) -> None:
    async with start_broker(redis_url) as broker:
        broker.llm.script = profile_script(
            {"first_name": "Jane", "email": "jane@@example", "dob": "2999-01-01", "shoe_size": "39"}
        )
        await broker.say("Jane, jane@@example, born 2999-01-01")
        assert await broker.replies("u-123") == ["Thanks, noted!"]
        # The next request to the model carries the tool's answer: what was saved, what was refused and why.
        assert len(broker.llm.requests) == 2
        [result] = tool_results(broker)
        assert result["saved"] == ["first_name"]
        assert result["refused"] == {
            "email": "not a valid email address",
            "dob": "dob must be a real date in the past, as YYYY-MM-DD",
            "shoe_size": "not a field that can be saved",
        }
        await broker.wait_for(lambda: tracked(broker.braze, "attributes") != [], what="attributes at Braze")
        await broker.settle(0.2)
        assert tracked(broker.braze, "attributes") == [{"external_id": "u-123", "first_name": "Jane"}]


async def test_a_user_known_only_by_phone_gets_an_alias_profile(redis_url: str) -> None:
    async with start_broker(redis_url) as broker:
        broker.llm.script = profile_script({"home_city": "Lisbon", "dob": "1990-02-28"})
        await broker.say("I live in Lisbon", user_id="", phone="+15550001111")
        assert await broker.replies("+15550001111") == ["Thanks, noted!"]
        await broker.wait_for(lambda: tracked(broker.braze, "attributes") != [], what="attributes at Braze")
        assert tracked(broker.braze, "attributes") == [
            {
                "user_alias": {"alias_name": "+15550001111", "alias_label": "phone"},
                "home_city": "Lisbon",
                "dob": "1990-02-28",
                "_update_existing_only": False,
            }
        ]


async def test_conversation_events_reach_braze_through_the_profile_loop(redis_url: str) -> None:
    async with start_broker(redis_url, braze_subscription_group_id="sg-wa") as broker:
        await broker.say("agent")
        await broker.replies("u-123", 1)
        await broker.say("stop")
        await broker.replies("u-123", 2)
        await broker.wait_for(lambda: tracked(broker.braze, "attributes") != [], what="the opt-out")
        events = [e["name"] for e in tracked(broker.braze, "events")]
        assert "WhatsApp Handoff Requested" in events
        [optout] = tracked(broker.braze, "attributes")
        assert optout == {
            "external_id": "u-123",
            "subscription_groups": [{"subscription_group_id": "sg-wa", "subscription_state": "unsubscribed"}],
        }
        handoff = next(
            e for e in tracked(broker.braze, "events") if e["name"] == "WhatsApp Handoff Requested"
        )
        assert handoff["external_id"] == "u-123" and handoff["time"].endswith("Z")
        redis = broker.runtime.redis
        await broker.settle(0.2)
        assert sum([await redis.xlen(PartitionKeys(p).track) for p in range(4)]) == 0
