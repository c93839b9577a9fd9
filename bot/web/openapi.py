"""`GET /openapi.json`: an OpenAPI 3.1 document for every endpoint, built from the pydantic models
the views validate and answer with. tests/reliability/test_openapi.py keeps it in step with the
app's router and runs schemathesis against the live app with it."""

from __future__ import annotations

import copy
import functools
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bot.models import InboundWebhook
from bot.regal_mapping import RegalWebhook
from bot.web.admin import DeadLetterList, DeadLetterShown, Dropped, Replayed, ReplayedAll
from bot.web.agent_api import (
    AgentIdentity,
    AgentMessageIn,
    AgentMessageOut,
    ConversationDetail,
    ConversationList,
    ConversationSummary,
)
from bot.web.zendesk_webhook import WebhookAnswer, ZendeskWebhookBody

REF = "#/components/schemas/{model}"


# -- answers that views build without a model of their own ------------------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(description="machine-readable, e.g. unauthorized, invalid_fields, not_found")
    message: str
    fields: dict[str, str] | None = Field(None, description="invalid_fields: each bad field and why")


class Error(BaseModel):
    """CONTRACT.md: every error body is `{"error": {"code": …, "message": …}}`."""

    error: ErrorDetail


class Accepted(BaseModel):
    status: Literal["accepted"]
    id: str = Field(description="the stored message's id")


class Duplicate(BaseModel):
    status: Literal["duplicate"]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]


class RegalAccepted(BaseModel):
    status: Literal["accepted"]
    objects: int = Field(description="/users/track objects queued for Braze")


Direction = Literal["in", "out"]
MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (InboundWebhook, "validation"),
    (AgentMessageIn, "validation"),
    (ZendeskWebhookBody, "validation"),
    (RegalWebhook, "validation"),
    (Error, "serialization"),
    (Accepted, "serialization"),
    (Duplicate, "serialization"),
    (Health, "serialization"),
    (Ready, "serialization"),
    (RegalAccepted, "serialization"),
    (WebhookAnswer, "serialization"),
    (ConversationSummary, "serialization"),
    (ConversationList, "serialization"),
    (ConversationDetail, "serialization"),
    (AgentMessageOut, "serialization"),
    (AgentIdentity, "serialization"),
    (DeadLetterList, "serialization"),
    (DeadLetterShown, "serialization"),
    (Replayed, "serialization"),
    (ReplayedAll, "serialization"),
    (Dropped, "serialization"),
]

SECURITY_SCHEMES = {
    "webhookSecret": {"type": "http", "scheme": "bearer", "description": "WEBHOOK_SECRET (Braze campaign)"},
    "agentToken": {"type": "http", "scheme": "bearer", "description": "a token from AGENT_API_TOKENS"},
    "agentTokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "the agent token, for EventSource clients that cannot set headers",
    },
    "adminToken": {"type": "http", "scheme": "bearer", "description": "a token from ADMIN_API_TOKENS"},
    "regalSecret": {"type": "http", "scheme": "bearer", "description": "REGAL_WEBHOOK_SECRET"},
    "zendeskSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Zendesk-Webhook-Signature",
        "description": "base64(HMAC-SHA256(ZENDESK_WEBHOOK_SECRET, timestamp + raw body)); the timestamp "
        "in X-Zendesk-Webhook-Signature-Timestamp",
    },
}

ERRORS = {
    400: "the body is not JSON",
    401: "missing or wrong credentials",
    404: "no such thing",
    409: "conflicts with the conversation's owner or state",
    413: "the body is over 64 KiB",
    422: "well-formed but invalid: `fields` names each problem",
    503: "the store (Redis) is unavailable: retry later",
}


