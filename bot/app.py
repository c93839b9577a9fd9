"""`create_app(settings)`: the HTTP service, its resources in `cleanup_ctx`, and the background loops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from bot.appkeys import RUNTIME
from bot.clients.llm import Responder
from bot.runtime import open_runtime
from bot.settings import Settings
from bot.web import admin, agent_api, braze_webhook, health, openapi, regal_webhook, zendesk_webhook
from bot.web.common import json_errors


def create_app(
    settings: Settings, redis_url: str, *, workers: bool = True, responder: Responder | None = None
) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=1024 * 1024)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(settings, redis_url, workers=workers, responder=responder) as runtime:
            app[RUNTIME] = runtime
            stop = asyncio.Event()
            loops = asyncio.create_task(runtime.run_loops(stop))
            try:
                yield
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(loops, timeout=30)

    app.cleanup_ctx.append(runtime_ctx)
    app.router.add_post("/webhooks/braze/whatsapp", braze_webhook.braze_whatsapp)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/openapi.json", openapi.openapi_json)
    admin.add_routes(app)
    agent_api.setup(app)
    app.router.add_post("/webhooks/zendesk", zendesk_webhook.zendesk_webhook)
    app.router.add_post("/webhooks/regal", regal_webhook.regal_webhook)
    return app
