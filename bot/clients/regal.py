"""Regal (regal.io): the events API, and the job that turns a call request into a Regal event.

A call request (keyword, route or the model's `request_phone_call` tool) is written by the turn as
the durable job `regal.call_requested`; the job posts the contract's event to `REGAL_EVENTS_URL`
with bounded retries. When Regal still refuses or cannot be reached, the customer is told (text
`call_failed`, which offers a person instead) and the job is dead-lettered with its reason.

The job is safe to run again (the job runner re-runs jobs whose reader died): the outcome is
recorded on the conversation (`call_job`, `call_job_state`), so a re-run neither posts a second
event after a success nor tells the customer twice about a failure.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bot.clients.http import call_json, with_retries
from bot.errors import OutboundError
from bot.jobs import Job, JobHandler
from bot.logs import event, mask_id
from bot.models import ConvState
from bot.settings import Settings
from bot.store.conversations import Store
from handlers.context import Services, TurnContext
from handlers.handoff import notify

log = logging.getLogger("bot.regal")

CALL_EVENT = "WhatsApp Call Requested"
EVENT_SOURCE = "whatsapp-broker"
JOB_KIND = "regal.call_requested"
# Fields of the conversation hash that hold what `update_profile` saved (handlers/context.py).
PROFILE_FIELDS = ("profile.first_name", "profile.last_name", "profile.email")


class OptIn(BaseModel):
    """Regal's consent record (`traits.optIn`); `channel` and `subscribed` are required by Regal."""

    channel: Literal["voice", "sms"]
    subscribed: bool
    source: str = EVENT_SOURCE


