"""`POST /webhooks/zendesk`: the Zendesk trigger's call, signed with the webhook's secret.

Zendesk signs `timestamp + raw body` with HMAC-SHA256 and sends it base64-encoded in
`X-Zendesk-Webhook-Signature`, the timestamp in `X-Zendesk-Webhook-Signature-Timestamp`. A bad
signature or a timestamp more than five minutes off gets 401 and changes nothing. Zendesk may
call more than once for one action: `X-Zendesk-Webhook-Invocation-Id` deduplicates retries, and
the policy (handlers/agent.py `zendesk_update`) never relays one comment twice.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bot.appkeys import RUNTIME
from bot.errors import Conflict
from bot.logs import event, mask_id
from bot.models import ConvState
from bot.runtime import Runtime
from bot.store.conversations import APPLIED, FENCED, REDIS_DOWN
from bot.web.braze_webhook import read_bounded
from bot.web.common import error, invalid_fields
from handlers.agent import ZendeskOutcome, ZendeskSeen, action_context, zendesk_update

log = logging.getLogger("bot.web.zendesk")

MAX_SKEW_S = 300.0
INVOCATION_TTL_S = 7 * 24 * 3600
ATTEMPTS = 5


class ZendeskWebhookBody(BaseModel):
    """The trigger body README gives (CONTRACT.md); placeholders render as plain text."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    ticket_id: str = ""
    external_id: str = ""
    status: str = ""
    comment: str = ""
    author_role: str = ""

    @field_validator("*", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        if value is None:
            return ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(int(value)) if float(value).is_integer() else str(value)
        return value


class WebhookAnswer(BaseModel):
    status: str
    relayed: bool = False
    returned_to_bot: bool = False
    reason: str | None = None


# The contract's trigger body. Zendesk does not JSON-escape placeholders, so a comment with a double
# quote in it breaks the JSON; the fields' fixed order still tells where the comment ends.
_TRIGGER_BODY = re.compile(
    r'^\s*\{\s*"ticket_id"\s*:\s*"(?P<ticket_id>[^"]*)"\s*,'
    r'\s*"external_id"\s*:\s*"(?P<external_id>[^"]*)"\s*,'
    r'\s*"status"\s*:\s*"(?P<status>[^"]*)"\s*,'
    r'\s*"comment"\s*:\s*"(?P<comment>.*)"\s*,'
    r'\s*"author_role"\s*:\s*"(?P<author_role>[^"]*)"\s*\}\s*$',
    re.DOTALL,
)


def parse_trigger_body(raw: bytes) -> Any:
    """The webhook's JSON; raw new lines in strings are allowed (multi-line comments arrive unescaped)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    try:
        return json.loads(text, strict=False)
    except ValueError:
        match = _TRIGGER_BODY.match(text)
        return match.groupdict() if match else None


def _timestamp(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def signature_problem(headers: Any, raw: bytes, secret: str, now: float) -> str | None:
    """Why the request is not from Zendesk (None when it is)."""
    signature = headers.get("X-Zendesk-Webhook-Signature", "").strip()
    stamp = headers.get("X-Zendesk-Webhook-Signature-Timestamp", "").strip()
    if not signature or not stamp or not secret:
        return "missing signature"
    expected = base64.b64encode(hmac.new(secret.encode(), stamp.encode() + raw, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature.encode()):
        return "bad signature"
    when = _timestamp(stamp)
    if when is None or abs(now - when) > MAX_SKEW_S:
        return "stale timestamp"
    return None


def _answer(answer: WebhookAnswer) -> web.Response:
    return web.json_response(answer.model_dump(exclude_none=True))


async def zendesk_webhook(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    metrics = rt.metrics.inbound
    settings = rt.settings
    if not settings.zendesk_enabled or settings.zendesk_webhook_secret is None:
        return error(404, "not_configured", "Zendesk is not configured")
    raw = await read_bounded(request)
    if raw is None:
        metrics.labels("zendesk", "rejected").inc()
        return error(413, "too_large", "body over 64 KiB")
    problem = signature_problem(
        request.headers, raw, settings.zendesk_webhook_secret.get_secret_value(), time.time()
    )
    if problem:
        metrics.labels("zendesk", "rejected").inc()
        event(log, "zendesk_webhook_refused", logging.WARNING, reason=problem)
        return error(401, "unauthorized", problem)
    data = parse_trigger_body(raw)
    if data is None:
        metrics.labels("zendesk", "rejected").inc()
        return error(400, "invalid_json", "body is not JSON")
    if not isinstance(data, dict):
        return error(422, "invalid_fields", "body must be a JSON object")
    try:
        body = ZendeskWebhookBody.model_validate(data)
    except ValidationError as exc:
        metrics.labels("zendesk", "rejected").inc()
        return invalid_fields(exc)

    conv = body.external_id
    if not conv:
        return _answer(WebhookAnswer(status="ignored", reason="ticket has no external_id"))
    keys = rt.store.keys(conv)
    invocation = request.headers.get("X-Zendesk-Webhook-Invocation-Id", "").strip()
    marker = keys.dedupe("zendesk-" + hashlib.sha256((invocation or raw.hex()).encode()).hexdigest()[:32])
    try:
        if not await rt.redis.exists(keys.conv):
            metrics.labels("zendesk", "ignored").inc()
            return _answer(WebhookAnswer(status="ignored", reason="unknown conversation"))
        if not await rt.redis.set(marker, "1", nx=True, ex=INVOCATION_TTL_S):
            metrics.labels("zendesk", "duplicate").inc()
            return _answer(WebhookAnswer(status="duplicate"))
    except REDIS_DOWN:
        return error(503, "store_unavailable", "store unavailable, retry later")
    try:
        outcome = await _apply(rt, conv, body)
    except BaseException as exc:
        # Not processed: forget the invocation so Zendesk's retry gets through.
        with contextlib.suppress(Exception):
            await rt.redis.delete(marker)
        if isinstance(exc, REDIS_DOWN):
            return error(503, "store_unavailable", "store unavailable, retry later")
        raise
    metrics.labels("zendesk", "accepted").inc()
    event(
        log,
        "zendesk_webhook",
        conv=mask_id(conv),
        ticket=body.ticket_id,
        status=body.status,
        relayed=outcome.relayed,
        returned=outcome.returned_to_bot,
        ignored=outcome.ignored or None,
    )
    return _answer(
        WebhookAnswer(
            status="undeliverable" if outcome.undeliverable else "processed",
            relayed=outcome.relayed,
            returned_to_bot=outcome.returned_to_bot,
            reason=outcome.ignored or None,
        )
    )


async def _apply(rt: Runtime, conv: str, body: ZendeskWebhookBody) -> ZendeskOutcome:
    keys = rt.store.keys(conv)
    for _ in range(ATTEMPTS):
        raw = await rt.redis.hgetall(keys.conv)
        now = time.time()
        state = ConvState.from_hash(conv, raw)
        ctx = action_context(rt.services, state, now)
        outcome = zendesk_update(
            ctx,
            ZendeskSeen.from_hash(raw),
            ticket_id=body.ticket_id,
            status=body.status,
            comment=body.comment,
            author_role=body.author_role,
        )
        m = ctx.mutation
        if not (m.set or m.status or m.out or m.audit or m.track or m.jobs):
            return outcome
        result = await rt.store.apply(keys, m, now=now, expect_epoch=state.epoch, expect_status=state.status)
        if result.code == APPLIED:
            return outcome
        if result.code != FENCED:
            break
    raise Conflict("conversation changed too often")
