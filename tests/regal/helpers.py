"""A broker wired to a fake Regal, and what the fake Braze received through `/users/track`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.sim.session import serve_app
from bot.store.keys import PartitionKeys
from tests.fakes.braze import BrazeStandIn
from tests.fakes.regal import FakeRegal
from tests.harness import Broker, start_broker

REGAL_SECRET = "regal-webhook-secret"
FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / f"regal_{name}.json").read_text())
    assert isinstance(data, dict)
    return data


@contextlib.asynccontextmanager
async def regal_broker(redis_url: str, **overrides: Any) -> AsyncIterator[tuple[Broker, FakeRegal]]:
    regal = FakeRegal()
    runner, url = await serve_app(regal.app)
    settings: dict[str, Any] = {
        "regal_api_key": SecretStr(regal.api_key),
        "regal_events_url": url + "/events",
        "regal_webhook_secret": SecretStr(REGAL_SECRET),
        "regal_max_attempts": 3,
        "regal_retry_max_wait_s": 0.05,
        "braze_track_linger_ms": 5.0,
    }
    settings.update(overrides)
    try:
        async with start_broker(redis_url, **settings) as broker:
            yield broker, regal
    finally:
        await runner.cleanup()


async def post_regal(broker: Broker, body: Any, *, secret: str | None = REGAL_SECRET) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else None
    return await broker.post(body, secret=secret, raw=raw, path="/webhooks/regal")


def tracked(braze: BrazeStandIn, array: str) -> list[dict[str, Any]]:
    """Every object of one array (`attributes`, `events`, `purchases`) Braze accepted, in order."""
    return [obj for body in braze.track_bodies for obj in body.get(array) or []]


async def queued_track(broker: Broker) -> int:
    """Objects still waiting in the track streams."""
    redis = broker.runtime.redis
    return sum([await redis.xlen(PartitionKeys(p).track) for p in range(broker.settings.queue_partitions)])
