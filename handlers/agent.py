"""What agents (console, API, Zendesk) and the no-agent timeout do to a conversation: policy only.

Each function fills the `Mutation` of a `TurnContext` built for the action; the caller commits it
with `store.apply(..., expect_epoch=state.epoch)` so that an action decided on a stale view of the
conversation is decided again rather than applied. A status change bumps the epoch, which makes
an in-flight bot turn's commit fail (it is recomputed under the new owner and stays silent).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from bot.errors import Conflict
from bot.models import ConvState, HistoryItem, OutRow
from handlers.context import Services, TurnContext
from handlers.handoff import HUMAN_START, mark, notify, return_to_bot, zendesk_note

ZENDESK_AGENT = "zendesk"
AGENT_ROLES = frozenset({"agent", "admin"})
DONE_STATUSES = frozenset({"solved", "closed"})
# Digests of texts the broker itself wrote to Zendesk, so the webhook never echoes them back.
SEEN_KEEP = 20


class HeldByOther(Conflict):
    def __init__(self, agent: str) -> None:
        super().__init__(f"the conversation is held by another agent ({agent})")
        self.agent = agent


def action_context(services: Services, state: ConvState, now: float) -> TurnContext:
    return TurnContext(services, state, [], [], now)


def display_name(agent: str) -> str:
    return agent[:1].upper() + agent[1:]


def claim(ctx: TurnContext, agent: str) -> bool:
    """-> with_agent, assigned to `agent`. False if it holds it already; HeldByOther if another does."""
    state = ctx.state
    if state.status == "with_agent":
        if state.agent == agent:
            return False
        raise HeldByOther(state.agent or "unknown")
    if state.status == "bot":
        mark(ctx, HUMAN_START, f"Taken over by agent {agent}")
    ctx.set_status("with_agent", by=f"agent:{agent}", reason="claimed by an agent")
    ctx.mutation.set["agent"] = agent
    notify(ctx, "agent_joined", agent=display_name(agent))
    return True


def agent_message(ctx: TurnContext, agent: str, text: str) -> list[OutRow]:
    """The agent's text to the user (claiming first if needed). Raises WindowClosed when it cannot go."""
    if ctx.state.opted_out:
        raise Conflict("the customer opted out of messages")
    claim(ctx, agent)
    rows = ctx.services.outbox.rows(ctx.state, text, kind="agent", now=ctx.now)
    ctx.mutation.out += rows
    ctx.mutation.history.append(HistoryItem(role="agent", text=text, at=ctx.now, agent=agent))
    ctx.mutation.set["last_msg_at"] = repr(ctx.now)
    ctx.mutation.touch = True
    ctx.mutation.publish.append(
        {"type": "message", "id": ctx.state.id, "role": "agent", "agent": agent, "text": text, "at": ctx.now}
    )
    zendesk_note(ctx, f"Agent {agent} replied on WhatsApp:\n\n{text}", key=f"note:{rows[0].id}")
    return rows


def release(ctx: TurnContext, agent: str) -> bool:
    """-> bot. Only the holder releases a claimed conversation; anyone may release a waiting one."""
    state = ctx.state
    if state.status == "bot":
        return False
    if state.status == "with_agent" and state.agent and state.agent != agent:
        raise HeldByOther(state.agent)
    notice = "agent_left" if state.status == "with_agent" else "handoff_no_agent"
    return_to_bot(ctx, by=f"agent:{agent}", reason="released by the agent", notice=notice)
    ctx.track_event("WhatsApp Handoff Resolved", {"by": f"agent:{agent}", "how": "released"})
    return True


def no_agent_timeout(ctx: TurnContext, waited_s: float) -> None:
    """waiting -> bot after HANDOFF_TIMEOUT_S without an agent: the user is told, the bot resumes."""
    minutes = max(1, round(waited_s / 60))
    reason = f"no agent took the conversation within {minutes} min"
    return_to_bot(ctx, by="system:timeout", reason=reason, notice="handoff_no_agent")
    ctx.track_event("WhatsApp Handoff Timed Out", {"waited_s": round(waited_s)})
    zendesk_note(ctx, f"Back to the bot: {reason}.", key=f"timeout:{ctx.state.id}:{ctx.state.epoch}")


