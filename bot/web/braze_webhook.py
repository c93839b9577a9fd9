"""`POST /webhooks/braze/whatsapp`: authenticate, bound, validate, dedupe, enqueue durably, answer."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid

from aiohttp import web
from pydantic import ValidationError

from bot.appkeys import RUNTIME
from bot.errors import StoreUnavailable
from bot.logs import event, mask_id
from bot.models import InboundWebhook, InboxEntry
from bot.web.common import error, invalid_fields

log = logging.getLogger("bot.web.braze")

MAX_BODY = 64 * 1024
DEDUPE_WITH_ID_S = 24 * 3600
DEDUPE_BODY_S = 30 * 60


def bearer_ok(request: web.Request, expected: str) -> bool:
    """Constant-time comparison of `Authorization: Bearer <secret>`."""
    given = request.headers.get("Authorization", "").encode()
    return bool(expected) and hmac.compare_digest(given, f"Bearer {expected}".encode())


async def read_bounded(request: web.Request, limit: int = MAX_BODY) -> bytes | None:
    """The raw body, or None when it is over `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    raw = await request.content.read(limit + 1)
    return None if len(raw) > limit else raw


async def braze_whatsapp(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    metrics = rt.metrics.inbound
    secret = rt.settings.webhook_secret.get_secret_value() if rt.settings.webhook_secret else ""
    if not bearer_ok(request, secret):
        metrics.labels("braze", "rejected").inc()
        return error(401, "unauthorized", "missing or wrong webhook secret")
    raw = await read_bounded(request)
    if raw is None:
        metrics.labels("braze", "rejected").inc()
        return error(413, "too_large", f"body over {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        metrics.labels("braze", "rejected").inc()
        return error(400, "invalid_json", "body is not JSON")
    if not isinstance(body, dict):
        metrics.labels("braze", "rejected").inc()
        return error(422, "invalid_fields", "body must be a JSON object", fields={"body": "not an object"})
    try:
        inbound = InboundWebhook.model_validate(body)
    except ValidationError as exc:
        metrics.labels("braze", "rejected").inc()
        return invalid_fields(exc)

    conv = inbound.conv_id
    if inbound.message_id:
        material = "\x1f".join((conv, inbound.message_id, inbound.message, inbound.media_urls))
        digest, ttl = hashlib.sha256(material.encode()).hexdigest()[:32], DEDUPE_WITH_ID_S
    else:
        digest, ttl = hashlib.sha256(raw).hexdigest()[:32], DEDUPE_BODY_S
    now = time.time()
    entry = InboxEntry(
        id=uuid.uuid4().hex,
        text=inbound.message,
        at=now,
        user_id=inbound.user_id,
        phone=inbound.phone_number,
        message_id=inbound.message_id,
        profile_name=inbound.profile_name,
        media_urls=inbound.media_urls,
    )
    try:
        fresh = await rt.store.accept(rt.store.keys(conv), digest, ttl, entry, int(now * 1000))
    except StoreUnavailable:
        metrics.labels("braze", "unavailable").inc()
        event(log, "inbound_unavailable", logging.WARNING, conv=mask_id(conv))
        return error(503, "store_unavailable", "message store unavailable, retry later")
    if not fresh:
        metrics.labels("braze", "duplicate").inc()
        event(log, "inbound_duplicate", conv=mask_id(conv))
        return web.json_response({"status": "duplicate"}, status=200)
    metrics.labels("braze", "accepted").inc()
    return web.json_response({"status": "accepted", "id": entry.id}, status=202)
