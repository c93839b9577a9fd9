"""Handing a conversation to a human, and what user messages do while a human owns it."""

from __future__ import annotations

from handlers.context import TurnContext


def request_handoff(ctx: TurnContext, *, reason: str, trigger: str) -> None:
    """bot -> waiting: the user is told a person will reply; the agent side is notified."""
    if ctx.state.status != "bot":
        return
    ctx.set_status("waiting", by=trigger, reason=reason)
    ctx.mutation.set["waiting_since"] = repr(ctx.now)
    ctx.mutation.set["llm_failures"] = 0
    ctx.say(ctx.texts.text("handoff"), "system")
    ctx.track_event("WhatsApp Handoff Requested", {"reason": reason[:255], "trigger": trigger})
    ctx.mutation.publish.append({"type": "waiting", "id": ctx.state.id, "reason": reason, "at": ctx.now})
    ctx.services.metrics.handoffs.labels(trigger).inc()


async def relay_to_agent(ctx: TurnContext) -> None:
    """While a human is asked for or in charge, the bot stays silent; the messages reach the agent side."""
    ctx.record_user_messages()
    for entry in ctx.entries:
        ctx.mutation.publish.append(
            {"type": "message", "id": ctx.state.id, "role": "user", "text": entry.text, "at": entry.at}
        )
