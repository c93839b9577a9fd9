"""The no-agent timeout: a `waiting` conversation nobody claimed returns to the bot, and the user is told.

With `AGENT_HOURS` only open time counts: a request made at night waits for the morning, and
times out `HANDOFF_TIMEOUT_S` of open time later. Every worker process runs the sweep; the
commit is fenced on the conversation's epoch, so a conversation times out exactly once and never
after an agent claimed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bot.logs import event, mask_id
from bot.store.conversations import APPLIED, REDIS_DOWN, Store
from bot.store.keys import PartitionKeys
from handlers.agent import action_context, no_agent_timeout
from handlers.context import Services
from handlers.handoff import agent_hours

log = logging.getLogger("bot.handoff_sweep")

BATCH = 200


class HandoffSweep:
    def __init__(self, store: Store, services: Services) -> None:
        self._store = store
        self._services = services
        timeout = services.settings.handoff_timeout_s
        self.interval_s = min(5.0, max(0.05, timeout / 5))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep(time.time())
            except REDIS_DOWN as exc:
                event(log, "handoff_sweep_failed", logging.WARNING, error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)

    async def sweep(self, now: float) -> int:
        """Time out every conversation whose wait is over; returns how many were returned to the bot."""
        settings = self._services.settings
        timeout = settings.handoff_timeout_s
        # Whatever the hours, nobody times out before waiting `timeout` seconds of wall time.
        async with self._store.redis.pipeline(transaction=False) as pipe:
            for index in range(self._store.partitions):
                pipe.zrangebyscore(
                    PartitionKeys(index).status_index("waiting"), "-inf", now - timeout, start=0, num=BATCH
                )
            candidates = [conv for rows in await pipe.execute() for conv in rows]
        if not candidates:
            return 0
        hours = agent_hours(settings)
        done = 0
        for state in await self._store.states(candidates):
            if state.status != "waiting":
                continue
            since = state.waiting_since or now
            deadline = hours.after_open_seconds(since, timeout) if hours else since + timeout
            if now < deadline:
                continue
            ctx = action_context(self._services, state, now)
            no_agent_timeout(ctx, now - since)
            result = await self._store.apply(
                self._store.keys(state.id),
                ctx.mutation,
                now=now,
                expect_epoch=state.epoch,
                expect_status="waiting",
            )
            if result.code == APPLIED:
                done += 1
                event(log, "handoff_timed_out", conv=mask_id(state.id), waited_s=round(now - since))
        return done
