"""The Braze profile loop: `/users/track` objects queued in Redis, sent in batches by one reader.

Turns (attributes from `update_profile`, conversation events, subscription changes) and the Regal
webhook append entries `{"type": "attributes"|"event"|"purchase", "obj": {...}}` to the partition
streams `track:{p}`. Each partition has one reader at a time (a partition lease), which:

- batches up to `BRAZE_TRACK_BATCH` (50) objects per request, attributes, events and purchases
  together, across users and partitions; a short linger fills requests when traffic is light;
- keeps a user's updates in order: a user with a request in flight waits for it, and a request
  carries at most one attributes object per user (Braze does not promise an order inside an array);
- paces requests with a token bucket so no 3-second window exceeds `BRAZE_TRACK_RATE` (Braze's
  3,000 requests / 3 s per workspace), scaled to the share of partitions this process reads, so
  several worker processes together stay under the limit;
- retries 429 (waiting for `X-RateLimit-Reset`) and 5xx/network errors with bounded backoff, then
  dead-letters; a 400 for a batch is split in halves so one bad object cannot sink 49 good ones;
- maps a 200 answer's `errors` to the objects Braze rejected and dead-letters only those;
- settles (acknowledges and deletes) entries only after Braze accepted them, and re-reads a
  partition's unsettled entries when it gains the partition: an update is never lost on a restart,
  though one in flight at a crash may be sent twice (attributes are idempotent; an event can count
  twice, which Braze cannot de-duplicate).

Mapping `errors` to objects. Braze documents partial failures as entries like
`{"type": "...", "input_array": "events", "index": 3}` where `index` counts inside the named array;
in practice the index has been seen to count over the whole request (attributes, then events, then
purchases — the order this sender writes them, which is also Braze's processing order). Each error
is therefore read both ways: when only one reading names an object of the named array, that object
is rejected; when both do and disagree, both candidates are dead-lettered (reason
`braze_rejected_ambiguous`) so a rejected object is never silently dropped; an error that names no
object at all is logged and counted, and its batch is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, ValidationError, field_validator

from bot.clients.braze import BrazeClient
from bot.clients.http import with_retries
from bot.errors import OutboundError, RateLimited
from bot.logs import event, mask_id, mask_phone
from bot.metrics import Metrics
from bot.partitions import PartitionLeases
from bot.settings import Settings
from bot.store.conversations import REDIS_DOWN
from bot.store.keys import PartitionKeys, partition_of
from bot.store.streams import GROUP, Entry, Streams

log = logging.getLogger("bot.track")

ARRAYS = ("attributes", "events", "purchases")
ARRAY_OF = {"attributes": "attributes", "event": "events", "purchase": "purchases"}
IDENTIFIERS = ("external_id", "user_alias", "braze_id", "email", "phone")
MAX_IN_HAND = 5_000  # entries held in memory; the rest wait in Redis
WINDOW_S = 3.0  # Braze's /users/track rate-limit window


class TrackEntry(BaseModel):
    """One queued `/users/track` object and the array it goes in."""

    type: Literal["attributes", "event", "purchase"]
    obj: dict[str, Any]

    @field_validator("obj")
    @classmethod
    def _identified(cls, obj: dict[str, Any]) -> dict[str, Any]:
        if not any(obj.get(key) for key in IDENTIFIERS):
            raise ValueError("names no user (external_id, user_alias, braze_id, email or phone)")
        return obj

    @property
    def array(self) -> str:
        return ARRAY_OF[self.type]

    def user(self) -> str:
        """Which Braze user this object is about (the ordering key)."""
        return user_key(self.obj)


def identifier_value(obj: dict[str, Any]) -> str:
    """The identifying value of a `/users/track` object: the external id, alias name, email …"""
    for key in IDENTIFIERS:
        value = obj.get(key)
        if isinstance(value, dict):
            return str(value.get("alias_name", ""))
        if value:
            return str(value)
    return ""


def user_key(obj: dict[str, Any]) -> str:
    for key in IDENTIFIERS:
        value = obj.get(key)
        if isinstance(value, dict):
            return f"alias:{value.get('alias_label', '')}:{value.get('alias_name', '')}"
        if value:
            return f"{key}:{value}"
    return ""


def partition_for(obj: dict[str, Any], partitions: int) -> int:
    """The track partition for an object from outside a conversation (Regal).

    A conversation's id is its user's external id, else the phone the alias is named after, so an
    object about a conversation's user lands in that conversation's partition and is sent in order
    with the conversation's own updates.
    """
    return partition_of(identifier_value(obj), partitions)


async def enqueue(redis: Any, partitions: int, entries: list[TrackEntry]) -> None:
    """Append entries to their partitions' track streams, each partition's share atomically."""
    by_part: dict[int, list[TrackEntry]] = {}
    for item in entries:
        by_part.setdefault(partition_for(item.obj, partitions), []).append(item)
    for part, items in by_part.items():
        stream = PartitionKeys(part).track
        async with redis.pipeline(transaction=True) as pipe:
            for item in items:
                pipe.xadd(stream, {"r": item.model_dump_json()})
            await pipe.execute()


class TokenBucket:
    """At most `limit` takes in any `window_s` window: a small burst, then a steady rate.

    A bucket of capacity C refilled at r per second lets C + r*window through in a window, so the
    capacity is a tenth of the limit and the rate fills the rest.
    """

    def __init__(
        self,
        limit: float,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._window_s = window_s
        self.capacity = 1.0
        self.rate = 1.0
        self._tokens = 0.0
        self.set_limit(limit)
        self._tokens = self.capacity
        self._at = clock()

    def set_limit(self, limit: float) -> None:
        self.capacity = max(1.0, limit / 10)
        self.rate = max(limit - self.capacity, 1e-3) / self._window_s
        self._tokens = min(self._tokens, self.capacity)

    def reserve(self) -> float:
        """Take a token; the seconds to wait before using it (takers queue in order of arrival)."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        return max(0.0, -self._tokens / self.rate)

    async def take(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


def body_of(items: list[Item]) -> tuple[dict[str, list[dict[str, Any]]], list[Item]]:
    """The request body, and the items in the order Braze counts them (attributes, events, purchases)."""
    arrays: dict[str, list[Item]] = {name: [] for name in ARRAYS}
    for item in items:
        assert item.track is not None
        arrays[item.track.array].append(item)
    ordered = [item for name in ARRAYS for item in arrays[name]]
    body = {name: [i.track.obj for i in group if i.track] for name, group in arrays.items() if group}
    return body, ordered


def _index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def rejected_objects(errors: list[Any], counts: dict[str, int]) -> tuple[set[int], set[int], list[Any]]:
    """Map an answer's `errors` to positions in the request (attributes, then events, then purchases).

    Returns (rejected, ambiguous, unattributed): positions Braze surely rejected, positions one of
    two plausible readings names, and the errors that name no object.
    """
    offsets, start = {}, 0
    for name in ARRAYS:
        offsets[name] = start
        start += counts.get(name, 0)
    total = start
    rejected: set[int] = set()
    ambiguous: set[int] = set()
    unattributed: list[Any] = []
    for error in errors:
        index = _index(error.get("index")) if isinstance(error, dict) else None
        array = error.get("input_array") if isinstance(error, dict) else None
        if index is None or index < 0:
            unattributed.append(error)
            continue
        if array is None:
            readings = {index} if index < total else set()
        elif array in offsets:
            low, size = offsets[array], counts.get(array, 0)
            readings = set()
            if index < size:
                readings.add(low + index)  # documented: the index counts inside `input_array`
            if low <= index < low + size:
                readings.add(index)  # observed: the index counts over the whole request
        else:
            readings = set()
        if not readings:
            unattributed.append(error)
        elif len(readings) == 1:
            rejected |= readings
        else:
            ambiguous |= readings
    return rejected, ambiguous - rejected, unattributed


@dataclass
class Item:
    entry: Entry
    track: TrackEntry | None
    user: str
    seen_at: float = field(default_factory=time.monotonic)


class TrackSender:
    """Reads the track streams of the partitions it holds and sends their objects to Braze."""

    reader_kind = "track"

    def __init__(
        self, streams: Streams, braze: BrazeClient, settings: Settings, metrics: Metrics, owner: str
    ) -> None:
        self._streams = streams
        self._braze = braze
        self._settings = settings
        self._metrics = metrics
        self._leases = PartitionLeases(streams, "track", owner, settings.queue_partitions)
        self._pending: deque[Item] = deque()
        self._busy: set[str] = set()  # users with a request in flight
        # Entries in a request, as (partition, stream id): ids repeat across partitions' streams.
        self._in_flight: set[tuple[int, str]] = set()
        self._paused_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # a request finished: its users may go again
        self._batch = settings.braze_track_batch
        self._linger = settings.braze_track_linger_ms / 1000
        self._bucket = TokenBucket(settings.braze_track_rate)

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await self._leases.ensure_groups()
        while not stop.is_set():
            try:
                gained, lost = await self._leases.refresh()
                if gained or lost:
                    self._rescale()
                if lost:
                    self._pending = deque(i for i in self._pending if i.entry.partition not in lost)
                for part in gained:
                    await self._recover(part)
                room = MAX_IN_HAND - len(self._pending)
                fresh: list[Entry] = []
                if room > 0 and self._leases.owned:
                    fresh = await self._streams.read(
                        self._leases.streams_owned(),
                        count=min(room, 1000),
                        block_ms=5 if self._pending else 50,
                    )
                    await self._take(fresh)
                self._dispatch(final=False)
                if not self._leases.owned:
                    await _sleep_or_stop(stop, 0.05)
                elif room <= 0:
                    # Hands full: the next thing that can change anything is a request finishing.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=0.05)
                self._wake.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a Redis blip: the entries are still in Redis
                event(log, "track_error", logging.WARNING, error=type(exc).__name__, detail=str(exc)[:200])
                await _sleep_or_stop(stop, 0.5)
        await self._drain()

    async def _drain(self) -> None:
        """On shutdown: send what is in hand, wait for requests in flight, give partitions back."""
        with contextlib.suppress(Exception):
            self._dispatch(final=True)
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self._settings.braze_timeout_s + 1)
            # Still waiting (a long 429, a hanging Braze): stop them; their entries stay unsettled
            # in Redis and the partition's next reader sends them.
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1)
        with contextlib.suppress(Exception):
            await self._leases.release_all()

    def _rescale(self) -> None:
        share = len(self._leases.owned) / max(1, self._settings.queue_partitions)
        self._bucket.set_limit(max(1.0, self._settings.braze_track_rate * share))

    async def _recover(self, part: int) -> None:
        """Entries a previous reader took but never settled: send them (again)."""
        stale = await self._streams.read(
            {part: self._leases.stream(part)}, count=10_000, block_ms=None, pending=True
        )
        await self.reclaim(part, self.unheld(stale))

    # -- what the recovery sweep (bot/sweep.py) needs ------------------------------------------
    def owned_streams(self) -> dict[int, str]:
        return self._leases.streams_owned()

    def unheld(self, entries: list[Entry]) -> list[Entry]:
        """Entries neither waiting here nor in a request."""
        held = self._in_flight | {_ref(i.entry) for i in self._pending}
        return [e for e in entries if _ref(e) not in held]

    async def reclaim(self, part: int, entries: list[Entry]) -> None:
        if entries:
            self._metrics.recovered.labels("track").inc(len(entries))
            event(log, "track_recovered", partition=part, entries=len(entries))
            await self._take(entries)

    async def _take(self, entries: list[Entry]) -> None:
        for entry in entries:
            try:
                track = TrackEntry.model_validate(entry.payload)
            except ValidationError as exc:
                await self._dead([Item(entry, None, "")], "malformed", detail=str(exc.errors()[0]["msg"]))
                continue
            self._pending.append(Item(entry, track, track.user()))

    # -- batching ------------------------------------------------------------------------------
    def _dispatch(self, *, final: bool) -> None:
        if not final and time.time() < self._paused_until:
            return
        slots = len(self._pending) if final else self._settings.braze_track_in_flight - len(self._tasks)
        for batch in self._next_batches(slots, final):
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()

    def _next_batches(self, slots: int, final: bool) -> list[list[Item]]:
        """Up to `slots` requests' worth of items, in one pass over what is in hand.

        A user's items all go in one request of the pass: a user with a request in flight waits
        for it, and a second attributes object of a user waits (with everything after it) for the
        first to be accepted, to keep the user's updates in order.
        """
        if slots <= 0 or not self._pending:
            return []
        batches: list[list[Item]] = []
        current: list[Item] = []
        with_attributes: set[str] = set()
        batch_of: dict[str, int] = {}  # user -> the request of this pass that carries it
        held_back: set[str] = set()
        for item in self._pending:
            user = item.user
            if user in self._busy or user in held_back:
                held_back.add(user)
                continue
            if batch_of.get(user, len(batches)) != len(batches):
                held_back.add(user)
                continue
            if item.track and item.track.type == "attributes":
                if user in with_attributes:
                    held_back.add(user)
                    continue
                with_attributes.add(user)
            current.append(item)
            batch_of[user] = len(batches)
            if len(current) >= self._batch:
                batches.append(current)
                current, with_attributes = [], set()
                if len(batches) >= slots:
                    break
        ripe = final or (current and time.monotonic() - current[0].seen_at >= self._linger)
        if current and len(batches) < slots and ripe:
            batches.append(current)
        if not batches:
            return []
        chosen = {id(item) for batch in batches for item in batch}
        self._pending = deque(i for i in self._pending if id(i) not in chosen)
        for batch in batches:
            for item in batch:
                self._busy.add(item.user)
                self._in_flight.add(_ref(item.entry))
        return batches

    async def _send(self, batch: list[Item]) -> None:
        try:
            await self._deliver(batch)
        except Exception as exc:
            # Redis failed around the request: the entries stay unsettled; the sweep or the next
            # owner of the partition sends them again.
            event(log, "track_batch_error", logging.WARNING, error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            for item in batch:
                self._busy.discard(item.user)
                self._in_flight.discard(_ref(item.entry))

    async def _deliver(self, items: list[Item]) -> None:
        body, ordered = body_of(items)
        started = time.monotonic()
        try:
            answer = await with_retries(
                lambda: self._post(body),
                attempts=self._settings.braze_max_attempts,
                max_wait_s=self._settings.braze_retry_max_wait_s,
            )
        except OutboundError as exc:
            if exc.status == 400 and len(items) > 1:
                # Braze refused the whole request and processed none of it: find the bad object(s)
                # by halves instead of dead-lettering every good one with it.
                half = len(items) // 2
                await self._deliver(items[:half])
                await self._deliver(items[half:])
                return
            reason = f"braze_{exc.status}" if exc.status else "braze_unreachable"
            if not exc.retryable and not exc.status:
                reason = "braze_fatal"
            await self._dead(items, reason, detail=exc.reason[:200])
            return
        counts = {name: len(objs) for name, objs in body.items()}
        errors = answer.get("errors") or []
        if not isinstance(errors, list):
            errors = [errors]
        rejected, ambiguous, unattributed = rejected_objects(errors, counts)
        for error in unattributed:
            self._metrics.dead_letters.labels("track", "unattributed_error").inc()
            event(log, "track_error_unattributed", logging.WARNING, error=_error_text([error]) or "untyped")
        bad = [ordered[i] for i in sorted(rejected)]
        unsure = [ordered[i] for i in sorted(ambiguous)]
        if bad:
            await self._dead(bad, "braze_rejected", detail=_error_text(errors))
        if unsure:
            await self._dead(unsure, "braze_rejected_ambiguous", detail=_error_text(errors))
        done = [i for n, i in enumerate(ordered) if n not in rejected and n not in ambiguous]
        await self._settle(done)
        self._metrics.track_objects_per_request.observe(len(items))
        event(
            log,
            "braze_tracked",
            objects=len(items),
            rejected=len(bad) + len(unsure),
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._wait_for_pause()
        await self._bucket.take()
        try:
            answer = await self._braze.users_track(body)
        except RateLimited as exc:
            self._paused_until = max(self._paused_until, time.time() + exc.retry_after)
            self._metrics.outbound.labels("braze", "users_track", "429").inc()
            event(
                log,
                "braze_rate_limited",
                logging.WARNING,
                endpoint="users_track",
                wait_s=round(exc.retry_after, 1),
            )
            raise
        except OutboundError as exc:
            self._metrics.outbound.labels("braze", "users_track", str(exc.status or "error")).inc()
            raise
        self._metrics.outbound.labels("braze", "users_track", "200").inc()
        return answer

    async def _wait_for_pause(self) -> None:
        wait = self._paused_until - time.time()
        if wait > 0:
            await asyncio.sleep(wait)

    # -- settling ------------------------------------------------------------------------------
    async def _settle(self, items: list[Item]) -> None:
        """Acknowledge and delete entries Braze accepted: two commands per partition, not per entry."""
        if not items:
            return
        by_stream: dict[str, list[str]] = {}
        for item in items:
            by_stream.setdefault(self._leases.stream(item.entry.partition), []).append(item.entry.stream_id)

        async def settle() -> None:
            async with self._streams.redis.pipeline(transaction=False) as pipe:
                for stream, ids in by_stream.items():
                    pipe.xack(stream, GROUP, *ids)
                    pipe.xdel(stream, *ids)
                await pipe.execute()

        await with_redis_retries(settle)

    async def _dead(self, items: list[Item], reason: str, detail: str = "") -> None:
        for item in items:
            entry = item.entry
            await with_redis_retries(partial(self._streams.dead_letter, "track", entry, reason))
            self._metrics.dead_letters.labels("track", reason).inc()
            event(
                log,
                "dead_letter",
                logging.WARNING,
                kind="track",
                reason=reason,
                type=item.track.type if item.track else None,
                user=_who(item.track.obj) if item.track else None,
                detail=detail or None,
            )
        await self._settle(items)


def _who(obj: dict[str, Any]) -> str:
    """The user of an object for a log line: ids as they are (phones masked), never an email."""
    if obj.get("external_id") or obj.get("braze_id"):
        return mask_id(str(obj.get("external_id") or obj.get("braze_id")))
    if isinstance(obj.get("user_alias"), dict):
        return mask_phone(str(obj["user_alias"].get("alias_name", "")))
    return "email" if obj.get("email") else "phone"


def _ref(entry: Entry) -> tuple[int, str]:
    return entry.partition, entry.stream_id


def _error_text(errors: list[Any]) -> str:
    """A short description of Braze's errors for the log (their `type` texts, never the objects)."""
    kinds = sorted({str(e.get("type", ""))[:80] for e in errors if isinstance(e, dict)} - {""})
    return "; ".join(kinds)[:200]


async def with_redis_retries(call: Callable[[], Awaitable[None]], attempts: int = 3) -> None:
    """Settling after Braze accepted is worth a few quick tries before leaving it to the sweep."""
    for attempt in range(attempts):
        try:
            await call()
            return
        except REDIS_DOWN:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
