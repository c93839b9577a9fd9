"""The durable Zendesk jobs a handoff writes: open (or reuse) the ticket, add the customer's messages.

Jobs of one conversation run in order (bot/jobs.py), so a comment job finds the ticket id the
create job stored. Both are safe to run again: the ticket is created with an `Idempotency-Key`
and the requester is upserted by external id.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import aiohttp
from pydantic import BaseModel

from bot.clients.zendesk import Comment, NewTicket, ZendeskClient
from bot.errors import OutboundError
from bot.jobs import Job, JobHandler
from bot.logs import event, mask_id
from bot.settings import Settings
from bot.store.conversations import Mutation, Store
from handlers.agent import remember_sent

log = logging.getLogger("bot.zendesk")


class CreateTicketPayload(BaseModel):
    name: str
    phone: str = ""
    subject: str
    body: str


class CommentPayload(BaseModel):
    body: str
    public: bool = True
    # "requester": the customer's own words, posted as them; "broker": a private note from the broker.
    author: Literal["requester", "broker"] = "requester"


class ZendeskJobs:
    def __init__(self, client: ZendeskClient, store: Store) -> None:
        self._client = client
        self._store = store

    def handlers(self) -> dict[str, JobHandler]:
        return {"zendesk.create_ticket": self.create_ticket, "zendesk.comment": self.comment}

    async def create_ticket(self, job: Job) -> None:
        payload = CreateTicketPayload.model_validate(job.payload)
        keys = self._store.keys(job.conv)
        ticket_id, solved, requester = await self._store.redis.hmget(
            keys.conv, ["ticket_id", "zd_solved", "zd_requester"]
        )
        if ticket_id and ticket_id != solved and requester:
            # The customer's earlier ticket is still open: keep the whole story in one ticket.
            try:
                await self._client.add_comment(
                    int(ticket_id),
                    Comment(body="The customer asked for a person again.\n\n" + payload.body, public=False),
                    status="open",
                )
            except OutboundError as exc:
                if exc.retryable:
                    raise
                # Closed (read-only) or deleted in Zendesk: open a new ticket instead.
            else:
                await self._record(job.conv, ticket_id, requester, reused=True)
                return
        user_id = await self._requester(payload, job.conv)
        ticket = await self._client.create_ticket(
            NewTicket(
                subject=payload.subject,
                comment=Comment(body=payload.body, public=False),
                requester_id=user_id,
                external_id=job.conv,
            ),
            idempotency_key=job.key,
        )
        await self._record(job.conv, str(ticket.id), str(user_id), reused=False)

    async def _requester(self, payload: CreateTicketPayload, conv: str) -> int:
        try:
            return await self._client.upsert_user(name=payload.name, phone=payload.phone, external_id=conv)
        except OutboundError as exc:
            if exc.status != 422 or not payload.phone:
                raise
            # The phone number already belongs to another Zendesk user: keep the external id only.
            return await self._client.upsert_user(name=payload.name, phone="", external_id=conv)

    async def _record(self, conv: str, ticket_id: str, requester: str, *, reused: bool) -> None:
        now = time.time()
        await self._store.apply(
            self._store.keys(conv),
            Mutation(
                set={"ticket_id": ticket_id, "zd_requester": requester},
                audit=[
                    {
                        "at": now,
                        "event": "ticket_reused" if reused else "ticket_created",
                        "by": "zendesk",
                        "reason": f"Zendesk ticket {ticket_id}",
                    }
                ],
                publish=[{"type": "ticket", "id": conv, "ticket_id": ticket_id, "at": now}],
            ),
            now=now,
        )
        event(log, "zendesk_ticket", conv=mask_id(conv), ticket=ticket_id, reused=reused)

    async def comment(self, job: Job) -> None:
        payload = CommentPayload.model_validate(job.payload)
        keys = self._store.keys(job.conv)
        ticket_id, requester, sent = await self._store.redis.hmget(
            keys.conv, ["ticket_id", "zd_requester", "zd_sent"]
        )
        if not ticket_id:
            event(log, "zendesk_comment_skipped", conv=mask_id(job.conv), reason="no_ticket")
            return
        if payload.author == "requester":
            # Remembered before posting: Zendesk may call the webhook with this comment at once,
            # and it must not be relayed back to the customer.
            await self._store.apply(
                keys, Mutation(set={"zd_sent": remember_sent(sent or "", payload.body)}), now=time.time()
            )
            if requester:
                comment = Comment(body=payload.body, public=payload.public, author_id=int(requester))
            else:
                comment = Comment(body=f"The customer wrote on WhatsApp:\n\n{payload.body}", public=False)
        else:
            comment = Comment(body=payload.body, public=False)
        await self._client.add_comment(int(ticket_id), comment)


def zendesk_job_handlers(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> dict[str, JobHandler]:
    """The job kinds a handoff writes when Zendesk is configured (none otherwise)."""
    if not settings.zendesk_enabled or not settings.zendesk_url or not settings.zendesk_api_token:
        return {}
    client = ZendeskClient(
        session,
        settings.zendesk_url,
        settings.zendesk_email or "",
        settings.zendesk_api_token,
        settings.zendesk_timeout_s,
    )
    return ZendeskJobs(client, store).handlers()
