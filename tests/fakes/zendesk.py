"""A fake Zendesk Support API on loopback, plus the signing Zendesk's webhooks use.

Speaks the documented wire format: Basic auth `{email}/token:{api_token}`, `POST
/api/v2/users/create_or_update.json`, `POST /api/v2/tickets.json` (honouring `Idempotency-Key`),
`PUT /api/v2/tickets/{id}.json` for comments. It records every request and can be told to answer
429 with `Retry-After` or 5xx, before or after doing the work (a lost response).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

EMAIL = "bot@example.com"
API_TOKEN = "zd-api-token"
WEBHOOK_SECRET = "zd-webhook-secret"


@dataclass
class Fault:
    status: int
    retry_after: float | None = None
    # True: do the work, then answer with the error (the caller cannot tell it happened).
    after_processing: bool = False


@dataclass
class Ticket:
    id: int
    subject: str
    requester_id: int
    external_id: str
    tags: list[str]
    status: str = "new"
    comments: list[dict[str, Any]] = field(default_factory=list)


class FakeZendesk:
    def __init__(self, email: str = EMAIL, api_token: str = API_TOKEN) -> None:
        self.auth = "Basic " + base64.b64encode(f"{email}/token:{api_token}".encode()).decode()
        self.requests: list[dict[str, Any]] = []
        self.tickets: dict[int, Ticket] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.faults: dict[str, list[Fault]] = {"users": [], "create": [], "update": []}
        self._idempotent: dict[str, tuple[str, dict[str, Any]]] = {}
        self._next_ticket = 35436
        self._next_user = 20978392
        self.app = web.Application()
        self.app.router.add_post("/api/v2/users/create_or_update.json", self._upsert_user)
        self.app.router.add_post("/api/v2/tickets.json", self._create_ticket)
        self.app.router.add_put("/api/v2/tickets/{id}.json", self._update_ticket)

    # -- control -----------------------------------------------------------------------------------
    def fail_next(
        self,
        what: str,
        status: int,
        times: int = 1,
        *,
        retry_after: float | None = None,
        after_processing: bool = False,
    ) -> None:
        """`what`: "users", "create" or "update"."""
        self.faults[what] += [Fault(status, retry_after, after_processing) for _ in range(times)]

    def calls(self, method: str, path_prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(path_prefix)]

    def comments(self, ticket_id: int, *, public: bool | None = None) -> list[dict[str, Any]]:
        found = self.tickets[ticket_id].comments
        return [c for c in found if public is None or c.get("public", True) is public]

    # -- wire --------------------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "body": body,
                "at": time.time(),
                "idempotency_key": request.headers.get("Idempotency-Key"),
            }
        )
        if request.headers.get("Authorization") != self.auth:
            return body, web.json_response({"error": "Couldn't authenticate you"}, status=401)
        if not isinstance(body, dict):
            return {}, web.json_response({"error": "InvalidJSON"}, status=400)
        return body, None

    def _fault(self, what: str) -> Fault | None:
        return self.faults[what].pop(0) if self.faults[what] else None

    @staticmethod
    def _failure(fault: Fault) -> web.Response:
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        return web.json_response({"error": f"simulated {fault.status}"}, status=fault.status, headers=headers)

    async def _upsert_user(self, request: web.Request) -> web.Response:
        body, refused = await self._record(request)
        if refused:
            return refused
        fault = self._fault("users")
        if fault and not fault.after_processing:
            return self._failure(fault)
        user = body.get("user") or {}
        external = str(user.get("external_id") or "")
        if not user.get("name") or not external:
            return web.json_response({"error": "RecordInvalid", "details": {"name": "required"}}, status=422)
        known = self.users.get(external)
        status = 200 if known else 201
        if known is None:
            known = {"id": self._next_user, "external_id": external}
            self._next_user += 1
        known.update({k: v for k, v in user.items() if k in {"name", "phone", "role"}})
        self.users[external] = known
        if fault:
            return self._failure(fault)
        return web.json_response({"user": known}, status=status)

    async def _create_ticket(self, request: web.Request) -> web.Response:
        body, refused = await self._record(request)
        if refused:
            return refused
        key = request.headers.get("Idempotency-Key")
        fingerprint = json.dumps(body, sort_keys=True)
        if key and key in self._idempotent:
            seen_fingerprint, answer = self._idempotent[key]
            if seen_fingerprint != fingerprint:
                return web.json_response(
                    {"error": "IdempotentRequestError", "description": "key reused with another body"},
                    status=400,
                )
            return web.json_response(answer, status=201, headers={"x-idempotency-lookup": "hit"})
        fault = self._fault("create")
        if fault and not fault.after_processing:
            return self._failure(fault)
        spec = body.get("ticket") or {}
        comment = spec.get("comment") or {}
        requester = spec.get("requester_id")
        if not isinstance(requester, int) or not comment.get("body"):
            return web.json_response({"error": "RecordInvalid"}, status=422)
        ticket = Ticket(
            id=self._next_ticket,
            subject=str(spec.get("subject", "")),
            requester_id=requester,
            external_id=str(spec.get("external_id", "")),
            tags=sorted(spec.get("tags") or []),
            comments=[{**comment, "author_id": comment.get("author_id", requester)}],
        )
        self._next_ticket += 1
        self.tickets[ticket.id] = ticket
        answer = {
            "ticket": {
                "id": ticket.id,
                "requester_id": ticket.requester_id,
                "external_id": ticket.external_id,
                "status": ticket.status,
                "subject": ticket.subject,
                "tags": ticket.tags,
            }
        }
        if key:
            self._idempotent[key] = (fingerprint, answer)
        if fault:
            return self._failure(fault)
        return web.json_response(answer, status=201, headers={"x-idempotency-lookup": "miss"})

    async def _update_ticket(self, request: web.Request) -> web.Response:
        body, refused = await self._record(request)
        if refused:
            return refused
        fault = self._fault("update")
        if fault and not fault.after_processing:
            return self._failure(fault)
        ticket = self.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return web.json_response({"error": "RecordNotFound"}, status=404)
        if ticket.status == "closed":
            return web.json_response({"error": "RecordInvalid", "description": "closed"}, status=422)
        spec = body.get("ticket") or {}
        if spec.get("comment"):
            ticket.comments.append(dict(spec["comment"]))
        if spec.get("status"):
            ticket.status = str(spec["status"])
        if fault:
            return self._failure(fault)
        return web.json_response({"ticket": {"id": ticket.id, "status": ticket.status}})


def signed_headers(
    raw: bytes,
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: str | None = None,
    invocation_id: str | None = None,
) -> dict[str, str]:
    """The headers Zendesk sends with a webhook call: base64(HMAC-SHA256(secret, timestamp + body))."""
    stamp = timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hmac.new(secret.encode(), stamp.encode() + raw, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "X-Zendesk-Webhook-Id": "01HZWEBHOOK",
        "X-Zendesk-Webhook-Invocation-Id": invocation_id or uuid.uuid4().hex,
    }


def trigger_body(ticket_id: int, external_id: str, status: str, comment: str, author_role: str) -> bytes:
    """The trigger body README tells operators to configure, as Zendesk renders it."""
    return json.dumps(
        {
            "ticket_id": str(ticket_id),
            "external_id": external_id,
            "status": status,
            "comment": comment,
            "author_role": author_role,
        }
    ).encode()
