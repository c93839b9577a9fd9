"""Startup warns when Redis could lose the broker's data: an evicting policy, or no persistence."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.runtime import open_runtime
from bot.settings import Settings
from bot.store.connection import EmbeddedRedis


def settings(url: str) -> Settings:
    return Settings(_env_file=None, redis_url=url, queue_partitions=2)


def risks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "event=redis_config_risk" in r.getMessage()
    ]


async def test_an_evicting_policy_is_warned_about(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO)
    with EmbeddedRedis(tmp_path, None, "--maxmemory-policy", "allkeys-lru") as server:
        async with open_runtime(settings(server.url), server.url, workers=False):
            pass
    [line] = risks(caplog)
    assert "allkeys-lru" in line and "noeviction" in line


async def test_volatile_policies_and_no_persistence_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with EmbeddedRedis(None, None, "--maxmemory-policy", "volatile-ttl") as server:
        async with open_runtime(settings(server.url), server.url, workers=False):
            pass
    found = risks(caplog)
    assert len(found) == 2
    assert any("volatile-ttl" in line for line in found)
    assert any("persistence is off" in line for line in found)


async def test_the_recommended_set_up_gives_no_warning(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    with EmbeddedRedis(tmp_path, None, "--maxmemory-policy", "noeviction") as server:
        async with open_runtime(settings(server.url), server.url, workers=False):
            pass
    assert risks(caplog) == []


async def test_rdb_snapshots_count_as_persistence(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO)
    with EmbeddedRedis(None, None, "--save", "60 1", "--dir", str(tmp_path)) as server:
        async with open_runtime(settings(server.url), server.url, workers=False):
            pass
    assert risks(caplog) == []
