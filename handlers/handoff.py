"""Handing a conversation to a human, what user messages do meanwhile, and handing it back.

The state machine is `bot -> waiting -> with_agent -> bot` (an agent may also take a conversation
straight from `bot`, and a `waiting` one may go back to `bot` when no agent comes). Every change
goes through `TurnContext.set_status`, which bumps the ownership epoch (fencing any bot reply
computed before it), stores who/when/why in the audit trail and tells live agent views.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from bot.hours import AgentHours
from bot.models import HistoryItem
from bot.settings import Settings
from handlers.context import TurnContext

HUMAN_START, HUMAN_END = "human_start", "human_end"
# Zendesk takes comments up to ~64 KB; the transcript is the newest part that fits this budget.
TRANSCRIPT_MAX_CHARS = 30_000
TRANSCRIPT_MAX_ITEMS = 60


@functools.lru_cache(maxsize=8)
def _hours(spec: str) -> AgentHours:
    return AgentHours.parse(spec)


def agent_hours(settings: Settings) -> AgentHours | None:
    return _hours(settings.agent_hours) if settings.agent_hours else None


def mark(ctx: TurnContext, marker: str, text: str) -> None:
    """A point in the history the model sees as "a human took over here" / "the human part is over"."""
    ctx.mutation.history.append(HistoryItem(role="system", text=text, at=ctx.now, marker=marker))


def notify(ctx: TurnContext, name: str, **values: str) -> bool:
    """Tell the user about a change of owner, inside the 24-hour window only (never as a paid template)."""
    why = "customer opted out" if ctx.state.opted_out else ""
    if not why and not ctx.state.window_open(ctx.now):
        why = "24-hour window closed"
    if why:
        ctx.mutation.audit.append({"at": ctx.now, "event": "notice_skipped", "notice": name, "reason": why})
        return False
    ctx.say(ctx.texts.text(name, **values), "system")
    return True


def request_handoff(ctx: TurnContext, *, reason: str, trigger: str) -> None:
    """bot -> waiting: the user is told a person will reply (or when agents are back); agents are notified."""
    if ctx.state.status != "bot":
        return
    settings = ctx.settings
    ctx.set_status("waiting", by=trigger, reason=reason)
    ctx.mutation.set["waiting_since"] = repr(ctx.now)
    ctx.mutation.set["llm_failures"] = 0
    ctx.mutation.delete.append("agent")
    mark(ctx, HUMAN_START, f"Handed to a person: {reason}")
    hours = agent_hours(settings)
    out_of_hours = hours is not None and not hours.is_open(ctx.now)
    if hours is not None and out_of_hours:
        ctx.say(ctx.texts.text("handoff_out_of_hours", back=hours.describe_next(ctx.now)), "system")
    else:
        ctx.say(ctx.texts.text("handoff"), "system")
    ctx.track_event("WhatsApp Handoff Requested", {"reason": reason[:255], "trigger": trigger})
    ctx.mutation.publish.append(
        {
            "type": "waiting",
            "id": ctx.state.id,
            "reason": reason,
            "trigger": trigger,
            "out_of_hours": out_of_hours,
            "at": ctx.now,
        }
    )
    ctx.services.metrics.handoffs.labels(trigger).inc()
    if settings.zendesk_enabled:
        _open_ticket(ctx, reason=reason, trigger=trigger, out_of_hours=out_of_hours)


async def relay_to_agent(ctx: TurnContext) -> None:
    """While a human is asked for or in charge, the bot stays silent; the messages reach the agent side."""
    ctx.record_user_messages()
    for entry in ctx.entries:
        ctx.mutation.publish.append(
            {"type": "message", "id": ctx.state.id, "role": "user", "text": entry.text, "at": entry.at}
        )
    if ctx.settings.zendesk_enabled and ctx.entries:
        body = "\n".join(e.text or f"[media] {e.media_urls}" for e in ctx.entries)
        # One comment per burst: Zendesk allows 30 updates per ticket per 10 minutes.
        ctx.job(
            "zendesk.comment",
            {"body": body, "public": True, "author": "requester"},
            key=f"comment:{ctx.state.id}:{ctx.entries[0].id}",
        )


def return_to_bot(ctx: TurnContext, *, by: str, reason: str, notice: str | None) -> None:
    """waiting/with_agent -> bot: the bot answers the user's next message, aware the human part ended."""
    ctx.set_status("bot", by=by, reason=reason)
    ctx.mutation.delete += ["agent", "waiting_since"]
    ctx.mutation.set["llm_failures"] = 0
    mark(ctx, HUMAN_END, f"Back to the assistant: {reason}")
    if notice:
        notify(ctx, notice)


def zendesk_note(ctx: TurnContext, body: str, key: str) -> None:
    """A private note on the conversation's ticket (agents see it, the customer does not)."""
    if ctx.settings.zendesk_enabled:
        ctx.job("zendesk.comment", {"body": body, "public": False, "author": "broker"}, key=key)


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def transcript(items: list[HistoryItem]) -> str:
    """The newest history that fits Zendesk's first comment, oldest line first."""
    lines: list[str] = []
    budget = TRANSCRIPT_MAX_CHARS
    for item in reversed(items[-TRANSCRIPT_MAX_ITEMS:]):
        if item.marker:
            line = f"[{_stamp(item.at)}] --- {item.text or item.marker} ---"
        else:
            who = {"user": "Customer", "bot": "Bot", "system": "System"}.get(item.role, "Agent")
            if item.role == "agent" and item.agent:
                who = f"Agent ({item.agent})"
            line = f"[{_stamp(item.at)}] {who}: {item.text}"
        budget -= len(line) + 1
        if budget < 0:
            lines.append("[earlier messages omitted]")
            break
        lines.append(line)
    return "\n".join(reversed(lines))


def _open_ticket(ctx: TurnContext, *, reason: str, trigger: str, out_of_hours: bool) -> None:
    state = ctx.state
    items = [*ctx.history, *ctx.mutation.history]
    name = state.profile_name or state.phone or state.user_id or "WhatsApp customer"
    recent = [i.text for i in items if i.role == "user" and not i.marker][-3:]
    summary = [
        "A WhatsApp conversation was handed from the bot to a person.",
        f"Why: {reason} (trigger: {trigger}).",
        f"Customer: {name}"
        + (f", phone {state.phone}" if state.phone else "")
        + (f", Braze external id {state.user_id}" if state.user_id else "")
        + ".",
    ]
    if out_of_hours:
        summary.append("Requested outside agent hours; the customer was told when agents are back.")
    if recent:
        summary.append("Latest customer messages:")
        summary += [f"  - {text[:300]}" for text in recent]
    summary.append(
        "Public replies on this ticket are sent to the customer on WhatsApp; solving it hands the "
        "conversation back to the bot."
    )
    body = "\n".join(summary) + "\n\nTranscript:\n" + transcript(items)
    ctx.job(
        "zendesk.create_ticket",
        {
            "name": name[:255],
            "phone": state.phone,
            "subject": f"WhatsApp handoff: {name}"[:250],
            "body": body,
        },
        # One ticket per handoff: the epoch this handoff moves the conversation to.
        key=f"ticket:{state.id}:{state.epoch + 1}",
    )
