"""What every view shares: the contract's error body, and JSON errors for aiohttp's own failures."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from pydantic import ValidationError

from bot.errors import StoreUnavailable
from bot.logs import event
from bot.store.conversations import REDIS_DOWN

log = logging.getLogger("bot.web")


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """`{"error": {"code": …, "message": …}}`, the contract's shape for every error."""
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


def field_errors(exc: ValidationError, whole: str = "body") -> dict[str, str]:
    """Each bad field named once, with pydantic's message (without its "Value error, " prefix)."""
    fields: dict[str, str] = {}
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or whole
        fields.setdefault(name, err["msg"].removeprefix("Value error, "))
    return fields


def invalid_fields(exc: ValidationError, whole: str = "body") -> web.Response:
    """The 422 for input of the wrong shape: the message and `fields` name each bad field."""
    fields = field_errors(exc, whole)
    return error(422, "invalid_fields", "; ".join(f"{k}: {v}" for k, v in fields.items()), fields=fields)


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
}


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "http_error")
        return error(exc.status, code, exc.reason)
    except (*REDIS_DOWN, StoreUnavailable) as exc:
        # Redis is away (restart, failover): a transient state callers should retry, not a bug.
        event(log, "store_unavailable", logging.WARNING, route=route_of(request), error=type(exc).__name__)
        return error(503, "store_unavailable", "message store unavailable, retry later")
    except Exception as exc:
        event(log, "unhandled_error", logging.ERROR, route=route_of(request), error=type(exc).__name__)
        return error(500, "internal", "internal error")


def route_of(request: web.BaseRequest) -> str:
    """The matched route's pattern: the path may carry a conversation id, which may be a phone."""
    info = getattr(request, "match_info", None)
    resource = info.route.resource if info is not None else None
    return resource.canonical if resource is not None else "<unmatched>"


class SafeAccessLogger(AbstractAccessLogger):
    """Access lines that carry no conversation id, phone, token or query string: the matched
    route's pattern (`/agent/conversations/{id}/claim`) stands for the path."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        event(
            self.logger,
            "http",
            method=request.method,
            route=route_of(request),
            status=response.status,
            bytes=response.body_length,
            ms=round(time * 1000, 1),
        )
