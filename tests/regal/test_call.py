"""Regal out: a call request becomes one Regal event and a confirmation; a Regal outage is told."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from bot.store.keys import PartitionKeys
from prompts import load_prompts
from tests.fakes.llm import completion
from tests.harness import Broker, start_broker
from tests.regal.helpers import regal_broker, tracked

TEXTS = load_prompts()


def text(name: str) -> str:
    return TEXTS.text(name)


async def dead_jobs(broker: Broker) -> list[dict[str, Any]]:
    found = []
    for p in range(broker.settings.queue_partitions):
        for _, fields in await broker.runtime.redis.xrange(PartitionKeys(p).dead):
            if fields["kind"] == "job":
                found.append({**fields, "payload": json.loads(fields["payload"])})
    return found


async def test_call_me_sends_one_regal_event_and_tells_the_user(redis_url: str) -> None:
    async with regal_broker(redis_url) as (broker, regal):
        broker.llm.script = lambda body: completion("Our store opens at 9.")
        await broker.say("when do you open?", profile_name="Jane Doe")
        await broker.replies("u-123", 1)
        await broker.say("Call me!")
        assert (await broker.replies("u-123", 2))[1] == text("call_requested")
        await broker.wait_for(lambda: regal.events != [], what="the Regal event")
        await broker.settle(0.3)
        assert len(regal.requests) == 1
        [sent] = regal.events
        assert regal.requests[0]["auth"] == regal.api_key  # the raw key, no "Bearer"
        assert sent["name"] == "WhatsApp Call Requested"
        assert sent["userId"] == "u-123"
        assert sent["traits"]["phone"] == "+15551234567"
        assert sent["traits"]["optIn"] == [
            {"channel": "voice", "subscribed": True, "source": "whatsapp-broker"}
        ]
        # No profile saved: the WhatsApp display name stands in.
        assert (sent["traits"]["firstName"], sent["traits"]["lastName"]) == ("Jane", "Doe")
        assert "email" not in sent["traits"]
        assert sent["properties"]["reason"] == "customer asked for a call"
        assert sent["properties"]["trigger"] == "keyword"
        assert sent["properties"]["summary"] == "Customer said: when do you open? | Call me!"
        assert sent["eventSource"] == "whatsapp-broker"
        assert sent["originalTimestamp"].isdigit()
        # The model was not asked about the call, and Braze records the request.
        assert len(broker.llm.requests) == 1
        await broker.wait_for(
            lambda: any(e["name"] == "WhatsApp Call Requested" for e in tracked(broker.braze, "events")),
            what="the Braze event",
        )
        assert await dead_jobs(broker) == []


async def test_the_models_call_tool_carries_the_profile_it_saved(redis_url: str) -> None:
    def script(body: dict[str, Any]) -> dict[str, Any]:
        said = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        if any(m["role"] == "tool" for m in body["messages"][-2:]):
            return completion("Done!")
        if "email" in said:
            return completion(
                None,
                [("update_profile", {"first_name": "Ana", "last_name": "Lima", "email": "ana@example.com"})],
            )
        return completion(None, [("request_phone_call", {"reason": "wants to upgrade the contract"})])

    async with regal_broker(redis_url) as (broker, regal):
        broker.llm.script = script
        await broker.say("I'm Ana Lima, email ana@example.com")
        await broker.replies("u-123", 1)
        await broker.say("can someone ring me about an upgrade?")
        assert (await broker.replies("u-123", 2))[1] == text("call_requested")
        await broker.wait_for(lambda: regal.events != [], what="the Regal event")
        [sent] = regal.events
        assert sent["traits"]["email"] == "ana@example.com"
        assert (sent["traits"]["firstName"], sent["traits"]["lastName"]) == ("Ana", "Lima")
        assert sent["properties"]["reason"] == "wants to upgrade the contract"
        assert sent["properties"]["trigger"] == "llm"
        await broker.settle(0.2)
        # One confirmation only: the model's own text is not sent on top of it.
        assert broker.braze.messages_for("u-123")[1:] == [text("call_requested")]


async def test_regal_down_the_user_is_told_and_offered_a_person(redis_url: str) -> None:
    async with regal_broker(redis_url, regal_max_attempts=3) as (broker, regal):
        regal.fail_next(503, times=100)
        await broker.say("call me")
        replies = await broker.replies("u-123", 2)
        assert replies == [text("call_requested"), text("call_failed")]
        assert "agent" in text("call_failed")  # how to reach a person instead
        assert [r["status"] for r in regal.requests] == [503, 503, 503]
        dead: list[dict[str, Any]] = []
        for _ in range(100):
            dead = await dead_jobs(broker)
            if dead:
                break
            await broker.settle(0.05)
        assert [(d["reason"], d["payload"]["kind"]) for d in dead] == [("regal_503", "regal.call_requested")]
        await broker.wait_for(
            lambda: any(e["name"] == "WhatsApp Call Failed" for e in tracked(broker.braze, "events")),
            what="the Braze event",
        )
        # Taking up the offer: the handoff works as usual.
        await broker.say("agent")
        assert (await broker.replies("u-123", 3))[2] == text("handoff")
        await broker.settle(0.3)
        assert len(regal.requests) == 3
        assert len(broker.braze.messages_for("u-123")) == 3


async def test_a_refused_key_is_not_retried(redis_url: str) -> None:
    async with regal_broker(redis_url, regal_api_key=SecretStr("wrong-key")) as (broker, regal):
        await broker.say("call me")
        assert await broker.replies("u-123", 2) == [text("call_requested"), text("call_failed")]
        assert [r["status"] for r in regal.requests] == [401]


async def test_without_regal_a_call_request_becomes_a_handoff(redis_url: str) -> None:
    async with start_broker(redis_url) as broker:
        await broker.say("call me")
        assert await broker.replies("u-123", 1) == [text("handoff")]
        state = await broker.runtime.store.state("u-123")
        assert state is not None and state.status == "waiting"
