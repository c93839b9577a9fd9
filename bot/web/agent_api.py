"""The agent API (CONTRACT.md "Agent API"), the event stream and the console page.

Agents authenticate with `Authorization: Bearer <token>` (`AGENT_API_TOKENS`); the browser's
EventSource cannot set headers, so `/agent/events` also takes `?token=`. Actions run the policy in
handlers/agent.py and commit with `store.apply(expect_epoch=…)`: an action decided on a stale view
(a bot turn or another agent changed the owner meanwhile) is decided again on fresh state.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.appkeys import RUNTIME
from bot.errors import Conflict, NotFound, WindowClosed
from bot.logs import event, mask_id
from bot.models import ConvState, HistoryItem, Status
from bot.runtime import Runtime
from bot.store.conversations import APPLIED, FENCED, Mutation
from bot.web import agent_events
from bot.web.braze_webhook import read_bounded
from bot.web.common import error, invalid_fields
from handlers.agent import HeldByOther, action_context, agent_message, claim, release
from handlers.context import TurnContext, iso

log = logging.getLogger("bot.web.agent")

T = TypeVar("T")
ACTION_ATTEMPTS = 5
STATUS_FILTERS = ("waiting", "with_agent", "bot", "all")


# -- bodies (pydantic, so the OpenAPI document can describe them) --------------------------------


class ConversationSummary(BaseModel):
    id: str
    status: Status
    user_id: str | None
    phone_number: str | None
    assigned_agent: str | None
    waiting_since: str | None = Field(description="ISO 8601 UTC; set while waiting or with an agent")
    last_message_at: str | None
    profile_name: str | None = None
    ticket_id: str | None = None


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]


class TranscriptMessage(BaseModel):
    role: Literal["user", "bot", "agent", "system"]
    text: str
    at: str
    agent: str | None = None
    marker: str | None = Field(None, description="human_start / human_end for the human stretch")


class AuditEntry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    at: str
    event: str = Field(description="'status' for a status change, else what happened")
    from_status: str | None = Field(None, alias="from")
    to_status: str | None = Field(None, alias="to")
    by: str | None = None
    reason: str | None = None
    details: dict[str, Any] | None = None


class ConversationDetail(ConversationSummary):
    window_open: bool
    window_closes_at: str | None
    messages: list[TranscriptMessage]
    audit: list[AuditEntry]


class AgentMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    text: str = Field(min_length=1, max_length=16_384)


class AgentMessageOut(BaseModel):
    status: Literal["queued"] = "queued"
    message_ids: list[str]
    campaign: Literal["reply", "template"]
    conversation: ConversationSummary


class AgentIdentity(BaseModel):
    agent: str


# -- helpers ---------------------------------------------------------------------------------------


def agent_of(request: web.Request, *, allow_query: bool = False) -> str | None:
    """The agent id for the request's token, comparing against every token in constant time."""
    tokens = request.app[RUNTIME].settings.agent_api_tokens
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not given and allow_query:
        given = request.query.get("token", "")
    found: str | None = None
    for token, agent in tokens.items():
        if hmac.compare_digest(given.encode(), token.encode()) and given:
            found = agent
    return found


def _unauthorized() -> web.Response:
    return error(401, "unauthorized", "missing or wrong agent token")


def _when(ts: float) -> str | None:
    return iso(ts) if ts > 0 else None


def summary(state: ConvState) -> ConversationSummary:
    return ConversationSummary(
        id=state.id,
        status=state.status,
        user_id=state.user_id or None,
        phone_number=state.phone or None,
        assigned_agent=(state.agent or None) if state.status == "with_agent" else None,
        waiting_since=_when(state.waiting_since) if state.status != "bot" else None,
        last_message_at=_when(state.last_msg_at),
        profile_name=state.profile_name or None,
        ticket_id=state.ticket_id or None,
    )


def _message(item: HistoryItem) -> TranscriptMessage:
    return TranscriptMessage(
        role=item.role, text=item.text, at=iso(item.at), agent=item.agent or None, marker=item.marker or None
    )


def _audit(raw: dict[str, Any]) -> AuditEntry:
    known = {"at", "event", "from", "to", "by", "reason"}
    details = {k: v for k, v in raw.items() if k not in known}
    return AuditEntry(
        at=iso(float(raw.get("at", 0))),
        event=str(raw.get("event") or ("status" if "to" in raw else "note")),
        from_status=raw.get("from"),
        to_status=raw.get("to"),
        by=raw.get("by"),
        reason=raw.get("reason"),
        details=details or None,
    )


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json", by_alias=True), status=status)


def _conv_id(request: web.Request) -> str:
    # aiohttp has already percent-decoded the path segment (%2B15551234567 -> +15551234567).
    return request.match_info["id"].strip()


def _unchanged(m: Mutation) -> bool:
    return not (m.set or m.delete or m.status or m.history or m.audit or m.out or m.jobs or m.publish)


async def _act(rt: Runtime, conv_id: str, decide: Callable[[TurnContext], T]) -> tuple[T, ConvState]:
    """Run `decide` on fresh state and commit its mutation; decide again if the owner changed meanwhile."""
    keys = rt.store.keys(conv_id)
    for _ in range(ACTION_ATTEMPTS):
        state = await rt.store.state(conv_id)
        if state is None:
            raise NotFound(conv_id)
        now = time.time()
        ctx = action_context(rt.services, state, now)
        result = decide(ctx)
        if _unchanged(ctx.mutation):
            return result, state
        result_code = await rt.store.apply(
            keys, ctx.mutation, now=now, expect_epoch=state.epoch, expect_status=state.status
        )
        if result_code.code == APPLIED:
            after = await rt.store.state(conv_id)
            return result, after or state
        if result_code.code != FENCED:
            break
    raise Conflict("the conversation changed too often; try again")


