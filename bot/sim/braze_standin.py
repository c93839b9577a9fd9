"""A local stand-in for the Braze REST API, speaking its wire format over HTTP.

Used by `python -m bot simulate` and by the tests: it records every request, delivers trigger
sends to subscribers as "messages on the user's phone", and can be told to fail (429 with
`X-RateLimit-Reset`, 5xx, 4xx, slow answers) to show how the broker copes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_RECIPIENTS = 50
# The record of the request being answered, for the request listeners (same task as the handler).
_RECORD: ContextVar[dict[str, Any] | None] = ContextVar("standin_record", default=None)


@dataclass
class Delivered:
    """One message as it would reach a user's phone."""

    user: str  # external id, or the phone alias
    text: str
    campaign_id: str
    properties: dict[str, Any]
    at: float


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class BrazeStandIn:
    def __init__(self, api_key: str = "sim-key", message_property: str = "external_system_msg_body") -> None:
        self.api_key = api_key
        self.message_property = message_property
        self.requests: list[dict[str, Any]] = []  # every request: {"path", "body", "status", "at"}
        self.delivered: list[Delivered] = []
        self.track_bodies: list[dict[str, Any]] = []
        self.faults: dict[str, list[Fault]] = {"/campaigns/trigger/send": [], "/users/track": []}
        self.delay_s = 0.0
        self.track_errors: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
        self._listeners: list[Callable[[Delivered], None]] = []
        self._request_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.app = web.Application(client_max_size=4 * 1024 * 1024, middlewares=[self._notify])
        self.app.router.add_post("/campaigns/trigger/send", self._trigger_send)
        self.app.router.add_post("/users/track", self._users_track)

    # -- control -------------------------------------------------------------------------------
    def fail_next(
        self, path: str, status: int, times: int = 1, *, reset_in_s: float | None = None, delay_s: float = 0.0
    ) -> None:
        headers = {}
        if reset_in_s is not None:
            headers["X-RateLimit-Reset"] = str(int(time.time() + reset_in_s) + (1 if reset_in_s % 1 else 0))
        self.faults[path] += [Fault(status, headers, delay_s) for _ in range(times)]

    def on_delivery(self, listener: Callable[[Delivered], None]) -> None:
        self._listeners.append(listener)

    def on_request(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Called with each request's record once its answer (status) is decided."""
        self._request_listeners.append(listener)

    def messages_for(self, user: str) -> list[str]:
        return [d.text for d in self.delivered if d.user == user]

    def trigger_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == "/campaigns/trigger/send" and r["status"] == 201]

    # -- wire ----------------------------------------------------------------------------------
    @web.middleware
    async def _notify(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        _RECORD.set(None)
        response = await handler(request)
        record = _RECORD.get()
        if record is not None:
            for listener in self._request_listeners:
                listener(record)
        return response

    def _rate_headers(self) -> dict[str, str]:
        reset = int(time.time() // 3600 + 1) * 3600
        return {
            "X-RateLimit-Limit": "250000",
            "X-RateLimit-Remaining": "249000",
            "X-RateLimit-Reset": str(reset),
        }

    async def _gate(self, request: web.Request) -> tuple[web.Response | None, dict[str, Any]]:
        path = request.path
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = {}
        record = {
            "path": path,
            "body": body,
            "at": time.time(),
            "status": 0,
            "auth": request.headers.get("Authorization", ""),
        }
        self.requests.append(record)
        _RECORD.set(record)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.faults.get(path):
            fault = self.faults[path].pop(0)
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            record["status"] = fault.status
            return web.json_response(
                {"message": f"simulated HTTP {fault.status}"},
                status=fault.status,
                headers={**self._rate_headers(), **fault.headers},
            ), body
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            record["status"] = 401
            return web.json_response({"message": "Invalid API Key"}, status=401), body
        return None, body

    async def _trigger_send(self, request: web.Request) -> web.Response:
        failed, body = await self._gate(request)
        if failed:
            return failed
        recipients = body.get("recipients") if isinstance(body, dict) else None
        record = self.requests[-1]
        if not body.get("campaign_id") or not isinstance(recipients, list) or not recipients:
            record["status"] = 400
            return web.json_response({"message": "No Recipients"}, status=400)
        if len(recipients) > MAX_RECIPIENTS:
            record["status"] = 400
            return web.json_response(
                {"message": "The max number of external_ids and aliases per request was exceeded"}, status=400
            )
        now = time.time()
        for rec in recipients:
            user = rec.get("external_user_id") or (rec.get("user_alias") or {}).get("alias_name", "")
            props = rec.get("trigger_properties") or {}
            item = Delivered(user, str(props.get(self.message_property, "")), body["campaign_id"], props, now)
            self.delivered.append(item)
            for listener in self._listeners:
                listener(item)
        record["status"] = 201
        return web.json_response(
            {"dispatch_id": uuid.uuid4().hex[:24], "message": "success"},
            status=201,
            headers=self._rate_headers(),
        )

    async def _users_track(self, request: web.Request) -> web.Response:
        failed, body = await self._gate(request)
        if failed:
            return failed
        record = self.requests[-1]
        count = sum(len(body.get(k) or []) for k in ("attributes", "events", "purchases"))
        if count > 75:
            record["status"] = 400
            return web.json_response({"message": "Max Input Length Exceeded"}, status=400)
        self.track_bodies.append(body)
        errors = self.track_errors(body) if self.track_errors else []
        record["status"] = 201
        answer: dict[str, Any] = {
            "message": "success",
            "attributes_processed": len(body.get("attributes") or []),
            "events_processed": len(body.get("events") or []),
            "purchases_processed": len(body.get("purchases") or []),
        }
        if errors:
            answer["errors"] = errors
        return web.json_response(answer, status=201, headers=self._rate_headers())


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
