"""A customer asking for a phone call: a Regal event when Regal is configured, else a human handoff."""

from __future__ import annotations

from handlers.context import TurnContext
from handlers.handoff import request_handoff


def request_call(ctx: TurnContext, *, reason: str, trigger: str) -> None:
    if not ctx.settings.regal_enabled:
        request_handoff(ctx, reason=f"phone call requested: {reason}", trigger=trigger)
        return
    ctx.job(
        "regal.call_requested",
        {"reason": reason, "trigger": trigger},
        key=f"call:{ctx.state.id}:{ctx.entries[-1].id if ctx.entries else ctx.now}",
    )
    ctx.track_event("WhatsApp Call Requested", {"reason": reason[:255], "trigger": trigger})
    ctx.mutation.audit.append({"at": ctx.now, "event": "call_requested", "by": trigger, "reason": reason})
    ctx.say(ctx.texts.text("call_requested"), "bot")
