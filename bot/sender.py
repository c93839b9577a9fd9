"""The Braze sender: outbox rows -> batched `/campaigns/trigger/send` requests.

Each partition's outbox is read by one process at a time (a partition lease), so rows of one
conversation go out in the order they were written: a conversation has at most one row in flight
and its later rows wait for it. Rows of different conversations share requests of up to 50
recipients per campaign; a short linger lets a busy sender fill them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from bot.clients.braze import MAX_RECIPIENTS, BrazeClient, recipient
from bot.clients.http import with_retries
from bot.errors import OutboundError, RateLimited
from bot.logs import event, mask_id
from bot.metrics import Metrics
from bot.models import OutRow
from bot.partitions import PartitionLeases
from bot.settings import Settings
from bot.store.keys import ConvKeys, PartitionKeys
from bot.store.streams import Entry, Streams

log = logging.getLogger("bot.sender")


@dataclass
class Pending:
    entry: Entry
    row: OutRow
    seen_at: float = field(default_factory=time.monotonic)


class BrazeSender:
    def __init__(
        self, streams: Streams, braze: BrazeClient, settings: Settings, metrics: Metrics, owner: str
    ) -> None:
        self._streams = streams
        self._braze = braze
        self._settings = settings
        self._metrics = metrics
        self._leases = PartitionLeases(streams, "outbox", owner, settings.queue_partitions)
        self._pending: deque[Pending] = deque()
        self._busy: set[str] = set()
        # Rows Braze took whose settling failed (Redis was away): settled again, never resent.
        self._unsettled: list[Pending] = []
        self._paused_until = 0.0
        self._slots = asyncio.Semaphore(settings.braze_max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._linger = settings.braze_batch_linger_ms / 1000

    def _outbox(self, part: int) -> str:
        return PartitionKeys(part).outbox

    async def run(self, stop: asyncio.Event) -> None:
        await self._leases.ensure_groups()
        while not stop.is_set():
            try:
                gained, lost = await self._leases.refresh()
                if lost:
                    self._pending = deque(p for p in self._pending if p.entry.partition not in lost)
                for part in gained:
                    await self._recover(part)
                if self._unsettled:
                    await self._settle_unsettled()
                block = 5 if self._pending else 50
                fresh = await self._streams.read(self._leases.streams_owned(), count=500, block_ms=block)
                self._pending.extend(Pending(e, OutRow.model_validate(e.payload)) for e in fresh)
                await self._dispatch(final=False)
                if not fresh and not self._leases.owned:
                    await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep sending after a Redis blip; the rows are still in Redis
                event(log, "sender_error", logging.WARNING, error=type(exc).__name__, detail=str(exc)[:200])
                await asyncio.sleep(0.5)
        await self._drain()

    async def _drain(self) -> None:
        """On shutdown: send what is in hand, wait for requests in flight, give partitions back."""
        with contextlib.suppress(Exception):
            await self._dispatch(final=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._settings.braze_timeout_s + 1)
        with contextlib.suppress(Exception):
            await self._leases.release_all()

    async def _recover(self, part: int) -> None:
        """Rows a previous owner read but never settled: resend, unless a send may have happened."""
        stale = await self._streams.read(
            {part: self._outbox(part)}, count=10_000, block_ms=None, pending=True
        )
        await self.reclaim(part, stale)

    # What the recovery sweep (bot/sweep.py) needs to hand back rows this sender lost track of.
    reader_kind = "outbox"

    def owned_streams(self) -> dict[int, str]:
        return self._leases.streams_owned()

    def unheld(self, entries: list[Entry]) -> list[Entry]:
        """Rows neither waiting here nor of a conversation with a row in flight."""
        # Stream ids repeat across partitions: an entry is known by (partition, stream id).
        waiting = {(p.entry.partition, p.entry.stream_id) for p in [*self._pending, *self._unsettled]}
        return [
            e for e in entries
            if (e.partition, e.stream_id) not in waiting and e.payload.get("conv") not in self._busy
        ]

    async def reclaim(self, part: int, stale: list[Entry]) -> None:
        if not stale:
            return
        in_flight = await self._streams.redis.hmget(
            PartitionKeys(part).outbox_state, [e.stream_id for e in stale]
        )
        for entry, marker in zip(stale, in_flight, strict=True):
            if marker:
                # The previous owner was mid-request: Braze may have delivered it. A blind resend
                # could message the user twice, so an operator decides (dead-letter replay).
                await self._dead(entry, "outcome_unknown")
                self._metrics.recovered.labels("unknown_send").inc()
            else:
                self._pending.append(Pending(entry, OutRow.model_validate(entry.payload)))
                self._metrics.recovered.labels("unsent_row").inc()

    async def _dispatch(self, *, final: bool) -> None:
        if time.time() < self._paused_until and not final:
            return
        now = time.monotonic()
        by_campaign: dict[str, list[Pending]] = {}
        seen: set[str] = set()
        for item in self._pending:
            conv = item.row.conv
            if conv in seen or conv in self._busy:
                seen.add(conv)
                continue
            seen.add(conv)
            by_campaign.setdefault(item.row.campaign_id, []).append(item)
        for campaign, waiting in by_campaign.items():
            queue = list(waiting)
            while queue:
                ripe = final or len(queue) >= MAX_RECIPIENTS or now - queue[0].seen_at >= self._linger
                if not ripe:
                    break
                batch, queue = queue[:MAX_RECIPIENTS], queue[MAX_RECIPIENTS:]
                for item in batch:
                    self._busy.add(item.row.conv)
                    self._pending.remove(item)
                await self._slots.acquire()
                task = asyncio.create_task(self._send(campaign, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, campaign: str, batch: list[Pending]) -> None:
        done: set[str] = set()  # rows settled, dead-lettered, or taken by Braze
        try:
            await self._deliver(campaign, batch, done)
        except Exception as exc:
            # Redis failed around the request (Braze errors end in _deliver). The rows Braze did
            # not take wait their turn again, ahead of their conversations' later rows.
            event(log, "send_batch_error", logging.WARNING, error=type(exc).__name__)
            owned = self._leases.owned
            again = [i for i in batch if i.entry.stream_id not in done and i.entry.partition in owned]
            self._pending.extendleft(reversed(again))
        finally:
            for item in batch:
                self._busy.discard(item.row.conv)
            self._slots.release()

    async def _begin(self, batch: list[Pending], done: set[str]) -> list[Pending]:
        """Drop bot rows overtaken by a human; mark the rest in flight. One round trip.

        Run before every attempt: a human who takes over while a request waits out a 429 or a
        backoff still fences the bot's rows, and a row is marked in flight only while a request
        carrying it may be on the wire (a crash then leaves it `outcome_unknown`, never resent).
        """
        store = self._streams.redis
        now = time.time()
        marks: dict[int, dict[str, str]] = {}
        async with store.pipeline(transaction=False) as pipe:
            for item in batch:
                part = PartitionKeys(item.entry.partition)
                pipe.hmget(ConvKeys(item.row.conv, part).conv, ["epoch", "status", "opted_out"])
                marks.setdefault(item.entry.partition, {})[item.entry.stream_id] = repr(now)
            for index, fields in marks.items():  # one HSET per partition, not per row
                pipe.hset(PartitionKeys(index).outbox_state, mapping=fields)
            answers = await pipe.execute()
        live, stale = [], []
        for item, (epoch, status, opted_out) in zip(batch, answers[: len(batch)], strict=True):
            row = item.row
            overtaken = row.kind == "bot" and (int(epoch or 0) != row.epoch or (status or "bot") != "bot")
            if overtaken or (opted_out == "1" and row.kind != "system"):
                stale.append(item)
                self._metrics.discarded.labels("opted_out" if opted_out == "1" else "human_took_over").inc()
                event(log, "reply_discarded", conv=mask_id(row.conv), row=row.id, kind=row.kind)
            else:
                live.append(item)
        await self._settle(stale)
        done.update(i.entry.stream_id for i in stale)
        return live

    async def _unmark(self, items: list[Pending]) -> None:
        """The attempt failed: no request carries these rows now."""
        ids: dict[int, list[str]] = {}
        for item in items:
            ids.setdefault(item.entry.partition, []).append(item.entry.stream_id)
        async with self._streams.redis.pipeline(transaction=False) as pipe:
            for index, stream_ids in ids.items():
                pipe.hdel(PartitionKeys(index).outbox_state, *stream_ids)
            await pipe.execute()

    async def _deliver(self, campaign: str, batch: list[Pending], done: set[str]) -> None:
        live = batch

        async def attempt() -> None:
            nonlocal live
            live = await self._begin(live, done)
            if not live:
                return
            recipients = [recipient(item.row, self._settings.braze_message_property) for item in live]
            try:
                await self._braze.trigger_send(campaign, recipients)
            except RateLimited as exc:
                self._paused_until = max(self._paused_until, time.time() + exc.retry_after)
                self._metrics.outbound.labels("braze", "trigger_send", "429").inc()
                event(log, "braze_rate_limited", logging.WARNING, wait_s=round(exc.retry_after, 1))
                await self._unmark(live)
                raise
            except OutboundError as exc:
                self._metrics.outbound.labels("braze", "trigger_send", str(exc.status or "error")).inc()
                await self._unmark(live)
                raise
            self._metrics.outbound.labels("braze", "trigger_send", "200").inc()

        started = time.monotonic()
        try:
            await with_retries(
                attempt,
                attempts=self._settings.braze_max_attempts,
                max_wait_s=self._settings.braze_retry_max_wait_s,
            )
        except OutboundError as exc:
            reason = f"braze_{exc.status}" if exc.status else "braze_unreachable"
            for item in live:
                await self._dead(item.entry, reason)
                done.add(item.entry.stream_id)
            return
        if not live:
            return
        self._metrics.recipients_per_request.observe(len(live))
        for item in live:
            self._metrics.messages_sent.labels(item.row.kind).inc()
        sent = {i.entry.stream_id for i in live}
        done |= sent
        self._unsettled += live
        await self._settle(live)
        self._unsettled = [i for i in self._unsettled if i.entry.stream_id not in sent]
        event(
            log,
            "braze_sent",
            recipients=len(live),
            campaign=campaign,
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    async def _settle_unsettled(self) -> None:
        batch, self._unsettled = self._unsettled, []
        try:
            await self._settle(batch)
        except Exception:
            self._unsettled = batch + self._unsettled
            raise

    async def _settle(self, items: list[Pending]) -> None:
        parts = {i.entry.partition for i in items}
        await self._streams.settle(
            {p: self._outbox(p) for p in parts},
            [i.entry for i in items],
            {p: PartitionKeys(p).outbox_state for p in parts},
        )

    async def _dead(self, entry: Entry, reason: str) -> None:
        await self._streams.dead_letter("send", entry, reason)
        await self._streams.settle(
            {entry.partition: self._outbox(entry.partition)},
            [entry],
            {entry.partition: PartitionKeys(entry.partition).outbox_state},
        )
        self._metrics.dead_letters.labels("send", reason).inc()
        event(
            log,
            "dead_letter",
            logging.WARNING,
            kind="send",
            reason=reason,
            conv=mask_id(str(entry.payload.get("conv", ""))),
            row=entry.payload.get("id"),
        )
