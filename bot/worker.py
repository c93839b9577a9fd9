"""Workers: claim ready conversations (fenced leases), run one turn each, commit atomically.

A turn reads the conversation's inbox (a burst of up to `max_burst_messages`), runs the policy for
its status, and commits everything it decided (replies, state, history, jobs) in one Lua script
that first checks the lease, the ownership epoch and whether newer messages arrived. A turn that
lost its lease changes nothing; one overtaken by an agent or by newer messages is recomputed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

from bot.logs import event, mask_id
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.conversations import APPLIED, FENCED, LEASE_LOST, REDIS_DOWN, SUPERSEDED, Loaded, Store
from bot.store.keys import ConvKeys
from handlers.context import Services, TurnContext

log = logging.getLogger("bot.worker")

TurnHandler = Callable[[TurnContext], Awaitable[None]]

# Attempts at a turn that raised before its burst is set aside (dead-lettered) and the user told.
MAX_TURN_CRASHES = 3


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self, store: Store, services: Services, handle: TurnHandler, metrics: Metrics, settings: Settings
    ) -> None:
        self._store = store
        self._services = services
        self._handle = handle
        self._metrics = metrics
        self._settings = settings
        self.id = worker_id()
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._turns: dict[str, tuple[asyncio.Task[None], str]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._turns)

    async def run(self, stop: asyncio.Event, shutdown_grace_s: float = 20.0) -> None:
        partitions = list(range(self._settings.queue_partitions))
        idle = 0.002
        while not stop.is_set():
            free = self._settings.worker_concurrency - len(self._turns)
            if free <= 0:
                await asyncio.sleep(0.002)
                continue
            try:
                claimed = await self._store.claim(
                    partitions,
                    min(free, 64),
                    self.id,
                    self._settings.lease_ttl_ms,
                    int(time.time() * 1000),
                    max_messages=self._settings.max_burst_messages,
                )
            except REDIS_DOWN as exc:
                event(log, "claim_failed", logging.WARNING, error=type(exc).__name__)
                await _sleep_or_stop(stop, 0.5)
                continue
            for claim in claimed:
                task = asyncio.create_task(self._turn(claim.conv_id, claim.token, claim.loaded))
                self._turns[claim.conv_id] = (task, claim.token)
                task.add_done_callback(self._forget(claim.conv_id))
            if claimed:
                idle = 0.002
            else:
                await _sleep_or_stop(stop, idle)
                idle = min(idle * 2, 0.05)
        await self._shutdown(shutdown_grace_s)

    def _forget(self, conv_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._turns.pop(conv_id, None)

        return done

    async def _shutdown(self, grace_s: float) -> None:
        """Let turns in flight finish; hand back the ones that do not, so another worker takes them now."""
        if not self._turns:
            return
        tasks = [task for task, _ in self._turns.values()]
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for conv_id, (task, token) in list(self._turns.items()):
            if task in pending:
                task.cancel()
                with contextlib.suppress(Exception):
                    if await self._store.hand_back(conv_id, token):
                        event(log, "turn_handed_back", conv=mask_id(conv_id))
        if pending:
            await asyncio.wait(pending, timeout=2)

    async def _turn(self, conv_id: str, token: str, first: Loaded | None = None) -> None:
        keys = self._store.keys(conv_id)
        started = time.monotonic()
        renewer = asyncio.create_task(self._keep_lease(keys, token))
        outcome = "error"
        try:
            outcome = await self._run_turn(keys, token, first)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            # The inbox is untouched: the lease expires and the turn is tried again, a few times.
            event(
                log,
                "turn_failed",
                logging.ERROR,
                conv=mask_id(conv_id),
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )
            with contextlib.suppress(Exception):
                crashes = int(await self._store.redis.hincrby(keys.conv, "turn_crashes", 1))
                if crashes >= MAX_TURN_CRASHES:
                    outcome = await self._set_aside(keys, token, f"turn_crashed:{type(exc).__name__}")
        finally:
            renewer.cancel()
            self._metrics.turns.labels(outcome).inc()
            self._metrics.turn_seconds.observe(time.monotonic() - started)

    async def _set_aside(self, keys: ConvKeys, token: str, reason: str) -> str:
        """A burst that crashed every turn: keep it for an operator, apologise, and move on.

        Without this, one message that trips a bug would block its conversation for good.
        """
        loaded = await self._store.load(keys, self._settings.max_burst_messages)
        if not loaded.entries:
            return "error"
        now = time.time()
        ctx = TurnContext(self._services, loaded.state, loaded.entries, loaded.history, now)
        _absorb_identity(ctx)
        ctx.record_user_messages()
        ctx.say(self._services.prompts.text("apology"), "system")
        ctx.mutation.consume = len(loaded.entries)
        ctx.mutation.set["turn_crashes"] = 0
        result = await self._store.apply(keys, ctx.mutation, now=now, token=token)
        if result.code != APPLIED:
            return "error"
        await self._store.redis.xadd(
            keys.part.dead,
            {
                "kind": "inbound",
                "reason": reason,
                "at": repr(now),
                "attempts": MAX_TURN_CRASHES,
                "payload": json.dumps(
                    {"conv": keys.conv_id, "entries": [e.model_dump() for e in loaded.entries]}
                ),
            },
        )
        self._metrics.dead_letters.labels("inbound", reason.split(":", maxsplit=1)[0]).inc()
        event(log, "dead_letter", logging.WARNING, kind="inbound", reason=reason, conv=mask_id(keys.conv_id))
        return "set_aside"

    async def _keep_lease(self, keys: ConvKeys, token: str) -> None:
        every = self._settings.lease_ttl_ms / 3000
        while True:
            await asyncio.sleep(every)
            try:
                held = await self._store.renew(
                    keys, token, self._settings.lease_ttl_ms, int(time.time() * 1000)
                )
            except REDIS_DOWN:
                continue
            if not held:
                event(log, "lease_lost", logging.WARNING, conv=mask_id(keys.conv_id))
                return

    async def _run_turn(self, keys: ConvKeys, token: str, first: Loaded | None = None) -> str:
        settings = self._settings
        for attempt in range(settings.max_supersede + 3):
            # the claim read the first attempt's state; a recomputed turn reads it again
            if attempt == 0 and first is not None:
                loaded = first
            else:
                loaded = await self._store.load(keys, settings.max_burst_messages)
            now = time.time()
            ctx = TurnContext(self._services, loaded.state, loaded.entries, loaded.history, now)
            if loaded.entries:
                _absorb_identity(ctx)
                if loaded.state.turn_crashes:
                    ctx.mutation.set["turn_crashes"] = 0
                await self._handle(ctx)
                ctx.mutation.consume = len(loaded.entries)
            final = attempt >= settings.max_supersede
            result = await self._store.apply(
                keys,
                ctx.mutation,
                now=now,
                token=token,
                expect_epoch=loaded.state.epoch,
                expect_status=loaded.state.status,
                inbox_seen=-1 if final else loaded.inbox_len,
            )
            if result.code == APPLIED:
                if loaded.entries:
                    event(
                        log,
                        "turn",
                        conv=mask_id(keys.conv_id),
                        status=loaded.state.status,
                        messages=len(loaded.entries),
                        replies=len(ctx.mutation.out),
                        attempt=attempt,
                    )
                return "done" if loaded.entries else "empty"
            if result.code == LEASE_LOST:
                event(log, "turn_lease_lost", logging.WARNING, conv=mask_id(keys.conv_id))
                return "lease_lost"
            if result.code in (FENCED, SUPERSEDED):
                if result.code == FENCED and ctx.mutation.out:
                    self._metrics.discarded.labels("human_took_over").inc()
                event(
                    log,
                    "turn_recomputed",
                    conv=mask_id(keys.conv_id),
                    why="fenced" if result.code == FENCED else "superseded",
                )
                continue
        return "gave_up"


def _absorb_identity(ctx: TurnContext) -> None:
    """Identity and the 24-hour window come from the newest inbound message."""
    state, newest = ctx.state, ctx.entries[-1]
    fields: dict[str, str | int | float] = {"last_in": repr(newest.at), "last_msg_at": repr(newest.at)}
    for entry in ctx.entries:
        if entry.user_id and not state.user_id:
            state.user_id = fields["user_id"] = entry.user_id
        if entry.phone and entry.phone != state.phone:
            state.phone = fields["phone"] = entry.phone
        if entry.profile_name and entry.profile_name != state.profile_name:
            state.profile_name = fields["profile_name"] = entry.profile_name
    if not state.created_at:
        fields["created_at"] = repr(ctx.now)
    state.last_in = newest.at
    ctx.mutation.set.update(fields)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
