"""Helpers for the handoff tests: agent API calls, an SSE listener, a broker wired to a fake Zendesk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from bot.sim.session import serve_app
from bot.store.keys import PartitionKeys
from tests.fakes.zendesk import API_TOKEN, EMAIL, WEBHOOK_SECRET, FakeZendesk
from tests.harness import AGENT_TOKEN, Broker, start_broker


def conv_path(conv_id: str, suffix: str = "") -> str:
    return f"/agent/conversations/{quote(conv_id, safe='')}{suffix}"


async def agent_call(
    broker: Broker,
    method: str,
    path: str,
    *,
    token: str | None = AGENT_TOKEN,
    body: Any = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    async with broker.http.request(method, broker.url + path, headers=headers, **kwargs) as resp:
        try:
            return resp.status, await resp.json()
        except (aiohttp.ContentTypeError, ValueError):
            return resp.status, await resp.text()


async def detail(broker: Broker, conv_id: str, token: str = AGENT_TOKEN) -> dict[str, Any]:
    status, body = await agent_call(broker, "GET", conv_path(conv_id), token=token)
    assert status == 200, body
    assert isinstance(body, dict)
    return dict(body)


async def wait_status(broker: Broker, conv_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = await detail(broker, conv_id)
        if last["status"] == status:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"{conv_id} never reached {status}; last seen {last.get('status')}")


async def wait_transcript(broker: Broker, conv_id: str, text: str, timeout: float = 10.0) -> dict[str, Any]:
    """The conversation's detail once `text` is in its transcript."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = await detail(broker, conv_id)
        if any(m["text"] == text for m in view["messages"]):
            return view
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never reached the transcript of {conv_id}")


async def track_events(broker: Broker) -> list[dict[str, Any]]:
    """Braze custom events written for /users/track: still queued, or already received by fake Braze."""
    found: list[dict[str, Any]] = []
    redis = broker.runtime.redis
    for index in range(broker.settings.queue_partitions):
        for _, fields in await redis.xrange(PartitionKeys(index).track):
            item = json.loads(fields["r"])
            if item.get("type") == "event":
                found.append(item["obj"])
    for body in broker.braze.track_bodies:
        found += body.get("events") or []
    # An event Braze already took can still sit in its stream until the sender settles it: one copy.
    unique: dict[str, dict[str, Any]] = {json.dumps(e, sort_keys=True): e for e in found}
    return list(unique.values())


@dataclass
class EventListener:
    """An agent connected to GET /agent/events, collecting every event it receives."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    status: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == kind]

    async def wait_for(
        self, kind: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self.of(kind):
                if predicate(data):
                    return data
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {kind} event within {timeout}s; got {[n for n, _ in self.events]}")


@contextlib.asynccontextmanager
async def listen(
    broker: Broker, *, token: str = AGENT_TOKEN, query: bool = False
) -> AsyncIterator[EventListener]:
    listener = EventListener()
    url = broker.url + "/agent/events"
    headers: dict[str, str] = {}
    if query:
        url += f"?token={quote(token)}"
    else:
        headers["Authorization"] = f"Bearer {token}"

    async def run() -> None:
        async with broker.http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            listener.status = resp.status
            if resp.status != 200:
                listener.connected.set()
                return
            name, data = "message", ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line:
                    if data:
                        listener.events.append((name, json.loads(data)))
                        if name == "hello":
                            listener.connected.set()
                    name, data = "message", ""

    listener.task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(listener.connected.wait(), 5)
        yield listener
    finally:
        listener.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await listener.task


@contextlib.asynccontextmanager
async def broker_with_zendesk(redis_url: str, **overrides: Any) -> AsyncIterator[tuple[Broker, FakeZendesk]]:
    zendesk = FakeZendesk()
    runner, url = await serve_app(zendesk.app)
    try:
        async with start_broker(
            redis_url,
            zendesk_url=url,
            zendesk_email=EMAIL,
            zendesk_api_token=SecretStr(API_TOKEN),
            zendesk_webhook_secret=SecretStr(WEBHOOK_SECRET),
            zendesk_timeout_s=2.0,
            **overrides,
        ) as broker:
            yield broker, zendesk
    finally:
        await runner.cleanup()
