"""The recovery sweep: finds work that fell through the cracks and puts it back on its way.

The hot paths already recover what they can see: an expired lease makes its conversation
claimable again (the ready set's score is a visibility timeout), and a reader that gains a
partition re-reads what the previous reader left unsettled. What they cannot see:

(a) an inbox with messages whose conversation is missing from the ready set (a Redis restart from
    an append-only file that lost its last writes could split them): nobody would ever claim it;
(b) stream entries a reader took (so they sit in the consumer group's pending list) and then lost
    track of without losing its partition (a Redis error between reading and settling): nobody
    would ever look at them again;
(c) in-flight markers of outbox rows that no longer exist: harmless, but they grow without bound.

(a) and (c) are checked by one process at a time (a lease); (b) by each process for the partitions
its own readers hold, since only the reader knows what it still has in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Protocol

from bot.logs import event, mask_id
from bot.metrics import Metrics
from bot.store.conversations import REDIS_DOWN, _lua
from bot.store.keys import PartitionKeys
from bot.store.streams import GROUP, Entry, Streams

log = logging.getLogger("bot.sweep")

SCAN_COUNT = 1000
BATCH = 500


class Reclaimer(Protocol):
    """A stream reader whose forgotten entries the sweep can hand back (BrazeSender, JobRunner)."""

    @property
    def reader_kind(self) -> str: ...

    def owned_streams(self) -> dict[int, str]: ...

    def unheld(self, entries: list[Entry]) -> list[Entry]: ...

    async def reclaim(self, part: int, entries: list[Entry]) -> None: ...


def inbox_conv(key: str) -> tuple[int, str] | None:
    """`inbox:{p3}:u-1` -> (3, "u-1")."""
    prefix, _, rest = key.partition(":{p")
    index, sep, conv = rest.partition("}:")
    if prefix != "inbox" or not sep or not index.isdigit() or not conv:
        return None
    return int(index), conv


class Sweep:
    def __init__(
        self,
        streams: Streams,
        metrics: Metrics,
        owner: str,
        *,
        interval_s: float,
        stuck_after_s: float,
        readers: list[Reclaimer] | None = None,
    ) -> None:
        self._streams = streams
        self._redis: Any = streams.redis
        self._metrics = metrics
        self._owner = owner
        self._interval_s = interval_s
        self._stuck_after_ms = int(stuck_after_s * 1000)
        self._readers = readers or []
        self._requeue = self._redis.register_script(_lua("sweep_ready"))
        self._unmark = self._redis.register_script(_lua("sweep_marker"))
        self._lease = PartitionKeys(0).consumer_lease("sweep")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
            if stop.is_set():
                break
            try:
                await self.once()
            except REDIS_DOWN as exc:
                event(log, "sweep_failed", logging.WARNING, error=type(exc).__name__)

    async def once(self) -> dict[str, int]:
        """One pass; what was recovered, by kind (also counted in `broker_recovered_total`)."""
        found: dict[str, int] = {}
        for reader in self._readers:
            found[f"stuck_{reader.reader_kind}"] = await self.forgotten(reader)
        ttl_ms = int(max(self._interval_s * 3, 10) * 1000)
        if await self._streams.own(self._lease, self._owner, ttl_ms):
            found["ready_missing"] = await self.unready_inboxes()
            found["orphan_marker"] = await self.orphan_markers()
        if any(found.values()):
            event(log, "sweep", **{k: v for k, v in found.items() if v})
        return found

    # (a) ------------------------------------------------------------------------------------------
    async def _inbox_keys(self) -> Any:
        kwargs: dict[str, Any] = {"match": "inbox:{p*}:*", "count": SCAN_COUNT, "_type": "list"}
        if self._streams.cluster:
            # SCAN is per node: visit every master (redis-py keeps a cursor per node).
            kwargs["target_nodes"] = self._redis.PRIMARIES
        async for key in self._redis.scan_iter(**kwargs):
            yield key

    async def unready_inboxes(self) -> int:
        recovered = 0
        batch: list[str] = []
        async for key in self._inbox_keys():
            batch.append(key)
            if len(batch) >= BATCH:
                recovered += await self._check_inboxes(batch)
                batch = []
        if batch:
            recovered += await self._check_inboxes(batch)
        return recovered

    async def _check_inboxes(self, keys: list[str]) -> int:
        parsed = [(key, inbox_conv(key)) for key in keys]
        named = [(key, pc) for key, pc in parsed if pc is not None and pc[0] < self._streams.partitions]
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, (part, conv) in named:
                pipe.zscore(PartitionKeys(part).ready, conv)
            scores = await pipe.execute()
        recovered = 0
        now_ms = int(time.time() * 1000)
        for (key, (part, conv)), score in zip(named, scores, strict=True):
            if score is not None:
                continue
            # Checked again atomically: a turn may have emptied the inbox since the pipeline ran.
            if await self._requeue(keys=[key, PartitionKeys(part).ready], args=[conv, now_ms]):
                recovered += 1
                self._metrics.recovered.labels("ready_missing").inc()
                event(log, "inbox_requeued", logging.WARNING, conv=mask_id(conv), partition=part)
        return recovered

    # (b) ------------------------------------------------------------------------------------------
    async def forgotten(self, reader: Reclaimer) -> int:
        """Entries `reader` took from its partitions, left unsettled for long, and no longer holds."""
        recovered = 0
        for part, stream in reader.owned_streams().items():
            rows = await self._redis.xpending_range(
                stream, GROUP, min="-", max="+", count=BATCH, idle=self._stuck_after_ms
            )
            ids = [str(row["message_id"]) for row in rows]
            if not ids:
                continue
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream_id in ids:
                    pipe.xrange(stream, stream_id, stream_id)
                found = await pipe.execute()
            taken, vanished = [], []
            for stream_id, rows_of in zip(ids, found, strict=True):
                fields = rows_of[0][1] if rows_of else None
                if not fields or "r" not in fields:
                    vanished.append(stream_id)
                    continue
                taken.append(Entry(part, stream_id, json.loads(fields["r"])))
            entries = reader.unheld(taken)
            if vanished:
                # Pending ids whose entry is gone: nothing to redo, only the group's memory to clear.
                await self._redis.xack(stream, GROUP, *vanished)
            if entries:
                await reader.reclaim(part, entries)
                recovered += len(entries)
                self._metrics.recovered.labels(f"stuck_{reader.reader_kind}").inc(len(entries))
                event(
                    log,
                    "stuck_entries_reclaimed",
                    logging.WARNING,
                    stream=reader.reader_kind,
                    partition=part,
                    entries=len(entries),
                )
        return recovered

    # (c) ------------------------------------------------------------------------------------------
    async def orphan_markers(self) -> int:
        cleared = 0
        for part in range(self._streams.partitions):
            keys = PartitionKeys(part)
            cursor = 0
            while True:
                cursor, marks = await self._redis.hscan(keys.outbox_state, cursor, count=SCAN_COUNT)
                ids = list(marks)
                if ids:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for stream_id in ids:
                            pipe.xrange(keys.outbox, stream_id, stream_id)
                        found = await pipe.execute()
                    for stream_id, rows in zip(ids, found, strict=True):
                        if rows:
                            continue
                        if await self._unmark(keys=[keys.outbox_state, keys.outbox], args=[stream_id]):
                            cleared += 1
                            self._metrics.recovered.labels("orphan_marker").inc()
                if not cursor:
                    break
        return cleared
