"""Dead letters: a permanently failed reply is visible and replayable, once, from the CLI and over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.deadletters import DeadLetters, parse_id
from bot.errors import OutboundError
from bot.jobs import Job
from bot.models import InboxEntry
from bot.store.conversations import Mutation
from bot.store.keys import PartitionKeys
from tests.harness import AGENT_TOKEN, Broker, start_broker

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "admin-token-1"
TRIGGER = "/campaigns/trigger/send"


@pytest.fixture
async def ops(redis_url: str) -> AsyncIterator[Broker]:
    async with start_broker(redis_url, admin_api_tokens={ADMIN_TOKEN: "ops"}) as b:
        yield b


async def request(broker: Broker, method: str, path: str, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with broker.http.request(method, broker.url + path, headers=headers) as resp:
        return resp.status, await resp.json()


async def cli(broker: Broker, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "REDIS_URL": broker.settings.redis_url or "",
        "QUEUE_PARTITIONS": str(broker.settings.queue_partitions),
        "PYTHONPATH": str(ROOT),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "dead",
        "--env-file",
        "/nonexistent",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode or 0, out.decode()


async def dead_reply(broker: Broker, user: str, text: str) -> str:
    """Make Braze refuse one reply for good; the id of the resulting dead letter."""
    broker.braze.fail_next(TRIGGER, 400)
    assert (await broker.say(text, user_id=user))[0] == 202
    dead = DeadLetters(broker.runtime.redis, broker.settings.queue_partitions)
    found: list[Any] = []

    async def appeared() -> bool:
        found[:] = await dead.find(kind="send")
        return bool(found)

    deadline = asyncio.get_running_loop().time() + 10
    while not await appeared():
        assert asyncio.get_running_loop().time() < deadline, "no dead letter appeared"
        await asyncio.sleep(0.02)
    return str(found[0].id)


async def test_failed_reply_is_listed_shown_and_replayed_once_over_http(ops: Broker) -> None:
    dead_id = await dead_reply(ops, "u-dl1", "where is my order")
    assert ops.braze.messages_for("u-dl1") == []

    status, body = await request(ops, "GET", "/admin/dead-letters")
    assert status == 200 and body["total"] == 1
    [summary] = body["dead_letters"]
    assert summary["id"] == dead_id and summary["kind"] == "send" and summary["reason"] == "braze_400"
    assert summary["conv"] == "u-dl1" and "payload" not in summary

    status, body = await request(ops, "GET", f"/admin/dead-letters/{dead_id}")
    assert status == 200 and body["dead_letter"]["payload"]["text"] == "Echo: where is my order"

    status, body = await request(ops, "POST", f"/admin/dead-letters/{dead_id}/replay")
    assert status == 200 and body == {"status": "replayed", "id": dead_id}
    assert await ops.replies("u-dl1") == ["Echo: where is my order"]

    status, body = await request(ops, "POST", f"/admin/dead-letters/{dead_id}/replay")
    assert status == 404 and body["error"]["code"] == "not_found"
    await ops.settle()
    assert ops.braze.messages_for("u-dl1") == ["Echo: where is my order"]
    assert (await request(ops, "GET", "/admin/dead-letters"))[1]["total"] == 0
    metrics = (await ops.get("/metrics"))[1]
    assert 'broker_dead_letter_replays_total{kind="send"} 1.0' in metrics
    assert 'broker_dead_letters_total{kind="send",reason="braze_400"} 1.0' in metrics


async def test_cli_lists_replays_once_and_drops(ops: Broker) -> None:
    first = await dead_reply(ops, "u-dl2", "first question")
    code, out = await cli(ops, "list")
    assert code == 0 and first in out and "send:braze_400: 1" in out
    code, out = await cli(ops, "show", first)
    assert code == 0 and json.loads(out)["payload"]["text"] == "Echo: first question"

    code, out = await cli(ops, "replay", first)
    assert code == 0, out
    assert await ops.replies("u-dl2") == ["Echo: first question"]
    code, _ = await cli(ops, "replay", first)
    assert code == 1
    # the HTTP side agrees: the letter is gone
    assert (await request(ops, "POST", f"/admin/dead-letters/{first}/replay"))[0] == 404

    second = await dead_reply(ops, "u-dl3", "second question")
    code, out = await cli(ops, "drop", second)
    assert code == 0 and "dropped" in out
    code, out = await cli(ops, "replay", "--all")
    assert code == 0 and "replayed 0" in out
    await ops.settle()
    assert ops.braze.messages_for("u-dl3") == []
    assert ops.braze.messages_for("u-dl2") == ["Echo: first question"]


async def test_replay_all_over_http_replays_every_partition_once(ops: Broker) -> None:
    users = [f"u-all-{i}" for i in range(6)]
    # one refusal per request; the sender may batch several users into one
    ops.braze.fail_next(TRIGGER, 400, times=len(users))
    for user in users:
        assert (await ops.say(f"hi from {user}", user_id=user))[0] == 202
    dead = DeadLetters(ops.runtime.redis, ops.settings.queue_partitions)
    deadline = asyncio.get_running_loop().time() + 10
    while await dead.total() < len(users):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    ops.braze.faults[TRIGGER].clear()
    partitions = {parse_id(d.id, ops.settings.queue_partitions).partition for d in await dead.find()}  # type: ignore[union-attr]
    assert len(partitions) > 1, "the users should spread over partitions"

    status, body = await request(ops, "POST", "/admin/dead-letters/replay-all")
    assert status == 200 and body["replayed"] == len(users)
    for user in users:
        assert await ops.replies(user) == [f"Echo: hi from {user}"]
    status, body = await request(ops, "POST", "/admin/dead-letters/replay-all")
    assert body["replayed"] == 0
    await ops.settle()
    assert all(len(ops.braze.messages_for(u)) == 1 for u in users)


async def test_failed_job_is_replayed_to_the_job_stream(ops: Broker) -> None:
    runs: list[str] = []
    fail = [True]

    async def flaky(job: Job) -> None:
        runs.append(job.key)
        if fail[0]:
            raise OutboundError("zendesk", "HTTP 422: nope", retryable=False, status=422)

    ops.runtime.job_handlers["test.flaky"] = flaky
    store = ops.runtime.store
    job = {"kind": "test.flaky", "conv": "u-job", "key": "k-1", "payload": {}}
    result = await store.apply(store.keys("u-job"), Mutation(jobs=[job]), now=0.0)
    assert result.ok
    dead = DeadLetters(ops.runtime.redis, ops.settings.queue_partitions)
    await ops.wait_for(lambda: len(runs) == 1)
    deadline = asyncio.get_running_loop().time() + 10
    while not (letters := await dead.find()):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert letters[0].kind == "job" and letters[0].reason == "zendesk_422"
    fail[0] = False
    assert await dead.replay(letters[0].id, by="test") is not None
    await ops.wait_for(lambda: len(runs) == 2)
    assert await dead.replay(letters[0].id, by="test") is None
    await ops.settle()
    assert runs == ["k-1", "k-1"] and await dead.total() == 0


async def test_admin_api_refuses_missing_wrong_and_agent_tokens(ops: Broker) -> None:
    paths = [
        ("GET", "/admin/dead-letters"),
        ("GET", "/admin/dead-letters/0-1-0"),
        ("POST", "/admin/dead-letters/0-1-0/replay"),
        ("POST", "/admin/dead-letters/replay-all"),
        ("DELETE", "/admin/dead-letters/0-1-0"),
    ]
    for method, path in paths:
        for token in (None, "wrong", AGENT_TOKEN):
            status, body = await request(ops, method, path, token)
            assert status == 401 and body["error"]["code"] == "unauthorized", (method, path, token)


async def test_malformed_ids_and_queries(ops: Broker) -> None:
    for bad in ("nope", "99-1-0", "0-abc", "1-2-3-4"):
        assert (await request(ops, "GET", f"/admin/dead-letters/{bad}"))[0] == 404
        assert (await request(ops, "DELETE", f"/admin/dead-letters/{bad}"))[0] == 404
    status, body = await request(ops, "GET", "/admin/dead-letters?limit=0")
    assert status == 422 and "limit" in body["error"]["fields"]
    status, body = await request(ops, "GET", "/admin/dead-letters?kind=other")
    assert status == 422 and body["error"]["code"] == "invalid_fields"


async def test_a_set_aside_burst_is_replayed_into_its_inbox_and_answered_once(ops: Broker) -> None:
    """Kind "inbound": the worker set a burst aside after its turns kept crashing (bot/worker.py)."""
    store = ops.runtime.store
    keys = store.keys("u-crashy")
    entry = InboxEntry(id="m-1", text="does this work now", at=time.time(), user_id="u-crashy")
    await ops.runtime.redis.xadd(
        keys.part.dead,
        {
            "kind": "inbound",
            "reason": "turn_crashed:KeyError",
            "at": repr(time.time()),
            "attempts": 3,
            "payload": json.dumps({"conv": "u-crashy", "entries": [entry.model_dump()]}),
        },
    )
    dead = DeadLetters(ops.runtime.redis, ops.settings.queue_partitions)
    [letter] = await dead.find()
    status, body = await request(ops, "POST", f"/admin/dead-letters/{letter.id}/replay")
    assert status == 200, body
    assert await ops.replies("u-crashy") == ["Echo: does this work now"]
    assert (await request(ops, "POST", f"/admin/dead-letters/{letter.id}/replay"))[0] == 404
    await ops.settle()
    assert ops.braze.messages_for("u-crashy") == ["Echo: does this work now"]


async def test_a_dead_letter_of_an_unknown_kind_is_not_replayable_but_can_be_dropped(ops: Broker) -> None:
    part = PartitionKeys(0)
    await ops.runtime.redis.xadd(
        part.dead, {"kind": "mystery", "reason": "x", "at": "0", "attempts": 0, "payload": "{}"}
    )
    [letter] = await DeadLetters(ops.runtime.redis, ops.settings.queue_partitions).find()
    status, body = await request(ops, "POST", f"/admin/dead-letters/{letter.id}/replay")
    assert status == 409 and body["error"]["code"] == "not_replayable"
    assert (await request(ops, "DELETE", f"/admin/dead-letters/{letter.id}"))[0] == 200
