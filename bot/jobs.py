"""Durable outbound jobs (Zendesk, Regal, ...): written by turns and agent actions, run here.

A job is written atomically with the change that caused it (apply.lua), so it is never lost and
never runs for a change that did not happen. Each partition's job stream has one reader at a
time; a conversation's jobs run in order, different conversations' jobs run concurrently. Every
job has bounded retries (429 waits for Retry-After) and ends done or dead-lettered with a reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from bot.clients.http import with_retries
from bot.errors import OutboundError
from bot.logs import event, mask_id
from bot.metrics import Metrics
from bot.partitions import PartitionLeases
from bot.store.streams import Entry, Streams

log = logging.getLogger("bot.jobs")


class Job(BaseModel):
    kind: str
    conv: str
    key: str
    payload: dict[str, Any] = Field(default_factory=dict)


JobHandler = Callable[[Job], Awaitable[None]]


class JobRunner:
    def __init__(
        self,
        streams: Streams,
        metrics: Metrics,
        owner: str,
        partitions: int,
        handlers: dict[str, JobHandler],
        *,
        attempts: int = 5,
        max_wait_s: float = 30.0,
    ) -> None:
        self._streams = streams
        self._metrics = metrics
        self._leases = PartitionLeases(streams, "jobs", owner, partitions)
        self._handlers = handlers
        self._attempts = attempts
        self._max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(32)
        # Stream ids repeat across partitions: an entry is known by (partition, stream id).
        self._running: set[tuple[int, str]] = set()
        self._reclaimed: list[Entry] = []

    async def run(self, stop: asyncio.Event) -> None:
        await self._leases.ensure_groups()
        try:
            while not stop.is_set():
                gained, _ = await self._leases.refresh()
                for part in gained:
                    # Jobs a previous reader took but never finished: run again (they are idempotent).
                    stale = await self._streams.read(
                        {part: self._leases.stream(part)}, count=10_000, block_ms=None, pending=True
                    )
                    if stale:
                        self._metrics.recovered.labels("job").inc(len(stale))
                        await self._run_batch(stale)
                if self._reclaimed:
                    again, self._reclaimed = self._reclaimed, []
                    await self._run_batch(again)
                fresh = await self._streams.read(self._leases.streams_owned(), count=200, block_ms=50)
                if fresh:
                    await self._run_batch(fresh)
                elif not self._leases.owned or self._streams.cluster:
                    await asyncio.sleep(0.05)
        finally:
            await self._leases.release_all()

    # What the recovery sweep (bot/sweep.py) needs to hand back jobs this runner lost track of
    # (read, then a Redis error before they were settled); they run again at the top of the loop.
    reader_kind = "jobs"

    def owned_streams(self) -> dict[int, str]:
        return self._leases.streams_owned()

    def unheld(self, entries: list[Entry]) -> list[Entry]:
        queued = {(e.partition, e.stream_id) for e in self._reclaimed}
        return [
            e for e in entries
            if (e.partition, e.stream_id) not in self._running and (e.partition, e.stream_id) not in queued
        ]

    async def reclaim(self, part: int, entries: list[Entry]) -> None:
        self._reclaimed += entries

    async def _run_batch(self, entries: list[Entry]) -> None:
        by_conv: dict[str, list[Entry]] = {}
        for entry in entries:
            by_conv.setdefault(str(entry.payload.get("conv", "")), []).append(entry)
        ids = {(e.partition, e.stream_id) for e in entries}
        self._running |= ids
        try:
            await asyncio.gather(*(self._run_in_order(group) for group in by_conv.values()))
        finally:
            self._running -= ids

    async def _run_in_order(self, group: list[Entry]) -> None:
        async with self._slots:
            for entry in group:
                await self._run_one(entry)

    async def _run_one(self, entry: Entry) -> None:
        reason = ""
        try:
            job = Job.model_validate(entry.payload)
        except ValidationError:
            reason = "malformed"
        else:
            handler = self._handlers.get(job.kind)
            if handler is None:
                reason = f"unknown_kind:{job.kind}"
            else:
                try:
                    await with_retries(
                        lambda: handler(job), attempts=self._attempts, max_wait_s=self._max_wait_s
                    )
                    self._metrics.outbound.labels(job.kind.split(".")[0], job.kind, "done").inc()
                except OutboundError as exc:
                    reason = f"{exc.service}_{exc.status}" if exc.status else f"{exc.service}_unreachable"
                except Exception as exc:
                    reason = f"error:{type(exc).__name__}"
        stream = {entry.partition: self._leases.stream(entry.partition)}
        if reason:
            await self._streams.dead_letter("job", entry, reason)
            self._metrics.dead_letters.labels("job", reason.split(":")[0]).inc()
            event(
                log,
                "dead_letter",
                logging.WARNING,
                kind="job",
                reason=reason,
                job=entry.payload.get("kind"),
                conv=mask_id(str(entry.payload.get("conv", ""))),
            )
        await self._streams.settle(stream, [entry])
