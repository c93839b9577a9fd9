"""`POST /webhooks/regal`: Regal reporting webhooks -> queued Braze `/users/track` updates.

Regal never retries and drops an event it gets no answer for within 5 seconds, so the view does
the least that makes the event safe: authenticate, bound, validate, map (bot/regal_mapping.py)
and append the objects to a track stream in Redis; the profile loop (bot/track.py) sends them.
A body that cannot be mapped is refused with 422 and nothing is queued.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from aiohttp import web
from pydantic import ValidationError

from bot.appkeys import RUNTIME
from bot.logs import event
from bot.regal_mapping import RegalWebhook, Unmappable, to_track
from bot.store.conversations import REDIS_DOWN
from bot.track import enqueue
from bot.web.braze_webhook import bearer_ok, read_bounded
from bot.web.common import error, invalid_fields

log = logging.getLogger("bot.web.regal")

ENQUEUE_TIMEOUT_S = 3.0  # well inside Regal's 5 s


async def regal_webhook(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    counter = rt.metrics.inbound
    secret = rt.settings.regal_webhook_secret.get_secret_value() if rt.settings.regal_webhook_secret else ""
    if not bearer_ok(request, secret):
        counter.labels("regal", "rejected").inc()
        return error(401, "unauthorized", "missing or wrong Regal webhook secret")
    raw = await read_bounded(request)
    if raw is None:
        counter.labels("regal", "rejected").inc()
        return error(413, "too_large", "body too large")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        counter.labels("regal", "rejected").inc()
        return error(400, "invalid_json", "body is not JSON")
    if not isinstance(body, dict):
        counter.labels("regal", "rejected").inc()
        return error(422, "invalid_fields", "body must be a JSON object", fields={"body": "not an object"})
    try:
        hook = RegalWebhook.model_validate(body)
        entries = to_track(hook, subscription_groups=rt.settings.regal_subscription_groups, now=time.time())
    except ValidationError as exc:
        counter.labels("regal", "rejected").inc()
        return invalid_fields(exc)
    except Unmappable as exc:
        counter.labels("regal", "rejected").inc()
        return error(422, "invalid_fields", str(exc), fields={exc.field: exc.message})
    if entries:
        try:
            await asyncio.wait_for(
                enqueue(rt.redis, rt.settings.queue_partitions, entries), timeout=ENQUEUE_TIMEOUT_S
            )
        except (*REDIS_DOWN, TimeoutError):
            counter.labels("regal", "unavailable").inc()
            event(log, "regal_unavailable", logging.WARNING, regal_event=hook.name)
            return error(503, "store_unavailable", "update store unavailable")
    counter.labels("regal", "accepted").inc()
    event(log, "regal_webhook", regal_event=hook.name, objects=len(entries))
    return web.json_response({"status": "accepted", "objects": len(entries)}, status=202)
