"""Opt-out and opt-in keywords: they apply in every status, before anything else."""

from __future__ import annotations

from handlers.context import TurnContext
from handlers.keywords import matches


def _subscription(ctx: TurnContext, state: str) -> None:
    group = ctx.settings.braze_subscription_group_id
    if group:
        ctx.track_attributes(
            {"subscription_groups": [{"subscription_group_id": group, "subscription_state": state}]}
        )


def handle_opt_keywords(ctx: TurnContext) -> bool:
    """True when the turn was an opt-out/opt-in (or the user is opted out): nothing else runs."""
    last = ctx.entries[-1].text if ctx.entries else ""
    if matches(last, ctx.settings.optin_keywords) and ctx.state.opted_out:
        ctx.record_user_messages()
        ctx.state.opted_out = False
        ctx.mutation.set["opted_out"] = "0"
        ctx.mutation.audit.append({"at": ctx.now, "event": "opt_in", "by": "user"})
        _subscription(ctx, "subscribed")
        ctx.say(ctx.texts.text("optin_confirmation"), "system")
        return True
    if any(matches(e.text, ctx.settings.optout_keywords) for e in ctx.entries):
        ctx.record_user_messages()
        if not ctx.state.opted_out:
            ctx.mutation.set["opted_out"] = "1"
            ctx.mutation.audit.append({"at": ctx.now, "event": "opt_out", "by": "user"})
            _subscription(ctx, "unsubscribed")
            ctx.say(ctx.texts.text("optout_confirmation"), "system")
            ctx.state.opted_out = True
        return True
    if ctx.state.opted_out:
        ctx.record_user_messages()
        return True
    return False
