"""Shared fixtures: a real throwaway Redis, the fakes of the outside world, and a running broker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from bot.store.connection import EmbeddedRedis
from tests.cluster import LocalCluster, flush_all
from tests.harness import Broker, start_broker

# The machine's own configuration must not leak into the tests.
for _name in Settings.model_fields:
    os.environ.pop(_name.upper(), None)
os.environ.pop("REDIS_CLUSTER", None)

# The integration suite: the tests that run the whole pipeline against Redis. CI runs it a second
# time with TEST_REDIS_CLUSTER=1 (`pytest -m integration`), against a local 3-master Redis Cluster.
INTEGRATION_DIRS = ("core", "handoff", "profile", "regal", "reliability")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """REDIS_URL when the caller provides one (it is flushed between tests), else a private server."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        yield given
        return
    if os.environ.get("TEST_REDIS_CLUSTER") == "1":
        # The integration suite's second run: a local 3-master Redis Cluster (see tests/cluster.py).
        with LocalCluster() as cluster:
            yield cluster.url
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    flush_all(redis_server)
    return redis_server


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[Broker]:
    async with start_broker(redis_url) as b:
        yield b


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: full-pipeline test, also run against Redis Cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(tests_dir).parts if item.path.is_relative_to(tests_dir) else ()
        if parts and parts[0] in INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)


pytest_plugins = ["tests.browser"]
