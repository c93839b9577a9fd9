"""The recovery sweep: inboxes missing from the ready set, entries a reader lost, orphan markers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.deadletters import DeadLetters
from bot.jobs import Job
from bot.models import InboxEntry, OutRow
from bot.store.keys import ConvKeys, PartitionKeys
from bot.store.streams import GROUP
from tests.harness import REPLY_CAMPAIGN, Broker, counter_value, start_broker

FAST: dict[str, Any] = {"sweep_interval_s": 0.1, "sweep_stuck_after_s": 0.3}


@pytest.fixture
async def swept(redis_url: str) -> AsyncIterator[Broker]:
    async with start_broker(redis_url, **FAST) as b:
        await readers_ready(b)
        yield b


async def readers_ready(broker: Broker) -> None:
    """Wait until this broker's sender and job runner hold every partition (they take a moment)."""
    parts = range(broker.settings.queue_partitions)
    leases = [PartitionKeys(p).consumer_lease(kind) for p in parts for kind in ("outbox", "jobs")]
    deadline = time.monotonic() + 10
    while await broker.runtime.redis.exists(*leases) < len(leases):
        assert time.monotonic() < deadline, "readers never took their partitions"
        await asyncio.sleep(0.02)


def recovered(broker: Broker, kind: str) -> float:
    return counter_value(broker.runtime.metrics.recovered, kind=kind)


async def forget(broker: Broker, stream: str, payload: dict[str, Any]) -> str:
    """Add an entry and read it into the consumer group in one transaction, as a reader that then
    lost track of it would have (no live reader can take it in between)."""
    answer = await broker.runtime.redis.eval(
        "local id = redis.call('XADD', KEYS[1], '*', 'r', ARGV[1]) "
        "redis.call('XREADGROUP', 'GROUP', ARGV[2], 'owner', 'COUNT', 1, 'STREAMS', KEYS[1], '>') "
        "return id",
        1,
        stream,
        json.dumps(payload),
        GROUP,
    )
    return str(answer)


def row(conv: str, text: str) -> dict[str, Any]:
    return OutRow(
        id=uuid.uuid4().hex, conv=conv, user_id=conv, campaign_id=REPLY_CAMPAIGN, text=text, kind="agent"
    ).model_dump()


async def test_inbox_missing_from_ready_set_is_requeued_and_answered(swept: Broker) -> None:
    keys = ConvKeys.of("u-lost", swept.settings.queue_partitions)
    entry = InboxEntry(id="m1", text="are you there", at=time.time(), user_id="u-lost")
    # what a Redis restart from a truncated append-only file could leave: the message, no ready entry
    await swept.runtime.redis.rpush(keys.inbox, entry.model_dump_json())
    assert await swept.replies("u-lost") == ["Echo: are you there"]
    assert recovered(swept, "ready_missing") == 1
    await swept.settle()
    assert swept.braze.messages_for("u-lost") == ["Echo: are you there"]


async def test_outbox_row_a_sender_lost_track_of_is_sent_once(swept: Broker) -> None:
    part = ConvKeys.of("u-forgot", swept.settings.queue_partitions).part
    await forget(swept, part.outbox, row("u-forgot", "your parcel left"))
    assert await swept.replies("u-forgot") == ["your parcel left"]
    # Handed back once: by the sweep, or by a sender that had only just taken the partition.
    assert recovered(swept, "unsent_row") == 1
    await swept.settle(0.8)
    assert swept.braze.messages_for("u-forgot") == ["your parcel left"]


async def test_lost_row_that_was_mid_request_is_dead_lettered_not_resent(swept: Broker) -> None:
    part = ConvKeys.of("u-unknown", swept.settings.queue_partitions).part
    stream_id = await forget(swept, part.outbox, row("u-unknown", "maybe delivered"))
    await swept.runtime.redis.hset(part.outbox_state, stream_id, repr(time.time()))
    dead = DeadLetters(swept.runtime.redis, swept.settings.queue_partitions)
    await swept.wait_for(lambda: recovered(swept, "unknown_send") == 1)
    [letter] = await dead.find()
    assert letter.reason == "outcome_unknown" and letter.payload["text"] == "maybe delivered"
    await swept.settle()
    assert swept.braze.messages_for("u-unknown") == []
    assert not await swept.runtime.redis.hexists(part.outbox_state, stream_id)


async def test_job_a_runner_lost_track_of_runs_again(swept: Broker) -> None:
    runs: list[str] = []

    async def handler(job: Job) -> None:
        runs.append(job.key)

    swept.runtime.job_handlers["test.once"] = handler
    part = ConvKeys.of("u-job", swept.settings.queue_partitions).part
    await forget(swept, part.jobs, {"kind": "test.once", "conv": "u-job", "key": "k-9", "payload": {}})
    await swept.wait_for(lambda: runs == ["k-9"])
    # Taken back by the sweep, or (when the runner had only just taken the partition, as on a
    # slow cluster run) by the runner's own look at entries read before it came: once either way.
    assert recovered(swept, "stuck_jobs") + recovered(swept, "job") == 1
    await swept.settle(0.8)
    assert runs == ["k-9"]
    assert await swept.runtime.redis.xlen(part.jobs) == 0


async def test_orphan_in_flight_marker_is_cleared(swept: Broker) -> None:
    part = PartitionKeys(1)
    await swept.runtime.redis.hset(part.outbox_state, "1-0", repr(time.time()))
    await swept.wait_for(lambda: recovered(swept, "orphan_marker") == 1)
    assert not await swept.runtime.redis.hexists(part.outbox_state, "1-0")


async def test_rows_waiting_out_a_rate_limit_are_not_reclaimed(swept: Broker) -> None:
    """Rows the sender still holds (waiting for X-RateLimit-Reset) stay with it: one delivery each."""
    swept.braze.fail_next("/campaigns/trigger/send", 429, reset_in_s=1.5)
    users = [f"u-rl-{i}" for i in range(5)]
    for user in users:
        assert (await swept.say(f"hello {user}", user_id=user))[0] == 202
    for user in users:
        assert await swept.replies(user, timeout=15) == [f"Echo: hello {user}"]
    await swept.settle(0.8)
    assert all(swept.braze.messages_for(u) == [f"Echo: hello {u}"] for u in users)
    assert recovered(swept, "stuck_outbox") == 0 and recovered(swept, "unknown_send") == 0
    assert await DeadLetters(swept.runtime.redis, swept.settings.queue_partitions).total() == 0