class Traits(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    phone: str
    email: str | None = None
    first_name: str | None = Field(None, serialization_alias="firstName")
    last_name: str | None = Field(None, serialization_alias="lastName")
    opt_in: list[OptIn] = Field(default_factory=list, serialization_alias="optIn")


class RegalEvent(BaseModel):
    """The body of `POST {REGAL_EVENTS_URL}`."""

    model_config = ConfigDict(populate_by_name=True)

    user_id: str | None = Field(None, serialization_alias="userId")
    traits: Traits
    name: str
    properties: dict[str, Any] = Field(default_factory=dict)
    event_source: str = Field(EVENT_SOURCE, serialization_alias="eventSource")
    original_timestamp: str | None = Field(None, serialization_alias="originalTimestamp")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class CallRequest(BaseModel):
    """The payload handlers/call.py writes for a `regal.call_requested` job."""

    reason: str = ""
    trigger: str = ""
    summary: str = ""
    requested_at: float = 0.0


class RegalClient:
    def __init__(
        self, session: aiohttp.ClientSession, url: str, api_key: SecretStr, timeout_s: float
    ) -> None:
        self._session = session
        self._url = url
        # Regal takes the raw key, without "Bearer".
        self._headers = {"Authorization": api_key.get_secret_value()}
        self._timeout_s = timeout_s

    async def send_event(self, body: RegalEvent) -> None:
        await call_json(
            "regal",
            self._session,
            "POST",
            self._url,
            timeout_s=self._timeout_s,
            json=body.wire(),
            headers=self._headers,
        )


def split_name(profile_name: str) -> tuple[str | None, str | None]:
    """The WhatsApp display name as first and last name, when the customer gave no better one."""
    parts = profile_name.split(None, 1)
    if not parts:
        return None, None
    return parts[0], (parts[1] if len(parts) > 1 else None)


def call_event(state: ConvState, profile: dict[str, str], request: CallRequest) -> RegalEvent:
    """The contract's event: who to call (phone, ids, name and email when known) and why."""
    first, last = profile.get("profile.first_name"), profile.get("profile.last_name")
    if not first and not last:
        first, last = split_name(state.profile_name)
    properties: dict[str, Any] = {"reason": request.reason, "conversation_id": state.id}
    if request.summary:
        properties["summary"] = request.summary
    if request.trigger:
        properties["trigger"] = request.trigger
    at = request.requested_at or time.time()
    return RegalEvent(
        user_id=state.user_id or None,
        traits=Traits(
            phone=state.phone,
            email=profile.get("profile.email") or None,
            first_name=first or None,
            last_name=last or None,
            # Asking to be called is consent to this call.
            opt_in=[OptIn(channel="voice", subscribed=True)],
        ),
        name=CALL_EVENT,
        properties=properties,
        original_timestamp=str(int(at)),
    )


class CallRequestJob:
    """Runs `regal.call_requested` jobs; retries on its own so it can tell the customer at the end."""

    def __init__(
        self, client: RegalClient | None, store: Store, services: Services, settings: Settings
    ) -> None:
        self._client = client
        self._store = store
        self._services = services
        self._settings = settings

    def handlers(self) -> dict[str, JobHandler]:
        return {JOB_KIND: self.run}

    async def run(self, job: Job) -> None:
        request = CallRequest.model_validate(job.payload)
        keys = self._store.keys(job.conv)
        raw: dict[str, str] = await self._store.redis.hgetall(keys.conv)
        if raw.get("call_job") == job.key:
            if raw.get("call_job_state") == "sent":
                return
            # Already failed and the customer was told: end as a dead letter, nothing more.
            raise OutboundError("regal", "failed earlier", retryable=False, status=None)
        state = ConvState.from_hash(job.conv, raw)
        try:
            if self._client is None:
                raise OutboundError("regal", "not configured", retryable=False)
            if not state.phone:
                raise OutboundError("regal", "no phone number to call", retryable=False)
            body = call_event(state, {k: raw[k] for k in PROFILE_FIELDS if raw.get(k)}, request)
            client = self._client
            await with_retries(
                lambda: client.send_event(body),
                attempts=self._settings.regal_max_attempts,
                max_wait_s=self._settings.regal_retry_max_wait_s,
            )
        except OutboundError as exc:
            await self._tell_failed(job, exc)
            # Not retryable any more: the job runner dead-letters it instead of trying again.
            raise OutboundError("regal", exc.reason, retryable=False, status=exc.status) from exc
        await self._store.redis.hset(keys.conv, mapping={"call_job": job.key, "call_job_state": "sent"})
        self._services.metrics.outbound.labels("regal", "events", "200").inc()
        event(log, "regal_call_requested", conv=mask_id(job.conv), trigger=request.trigger)

    async def _tell_failed(self, job: Job, exc: OutboundError) -> None:
        """The customer hears the call could not be arranged and how to reach a person instead."""
        self._services.metrics.outbound.labels("regal", "events", str(exc.status or "error")).inc()
        state = await self._store.state(job.conv)
        if state is None:
            return
        now = time.time()
        ctx = TurnContext(self._services, state, [], [], now)
        ctx.mutation.set.update({"call_job": job.key, "call_job_state": "failed"})
        ctx.mutation.audit.append(
            {"at": now, "event": "call_failed", "by": "regal", "reason": exc.reason[:200]}
        )
        ctx.track_event("WhatsApp Call Failed", {"reason": exc.reason[:255]})
        if not state.opted_out:
            notify(ctx, "call_failed")
        await self._store.apply(self._store.keys(job.conv), ctx.mutation, now=now)
        event(
            log,
            "regal_call_failed",
            logging.WARNING,
            conv=mask_id(job.conv),
            status=exc.status,
            reason=exc.reason[:200],
        )


def regal_job_handlers(
    settings: Settings, session: aiohttp.ClientSession, store: Store, services: Services
) -> dict[str, JobHandler]:
    """Registered even without Regal configured: a call job left from when it was still tells the customer."""
    client = None
    if settings.regal_enabled and settings.regal_api_key is not None:
        client = RegalClient(
            session, settings.regal_events_url, settings.regal_api_key, settings.regal_timeout_s
        )
    return CallRequestJob(client, store, services, settings).handlers()
