"""Abuse and cost limits: message rate, model-call cap, daily token budget, per-turn size caps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.models import HistoryItem
from prompts import load_prompts
from tests.harness import Broker, counter_value, start_broker

TEXTS = load_prompts()
SLOW_DOWN = TEXTS.text("slow_down")


async def drained(broker: Broker, timeout: float = 30.0) -> None:
    """Every accepted message had its turn and every reply left the outbox."""
    rt = broker.runtime
    deadline = time.monotonic() + timeout
    while await rt.store.queue_depth() or await rt.streams.depth("outbox"):
        assert time.monotonic() < deadline, "the pipeline did not drain"
        await asyncio.sleep(0.05)


def limited(broker: Broker, kind: str) -> float:
    return counter_value(broker.runtime.metrics.limited, kind=kind)


async def flood(broker: Broker, user: str, count: int) -> list[str]:
    texts = [f"flood message {i:03d}" for i in range(count)]
    for text in texts:
        assert (await broker.say(text, user_id=user))[0] == 202
    return texts


@pytest.fixture
async def flooded(redis_url: str) -> AsyncIterator[Broker]:
    async with start_broker(redis_url, history_keep=500) as b:
        b.llm.latency_s = 0.05
        yield b


async def test_a_flood_of_200_costs_at_most_the_configured_llm_calls(flooded: Broker) -> None:
    settings = flooded.settings
    texts = await flood(flooded, "u-flood", 200)
    await drained(flooded)
    await flooded.settle(0.3)

    assert 0 < len(flooded.llm.requests) <= settings.rate_limit_llm_calls
    # only the window's first messages ever reach the model
    admitted = set(texts[: settings.rate_limit_messages])
    seen = {m for i in range(len(flooded.llm.requests)) for m in flooded.llm.user_messages(i)}
    assert seen <= admitted
    got = flooded.braze.messages_for("u-flood")
    assert got.count(SLOW_DOWN) == 1
    assert all(t == SLOW_DOWN or t.startswith("Echo: ") for t in got)
    # every message is kept in the history, answered or not
    history = await flooded.runtime.store.history("u-flood")
    assert [h.text for h in history if h.role == "user"] == texts
    assert limited(flooded, "rate_limited_message") == 200 - settings.rate_limit_messages


async def test_model_call_cap_holds_even_when_every_turn_is_recomputed(redis_url: str) -> None:
    async with start_broker(redis_url, rate_limit_messages=10_000, rate_limit_llm_calls=5) as b:
        b.llm.latency_s = 0.05
        await flood(b, "u-cap", 120)
        await drained(b)
        await b.settle(0.3)
        assert len(b.llm.requests) == 5
        assert b.braze.messages_for("u-cap").count(SLOW_DOWN) == 1
        assert limited(b, "llm_call_cap") >= 1


async def test_rate_window_resets_and_the_notice_comes_once_per_window(redis_url: str) -> None:
    async with start_broker(redis_url, rate_limit_messages=2, rate_limit_window_s=1.0) as b:
        for text in ("one", "two"):
            await b.say(text, user_id="u-win")
            await b.replies("u-win", count=1 if text == "one" else 2)
        for text in ("three", "four", "five"):
            await b.say(text, user_id="u-win")
        await drained(b)
        await b.settle(0.2)
        assert b.braze.messages_for("u-win") == ["Echo: one", "Echo: two", SLOW_DOWN]
        await asyncio.sleep(1.0)
        await b.say("six", user_id="u-win")
        assert (await b.replies("u-win", count=4))[-1] == "Echo: six"


async def test_daily_token_budget_hands_off(redis_url: str) -> None:
    # the fake model reports 15 tokens per call
    async with start_broker(redis_url, llm_daily_token_budget=20) as b:
        await b.say("first", user_id="u-budget")
        await b.replies("u-budget", 1)
        await b.say("second", user_id="u-budget")
        await b.replies("u-budget", 2)
        await b.say("third", user_id="u-budget")
        got = await b.replies("u-budget", 3)
        assert got[2] == TEXTS.text("handoff")
        assert len(b.llm.requests) == 2
        state = await b.runtime.store.state("u-budget")
        assert state is not None and state.status == "waiting"
        assert limited(b, "token_budget") == 1


async def test_daily_token_budget_can_answer_from_the_faq(redis_url: str) -> None:
    async with start_broker(redis_url, llm_daily_token_budget=10, budget_exhausted="faq") as b:
        await b.say("hello", user_id="u-faq")
        await b.replies("u-faq", 1)
        await b.say("what are your opening hours?", user_id="u-faq")
        got = await b.replies("u-faq", 2)
        assert len(b.llm.requests) == 1
        hours = next(e for e in TEXTS.faq if "hour" in e.question.lower())
        assert got[1] == hours.answer
        state = await b.runtime.store.state("u-faq")
        assert state is not None and state.status == "bot"


async def test_every_call_carries_max_tokens_and_a_capped_history(redis_url: str) -> None:
    async with start_broker(
        redis_url,
        llm_max_tokens=123,
        history_max_messages=6,
        history_max_chars=3000,
        llm_max_message_chars=500,
    ) as b:
        store = b.runtime.store
        keys = store.keys("u-long")
        old = [
            HistoryItem(role="user" if i % 2 else "bot", text=f"old {i} " + "x" * 300, at=i)
            for i in range(80)
        ]
        await b.runtime.redis.rpush(keys.history, *(h.model_dump_json() for h in old))
        huge = "tell me everything " + "y" * 9000
        await b.say(huge, user_id="u-long")
        await b.replies("u-long")
        body: dict[str, Any] = b.llm.requests[-1]
        assert body["max_tokens"] == 123
        messages = body["messages"]
        assert messages[0]["role"] == "system"
        assert len(messages) - 1 <= 6 + 1
        assert sum(len(m["content"]) for m in messages[1:]) <= 3000
        assert messages[-1]["content"] == huge[:500]
        # the history keeps what the user wrote, in full
        assert (await store.history("u-long"))[-2].text == huge
