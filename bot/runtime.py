"""The one place that opens and closes the broker's resources, and runs its background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import SecretStr

from bot.clients.braze import BrazeClient
from bot.clients.llm import OpenAIResponder, Responder
from bot.clients.regal import regal_job_handlers
from bot.faq import FaqResponder
from bot.handoff_sweep import HandoffSweep
from bot.jobs import JobHandler, JobRunner
from bot.limits import Limits, MeteredResponder
from bot.logs import event
from bot.metrics import Metrics
from bot.outbox import OutboxWriter
from bot.sender import BrazeSender
from bot.settings import Settings
from bot.store.connection import connect
from bot.store.conversations import Store
from bot.store.streams import Streams
from bot.sweep import Sweep
from bot.track import TrackSender
from bot.worker import Worker, worker_id
from bot.zendesk_jobs import zendesk_job_handlers
from handlers.context import Services
from handlers.router import handle_turn
from prompts import load_prompts

log = logging.getLogger("bot.runtime")

Loop = Callable[[asyncio.Event], Awaitable[None]]


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    redis: Any
    store: Store
    streams: Streams
    session: aiohttp.ClientSession
    braze: BrazeClient
    services: Services
    owner: str
    loops: list[tuple[str, Loop, bool]] = field(default_factory=list)
    # Outbound job kinds ("zendesk.create_ticket", ...) and what runs them; see bot/jobs.py.
    job_handlers: dict[str, JobHandler] = field(default_factory=dict)

    def add_loop(self, name: str, loop: Loop, *, producer: bool = False) -> None:
        """Background work run next to the workers (senders, sweeps); added before `run_loops`.

        Producers (the turn worker) stop first; the loops that deliver what they produced (senders,
        job runners) stop after them, so a turn that finishes during shutdown is still delivered.
        """
        self.loops.append((name, loop, producer))

    async def run_loops(self, stop: asyncio.Event) -> None:
        stop_producers, stop_rest = asyncio.Event(), asyncio.Event()
        producers = [
            asyncio.create_task(_guarded(name, loop, stop_producers), name=name)
            for name, loop, producer in self.loops if producer
        ]
        rest = [
            asyncio.create_task(_guarded(name, loop, stop_rest), name=name)
            for name, loop, producer in self.loops if not producer
        ]
        try:
            await stop.wait()
            stop_producers.set()
            await asyncio.gather(*producers)
            stop_rest.set()
            await asyncio.gather(*rest)
        finally:
            stop_producers.set()
            stop_rest.set()
            for task in producers + rest:
                task.cancel()
            await asyncio.gather(*producers, *rest, return_exceptions=True)


async def _guarded(name: str, loop: Loop, stop: asyncio.Event) -> None:
    """Run a background loop until `stop`; restart it after an unexpected crash."""
    while not stop.is_set():
        try:
            await loop(stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            event(
                log, "loop_crashed", logging.ERROR, loop=name, error=type(exc).__name__, detail=str(exc)[:200]
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


async def warn_about_redis(client: Any, cluster: bool) -> list[str]:
    """Startup warnings when Redis could lose the broker's data: a policy that evicts keys, or no
    persistence. INFO works where CONFIG is disabled (managed Redis); then only AOF is checked."""
    from redis.exceptions import RedisError

    target: dict[str, Any] = {"target_nodes": client.PRIMARIES} if cluster else {}

    def per_node(answer: Any) -> list[dict[str, Any]]:
        values = list(answer.values()) if isinstance(answer, dict) else []
        return values if values and all(isinstance(v, dict) for v in values) else [answer]

    try:
        memory = per_node(await client.info("memory", **target))
        persistence = per_node(await client.info("persistence", **target))
        try:
            saves: list[dict[str, Any]] | None = per_node(await client.config_get("save", **target))
        except RedisError:
            saves = None
    except (RedisError, OSError) as exc:
        event(log, "redis_config_unchecked", logging.WARNING, error=type(exc).__name__)
        return []
    found: list[str] = []
    for policy in sorted({str(m.get("maxmemory_policy", "noeviction")) for m in memory}):
        if policy.startswith("allkeys-"):
            found.append(
                f"maxmemory-policy {policy} lets Redis evict any key (conversations, inboxes, "
                "queued replies) when memory is full; set noeviction"
            )
        elif policy != "noeviction":
            found.append(
                f"maxmemory-policy {policy} lets Redis evict keys with a TTL (redelivery guards, "
                "leases) when memory is full: duplicate replies become possible; set noeviction"
            )
    aof = all(str(p.get("aof_enabled", 0)) == "1" for p in persistence)
    rdb = saves is not None and all(str(s.get("save", "")).strip() for s in saves)
    if not aof and not rdb:
        found.append(
            "persistence is off (no appendonly, no save): a Redis restart loses every "
            "conversation and queued reply; set appendonly yes"
        )
    for problem in found:
        event(log, "redis_config_risk", logging.WARNING, problem=problem)
    return found


def make_responder(settings: Settings, metrics: Metrics, services_prompts: Any) -> Responder:
    if settings.backend == "openai":
        return OpenAIResponder(settings, metrics)
    return FaqResponder(services_prompts)


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, redis_url: str, *, workers: bool = True, responder: Responder | None = None
) -> AsyncIterator[Runtime]:
    metrics = Metrics()
    client = connect(redis_url)
    store = Store(client, settings.queue_partitions, settings.history_keep)
    await store.prepare()
    if settings.redis_config_check:
        await warn_about_redis(client, store.cluster)
    streams = Streams(client, settings.queue_partitions, store.cluster)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200, ttl_dns_cache=300),
        headers={"User-Agent": "whatsapp-broker/0.1"},
    )
    prompts = load_prompts()
    own_responder = responder is None
    chosen = responder or make_responder(settings, metrics, prompts)
    braze = BrazeClient(
        session,
        settings.braze_rest_endpoint or "http://127.0.0.1:9",
        settings.braze_api_key or SecretStr(""),
        settings.braze_timeout_s,
    )
    limits = Limits(client, settings, metrics)
    metered = MeteredResponder(chosen, limits)
    services = Services(settings, prompts, metered, OutboxWriter(settings), metrics, limits)
    runtime = Runtime(settings, metrics, client, store, streams, session, braze, services, worker_id())
    runtime.job_handlers.update(zendesk_job_handlers(settings, session, store))
    runtime.job_handlers.update(regal_job_handlers(settings, session, store, services))
    if workers:
        worker = Worker(store, services, handle_turn, metrics, settings)
        sender = BrazeSender(streams, braze, settings, metrics, runtime.owner)
        jobs = JobRunner(streams, metrics, runtime.owner, settings.queue_partitions, runtime.job_handlers)
        runtime.add_loop("worker", worker.run, producer=True)
        runtime.add_loop("braze_sender", sender.run)
        runtime.add_loop("jobs", jobs.run)
        track = TrackSender(streams, braze, settings, metrics, runtime.owner)
        runtime.add_loop("braze_track", track.run)
        runtime.add_loop("handoff_sweep", HandoffSweep(store, services).run, producer=True)
        sweep = Sweep(
            streams,
            metrics,
            runtime.owner,
            interval_s=settings.sweep_interval_s,
            stuck_after_s=settings.sweep_stuck_after_s,
            readers=[sender, jobs, track],
        )
        runtime.add_loop("sweep", sweep.run)
    try:
        yield runtime
    finally:
        if own_responder and isinstance(chosen, OpenAIResponder):
            await chosen.close()
        await session.close()
        await client.aclose()
