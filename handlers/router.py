"""The table from conversation status to the policy that handles a turn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.models import Status
from handlers.bot_turn import bot_turn
from handlers.context import TurnContext
from handlers.handoff import relay_to_agent
from handlers.optout import handle_opt_keywords

Handler = Callable[[TurnContext], Awaitable[None]]

STATUS_HANDLERS: dict[Status, Handler] = {
    "bot": bot_turn,
    "waiting": relay_to_agent,
    "with_agent": relay_to_agent,
}


async def handle_turn(ctx: TurnContext) -> None:
    if handle_opt_keywords(ctx):
        return
    await STATUS_HANDLERS[ctx.state.status](ctx)
