"""Zendesk Support REST: requester users, tickets and comments (API-token basic auth)."""

from __future__ import annotations

import base64
from typing import Any, Literal, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from bot.clients.http import call_json
from bot.errors import OutboundError

TAGS = ("whatsapp", "bot_handoff")
Envelope = TypeVar("Envelope", bound=BaseModel)


class ZendeskUser(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int


class ZendeskTicket(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int
    requester_id: int | None = None
    external_id: str | None = None
    status: str = ""


class _UserEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user: ZendeskUser


class _TicketEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ticket: ZendeskTicket


class Comment(BaseModel):
    body: str
    public: bool
    author_id: int | None = None


class NewTicket(BaseModel):
    """The `ticket` object of `POST /api/v2/tickets.json`."""

    subject: str = Field(max_length=250)
    comment: Comment
    requester_id: int
    external_id: str
    tags: list[str] = Field(default_factory=lambda: list(TAGS))
    type: Literal["problem", "incident", "question", "task"] = "question"
    priority: Literal["urgent", "high", "normal", "low"] = "normal"


def basic_auth(email: str, api_token: SecretStr) -> str:
    raw = f"{email}/token:{api_token.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class ZendeskClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        email: str,
        api_token: SecretStr,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": basic_auth(email, api_token)}
        self._timeout_s = timeout_s

    async def upsert_user(self, *, name: str, phone: str, external_id: str) -> int:
        """The end user for this conversation, created or updated by `external_id` (idempotent)."""
        user: dict[str, Any] = {"name": name, "external_id": external_id, "role": "end-user"}
        if phone:
            user["phone"] = phone
        answer = await self._call("POST", "/api/v2/users/create_or_update.json", {"user": user})
        return self._parse(_UserEnvelope, answer).user.id

    async def create_ticket(self, ticket: NewTicket, idempotency_key: str) -> ZendeskTicket:
        """A retried call with the same key returns the ticket the first call created."""
        answer = await self._call(
            "POST",
            "/api/v2/tickets.json",
            {"ticket": ticket.model_dump(exclude_none=True)},
            headers={"Idempotency-Key": idempotency_key[:255]},
        )
        return self._parse(_TicketEnvelope, answer).ticket

    async def add_comment(self, ticket_id: int, comment: Comment, *, status: str | None = None) -> None:
        """Comments are added by updating the ticket (the Ticket Comments API is read-only)."""
        ticket: dict[str, Any] = {"comment": comment.model_dump(exclude_none=True)}
        if status:
            ticket["status"] = status
        await self._call("PUT", f"/api/v2/tickets/{ticket_id}.json", {"ticket": ticket})

    async def _call(
        self, method: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Any:
        return await call_json(
            "zendesk",
            self._session,
            method,
            self._base + path,
            timeout_s=self._timeout_s,
            json=body,
            headers={**self._headers, **(headers or {})},
        )

    @staticmethod
    def _parse(model: type[Envelope], answer: Any) -> Envelope:
        try:
            return model.model_validate(answer)
        except ValidationError:
            raise OutboundError("zendesk", "unexpected answer shape", retryable=False) from None
