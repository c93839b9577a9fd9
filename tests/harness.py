"""A broker under test: the real app on loopback with fake Braze and fake LLM, plus helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from bot.app import create_app
from bot.appkeys import RUNTIME
from bot.runtime import Runtime
from bot.settings import Settings
from bot.sim.session import serve_app
from tests.fakes.braze import BrazeStandIn
from tests.fakes.llm import FakeLLM

SECRET = "test-webhook-secret"
BRAZE_KEY = "test-braze-key"
REPLY_CAMPAIGN = "reply-campaign"
TEMPLATE_CAMPAIGN = "template-campaign"
AGENT_TOKEN = "agent-token-1"
AGENT2_TOKEN = "agent-token-2"


def make_settings(braze_url: str, llm_url: str | None, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "braze_rest_endpoint": braze_url,
        "braze_api_key": SecretStr(BRAZE_KEY),
        "braze_reply_campaign_id": REPLY_CAMPAIGN,
        "braze_template_campaign_id": TEMPLATE_CAMPAIGN,
        "webhook_secret": SecretStr(SECRET),
        "redis_url": redis_url,
        "openai_base_url": llm_url,
        "openai_api_key": SecretStr("sk-test") if llm_url else None,
        "llm_backend": "openai" if llm_url else "faq",
        "llm_timeout_s": 5.0,
        "llm_max_retries": 0,
        "agent_api_tokens": {AGENT_TOKEN: "alice", AGENT2_TOKEN: "bob"},
        "braze_batch_linger_ms": 5.0,
        "braze_retry_max_wait_s": 0.2,
        "lease_ttl_ms": 3000,
        "queue_partitions": 4,
        # A routes.yaml lying in the working directory must not change what the tests see.
        "routes_file": "",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def counter_value(counter: Any, **labels: str) -> float:
    """The current value of a labelled Prometheus counter (0 before it was first counted)."""
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def inbound(
    message: str = "hello", user_id: str = "u-123", phone: str = "+15551234567", **extra: Any
) -> dict[str, Any]:
    body = {
        "user_id": user_id,
        "phone_number": phone,
        "message": message,
        "message_id": "",
        "profile_name": "",
        "media_urls": "",
        "sent_at": "",
    }
    body.update(extra)
    return body


@dataclass
class Broker:
    url: str
    settings: Settings
    app: web.Application
    braze: BrazeStandIn
    llm: FakeLLM
    http: aiohttp.ClientSession
    braze_url: str
    llm_url: str

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    async def post(
        self,
        body: Any,
        *,
        secret: str | None = SECRET,
        raw: bytes | None = None,
        path: str = "/webhooks/braze/whatsapp",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent_headers = dict(headers or {})
        if secret is not None:
            sent_headers["Authorization"] = f"Bearer {secret}"
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with self.http.post(self.url + path, headers=sent_headers, **kwargs) as resp:
            try:
                data = await resp.json()
            except (aiohttp.ContentTypeError, ValueError):
                data = await resp.text()
            return resp.status, data

    async def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(self.url + path, headers=headers) as resp:
            try:
                return resp.status, await resp.json()
            except (aiohttp.ContentTypeError, ValueError):
                return resp.status, await resp.text()

    async def say(
        self, text: str, user_id: str = "u-123", phone: str = "+15551234567", **extra: Any
    ) -> tuple[int, Any]:
        return await self.post(inbound(text, user_id, phone, **extra))

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    async def replies(self, user: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """Wait until `user` has received at least `count` messages; return them all."""
        await self.wait_for(
            lambda: len(self.braze.messages_for(user)) >= count, timeout, f"{count} replies to {user}"
        )
        return self.braze.messages_for(user)

    async def settle(self, seconds: float = 0.3) -> None:
        """Give the pipeline time to do anything it should not (used before asserting absence)."""
        await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def start_broker(redis_url: str, *, workers: bool = True, **overrides: Any) -> AsyncIterator[Broker]:
    braze, llm = BrazeStandIn(api_key=BRAZE_KEY), FakeLLM()
    braze_runner, braze_url = await serve_app(braze.app)
    llm_runner, llm_url = await serve_app(llm.app)
    use_llm = overrides.pop("use_llm", True)
    settings = make_settings(braze_url, llm_url + "/v1" if use_llm else None, redis_url, **overrides)
    app = create_app(settings, redis_url, workers=workers)
    runner, url = await serve_app(app)
    http = aiohttp.ClientSession()
    try:
        yield Broker(url, settings, app, braze, llm, http, braze_url, llm_url)
    finally:
        await http.close()
        llm.release()
        await runner.cleanup()
        await llm_runner.cleanup()
        await braze_runner.cleanup()
