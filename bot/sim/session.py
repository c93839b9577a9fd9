"""A running simulation: private Redis, the Braze stand-in and the real broker, all on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from bot.app import create_app
from bot.appkeys import RUNTIME
from bot.clients.llm import Responder
from bot.logs import event
from bot.runtime import Runtime
from bot.settings import Settings
from bot.sim.braze_standin import BrazeStandIn, Delivered
from bot.store.connection import EmbeddedRedis

log = logging.getLogger("bot.sim")

SIM_API_KEY = "sim-braze-key"
SIM_REPLY_CAMPAIGN = "sim-reply-campaign"
SIM_TEMPLATE_CAMPAIGN = "sim-template-campaign"


@dataclass
class SimUser:
    user_id: str
    phone: str
    name: str = ""

    @property
    def address(self) -> str:
        """How the stand-in names this user's deliveries."""
        return self.user_id or self.phone


class Simulation:
    def __init__(
        self,
        *,
        settings: Settings,
        standin: BrazeStandIn,
        broker_url: str,
        secret: str,
        agent_token: str,
        app: web.Application,
        http: aiohttp.ClientSession,
    ) -> None:
        self.settings = settings
        self.agent_token = agent_token
        self.app = app
        self.runtime: Runtime = app[RUNTIME]
        self.standin = standin
        self.broker_url = broker_url
        self.secret = secret
        self.http = http

    async def send(self, user: SimUser, text: str, *, message_id: str | None = None) -> dict[str, Any]:
        """Deliver `text` as Braze's webhook campaign would."""
        body = {
            "user_id": user.user_id,
            "phone_number": user.phone,
            "message": text,
            "message_id": message_id or uuid.uuid4().hex[:16],
            "profile_name": user.name,
            "media_urls": "",
            "sent_at": "",
        }
        async with self.http.post(
            f"{self.broker_url}/webhooks/braze/whatsapp",
            json=body,
            headers={"Authorization": f"Bearer {self.secret}"},
        ) as resp:
            answer: dict[str, Any] = await resp.json()
            answer["http_status"] = resp.status
            return answer

    async def idle(self) -> bool:
        rt = self.runtime
        return (
            await rt.store.queue_depth() == 0
            and await rt.streams.depth("outbox") == 0
            and await rt.streams.depth("jobs") == 0
        )

    async def wait_idle(self, timeout_s: float = 120.0) -> bool:
        """True once nothing is queued, in a turn, or waiting to be sent (checked twice in a row)."""
        deadline = time.monotonic() + timeout_s
        calm = 0
        while time.monotonic() < deadline:
            calm = calm + 1 if await self.idle() else 0
            if calm >= 3:
                return True
            await asyncio.sleep(0.02)
        return False


def sim_settings(base: Settings, standin_url: str, secret: str, agent_token: str) -> Settings:
    return base.model_copy(
        update={
            "braze_rest_endpoint": standin_url,
            "braze_api_key": SecretStr(SIM_API_KEY),
            "braze_reply_campaign_id": SIM_REPLY_CAMPAIGN,
            "braze_template_campaign_id": SIM_TEMPLATE_CAMPAIGN,
            "webhook_secret": SecretStr(secret),
            "agent_api_tokens": {agent_token: "sim-agent", **base.agent_api_tokens},
            "braze_batch_linger_ms": 0.0,
        }
    )


async def serve_app(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", [])
    bound = sockets[0].getsockname()[1]
    return runner, f"http://{host}:{bound}"


@contextlib.asynccontextmanager
async def simulation(
    base: Settings,
    *,
    data_dir: Path | None = None,
    port: int = 0,
    agent_token: str | None = None,
    responder: Responder | None = None,
    setup_app: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[Simulation]:
    """Start everything; `data_dir` keeps the private Redis's data (None: in memory only).

    `responder` replaces the one the settings select (the web simulator wraps it to inject LLM
    faults); `setup_app` adds routes to the broker app before it starts (the simulator's page is
    served from the broker's origin so its links into the agent console work).
    """
    embedded: EmbeddedRedis | None = None
    redis_url = base.redis_url
    if not redis_url:
        embedded = EmbeddedRedis(data_dir).start()
        redis_url = embedded.url
        event(log, "private_redis", port=embedded.port)
    standin = BrazeStandIn(api_key=SIM_API_KEY, message_property=base.braze_message_property)
    standin_runner, standin_url = await serve_app(standin.app)
    secret = secrets.token_urlsafe(16)
    token = agent_token or secrets.token_urlsafe(16)
    settings = sim_settings(base, standin_url, secret, token)
    if embedded is not None and data_dir is None:  # in memory on purpose: no persistence warning
        settings = settings.model_copy(update={"redis_config_check": False})
    app = create_app(settings, redis_url, responder=responder)
    if setup_app is not None:
        setup_app(app)
    broker_runner, broker_url = await serve_app(app, port=port)
    http = aiohttp.ClientSession()
    try:
        yield Simulation(
            settings=settings,
            standin=standin,
            broker_url=broker_url,
            secret=secret,
            agent_token=token,
            app=app,
            http=http,
        )
    finally:
        await http.close()
        await broker_runner.cleanup()
        await standin_runner.cleanup()
        if embedded:
            embedded.stop()


def format_delivery(item: Delivered) -> str:
    lines = item.text.splitlines() or [""]
    return "bot> " + "\n     ".join(lines)
