"""Durable work streams per partition (outbox, track, jobs) and their dead letters."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from bot.store.conversations import _lua
from bot.store.keys import PartitionKeys

GROUP = "workers"
# One consumer name for every process: only the holder of a partition's lease reads that stream,
# so whoever holds it next can see (and settle) what the previous holder had read.
CONSUMER = "owner"
# How long each per-partition read blocks on Redis Cluster (see Streams.read).
CLUSTER_BLOCK_MS = 10


@dataclass
class Entry:
    partition: int
    stream_id: str
    payload: dict[str, Any]


class Streams:
    """Read, settle and dead-letter entries of one kind of stream across partitions."""

    def __init__(self, client: Any, partitions: int, cluster: bool) -> None:
        self.redis = client
        self.partitions = partitions
        self.cluster = cluster
        self._own = client.register_script(_lua("own"))
        self._disown = client.register_script(_lua("disown"))

    async def ensure_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def own(self, lease_key: str, owner: str, ttl_ms: int) -> bool:
        return bool(await self._own(keys=[lease_key], args=[owner, ttl_ms]))

    async def disown(
        self, lease_key: str, owner: str, ready_key: str | None = None, member: str = ""
    ) -> bool:
        keys = [lease_key] + ([ready_key] if ready_key else [])
        return bool(await self._disown(keys=keys, args=[owner, member]))

    async def read(
        self, streams: dict[int, str], *, count: int, block_ms: int | None, pending: bool = False
    ) -> list[Entry]:
        """New entries (or, with `pending`, those read before but never settled) from `streams`."""
        if not streams:
            return []
        since = "0" if pending else ">"
        if not self.cluster:
            answers = [await self._read_group(streams, since, count, block_ms)]
        else:
            # XREADGROUP cannot span slots: one read per partition, all at once. Each blocks only
            # briefly, since the call returns when the slowest of them does.
            block = min(block_ms, CLUSTER_BLOCK_MS) if block_ms else None
            answers = await asyncio.gather(
                *(self._read_group({p: name}, since, count, block) for p, name in streams.items())
            )
        by_name = {name: part for part, name in streams.items()}
        entries: list[Entry] = []
        for answer in answers:
            for name, rows in answer:
                for stream_id, fields in rows:
                    if fields and "r" in fields:
                        entries.append(Entry(by_name[name], stream_id, json.loads(fields["r"])))
        return entries

    async def _read_group(
        self, streams: dict[int, str], since: str, count: int, block_ms: int | None
    ) -> list[Any]:
        try:
            answer = await self.redis.xreadgroup(
                GROUP, CONSUMER, {name: since for name in streams.values()}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for name in streams.values():
                await self.ensure_group(name)
            return []
        if isinstance(answer, dict):  # RESP3 answers a map
            return list(answer.items())
        return list(answer or [])

    async def settle(
        self, stream_of: dict[int, str], entries: list[Entry], state_key_of: dict[int, str] | None = None
    ) -> None:
        """Acknowledge and delete finished entries (and their in-flight markers)."""
        if not entries:
            return
        ids: dict[int, list[str]] = {}
        for e in entries:
            ids.setdefault(e.partition, []).append(e.stream_id)
        # three commands per partition, not per entry: a batch of replies settles in one round trip
        async with self.redis.pipeline(transaction=False) as pipe:
            for part, stream_ids in ids.items():
                pipe.xack(stream_of[part], GROUP, *stream_ids)
                pipe.xdel(stream_of[part], *stream_ids)
                if state_key_of:
                    pipe.hdel(state_key_of[part], *stream_ids)
            await pipe.execute()

    async def dead_letter(self, kind: str, entry: Entry, reason: str, attempts: int = 0) -> None:
        dead = PartitionKeys(entry.partition).dead
        await self.redis.xadd(
            dead,
            {
                "kind": kind,
                "reason": reason,
                "at": repr(time.time()),
                "attempts": attempts,
                "payload": json.dumps(entry.payload),
            },
        )

    async def dead_depth(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in range(self.partitions):
                pipe.xlen(PartitionKeys(index).dead)
            return int(sum(await pipe.execute()))

    async def depth(self, kind: str) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in range(self.partitions):
                pipe.xlen(getattr(PartitionKeys(index), kind))
            return int(sum(await pipe.execute()))
