"""`/admin/dead-letters…`: operators list, replay and drop dead letters (ADMIN_API_TOKENS bearer)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.appkeys import RUNTIME
from bot.deadletters import DeadLetters, NotReplayable
from bot.logs import event
from bot.store.conversations import REDIS_DOWN
from bot.web.common import error, invalid_fields

log = logging.getLogger("bot.web.admin")

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["send", "job", "track"] | None = None
    reason: str | None = Field(None, max_length=200)
    limit: int = Field(100, ge=1, le=1000)


class ReplayAllQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["send", "job", "track"] | None = None
    reason: str | None = Field(None, max_length=200)


# -- answers (pydantic, so bot/web/openapi.py describes exactly what is sent) ----------------------


class DeadLetterSummary(BaseModel):
    id: str = Field(description="<partition>-<stream id>, unique across partitions")
    kind: str = Field(description="send (a reply), job (Zendesk, Regal), track (/users/track), inbound")
    reason: str = Field(description="why it failed for good, e.g. braze_400, outcome_unknown")
    at: float = Field(description="when it was dead-lettered, Unix seconds")
    attempts: int
    conv: str = Field(description="the conversation it belongs to")
    about: str = Field(description="the row kind, job kind or track object type")


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetterSummary]
    total: int = Field(description="dead letters in all partitions, before filters and the limit")


class DeadLetterDetail(DeadLetterSummary):
    payload: dict[str, Any] = Field(description="what a replay puts back in its stream")


class DeadLetterShown(BaseModel):
    dead_letter: DeadLetterDetail


class Replayed(BaseModel):
    status: Literal["replayed"] = "replayed"
    id: str


class ReplayedAll(BaseModel):
    status: Literal["replayed"] = "replayed"
    replayed: int


class Dropped(BaseModel):
    status: Literal["dropped"] = "dropped"
    id: str


def _json(model: BaseModel) -> web.Response:
    return web.json_response(model.model_dump(mode="json"))


def admin_of(request: web.Request) -> str | None:
    """The operator named by the request's Bearer token, compared in constant time; else None."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    given = header.removeprefix("Bearer ").strip().encode()
    found = None
    for token, admin in request.app[RUNTIME].settings.admin_api_tokens.items():
        if hmac.compare_digest(given, token.encode()):
            found = admin
    return found


def _guarded(view: Callable[[web.Request, str, DeadLetters], Awaitable[web.Response]]) -> View:
    """Auth first, then the view with the caller's name; Redis trouble is a 503, never a 500."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        admin = admin_of(request)
        if admin is None:
            return error(401, "unauthorized", "missing or wrong admin token")
        rt = request.app[RUNTIME]
        try:
            return await view(request, admin, DeadLetters(rt.redis, rt.settings.queue_partitions, rt.metrics))
        except REDIS_DOWN as exc:
            event(log, "admin_store_unavailable", logging.WARNING, error=type(exc).__name__)
            return error(503, "store_unavailable", "message store unavailable, retry later")

    return wrapper


def _query_error(exc: ValidationError) -> web.Response:
    return invalid_fields(exc, whole="query")


def _not_found() -> web.Response:
    return error(404, "not_found", "no such dead letter (already replayed or dropped?)")


@_guarded
async def list_dead_letters(request: web.Request, admin: str, dead: DeadLetters) -> web.Response:
    try:
        query = ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return _query_error(exc)
    letters = await dead.find(limit=query.limit, kind=query.kind, reason=query.reason)
    rows = [DeadLetterSummary.model_validate(d.summary()) for d in letters]
    return _json(DeadLetterList(dead_letters=rows, total=await dead.total()))


@_guarded
async def show_dead_letter(request: web.Request, admin: str, dead: DeadLetters) -> web.Response:
    dead_id = request.match_info["id"]
    letter = await dead.get(dead_id)
    if letter is None:
        return _not_found()
    return _json(DeadLetterShown(dead_letter=DeadLetterDetail(**letter.summary(), payload=letter.payload)))


@_guarded
async def replay_dead_letter(request: web.Request, admin: str, dead: DeadLetters) -> web.Response:
    dead_id = request.match_info["id"]
    try:
        new_id = await dead.replay(dead_id, by=admin)
    except NotReplayable as exc:
        return error(
            409, "not_replayable", f"a dead letter of kind {exc} cannot be replayed; drop it instead"
        )
    if new_id is None:
        return _not_found()
    return _json(Replayed(id=dead_id))


@_guarded
async def replay_all_dead_letters(request: web.Request, admin: str, dead: DeadLetters) -> web.Response:
    try:
        query = ReplayAllQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return _query_error(exc)
    count = await dead.replay_all(by=admin, kind=query.kind, reason=query.reason)
    return _json(ReplayedAll(replayed=count))


@_guarded
async def drop_dead_letter(request: web.Request, admin: str, dead: DeadLetters) -> web.Response:
    dead_id = request.match_info["id"]
    if not await dead.drop(dead_id, by=admin):
        return _not_found()
    return _json(Dropped(id=dead_id))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/dead-letters", list_dead_letters)
    app.router.add_post("/admin/dead-letters/replay-all", replay_all_dead_letters)
    app.router.add_get("/admin/dead-letters/{id}", show_dead_letter)
    app.router.add_post("/admin/dead-letters/{id}/replay", replay_dead_letter)
    app.router.add_delete("/admin/dead-letters/{id}", drop_dead_letter)