def digest(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:16]


@dataclass
class ZendeskSeen:
    """Bookkeeping fields of the conversation hash that the Zendesk webhook reads."""

    sent: list[str] = field(default_factory=list)  # digests of texts the broker wrote to Zendesk
    last_relayed: str = ""
    solved_ticket: str = ""

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> ZendeskSeen:
        return cls(
            sent=(raw.get("zd_sent") or "").split(),
            last_relayed=raw.get("zd_last", ""),
            solved_ticket=raw.get("zd_solved", ""),
        )


@dataclass
class ZendeskOutcome:
    relayed: bool = False
    undeliverable: bool = False
    returned_to_bot: bool = False
    solved_event: bool = False
    ignored: str = ""


def zendesk_update(
    ctx: TurnContext,
    seen: ZendeskSeen,
    *,
    ticket_id: str,
    status: str,
    comment: str,
    author_role: str,
) -> ZendeskOutcome:
    """A Zendesk trigger call: relay an agent's public comment; `solved`/`closed` hands back to the bot.

    The trigger body carries the ticket's *latest* public comment, so the same comment comes again
    with a later status change, and the customer's own messages (which the broker posted) come back
    too: neither is relayed twice.
    """
    state = ctx.state
    outcome = ZendeskOutcome()
    status = status.strip().lower()
    text = comment.strip()
    current_ticket = not state.ticket_id or state.ticket_id == ticket_id
    done = status in DONE_STATUSES
    if text and author_role.strip().lower() in AGENT_ROLES:
        key = digest(text)
        if key in seen.sent or key == seen.last_relayed:
            outcome.ignored = "already relayed"
        elif state.opted_out:
            outcome.ignored = "customer opted out"
        else:
            ctx.mutation.set["zd_last"] = key
            if not state.window_open(ctx.now) and not ctx.settings.braze_template_campaign_id:
                outcome.undeliverable = True
                ctx.mutation.audit.append(
                    {"at": ctx.now, "event": "relay_failed", "by": ZENDESK_AGENT, "reason": "window_closed"}
                )
                zendesk_note(
                    ctx,
                    "Not delivered on WhatsApp: the customer's 24-hour window is closed and no template "
                    "campaign is configured.",
                    key=f"undelivered:{state.id}:{key}",
                )
            else:
                if state.status != "with_agent" and not done:
                    if state.status == "bot":
                        mark(ctx, HUMAN_START, f"Taken over from Zendesk ticket {ticket_id}")
                    ctx.set_status(
                        "with_agent", by=ZENDESK_AGENT, reason=f"agent replied on ticket {ticket_id}"
                    )
                    ctx.mutation.set["agent"] = ZENDESK_AGENT
                ctx.mutation.out += ctx.services.outbox.rows(state, text, kind="agent", now=ctx.now)
                ctx.mutation.history.append(
                    HistoryItem(role="agent", text=text, at=ctx.now, agent=ZENDESK_AGENT)
                )
                ctx.mutation.set["last_msg_at"] = repr(ctx.now)
                ctx.mutation.touch = True
                ctx.mutation.publish.append(
                    {
                        "type": "message",
                        "id": state.id,
                        "role": "agent",
                        "agent": ZENDESK_AGENT,
                        "text": text,
                        "at": ctx.now,
                    }
                )
                outcome.relayed = True
    if done and current_ticket:
        if state.status != "bot":
            return_to_bot(ctx, by=ZENDESK_AGENT, reason=f"ticket {ticket_id} {status}", notice="agent_left")
            ctx.track_event("WhatsApp Handoff Resolved", {"by": ZENDESK_AGENT, "how": f"ticket_{status}"})
            outcome.returned_to_bot = True
        if seen.solved_ticket != ticket_id:
            ctx.mutation.set["zd_solved"] = ticket_id
            ctx.track_event("WhatsApp Ticket Solved", {"ticket_id": ticket_id, "status": status})
            outcome.solved_event = True
    return outcome


def remember_sent(raw_sent: str, text: str) -> str:
    """The new `zd_sent` field after the broker wrote `text` to Zendesk."""
    kept = [*raw_sent.split(), digest(text)]
    return " ".join(kept[-SEEN_KEEP:])
