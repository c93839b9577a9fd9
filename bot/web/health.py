"""`/healthz` (process up), `/readyz` (Redis reachable), `/metrics` (Prometheus)."""

from __future__ import annotations

import contextlib

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.appkeys import RUNTIME
from bot.store.conversations import REDIS_DOWN


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if await request.app[RUNTIME].store.ping():
        return web.json_response({"status": "ready"})
    return web.json_response(
        {"error": {"code": "store_unavailable", "message": "Redis unreachable"}}, status=503
    )


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    with contextlib.suppress(*REDIS_DOWN):
        rt.metrics.queue_depth.set(await rt.store.queue_depth())
        rt.metrics.outbox_depth.set(await rt.streams.depth("outbox"))
        rt.metrics.dead_letter_depth.set(await rt.streams.dead_depth())
    return web.Response(body=rt.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
