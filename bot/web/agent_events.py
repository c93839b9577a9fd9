"""`GET /agent/events`: live updates for agents as Server-Sent Events.

apply.lua publishes a note on the Redis channel `agent-events` atomically with each change it
describes (`waiting`, `message`, `status`, `ticket`). One subscriber per process (`EventHub`) fans
the notes out to every connected agent; a slow client loses its oldest notes and is told to
`resync` (reload its lists) rather than holding memory or the other clients back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bot.logs import event

log = logging.getLogger("bot.web.agent_events")

CHANNEL = "agent-events"
KEEPALIVE_S = 15.0
QUEUE_LIMIT = 500
HUB: web.AppKey[EventHub] = web.AppKey("agent_event_hub")


class EventHub:
    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None
        self.closing = asyncio.Event()
        self._subscribed = asyncio.Event()

    @property
    def listeners(self) -> int:
        return len(self._queues)

    async def start(self, ready_timeout_s: float = 5.0) -> None:
        self._task = asyncio.create_task(self._pump(), name="agent_events")
        # Agents connecting right after start-up must not miss the first notes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), ready_timeout_s)

    async def close(self) -> None:
        self.closing.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    def _fan_out(self, note: dict[str, Any]) -> None:
        for queue in self._queues:
            if queue.full():
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"type": "resync", "why": "slow_client"})
                continue
            queue.put_nowait(note)

    async def _pump(self) -> None:
        backoff = 0.2
        while not self.closing.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                if self._subscribed.is_set():
                    # Notes published while we were away are lost: views must reload.
                    self._fan_out({"type": "resync", "why": "reconnected"})
                self._subscribed.set()
                backoff = 0.2
                while not self.closing.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        note = json.loads(message["data"])
                    except (TypeError, ValueError):
                        continue
                    if isinstance(note, dict):
                        self._fan_out(note)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event(log, "agent_events_disconnected", logging.WARNING, error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream(request: web.Request, agent: str) -> web.StreamResponse:
    """The event stream for one agent; ends when the client goes away or the app shuts down."""
    hub = request.app[HUB]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue = hub.subscribe()
    event(log, "agent_events_connected", agent=agent, listeners=hub.listeners)
    try:
        await response.write(b"retry: 3000\n\n" + sse("hello", {"agent": agent}))
        async for note in _notes(queue, hub.closing):
            if note is None:
                await response.write(b": keep-alive\n\n")
            else:
                await response.write(sse(str(note.get("type", "note")), note))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(queue)
        event(log, "agent_events_closed", agent=agent, listeners=hub.listeners)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write_eof()
    return response


async def _notes(
    queue: asyncio.Queue[dict[str, Any]], closing: asyncio.Event
) -> AsyncIterator[dict[str, Any] | None]:
    """Notes as they come, None when a keep-alive is due; stops when the hub closes."""
    closed = asyncio.create_task(closing.wait())
    try:
        while not closing.is_set():
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, closed}, timeout=KEEPALIVE_S, return_when="FIRST_COMPLETED")
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            if closed in done:
                return
            yield None
    finally:
        closed.cancel()


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: one subscriber per process, started after the runtime and closed before it."""
    from bot.appkeys import RUNTIME

    hub = EventHub(app[RUNTIME].redis)
    await hub.start()
    app[HUB] = hub
    try:
        yield
    finally:
        await hub.close()


async def close_streams(app: web.Application) -> None:
    """on_shutdown: end open event streams so shutdown does not wait for clients to hang up."""
    if HUB in app:
        app[HUB].closing.set()
