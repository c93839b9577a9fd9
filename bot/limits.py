"""Abuse and cost limits: what one conversation may cost, whatever its user (or a script) sends.

- A message rate limit (`RATE_LIMIT_MESSAGES` per `RATE_LIMIT_WINDOW_S`): messages beyond it are kept
  in the history but not shown to the model, and the user gets one "slow down" notice per window.
  Counted in the conversation hash with the turn's commit, so a recomputed turn never counts twice.
- A hard cap on model calls per conversation and window (`RATE_LIMIT_LLM_CALLS`), metered in Redis
  before each call: recomputed turns and tool rounds cost money too, so they count.
- A daily token budget per conversation (`LLM_DAILY_TOKEN_BUDGET`, 0 = none): once spent, the bot
  hands off to a person or answers from the FAQ (`BUDGET_EXHAUSTED`).
- A cap on what one turn sends: each message is cut to `LLM_MAX_MESSAGE_CHARS` and a burst to the
  history's character budget; the history itself is capped in `handlers.bot_turn.build_messages`.
  Answers are capped by `LLM_MAX_TOKENS`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.clients.llm import Completion, Responder, safety_id
from bot.errors import BrokerError
from bot.logs import event, mask_id
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.conversations import _lua
from bot.store.keys import llm_meter_keys

if TYPE_CHECKING:
    from handlers.context import TurnContext

log = logging.getLogger("bot.limits")

TOKEN_DAY_TTL_S = 2 * 24 * 3600


class CallCapReached(BrokerError):
    """This conversation made as many model calls as its window allows."""


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


class Limits:
    """The cost meters in Redis, keyed by the conversation's pseudonym (what the model sees as `user`)."""

    def __init__(self, client: Any, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._meter = client.register_script(_lua("meter"))

    async def charge_call(self, user: str) -> None:
        """Count one model call; CallCapReached when the window's calls are spent."""
        calls_key, _ = llm_meter_keys(user, _day(time.time()))
        window_ms = int(self._settings.rate_limit_window_s * 1000)
        count = int(await self._meter(keys=[calls_key], args=["call", window_ms]))
        if count > self._settings.rate_limit_llm_calls:
            self._metrics.limited.labels("llm_call_cap").inc()
            raise CallCapReached(user)

    async def add_tokens(self, user: str, tokens: int) -> None:
        _, tokens_key = llm_meter_keys(user, _day(time.time()))
        await self._meter(keys=[tokens_key], args=["tokens", tokens, TOKEN_DAY_TTL_S])

    async def tokens_today(self, user: str, now: float) -> int:
        _, tokens_key = llm_meter_keys(user, _day(now))
        return int(await self._meter(keys=[tokens_key], args=["tokens", 0, TOKEN_DAY_TTL_S]))


class MeteredResponder:
    """Wraps the real responder: every call is charged before it is made, and its tokens after."""

    def __init__(self, inner: Responder, limits: Limits) -> None:
        self.inner = inner
        self.limits = limits
        self.supports_tools = inner.supports_tools

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], user: str
    ) -> Completion:
        await self.limits.charge_call(user)
        completion = await self.inner.complete(messages, tools, user)
        if completion.tokens:
            await self.limits.add_tokens(user, completion.tokens)
        return completion


def _notice_once(ctx: TurnContext, why: str) -> None:
    """The "slow down" notice, once per rate window (the flag commits with the turn)."""
    if ctx.state.rate_noticed:
        return
    ctx.mutation.set["rate_noticed"] = "1"
    ctx.state.rate_noticed = True
    ctx.say(ctx.texts.text("slow_down"), "bot")
    ctx.services.metrics.limited.labels("slow_down_notice").inc()
    event(log, "slow_down", conv=mask_id(ctx.state.id), why=why)


async def gate(ctx: TurnContext) -> bool:
    """Before the model is asked: True when a limit handled the turn (nothing more to do).

    Otherwise `ctx.entries` may come back shortened to what the model should see this turn.
    """
    settings, state, metrics = ctx.settings, ctx.state, ctx.services.metrics
    if ctx.now - state.rate_since >= settings.rate_limit_window_s:
        state.rate_since, state.rate_count, state.rate_noticed = ctx.now, 0, False
        ctx.mutation.set.update({"rate_since": repr(ctx.now), "rate_count": 0, "rate_noticed": "0"})
    allowed = max(settings.rate_limit_messages - state.rate_count, 0)
    ctx.mutation.set["rate_count"] = state.rate_count + len(ctx.entries)
    if len(ctx.entries) > allowed:
        metrics.limited.labels("rate_limited_message").inc(len(ctx.entries) - allowed)
    if allowed == 0:
        _notice_once(ctx, "messages")
        return True
    # The first messages of the window are the ones answered; the rest are only recorded.
    ctx.entries = ctx.entries[:allowed]

    budget = settings.llm_daily_token_budget
    limits = ctx.services.limits
    if budget and limits is not None and await limits.tokens_today(safety_id(state.id), ctx.now) >= budget:
        metrics.limited.labels("token_budget").inc()
        event(log, "token_budget_spent", conv=mask_id(state.id), action=settings.budget_exhausted)
        if settings.budget_exhausted == "handoff":
            from handlers.handoff import request_handoff

            request_handoff(ctx, reason="daily assistant budget used up", trigger="budget")
        else:
            await _faq_answer(ctx)
        return True

    _trim_burst(ctx)
    return False


async def _faq_answer(ctx: TurnContext) -> None:
    from bot.faq import FaqResponder

    burst = [{"role": "user", "content": e.text} for e in ctx.entries if e.text]
    answer = await FaqResponder(ctx.texts).complete(burst, [], safety_id(ctx.state.id))
    if answer.text:
        ctx.say(answer.text, "bot")


def _trim_burst(ctx: TurnContext) -> None:
    """Cut each message, then drop the oldest of the burst, until it fits the history's char budget."""
    cap, budget = ctx.settings.llm_max_message_chars, ctx.settings.history_max_chars
    trimmed = False
    entries = []
    for entry in ctx.entries:
        if len(entry.text) > cap:
            entry = entry.model_copy(update={"text": entry.text[:cap]})
            trimmed = True
        entries.append(entry)
    while len(entries) > 1 and sum(len(e.text) for e in entries) > budget:
        entries.pop(0)
        trimmed = True
    if trimmed:
        ctx.services.metrics.limited.labels("trimmed_burst").inc()
    ctx.entries = entries


def over_call_cap(ctx: TurnContext) -> None:
    """The model-call cap struck mid-turn: no answer this time, one notice per window."""
    _notice_once(ctx, "llm_calls")
