"""The /users/track sender: batching, 429s, partial errors, order per user, recovery, pacing."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from typing import Any

import pytest

from bot.store.connection import connect
from bot.store.keys import PartitionKeys
from bot.store.streams import CONSUMER, GROUP
from bot.track import TrackEntry, enqueue
from tests.harness import start_broker

PARTITIONS = 4  # tests/harness.py


def updates(count: int) -> list[TrackEntry]:
    """`count` updates of different users: attributes, events and purchases mixed."""
    made: list[TrackEntry] = []
    for n in range(count):
        user = {"external_id": f"u-{n}"}
        if n % 3 == 0:
            made.append(TrackEntry(type="attributes", obj={**user, "home_city": f"City {n}"}))
        elif n % 3 == 1:
            made.append(
                TrackEntry(type="event", obj={**user, "name": "Seen", "time": "2024-01-01T00:00:00Z"})
            )
        else:
            obj = {**user, "product_id": "p", "currency": "EUR", "price": 1.0, "time": "2024-01-01T00:00:00Z"}
            made.append(TrackEntry(type="purchase", obj=obj))
    return made


async def queue(redis_url: str, entries: list[TrackEntry]) -> None:
    """Queue updates while no broker runs, as turns and webhooks would have."""
    client = connect(redis_url)
    try:
        await enqueue(client, PARTITIONS, entries)
    finally:
        await client.aclose()


def objects(bodies: list[dict[str, Any]]) -> list[str]:
    """Every object Braze received, as canonical JSON."""
    return [
        json.dumps(obj, sort_keys=True)
        for body in bodies
        for array in ("attributes", "events", "purchases")
        for obj in body.get(array) or []
    ]


def track_requests(braze: Any) -> list[dict[str, Any]]:
    return [r for r in braze.requests if r["path"] == "/users/track"]


def size(body: dict[str, Any]) -> int:
    return sum(len(body.get(a) or []) for a in ("attributes", "events", "purchases"))


async def stream_lengths(redis: Any, key: str) -> int:
    return sum([await redis.xlen(getattr(PartitionKeys(p), key)) for p in range(PARTITIONS)])


async def dead_letters(redis: Any) -> list[dict[str, Any]]:
    found = []
    for p in range(PARTITIONS):
        for _, fields in await redis.xrange(PartitionKeys(p).dead):
            found.append({**fields, "payload": json.loads(fields["payload"])})
    return found


async def test_120_queued_updates_go_out_as_3_requests_of_at_most_50(redis_url: str) -> None:
    entries = updates(120)
    await queue(redis_url, entries)
    async with start_broker(redis_url) as broker:
        await broker.wait_for(lambda: len(objects(broker.braze.track_bodies)) >= 120, what="120 objects")
        await broker.settle(0.3)
        sent = track_requests(broker.braze)
        assert len(sent) == 3
        assert sorted(size(r["body"]) for r in sent) == [20, 50, 50]
        # Attributes, events and purchases share requests; each object arrived exactly once.
        assert all(
            len([a for a in ("attributes", "events", "purchases") if r["body"].get(a)]) == 3 for r in sent
        )
        assert Counter(objects(broker.braze.track_bodies)) == Counter(
            json.dumps(e.obj, sort_keys=True) for e in entries
        )
        assert await stream_lengths(broker.runtime.redis, "track") == 0


async def test_a_429_then_200_loses_nothing_and_waits_for_the_reset(redis_url: str) -> None:
    entries = updates(120)
    async with start_broker(redis_url) as broker:
        armed_at = time.time()
        broker.braze.fail_next("/users/track", 429, reset_in_s=1)
        await enqueue(broker.runtime.redis, PARTITIONS, entries)
        await broker.wait_for(
            lambda: len(objects(broker.braze.track_bodies)) >= 120, timeout=15, what="120 objects"
        )
        await broker.settle(0.3)
        sent = track_requests(broker.braze)
        assert sent[0]["status"] == 429
        assert [r["status"] for r in sent[1:]] == [201] * (len(sent) - 1)
        # The refused request was sent again, and not before the X-RateLimit-Reset the 429 named
        # (requests already in flight when the 429 came are not held back).
        again = [r for r in sent[1:] if r["body"] == sent[0]["body"]]
        assert len(again) == 1
        assert again[0]["at"] >= int(armed_at + 1) - 0.01
        assert all(r["at"] >= int(armed_at + 1) - 0.01 for r in sent if r["at"] > again[0]["at"])
        assert Counter(objects(broker.braze.track_bodies)) == Counter(
            json.dumps(e.obj, sort_keys=True) for e in entries
        )
        assert await stream_lengths(broker.runtime.redis, "track") == 0
        assert await dead_letters(broker.runtime.redis) == []


async def test_a_partial_errors_answer_dead_letters_only_the_rejected_objects(redis_url: str) -> None:
    good_attrs = [
        TrackEntry(type="attributes", obj={"external_id": f"u-{n}", "home_city": "Oslo"}) for n in range(4)
    ]
    bad_attr = TrackEntry(type="attributes", obj={"external_id": "u-bad", "dob": "not a date"})
    events = [
        TrackEntry(
            type="event", obj={"external_id": f"e-{n}", "name": "Seen", "time": "2024-01-01T00:00:00Z"}
        )
        for n in range(4)
    ]
    bad_event = TrackEntry(
        type="event", obj={"external_id": "e-bad", "name": "", "time": "2024-01-01T00:00:00Z"}
    )
    entries = [*good_attrs[:2], bad_attr, *good_attrs[2:], *events[:3], bad_event, events[3]]

    def errors(body: dict[str, Any]) -> list[dict[str, Any]]:
        attrs, evs = body.get("attributes") or [], body.get("events") or []
        found = []
        for i, ev in enumerate(evs):
            if not ev["name"]:  # Braze's documented shape: the index counts inside `input_array`
                found.append({"type": "'name' is required", "input_array": "events", "index": i})
        for i, attr in enumerate(attrs):
            if attr.get("dob") == "not a date":  # the shape seen in practice: index over the whole request
                found.append({"type": "Invalid 'dob'", "index": i})
        return found

    async with start_broker(redis_url, braze_track_linger_ms=200) as broker:
        broker.braze.track_errors = errors
        redis = broker.runtime.redis
        await enqueue(redis, PARTITIONS, entries)
        await broker.wait_for(lambda: len(objects(broker.braze.track_bodies)) >= 10, what="the batch")
        deadline = time.monotonic() + 5
        dead: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(dead) < 2:
            await broker.settle(0.05)
            dead = await dead_letters(redis)
        assert sorted(json.dumps(d["payload"]["obj"], sort_keys=True) for d in dead) == sorted(
            json.dumps(e.obj, sort_keys=True) for e in (bad_attr, bad_event)
        )
        assert {d["kind"] for d in dead} == {"track"}
        assert {d["reason"] for d in dead} == {"braze_rejected"}
        await broker.settle(0.3)
        # The accepted ones are settled: nothing is sent again, nothing is left queued.
        assert len(track_requests(broker.braze)) == 1
        assert await stream_lengths(redis, "track") == 0


async def test_one_users_attribute_updates_keep_their_order_across_requests(redis_url: str) -> None:
    group = "sg-whatsapp"
    flips = [
        TrackEntry(
            type="attributes",
            obj={
                "external_id": "u-1",
                "subscription_groups": [{"subscription_group_id": group, "subscription_state": state}],
            },
        )
        for state in ("unsubscribed", "subscribed", "unsubscribed", "subscribed")
    ]
    await queue(redis_url, [*flips, *updates(20)])
    async with start_broker(redis_url) as broker:
        await broker.wait_for(lambda: len(objects(broker.braze.track_bodies)) >= 24, what="all updates")
        states = [
            attr["subscription_groups"][0]["subscription_state"]
            for body in broker.braze.track_bodies
            for attr in body.get("attributes") or []
            if attr["external_id"] == "u-1"
        ]
        assert states == ["unsubscribed", "subscribed", "unsubscribed", "subscribed"]
        # Never two of u-1's attribute objects in one request.
        for body in broker.braze.track_bodies:
            assert len([a for a in body.get("attributes") or [] if a["external_id"] == "u-1"]) <= 1


async def test_updates_a_dead_reader_took_but_never_settled_are_sent_after_a_restart(redis_url: str) -> None:
    entries = updates(30)
    await queue(redis_url, entries)
    client = connect(redis_url)
    try:
        # A previous process read everything (so it sits in the group's pending list) and died.
        taken = 0
        for p in range(PARTITIONS):
            stream = PartitionKeys(p).track
            await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            answer = await client.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=1000)
            taken += sum(len(rows) for _, rows in answer or [])
        assert taken == 30
    finally:
        await client.aclose()
    async with start_broker(redis_url) as broker:
        await broker.wait_for(
            lambda: len(objects(broker.braze.track_bodies)) >= 30, what="the recovered updates"
        )
        assert Counter(objects(broker.braze.track_bodies)) == Counter(
            json.dumps(e.obj, sort_keys=True) for e in entries
        )
        await broker.settle(0.2)
        assert await stream_lengths(broker.runtime.redis, "track") == 0


async def test_requests_are_paced_to_the_configured_rate(redis_url: str) -> None:
    await queue(redis_url, updates(150))
    # 6 requests per 3 s: a burst of one, then one every 0.6 s.
    async with start_broker(redis_url, braze_track_rate=6) as broker:
        await broker.wait_for(lambda: len(objects(broker.braze.track_bodies)) >= 150, what="150 objects")
        times = [r["at"] for r in track_requests(broker.braze)]
        assert len(times) == 3
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= 0.5 for gap in gaps), gaps


async def test_a_shutdown_in_the_middle_of_a_request_loses_nothing(redis_url: str) -> None:
    entries = updates(60)
    async with start_broker(redis_url, braze_timeout_s=0.5) as first:
        # Braze hangs past the request timeout and the shutdown's grace: the requests are in flight
        # (their outcome unknown to the broker) when the process stops.
        first.braze.delay_s = 3
        await enqueue(first.runtime.redis, PARTITIONS, entries)
        await first.wait_for(lambda: len(track_requests(first.braze)) >= 1, what="a request in flight")
    async with start_broker(redis_url) as second:
        await second.wait_for(lambda: len(objects(second.braze.track_bodies)) >= 60, what="the updates")
        assert set(objects(second.braze.track_bodies)) == {json.dumps(e.obj, sort_keys=True) for e in entries}
        await second.settle(0.2)
        assert await stream_lengths(second.runtime.redis, "track") == 0
        assert await dead_letters(second.runtime.redis) == []


async def test_a_rejected_objects_log_line_names_no_phone_or_email(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    alias = {"user_alias": {"alias_name": "+15550001111", "alias_label": "phone"}}
    entries = [
        TrackEntry(
            type="attributes", obj={**alias, "email": "jo@example.com", "_update_existing_only": False}
        ),
        TrackEntry(
            type="event", obj={"email": "jo@example.com", "name": "X", "time": "2024-01-01T00:00:00Z"}
        ),
    ]
    caplog.set_level(logging.INFO)
    async with start_broker(redis_url) as broker:
        broker.braze.track_errors = lambda body: [
            {"type": "rejected", "index": 0},
            {"type": "rejected", "index": 1},
        ]
        await enqueue(broker.runtime.redis, PARTITIONS, entries)
        for _ in range(200):
            if len(await dead_letters(broker.runtime.redis)) == 2:
                break
            await broker.settle(0.02)
        assert len(await dead_letters(broker.runtime.redis)) == 2
    lines = [r.getMessage() for r in caplog.records if "dead_letter" in r.getMessage()]
    assert len(lines) == 2
    assert "+1555***1111" in " ".join(lines)
    assert "+15550001111" not in caplog.text and "jo@example.com" not in caplog.text
