"""A customer asking for a phone call: a Regal event when Regal is configured, else a human handoff.

The turn only writes the durable job (bot/clients/regal.py posts it to Regal, retries, and tells
the customer if it finally fails), the Braze event `WhatsApp Call Requested`, and the
confirmation the customer sees right away.
"""

from __future__ import annotations

from handlers.context import TurnContext
from handlers.handoff import request_handoff

SUMMARY_MESSAGES = 5
SUMMARY_MAX_CHARS = 1000
MESSAGE_MAX_CHARS = 200


def summary(ctx: TurnContext) -> str:
    """What the agent who calls should know first: the customer's latest messages, oldest first.

    Extractive on purpose: no second model call that could fail or invent details on the way to a
    phone call.
    """
    said = [i.text for i in ctx.history if i.role == "user" and not i.marker and i.text]
    said += [e.text for e in ctx.entries if e.text]
    recent = [" ".join(text.split())[:MESSAGE_MAX_CHARS] for text in said[-SUMMARY_MESSAGES:]]
    return ("Customer said: " + " | ".join(recent))[:SUMMARY_MAX_CHARS] if recent else ""


def request_call(ctx: TurnContext, *, reason: str, trigger: str) -> None:
    if not ctx.settings.regal_enabled:
        request_handoff(ctx, reason=f"phone call requested: {reason}", trigger=trigger)
        return
    if not ctx.state.phone:
        # Regal dials a phone number; a user known only by external id gets a person instead.
        request_handoff(ctx, reason=f"phone call requested, no phone number known: {reason}", trigger=trigger)
        return
    ctx.job(
        "regal.call_requested",
        {"reason": reason, "trigger": trigger, "summary": summary(ctx), "requested_at": ctx.now},
        key=f"call:{ctx.state.id}:{ctx.entries[-1].id if ctx.entries else ctx.now}",
    )
    ctx.track_event("WhatsApp Call Requested", {"reason": reason[:255], "trigger": trigger})
    ctx.mutation.audit.append({"at": ctx.now, "event": "call_requested", "by": trigger, "reason": reason})
    # "system": the confirmation goes out even if a person takes the conversation a moment later,
    # since the call request itself stands.
    ctx.say(ctx.texts.text("call_requested"), "system")
