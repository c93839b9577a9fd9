"""Typed operations on conversations: accept, claim, load, apply. Each is one Redis round trip."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from bot.errors import StoreUnavailable
from bot.logs import event
from bot.models import STATUSES, ConvState, HistoryItem, InboxEntry, OutRow, Status
from bot.store.keys import ConvKeys, PartitionKeys, partition_of

log = logging.getLogger("bot.store")

# Any Redis failure (down, loading, out of memory) means: not stored, try again later.
REDIS_DOWN = (RedisError, OSError)

APPLIED, LEASE_LOST, FENCED, SUPERSEDED = 1, -1, -2, -3


def _lua(name: str) -> str:
    return resources.files("bot.store").joinpath(f"lua/{name}.lua").read_text()


@dataclass
class Mutation:
    """What a turn or an agent action changes; applied atomically by apply.lua."""

    set: dict[str, str | int | float] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    status: Status | None = None
    incr_epoch: bool = False
    history: list[HistoryItem] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    out: list[OutRow] = field(default_factory=list)
    track: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    # Notes for live agent views (SSE), published atomically with the change they describe.
    publish: list[dict[str, Any]] = field(default_factory=list)
    consume: int = 0
    touch: bool = False

    def merge(self, other: Mutation) -> Mutation:
        self.set.update(other.set)
        self.delete += other.delete
        self.status = other.status or self.status
        self.incr_epoch = self.incr_epoch or other.incr_epoch
        self.history += other.history
        self.audit += other.audit
        self.out += other.out
        self.track += other.track
        self.jobs += other.jobs
        self.publish += other.publish
        self.touch = self.touch or other.touch
        return self

    def to_json(self, history_keep: int) -> str:
        body: dict[str, Any] = {"hist_keep": history_keep, "consume": self.consume, "touch": self.touch}
        if self.set:
            body["set"] = self.set
        if self.delete:
            body["del"] = self.delete
        if self.status:
            body["status"] = self.status
        if self.incr_epoch:
            body["incr_epoch"] = True
        if self.history:
            # without empty marker/agent fields: history is most of a conversation's memory
            body["hist"] = [h.model_dump_json(exclude_defaults=True) for h in self.history]
        if self.audit:
            body["audit"] = [json.dumps(a) for a in self.audit]
        if self.out:
            body["out"] = [r.model_dump_json() for r in self.out]
        if self.track:
            body["track"] = [json.dumps(t) for t in self.track]
        if self.jobs:
            body["jobs"] = [json.dumps(j) for j in self.jobs]
        if self.publish:
            body["publish"] = [json.dumps(n) for n in self.publish]
        return json.dumps(body)


@dataclass
class Loaded:
    state: ConvState
    entries: list[InboxEntry]
    inbox_len: int
    history: list[HistoryItem]


@dataclass
class Claim:
    """A conversation this worker now holds the lease of, with what its turn reads first."""

    conv_id: str
    token: str
    loaded: Loaded


@dataclass
class ApplyResult:
    code: int
    epoch: int
    remaining: int

    @property
    def ok(self) -> bool:
        return self.code == APPLIED


class Store:
    """The conversation model over one Redis client (single node or cluster)."""

    def __init__(self, client: Any, partitions: int, history_keep: int = 24) -> None:
        self.redis = client
        self.partitions = partitions
        self.history_keep = history_keep
        self._accept = client.register_script(_lua("accept"))
        self._claim = client.register_script(_lua("claim"))
        self._renew = client.register_script(_lua("renew"))
        self._apply = client.register_script(_lua("apply"))
        self._load = client.register_script(_lua("load"))
        self._disown = client.register_script(_lua("disown"))
        self.cluster = isinstance(client, RedisCluster)
        self._rotation = 0

    async def prepare(self) -> None:
        """Learn a cluster's slot map before the first concurrent commands.

        redis-py's cluster client sends commands issued before its first initialisation to one
        node; the MOVED answers then make it close connections that other commands are using,
        and those are retried, so a script could report the outcome of its second run.
        """
        if not self.cluster:
            return
        try:
            await self.redis.initialize()
        except (RedisError, OSError) as exc:  # unreachable now: the client initialises on first use
            event(log, "cluster_init_failed", logging.WARNING, error=type(exc).__name__)

    def keys(self, conv_id: str) -> ConvKeys:
        return ConvKeys.of(conv_id, self.partitions)

    def partition(self, index: int) -> PartitionKeys:
        return PartitionKeys(index)

    def partition_of(self, conv_id: str) -> int:
        return partition_of(conv_id, self.partitions)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except REDIS_DOWN:
            return False

    async def accept(self, keys: ConvKeys, digest: str, ttl_s: int, entry: InboxEntry, now_ms: int) -> bool:
        """Queue `entry` unless this digest was seen; True when it is new. Raises StoreUnavailable."""
        try:
            fresh = await self._accept(
                keys=[keys.seen, keys.inbox, keys.part.ready],
                args=[ttl_s, entry.model_dump_json(exclude_defaults=True), keys.conv_id, now_ms, digest],
            )
        except REDIS_DOWN as exc:
            raise StoreUnavailable(str(exc)) from exc
        return bool(fresh)

    async def claim(
        self,
        partitions: list[int],
        limit: int,
        worker_id: str,
        lease_ms: int,
        now_ms: int,
        *,
        max_messages: int = 20,
    ) -> list[Claim]:
        """Up to `limit` ready conversations whose lease this worker now holds, each loaded as by
        `load` (so a turn's first attempt needs no read of its own).

        The partitions are visited from a rotating start, so a busy partition cannot starve the others.
        """
        if not partitions or limit <= 0:
            return []
        self._rotation = (self._rotation + 1) % len(partitions)
        order = partitions[self._rotation :] + partitions[: self._rotation]
        if not self.cluster:
            calls = [(order, limit)]
        else:
            # A cluster refuses a script over keys of several slots: one call per partition, run
            # concurrently, the limit shared out between them.
            share, extra = divmod(limit, len(order))
            calls = [([p], share + (i < extra)) for i, p in enumerate(order) if share + (i < extra)]
        answers = await asyncio.gather(
            *(
                self._claim(
                    keys=[PartitionKeys(p).ready for p in group],
                    args=[now_ms, lease_ms, room, worker_id, max_messages],
                )
                for group, room in calls
            )
        )
        return [
            Claim(conv, token, self._loaded(conv, flat_state, inbox, inbox_len, hist))
            for answer in answers
            for conv, token, flat_state, inbox, inbox_len, hist in answer
        ]

    async def renew(self, keys: ConvKeys, token: str, lease_ms: int, now_ms: int) -> bool:
        ok = await self._renew(
            keys=[keys.lease, keys.part.ready], args=[token, lease_ms, now_ms + lease_ms, keys.conv_id]
        )
        return bool(ok)

    async def hand_back(self, conv_id: str, token: str) -> bool:
        """Release a lease early and make the conversation ready again (graceful shutdown)."""
        keys = self.keys(conv_id)
        return bool(await self._disown(keys=[keys.lease, keys.part.ready], args=[token, conv_id]))

    async def load(self, keys: ConvKeys, max_messages: int) -> Loaded:
        # a script rather than a pipeline of four commands: py-spy put the pipeline at ~3x the
        # client CPU of the apply script
        flat_state, raw_inbox, inbox_len, raw_hist = await self._load(
            keys=[keys.conv, keys.inbox, keys.history], args=[max_messages]
        )
        return self._loaded(keys.conv_id, flat_state, raw_inbox, inbox_len, raw_hist)

    @staticmethod
    def _loaded(
        conv_id: str, flat_state: list[str], raw_inbox: list[str], inbox_len: int, raw_hist: list[str]
    ) -> Loaded:
        raw_state = dict(zip(flat_state[::2], flat_state[1::2], strict=True))
        return Loaded(
            state=ConvState.from_hash(conv_id, raw_state),
            entries=[InboxEntry.model_validate_json(e) for e in raw_inbox],
            inbox_len=int(inbox_len),
            history=[HistoryItem.model_validate_json(h) for h in raw_hist],
        )

    async def apply(
        self,
        keys: ConvKeys,
        mutation: Mutation,
        *,
        now: float,
        token: str = "",
        expect_epoch: int = -1,
        expect_status: str = "",
        inbox_seen: int = -1,
    ) -> ApplyResult:
        code, epoch, remaining = await self._apply(
            keys=keys.apply_keys(),
            args=[
                keys.conv_id,
                token,
                expect_epoch,
                expect_status,
                inbox_seen,
                repr(now),
                mutation.to_json(self.history_keep),
            ],
        )
        return ApplyResult(int(code), int(epoch), int(remaining))

    async def state(self, conv_id: str) -> ConvState | None:
        keys = self.keys(conv_id)
        raw = await self.redis.hgetall(keys.conv)
        if not raw or "status" not in raw:
            return None
        return ConvState.from_hash(conv_id, raw)

    async def history(self, conv_id: str) -> list[HistoryItem]:
        raw = await self.redis.lrange(self.keys(conv_id).history, 0, -1)
        return [HistoryItem.model_validate_json(h) for h in raw]

    async def audit(self, conv_id: str) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(self.keys(conv_id).audit, 0, -1)
        return [json.loads(a) for a in raw]

    async def conversation_ids(self, status: Status | None, limit: int = 500) -> list[str]:
        """Ids in one status (or all), oldest wait first for `waiting`, newest activity first otherwise."""
        statuses = [status] if status else list(STATUSES)
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in range(self.partitions):
                for st in statuses:
                    pipe.zrange(PartitionKeys(index).status_index(st), 0, limit - 1, withscores=True)
            results = await pipe.execute()
        scored = [(score, conv) for rows in results for conv, score in rows]
        scored.sort(reverse=status != "waiting")
        return [conv for _, conv in scored[:limit]]

    async def states(self, conv_ids: list[str]) -> list[ConvState]:
        if not conv_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for conv_id in conv_ids:
                pipe.hgetall(self.keys(conv_id).conv)
            raws = await pipe.execute()
        return [ConvState.from_hash(c, raw) for c, raw in zip(conv_ids, raws, strict=True) if raw]

    async def queue_depth(self) -> int:
        """Conversations with inbound messages waiting for a turn (all partitions)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in range(self.partitions):
                pipe.zcard(PartitionKeys(index).ready)
            return int(sum(await pipe.execute()))
