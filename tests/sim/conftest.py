"""Fixtures of the simulator tests: settings for a simulation on the test's Redis."""

from __future__ import annotations

import pytest

from bot.app import create_app
from bot.settings import Settings


@pytest.fixture
def sim_settings(redis_url: str) -> Settings:
    return Settings(_env_file=None, redis_url=redis_url, queue_partitions=4, llm_timeout_s=2.0)


def agent_api_present(settings: Settings) -> bool:
    """Whether this build serves the agent API (CONTRACT.md); the app is only built, not started."""
    app = create_app(settings, settings.redis_url or "redis://127.0.0.1:9")
    return any(r.canonical.startswith("/agent/conversations") for r in app.router.resources())


def agent_console_present(settings: Settings) -> bool:
    app = create_app(settings, settings.redis_url or "redis://127.0.0.1:9")
    return any(r.canonical == "/agent" for r in app.router.resources())
