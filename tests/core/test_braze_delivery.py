"""Replies through Braze: rate limits, retries, permanent failures, and Redis outages."""

from __future__ import annotations

import asyncio
import json

import redis as sync_redis

from bot.store.connection import EmbeddedRedis
from bot.store.keys import PartitionKeys
from tests.harness import Broker, start_broker

SEND = "/campaigns/trigger/send"


async def dead_letters(broker: Broker) -> list[dict[str, str]]:
    rows = []
    for part in range(broker.settings.queue_partitions):
        for _, fields in await broker.runtime.redis.xrange(PartitionKeys(part).dead):
            rows.append(fields)
    return rows


async def test_429_then_500_then_200_delivers_once_after_the_reset(broker: Broker) -> None:
    broker.braze.fail_next(SEND, 429, reset_in_s=1.0)
    reset_at = int(broker.braze.faults[SEND][0].headers["X-RateLimit-Reset"])
    broker.braze.fail_next(SEND, 500)
    await broker.say("hello")
    assert await broker.replies("u-123", timeout=15) == ["Echo: hello"]
    await broker.settle(0.5)
    attempts = [r for r in broker.braze.requests if r["path"] == SEND]
    assert [r["status"] for r in attempts] == [429, 500, 201]
    assert attempts[1]["at"] >= reset_at - 0.05  # waited for X-RateLimit-Reset
    assert broker.braze.messages_for("u-123") == ["Echo: hello"]
    assert await dead_letters(broker) == []


async def test_400_is_not_retried_and_lands_in_the_dead_letter_stream(broker: Broker) -> None:
    broker.braze.fail_next(SEND, 400)
    await broker.say("hello")
    await broker.wait_for(lambda: any(r["path"] == SEND for r in broker.braze.requests), what="a send")
    for _ in range(100):
        if await dead_letters(broker):
            break
        await asyncio.sleep(0.02)
    await broker.settle(0.5)
    assert [r["status"] for r in broker.braze.requests if r["path"] == SEND] == [400]
    dead = await dead_letters(broker)
    assert len(dead) == 1 and dead[0]["reason"] == "braze_400" and dead[0]["kind"] == "send"
    assert json.loads(dead[0]["payload"])["text"] == "Echo: hello"


async def test_5xx_until_attempts_run_out_is_dead_lettered(redis_url: str) -> None:
    async with start_broker(redis_url, braze_max_attempts=3) as broker:
        broker.braze.fail_next(SEND, 503, times=3)
        await broker.say("hello")
        await broker.wait_for(
            lambda: len([r for r in broker.braze.requests if r["path"] == SEND]) >= 3, what="three attempts"
        )
        for _ in range(100):
            if await dead_letters(broker):
                break
            await asyncio.sleep(0.02)
        assert [d["reason"] for d in await dead_letters(broker)] == ["braze_503"]
        assert broker.braze.messages_for("u-123") == []


async def test_redis_down_gives_503_and_both_recover_without_restart() -> None:
    server = EmbeddedRedis().start()
    port = server.port
    try:
        async with start_broker(server.url) as broker:
            assert (await broker.say("before", message_id="1"))[0] == 202
            await broker.replies("u-123")
            server.stop()
            status, body = await broker.say("during", message_id="2")
            assert status == 503 and body["error"]["code"] == "store_unavailable"
            assert (await broker.get("/readyz"))[0] == 503
            assert (await broker.get("/healthz"))[0] == 200
            server = EmbeddedRedis(None, port).start()
            for _ in range(100):
                if (await broker.get("/readyz"))[0] == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await broker.get("/readyz"))[0] == 200
            assert (await broker.say("after", message_id="3"))[0] == 202
            assert await broker.replies("u-123", 2, timeout=15) == ["Echo: before", "Echo: after"]
    finally:
        server.stop()


async def test_metrics_expose_the_pipeline(broker: Broker) -> None:
    await broker.say("hello")
    await broker.replies("u-123")
    status, text = await broker.get("/metrics")
    assert status == 200
    for name in (
        "broker_inbound_total",
        "broker_turns_total",
        "broker_turn_seconds",
        "broker_llm_seconds",
        "broker_outbound_requests_total",
        "broker_queue_depth",
        "broker_dead_letter_depth",
    ):
        assert name in text
    assert 'broker_inbound_total{result="accepted",source="braze"} 1.0' in text


def test_embedded_redis_keeps_data_across_restarts(tmp_path: object) -> None:
    from pathlib import Path

    data = Path(str(tmp_path)) / "redis"
    with EmbeddedRedis(data) as first:
        client = sync_redis.Redis.from_url(first.url)
        client.set("kept", "yes")
        client.close()
    with EmbeddedRedis(data) as second:
        client = sync_redis.Redis.from_url(second.url)
        assert client.get("kept") == b"yes"
        client.close()
