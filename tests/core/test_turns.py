"""Turns: bursts, ordering across processes, crash recovery, LLM failures, long replies."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.clients.llm import safety_id
from tests.fakes.llm import completion
from tests.harness import Broker, inbound, start_broker
from tests.processes import kill_hard, start_worker, stop


async def test_three_quick_messages_get_one_answer_that_saw_all_three(broker: Broker) -> None:
    broker.llm.latency_s = 1.0
    for i, text in enumerate(["I ordered shoes", "size 42", "where are they?"]):
        assert (await broker.say(text, message_id=f"m{i}"))[0] == 202
        await asyncio.sleep(0.03)
    await broker.replies("u-123")
    await broker.settle(1.5)
    assert broker.braze.messages_for("u-123") == ["Echo: where are they?"]
    assert broker.llm.user_messages(-1)[-3:] == ["I ordered shoes", "size 42", "where are they?"]


async def test_two_worker_processes_keep_each_conversation_sequential_and_ordered(redis_url: str) -> None:
    async with start_broker(redis_url, workers=False) as broker:
        broker.llm.latency_s = 0.05
        workers = [start_worker(broker.settings) for _ in range(2)]
        try:
            users = [f"user-{n}" for n in range(20)]

            async def converse(user: str) -> None:
                for i in range(5):
                    assert (await broker.say(f"{user} message {i}", user_id=user, message_id=f"{user}-{i}"))[
                        0
                    ] == 202
                    await asyncio.sleep(0.02 * (i % 3))

            await asyncio.gather(*(converse(u) for u in users))
            await broker.wait_for(
                lambda: all(any(f"{u} message 4" in m for m in broker.braze.messages_for(u)) for u in users),
                timeout=60,
                what="every conversation's last message answered",
            )
        finally:
            for w in workers:
                stop(w)
        assert broker.llm.overlaps == []
        by_user: dict[str, list[list[str]]] = {}
        for request in broker.llm.requests:
            by_user.setdefault(request["user"], []).append(
                [m["content"] for m in request["messages"] if m["role"] == "user"]
            )
        for user in users:
            for prompt in by_user[safety_id(user)]:
                numbers = [int(text.rsplit(" ", 1)[1]) for text in prompt]
                assert numbers == sorted(numbers), f"{user}: out of order {numbers}"


async def test_worker_killed_mid_turn_the_user_still_gets_one_reply(redis_url: str) -> None:
    async with start_broker(redis_url, workers=False, lease_ttl_ms=1500) as broker:
        broker.llm.latency_s = 3.0
        first = start_worker(broker.settings)
        second = None
        try:
            assert (await broker.say("is my parcel lost?"))[0] == 202
            await asyncio.wait_for(broker.llm.started.wait(), 15)
            kill_hard(first)
            broker.llm.latency_s = 0.0
            second = start_worker(broker.settings)
            replies = await broker.replies("u-123", timeout=30)
            await broker.settle(1.0)
        finally:
            stop(first)
            if second:
                stop(second)
        assert replies == ["Echo: is my parcel lost?"]
        assert broker.braze.messages_for("u-123") == ["Echo: is my parcel lost?"]


async def test_llm_failure_gets_an_apology_and_a_second_failure_a_person(broker: Broker) -> None:
    apology = broker.runtime.services.prompts.text("apology")
    handoff = broker.runtime.services.prompts.text("handoff")
    broker.llm.faults = [500]
    await broker.say("hello?", message_id="a")
    assert await broker.replies("u-123") == [apology]
    broker.llm.faults = [503]
    await broker.say("hello again?", message_id="b")
    assert await broker.replies("u-123", 2) == [apology, handoff]
    state = await broker.runtime.store.state("u-123")
    assert state is not None and state.status == "waiting"


async def test_hanging_llm_times_out_into_an_apology(redis_url: str) -> None:
    async with start_broker(redis_url, llm_timeout_s=0.5) as broker:
        broker.llm.faults = ["hang"]
        started = time.monotonic()
        await broker.say("anyone there?")
        replies = await broker.replies("u-123", timeout=10)
        assert replies == [broker.runtime.services.prompts.text("apology")]
        assert time.monotonic() - started < 5


async def test_reply_over_4096_characters_arrives_as_ordered_parts(broker: Broker) -> None:
    long_text = " ".join(f"word{i:05d}" for i in range(1200))  # ~12,000 characters
    broker.llm.script = lambda body: completion(long_text)
    await broker.say("tell me everything")
    parts = await broker.replies("u-123", 3)
    await broker.settle()
    assert len(broker.braze.messages_for("u-123")) == 3
    assert all(len(p) <= 4096 for p in parts)
    assert " ".join(parts) == long_text


async def test_handoff_keyword_makes_the_bot_step_aside(broker: Broker) -> None:
    await broker.say("Agent!", message_id="1")
    replies = await broker.replies("u-123")
    assert replies == [broker.runtime.services.prompts.text("handoff")]
    await broker.say("are you there?", message_id="2")
    await broker.settle(0.5)
    assert broker.braze.messages_for("u-123") == replies
    assert len(broker.llm.requests) == 0
    history = await broker.runtime.store.history("u-123")
    assert [h.text for h in history if h.role == "user"] == ["Agent!", "are you there?"]


async def test_handoff_tool_call_sets_waiting(broker: Broker) -> None:
    broker.llm.script = lambda body: completion(None, [("handoff_to_agent", {"reason": "refund dispute"})])
    await broker.say("I want to dispute a refund")
    assert await broker.replies("u-123") == [broker.runtime.services.prompts.text("handoff")]
    state = await broker.runtime.store.state("u-123")
    assert state is not None and state.status == "waiting"
    audit = await broker.runtime.store.audit("u-123")
    assert audit[-1]["to"] == "waiting" and audit[-1]["reason"] == "refund dispute"


async def test_opt_out_silences_until_opt_in(broker: Broker) -> None:
    texts = broker.runtime.services.prompts
    await broker.say("STOP", message_id="1")
    assert await broker.replies("u-123") == [texts.text("optout_confirmation")]
    await broker.say("hello", message_id="2")
    await broker.settle(0.5)
    assert len(broker.braze.messages_for("u-123")) == 1
    await broker.say("Start", message_id="3")
    await broker.replies("u-123", 2)
    await broker.say("hello", message_id="4")
    replies = await broker.replies("u-123", 3)
    assert replies == [texts.text("optout_confirmation"), texts.text("optin_confirmation"), "Echo: hello"]
    assert len(broker.llm.requests) == 1


@pytest.mark.parametrize("conversations", [60])
async def test_replies_to_many_users_are_batched_up_to_50_recipients(
    redis_url: str, conversations: int
) -> None:
    async with start_broker(redis_url, braze_batch_linger_ms=200) as broker:
        await asyncio.gather(*(broker.say("hi", user_id=f"b-{n}") for n in range(conversations)))
        await broker.wait_for(lambda: len(broker.braze.delivered) >= conversations, 20, "all replies")
        sizes = [len(r["body"]["recipients"]) for r in broker.braze.trigger_requests()]
        assert sum(sizes) == conversations
        assert max(sizes) <= 50
        assert max(sizes) > 1


async def test_media_only_message_is_accepted(broker: Broker) -> None:
    status, _ = await broker.post(inbound("", media_urls="https://example.invalid/img.jpg"))
    assert status == 202
    assert await broker.replies("u-123")


async def test_a_burst_that_crashes_every_turn_is_set_aside_and_the_user_told(redis_url: str) -> None:
    async with start_broker(redis_url, lease_ttl_ms=300) as broker:

        broker.runtime.services.responder = _Exploding()  # type: ignore[assignment]
        await broker.say("this message trips a bug", message_id="p1")
        apology = broker.runtime.services.prompts.text("apology")
        assert await broker.replies("u-123", timeout=15) == [apology]
        dead = [
            fields
            for part in range(broker.settings.queue_partitions)
            for _, fields in await broker.runtime.redis.xrange(f"dead:{{p{part}}}")
        ]
        assert [d["kind"] for d in dead] == ["inbound"]
        assert "this message trips a bug" in dead[0]["payload"]
        # The conversation is not stuck: the next message is answered normally.
        broker.runtime.services.responder = broker_responder = _Echo()  # type: ignore[assignment]
        await broker.say("hello again", message_id="p2")
        assert (await broker.replies("u-123", 2))[-1] == "Echo: hello again"
        assert broker_responder.calls == 1


class _Exploding:
    supports_tools = False

    async def complete(self, messages: object, tools: object, user: str) -> object:
        raise RuntimeError("a bug, not an LLM error")


class _Echo:
    supports_tools = False

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, messages: list[dict[str, str]], tools: object, user: str) -> object:
        from bot.clients.llm import Completion

        self.calls += 1
        return Completion(text="Echo: " + messages[-1]["content"])
