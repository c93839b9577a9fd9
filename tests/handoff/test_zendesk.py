"""Zendesk: one ticket per handoff, the customer's messages as comments, the signed webhook back."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from prompts import load_prompts
from tests.fakes.zendesk import FakeZendesk, Ticket, signed_headers, trigger_body
from tests.handoff.helpers import broker_with_zendesk, detail, track_events, wait_status, wait_transcript
from tests.harness import Broker

TEXTS = load_prompts()
HANDOFF = TEXTS.text("handoff")
REFUND = "Hi Jane, I have refunded your order."


async def _ticket(broker: Broker, zendesk: FakeZendesk, conv_id: str = "u-123") -> Ticket:
    await broker.wait_for(lambda: len(zendesk.tickets) >= 1, what="a Zendesk ticket")
    for _ in range(500):
        view = await detail(broker, conv_id)
        if view["ticket_id"]:
            return zendesk.tickets[int(view["ticket_id"])]
        await broker.settle(0.01)
    raise AssertionError("the ticket id was never stored")


async def _webhook(broker: Broker, raw: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with broker.http.post(broker.url + "/webhooks/zendesk", data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_handoff_opens_one_ticket_even_when_the_first_answer_is_lost(redis_url: str) -> None:
    async with broker_with_zendesk(redis_url) as (broker, zendesk):
        # Zendesk creates the ticket but the answer is a 500: the job retries with the same key.
        zendesk.fail_next("create", 500, after_processing=True)
        await broker.say("hello", profile_name="Jane")
        await broker.replies("u-123", 1)
        await broker.say("agent", profile_name="Jane")
        await broker.replies("u-123", 2)
        ticket = await _ticket(broker, zendesk)
        await broker.settle()

        creates = zendesk.calls("POST", "/api/v2/tickets.json")
        assert len(creates) == 2 and len(zendesk.tickets) == 1
        assert creates[0]["idempotency_key"] == creates[1]["idempotency_key"] is not None
        assert ticket.external_id == "u-123" and ticket.tags == ["bot_handoff", "whatsapp"]
        assert ticket.subject == "WhatsApp handoff: Jane"
        requester = zendesk.users["u-123"]
        assert ticket.requester_id == requester["id"]
        assert (requester["name"], requester["phone"]) == ("Jane", "+15551234567")
        first = ticket.comments[0]
        assert first["public"] is False
        assert "Why: customer asked for a person (trigger: keyword)." in first["body"]
        assert "Customer: hello" in first["body"] and "Bot: Echo: hello" in first["body"]

        # The customer's messages while waiting become public comments by the requester.
        await broker.say("my order 123 is late")
        await broker.wait_for(lambda: len(zendesk.comments(ticket.id, public=True)) == 1, what="a comment")
        [comment] = zendesk.comments(ticket.id, public=True)
        assert comment == {"body": "my order 123 is late", "public": True, "author_id": requester["id"]}
        assert (await detail(broker, "u-123"))["status"] == "waiting"


async def test_signed_webhook_relays_agent_comments_and_solving_hands_back(redis_url: str) -> None:
    async with broker_with_zendesk(redis_url) as (broker, zendesk):
        await broker.say("agent", profile_name="Jane")
        await broker.replies("u-123", 1)
        ticket = await _ticket(broker, zendesk)
        await broker.say("my order 123 is late")
        await broker.wait_for(lambda: len(zendesk.comments(ticket.id, public=True)) == 1, what="a comment")
        before = await detail(broker, "u-123")

        comment = trigger_body(ticket.id, "u-123", "open", REFUND, "agent")
        stale = (datetime.now(UTC) - timedelta(minutes=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
        refused = [
            signed_headers(comment, secret="not-the-secret"),
            signed_headers(comment, timestamp=stale),
            {k: v for k, v in signed_headers(comment).items() if k != "X-Zendesk-Webhook-Signature"},
        ]
        for headers in refused:
            status, body = await _webhook(broker, comment, headers)
            assert status == 401, body
        tampered = signed_headers(comment)
        status, _ = await _webhook(broker, comment.replace(b"refunded", b"charged"), tampered)
        assert status == 401
        await broker.settle()
        assert broker.braze.messages_for("u-123") == [HANDOFF]
        assert await detail(broker, "u-123") == before, "a refused call changes nothing"

        headers = signed_headers(comment, invocation_id="inv-1")
        status, body = await _webhook(broker, comment, headers)
        assert status == 200 and body["relayed"] is True
        assert await broker.replies("u-123", 2) == [HANDOFF, REFUND]
        view = await wait_status(broker, "u-123", "with_agent")
        assert view["assigned_agent"] == "zendesk"
        assert view["messages"][-1] == {**view["messages"][-1], "role": "agent", "text": REFUND}

        # Zendesk retries the same invocation; and the customer's own comment comes back as the
        # ticket's latest public comment: neither reaches the customer.
        status, body = await _webhook(broker, comment, signed_headers(comment, invocation_id="inv-1"))
        assert status == 200 and body["status"] == "duplicate"
        echo = trigger_body(ticket.id, "u-123", "open", "my order 123 is late", "admin")
        status, body = await _webhook(broker, echo, signed_headers(echo))
        assert status == 200 and body["relayed"] is False
        end_user = trigger_body(ticket.id, "u-123", "open", "from the help center", "end-user")
        status, body = await _webhook(broker, end_user, signed_headers(end_user))
        assert status == 200 and body["relayed"] is False
        await broker.settle()
        assert broker.braze.messages_for("u-123") == [HANDOFF, REFUND]

        # Solving the ticket (the trigger repeats the latest comment) hands back to the bot.
        solved = trigger_body(ticket.id, "u-123", "solved", REFUND, "agent")
        status, body = await _webhook(broker, solved, signed_headers(solved))
        assert status == 200 and body["returned_to_bot"] is True and body["relayed"] is False
        assert await broker.replies("u-123", 3) == [HANDOFF, REFUND, TEXTS.text("agent_left")]
        view = await detail(broker, "u-123")
        assert view["status"] == "bot"
        last = [a for a in view["audit"] if a["event"] == "status"][-1]
        assert (last["from"], last["to"], last["by"]) == ("with_agent", "bot", "zendesk")
        solved_events = [e for e in await track_events(broker) if e["name"] == "WhatsApp Ticket Solved"]
        assert len(solved_events) == 1 and solved_events[0]["external_id"] == "u-123"
        assert solved_events[0]["properties"]["ticket_id"] == str(ticket.id)

        await broker.say("thanks! one more question")
        assert (await broker.replies("u-123", 4))[-1] == "Echo: thanks! one more question"
        await wait_transcript(broker, "u-123", "Echo: thanks! one more question")


async def test_rate_limited_ticket_creation_waits_for_retry_after(redis_url: str) -> None:
    async with broker_with_zendesk(redis_url) as (broker, zendesk):
        zendesk.fail_next("create", 429, retry_after=1)
        started = time.time()
        await broker.say("agent")
        ticket = await _ticket(broker, zendesk)
        creates = zendesk.calls("POST", "/api/v2/tickets.json")
        assert len(creates) == 2 and len(zendesk.tickets) == 1
        assert creates[1]["at"] - creates[0]["at"] >= 0.95, "Retry-After was honoured"
        assert ticket.external_id == "u-123" and time.time() - started < 8


async def test_webhook_for_unknown_conversations_or_without_zendesk(redis_url: str, broker: Broker) -> None:
    raw = trigger_body(1, "u-123", "open", "hello", "agent")
    status, body = await _webhook(broker, raw, signed_headers(raw))
    assert status == 404, "Zendesk is not configured on this broker"
    async with broker_with_zendesk(redis_url) as (zd_broker, _):
        raw = trigger_body(1, "nobody", "open", "hello", "agent")
        status, body = await _webhook(zd_broker, raw, signed_headers(raw))
        assert status == 200 and body["status"] == "ignored"
        status, _ = await _webhook(zd_broker, b"{not json", signed_headers(b"{not json"))
        assert status == 400


async def test_comments_with_quotes_and_new_lines_survive_the_unescaped_trigger_body(redis_url: str) -> None:
    async with broker_with_zendesk(redis_url) as (broker, zendesk):
        await broker.say("agent")
        ticket = await _ticket(broker, zendesk)
        text = 'Your parcel is marked "delivered".\nCould you check with your neighbours?'
        # What Zendesk renders: placeholders are pasted into the body without JSON escaping.
        raw = (
            f'{{"ticket_id": "{ticket.id}", "external_id": "u-123", "status": "pending", '
            f'"comment": "{text}", "author_role": "agent"}}'
        ).encode()
        status, body = await _webhook(broker, raw, signed_headers(raw))
        assert status == 200 and body["relayed"] is True
        assert (await broker.replies("u-123", 2))[-1] == text