# -- views -----------------------------------------------------------------------------------------


async def list_conversations(request: web.Request) -> web.Response:
    if agent_of(request) is None:
        return _unauthorized()
    wanted = request.query.get("status", "all")
    if wanted not in STATUS_FILTERS:
        return error(422, "invalid_fields", f"status must be one of {', '.join(STATUS_FILTERS)}")
    rt = request.app[RUNTIME]
    status: Status | None = None if wanted == "all" else wanted  # type: ignore[assignment]
    ids = await rt.store.conversation_ids(status)
    states = await rt.store.states(ids)
    rows = [summary(s) for s in states if status is None or s.status == status]
    return _json(ConversationList(conversations=rows))


async def get_conversation(request: web.Request) -> web.Response:
    if agent_of(request) is None:
        return _unauthorized()
    rt = request.app[RUNTIME]
    conv_id = _conv_id(request)
    state = await rt.store.state(conv_id)
    if state is None:
        return error(404, "not_found", "no such conversation")
    history = await rt.store.history(conv_id)
    audit = await rt.store.audit(conv_id)
    now = time.time()
    detail = ConversationDetail(
        **summary(state).model_dump(),
        window_open=state.window_open(now),
        window_closes_at=_when(state.last_in + 24 * 3600) if state.last_in else None,
        messages=[_message(item) for item in history],
        audit=[_audit(a) for a in audit],
    )
    return _json(detail)


async def _ownership_change(
    request: web.Request, action: Callable[[TurnContext, str], bool], logged_as: str
) -> web.Response:
    """Claim or release: the same checks, errors and answer, a different policy function."""
    agent = agent_of(request)
    if agent is None:
        return _unauthorized()
    rt = request.app[RUNTIME]
    conv_id = _conv_id(request)
    try:
        changed, state = await _act(rt, conv_id, lambda ctx: action(ctx, agent))
    except NotFound:
        return error(404, "not_found", "no such conversation")
    except HeldByOther as exc:
        return error(409, "claimed_by_other", str(exc), agent=exc.agent)
    except Conflict as exc:
        return error(409, "conflict", str(exc))
    if changed:
        event(log, logged_as, conv=mask_id(conv_id), agent=agent)
    return _json(summary(state))


async def claim_conversation(request: web.Request) -> web.Response:
    return await _ownership_change(request, claim, "agent_claimed")


async def post_message(request: web.Request) -> web.Response:
    agent = agent_of(request)
    if agent is None:
        return _unauthorized()
    raw = await read_bounded(request)
    if raw is None:
        return error(413, "too_large", "body over 64 KiB")
    try:
        body = AgentMessageIn.model_validate(json.loads(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError):
            return invalid_fields(exc)
        return error(400, "invalid_json", "body is not JSON")
    rt = request.app[RUNTIME]
    conv_id = _conv_id(request)
    try:
        rows, state = await _act(rt, conv_id, lambda ctx: agent_message(ctx, agent, body.text))
    except NotFound:
        return error(404, "not_found", "no such conversation")
    except WindowClosed:
        return error(
            409,
            "window_closed",
            "the customer's 24-hour window is closed and no template campaign is configured; "
            "nothing was sent",
        )
    except HeldByOther as exc:
        return error(409, "claimed_by_other", str(exc), agent=exc.agent)
    except Conflict as exc:
        return error(409, "conflict", str(exc))
    template = rt.settings.braze_template_campaign_id
    campaign: Literal["reply", "template"] = (
        "template" if template and rows[0].campaign_id == template else "reply"
    )
    event(log, "agent_message", conv=mask_id(conv_id), agent=agent, parts=len(rows), campaign=campaign)
    return _json(
        AgentMessageOut(message_ids=[r.id for r in rows], campaign=campaign, conversation=summary(state)),
        status=202,
    )


async def release_conversation(request: web.Request) -> web.Response:
    return await _ownership_change(request, release, "agent_released")


async def whoami(request: web.Request) -> web.Response:
    agent = agent_of(request)
    if agent is None:
        return _unauthorized()
    return _json(AgentIdentity(agent=agent))


async def events(request: web.Request) -> web.StreamResponse:
    agent = agent_of(request, allow_query=True)
    if agent is None:
        return _unauthorized()
    return await agent_events.stream(request, agent)


# -- the console -------------------------------------------------------------------------------------

_STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _static(name: str) -> bytes:
    return resources.files("bot.web").joinpath(f"static/{name}").read_bytes()


async def console(request: web.Request) -> web.Response:
    return web.Response(
        body=_static("agent.html"),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def console_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    if name not in {"agent.js", "agent.css"} or suffix not in _STATIC_TYPES:
        return error(404, "not_found", "no such file")
    return web.Response(
        body=_static(name),
        content_type=_STATIC_TYPES[suffix],
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def setup(app: web.Application) -> None:
    """Routes of the agent API, its event stream and the console; call after the runtime's cleanup_ctx."""
    app.cleanup_ctx.append(agent_events.hub_ctx)
    app.on_shutdown.append(agent_events.close_streams)
    r = app.router
    r.add_get("/agent", console)
    r.add_get("/agent/static/{name}", console_asset)
    r.add_get("/agent/me", whoami)
    r.add_get("/agent/events", events)
    r.add_get("/agent/conversations", list_conversations)
    r.add_get("/agent/conversations/{id}", get_conversation)
    r.add_post("/agent/conversations/{id}/claim", claim_conversation)
    r.add_post("/agent/conversations/{id}/messages", post_message)
    r.add_post("/agent/conversations/{id}/release", release_conversation)
