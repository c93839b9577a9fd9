"""A turn while the bot owns the conversation: keywords first, then the language model and its tools."""

from __future__ import annotations

import json
import logging
from typing import Any

from bot import limits
from bot.clients.llm import Completion, safety_id
from bot.errors import LlmError
from bot.logs import event, mask_id
from bot.models import HistoryItem
from handlers.call import request_call
from handlers.context import TurnContext
from handlers.handoff import request_handoff
from handlers.keywords import matches
from handlers.routes import apply_routes
from handlers.tools import TOOLS, reason_of, validate_profile

log = logging.getLogger("handlers.bot_turn")

MAX_TOOL_ROUNDS = 3
LLM_FAILURES_BEFORE_HANDOFF = 2

_MARKERS = {
    "human_start": "A human agent took over the conversation here; the assistant was not involved.",
    "human_end": "The human agent's part of the conversation is over; the assistant is in charge again "
    "and must not hand off again because of anything said before this point.",
}


def _as_message(item: HistoryItem) -> dict[str, Any]:
    if item.marker in _MARKERS:
        return {"role": "system", "content": _MARKERS[item.marker]}
    if item.role == "user":
        return {"role": "user", "content": item.text}
    if item.role == "agent":
        return {"role": "assistant", "content": f"(human agent) {item.text}"}
    if item.role == "system":
        return {"role": "system", "content": item.text}
    return {"role": "assistant", "content": item.text}


def build_messages(ctx: TurnContext) -> list[dict[str, Any]]:
    """System prompt, the newest history that fits the count and character budgets, then this burst."""
    settings = ctx.settings
    system = ctx.texts.system_prompt(company=settings.company_name)
    burst = [{"role": "user", "content": e.text or f"[media] {e.media_urls}"} for e in ctx.entries]
    budget = settings.history_max_chars - sum(len(m["content"]) for m in burst)
    earlier: list[dict[str, Any]] = []
    for item in reversed(ctx.history[-settings.history_max_messages :]):
        message = _as_message(item)
        budget -= len(message["content"])
        if budget < 0:
            break
        earlier.insert(0, message)
    return [{"role": "system", "content": system}, *earlier, *burst]


async def bot_turn(ctx: TurnContext) -> None:
    ctx.record_user_messages()
    settings = ctx.settings
    if any(matches(e.text, settings.handoff_keywords) for e in ctx.entries):
        request_handoff(ctx, reason="customer asked for a person", trigger="keyword")
        return
    if any(matches(e.text, settings.call_keywords) for e in ctx.entries):
        request_call(ctx, reason="customer asked for a call", trigger="keyword")
        return
    if apply_routes(ctx):  # the operator's routes.yaml, before the model is asked
        return
    if await limits.gate(ctx):  # rate, budget and size limits, before any model call
        return
    try:
        await _converse(ctx)
    except limits.CallCapReached:
        limits.over_call_cap(ctx)
        return
    except LlmError as exc:
        failures = ctx.state.llm_failures + 1
        event(
            log, "llm_failed", logging.WARNING, conv=mask_id(ctx.state.id), error=str(exc), failures=failures
        )
        ctx.mutation.set["llm_failures"] = failures
        if failures >= LLM_FAILURES_BEFORE_HANDOFF:
            request_handoff(ctx, reason="the assistant failed repeatedly", trigger="llm_failure")
        else:
            ctx.say(ctx.texts.text("apology"), "bot")
        return
    if ctx.state.llm_failures:
        ctx.mutation.set["llm_failures"] = 0


async def _converse(ctx: TurnContext) -> None:
    responder = ctx.services.responder
    messages = build_messages(ctx)
    tools = TOOLS if responder.supports_tools else []
    user = safety_id(ctx.state.id)
    for _ in range(MAX_TOOL_ROUNDS):
        completion = await responder.complete(messages, tools, user)
        if not completion.tool_calls:
            if completion.text:
                ctx.say(completion.text, "bot")
            return
        if _run_tools(ctx, completion, messages):
            return
    final = await responder.complete(messages, [], user)
    if final.text:
        ctx.say(final.text, "bot")


def _run_tools(ctx: TurnContext, completion: Completion, messages: list[dict[str, Any]]) -> bool:
    """Apply the model's tool calls; True when one of them ended the bot's part of the turn."""
    messages.append(
        {
            "role": "assistant",
            "content": completion.text or None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in completion.tool_calls
            ],
        }
    )
    ended = False
    for call in completion.tool_calls:
        if call.name == "handoff_to_agent":
            request_handoff(
                ctx, reason=reason_of(call.arguments) or "requested by the assistant", trigger="llm"
            )
            result: dict[str, Any] = {"ok": True}
            ended = True
        elif call.name == "request_phone_call":
            request_call(ctx, reason=reason_of(call.arguments) or "requested by the customer", trigger="llm")
            result = {"ok": True}
            ended = True
        elif call.name == "update_profile":
            accepted, refused = validate_profile(call.arguments)
            ctx.save_profile(accepted)
            result = {"saved": sorted(accepted), "refused": refused}
        else:
            result = {"error": f"unknown tool {call.name}"}
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    if ended and completion.text and ctx.mutation.out == []:
        ctx.say(completion.text, "bot")
    return ended
