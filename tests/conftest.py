"""Shared fixtures: a real throwaway Redis, the fakes of the outside world, and a running broker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis as sync_redis

from bot.settings import Settings
from bot.store.connection import EmbeddedRedis
from tests.harness import Broker, start_broker

# The machine's own configuration must not leak into the tests.
for _name in Settings.model_fields:
    os.environ.pop(_name.upper(), None)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """REDIS_URL when the caller provides one (it is flushed between tests), else a private server."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        yield given
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    client = sync_redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[Broker]:
    async with start_broker(redis_url) as b:
        yield b


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


pytest_plugins = ["tests.browser"]