def _json(schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    body = {"$ref": REF.format(model=schema)} if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": body}}}


def _error(status: int) -> dict[str, Any]:
    return _json("Error", ERRORS[status])


def _op(
    summary: str,
    ok: dict[int, dict[str, Any]],
    errors: tuple[int, ...] = (),
    *,
    security: list[str] | None = None,
    body: str | None = None,
    example: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    tag: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {}}
    for status, answer in ok.items():
        op["responses"][str(status)] = answer
    for status in sorted({*errors, *((401,) if security else ())}):
        op["responses"][str(status)] = _error(status)
    op["security"] = [{name: []} for name in security] if security else []
    if body:
        media: dict[str, Any] = {"schema": {"$ref": REF.format(model=body)}}
        if example is not None:
            media["example"] = example
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    if parameters:
        op["parameters"] = parameters
    return op


def _path_param(name: str, description: str, example: str | None = None) -> dict[str, Any]:
    if example is not None:
        return {**_path_param(name, description), "example": example}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


CONV_ID = _path_param(
    "id", "the conversation id: the Braze external id, else the E.164 phone (percent-encoded)", "u-123"
)
INBOUND_EXAMPLE = {
    "user_id": "u-123",
    "phone_number": "+15551234567",
    "message": "hello",
    "message_id": "5f1c2a9e0b7d4c1e",
    "profile_name": "Jane",
    "media_urls": "",
    "sent_at": "",
}
ZENDESK_EXAMPLE = {
    "ticket_id": "35436",
    "external_id": "u-123",
    "status": "open",
    "comment": "Your refund is on its way.",
    "author_role": "agent",
}
REGAL_EXAMPLE = {
    "userId": "u-123",
    "traits": {"phone": "+15551234567", "email": "jane@example.com"},
    "name": "call.completed",
    "properties": {"disposition": "Converted During Convo", "talk_time": 7},
    "originalTimestamp": "1657855059",
    "eventSource": "Regal Voice",
}
NOT_BLANK = r"\S"
E164_OR_EMPTY = r"^$|^\+?[1-9][0-9]{6,14}$"


def _inbound_rules(schema: dict[str, Any]) -> None:
    """What InboundWebhook's validators require, in JSON Schema terms (pydantic cannot say it)."""
    schema["properties"]["phone_number"]["pattern"] = E164_OR_EMPTY
    schema["anyOf"] = [
        {"required": ["user_id"], "properties": {"user_id": {"pattern": NOT_BLANK}}},
        {"required": ["phone_number"], "properties": {"phone_number": {"minLength": 1}}},
    ]
    schema["allOf"] = [
        {
            "anyOf": [
                {"required": ["message"], "properties": {"message": {"pattern": NOT_BLANK}}},
                {"required": ["media_urls"], "properties": {"media_urls": {"pattern": NOT_BLANK}}},
            ]
        }
    ]


DEAD_ID = _path_param("id", "a dead letter's id as listed, <partition>-<stream id>")
KIND = _query("kind", {"type": "string", "enum": ["send", "job", "track"]}, "only this kind")
REASON = _query("reason", {"type": "string", "maxLength": 200}, "only this reason")


def _regal_rules(schema: dict[str, Any]) -> None:
    """RegalWebhook's validators: Regal sends the timestamp as a string of Unix seconds, and the
    body must name a contact (userId, else traits.email, else traits.phone)."""
    props = schema["properties"]
    props["name"]["pattern"] = NOT_BLANK
    props["originalTimestamp"]["anyOf"] = [
        {"type": "number", "minimum": 946_684_800, "exclusiveMaximum": 10_000_000_000},
        {"type": "string", "pattern": r"^\s*$|^1[0-9]{9}(\.[0-9]+)?$"},
        {"type": "null"},
    ]
    schema["anyOf"] = [
        {"required": ["userId"], "properties": {"userId": {"type": "string", "pattern": NOT_BLANK}}},
        {
            "required": ["traits"],
            "properties": {
                "traits": {"required": ["email"], "properties": {"email": {"type": "string", "pattern": "@"}}}
            },
        },
        {
            "required": ["traits"],
            "properties": {
                "traits": {
                    "required": ["phone"],
                    "properties": {"phone": {"type": "string", "pattern": E164_OR_EMPTY.split("|", 1)[1]}},
                }
            },
        },
    ]


def _paths() -> dict[str, dict[str, Any]]:
    admin = ["adminToken"]
    agent = ["agentToken"]
    return {
        "/webhooks/braze/whatsapp": {
            "post": _op(
                "An inbound WhatsApp message, as the Braze webhook campaign renders it",
                {
                    202: _json("Accepted", "stored durably; the reply follows asynchronously"),
                    200: _json("Duplicate", "a redelivery of a message already stored"),
                },
                (400, 413, 422, 503),
                security=["webhookSecret"],
                body="InboundWebhook",
                example=INBOUND_EXAMPLE,
                tag="webhooks",
            )
        },
        "/webhooks/zendesk": {
            "post": _op(
                "A Zendesk trigger: an agent's public comment, or the ticket solved/closed",
                {200: _json("WebhookAnswer", "processed, ignored or a duplicate invocation")},
                (400, 404, 413, 422, 503),
                security=["zendeskSignature"],
                body="ZendeskWebhookBody",
                example=ZENDESK_EXAMPLE,
                parameters=[
                    {
                        "name": "X-Zendesk-Webhook-Signature-Timestamp",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "the signed timestamp (within five minutes of now)",
                    }
                ],
                tag="webhooks",
            )
        },
        "/webhooks/regal": {
            "post": _op(
                "A Regal reporting event, mapped to Braze /users/track",
                {202: _json("RegalAccepted", "queued for Braze")},
                (400, 413, 422, 503),
                security=["regalSecret"],
                body="RegalWebhook",
                example=REGAL_EXAMPLE,
                tag="webhooks",
            )
        },
        "/healthz": {"get": _op("The process is up", {200: _json("Health", "up")}, tag="operations")},
        "/readyz": {
            "get": _op(
                "Redis is reachable", {200: _json("Ready", "ready to take traffic")}, (503,), tag="operations"
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics (README, Operations)",
                {
                    200: {
                        "description": "the exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                tag="operations",
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                {200: _json({"type": "object"}, "OpenAPI 3.1")},
                tag="operations",
            )
        },
        "/admin/dead-letters": {
            "get": _op(
                "Dead letters, oldest first",
                {200: _json("DeadLetterList", "the dead letters")},
                (422, 503),
                security=admin,
                parameters=[
                    KIND,
                    REASON,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most"),
                ],
                tag="admin",
            )
        },
        "/admin/dead-letters/replay-all": {
            "post": _op(
                "Replay every dead letter (optionally one kind and/or reason), each once",
                {200: _json("ReplayedAll", "how many went back to their streams")},
                (422, 503),
                security=admin,
                parameters=[KIND, REASON],
                tag="admin",
            )
        },
        "/admin/dead-letters/{id}": {
            "get": _op(
                "One dead letter with its payload",
                {200: _json("DeadLetterShown", "the dead letter")},
                (404, 503),
                security=admin,
                parameters=[DEAD_ID],
                tag="admin",
            ),
            "delete": _op(
                "Drop a dead letter for good",
                {200: _json("Dropped", "dropped")},
                (404, 503),
                security=admin,
                parameters=[DEAD_ID],
                tag="admin",
            ),
        },
        "/admin/dead-letters/{id}/replay": {
            "post": _op(
                "Put a dead letter back in the stream it came from; a second replay finds nothing (404)",
                {200: _json("Replayed", "re-queued")},
                (404, 409, 503),
                security=admin,
                parameters=[DEAD_ID],
                tag="admin",
            )
        },
        "/agent": {
            "get": _op(
                "The agent console (a page; it asks for the token)",
                {200: {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
                tag="agent",
            )
        },
        "/agent/static/{name}": {
            "get": _op(
                "The console's script and style sheet",
                {
                    200: {
                        "description": "agent.js or agent.css",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    }
                },
                (404,),
                parameters=[_path_param("name", "agent.js or agent.css")],
                tag="agent",
            )
        },
        "/agent/me": {
            "get": _op(
                "Who the token belongs to",
                {200: _json("AgentIdentity", "the agent")},
                security=agent,
                tag="agent",
            )
        },
        "/agent/events": {
            "get": _op(
                "Live updates as Server-Sent Events (waiting, message, status, ticket, resync)",
                {
                    200: {
                        "description": "an event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                },
                security=["agentToken", "agentTokenQuery"],
                tag="agent",
            )
        },
        "/agent/conversations": {
            "get": _op(
                "Conversations by status",
                {200: _json("ConversationList", "the conversations")},
                (422, 503),
                security=agent,
                parameters=[
                    _query(
                        "status",
                        {"type": "string", "enum": ["waiting", "with_agent", "bot", "all"], "default": "all"},
                        "which ones",
                    )
                ],
                tag="agent",
            )
        },
        "/agent/conversations/{id}": {
            "get": _op(
                "One conversation with its messages and audit trail",
                {200: _json("ConversationDetail", "the conversation")},
                (404, 503),
                security=agent,
                parameters=[CONV_ID],
                tag="agent",
            )
        },
        "/agent/conversations/{id}/claim": {
            "post": _op(
                "Take the conversation (with_agent, assigned to the caller)",
                {200: _json("ConversationSummary", "claimed (or already the caller's)")},
                (404, 409, 503),
                security=agent,
                parameters=[CONV_ID],
                tag="agent",
            )
        },
        "/agent/conversations/{id}/messages": {
            "post": _op(
                "Send a message to the customer (claims the conversation if needed)",
                {202: _json("AgentMessageOut", "queued for Braze")},
                (400, 404, 409, 413, 422, 503),
                security=agent,
                body="AgentMessageIn",
                example={"text": "Hi, this is Alice from the support team."},
                parameters=[CONV_ID],
                tag="agent",
            )
        },
        "/agent/conversations/{id}/release": {
            "post": _op(
                "Give the conversation back to the bot",
                {200: _json("ConversationSummary", "released (or already the bot's)")},
                (404, 409, 503),
                security=agent,
                parameters=[CONV_ID],
                tag="agent",
            )
        },
    }


@functools.cache
def _document() -> dict[str, Any]:
    _, schemas = models_json_schema(MODELS, ref_template=REF)
    _inbound_rules(schemas["$defs"]["InboundWebhook"])
    _regal_rules(schemas["$defs"]["RegalWebhook"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "WhatsApp conversation broker for Braze",
            "version": "0.1.0",
            "description": "The broker's HTTP interface (CONTRACT.md). Every error body is "
            '`{"error": {"code": …, "message": …}}`.',
        },
        "paths": _paths(),
        "components": {"schemas": schemas.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }


def build_openapi() -> dict[str, Any]:
    """The document (a fresh copy: callers may change theirs)."""
    return copy.deepcopy(_document())


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(_document())
