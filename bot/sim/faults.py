"""Faults the simulator injects into the language model, to watch the broker cope.

`FaultyResponder` wraps the responder the settings select. It can make the next calls slow (a
slow call that outlasts `LLM_TIMEOUT_S` fails the way the real client's timeout would) or fail
outright with `LlmError`, exactly what the bot turn sees when the provider is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bot.clients.llm import Completion, OpenAIResponder, Responder
from bot.errors import LlmError
from bot.logs import event
from bot.metrics import Metrics
from bot.runtime import make_responder
from bot.settings import Settings
from bot.sim.braze_standin import BrazeStandIn
from prompts import load_prompts

log = logging.getLogger("bot.sim.faults")


@dataclass
class LlmFault:
    """One planned misbehaviour of one call: wait `delay_s`, then fail or answer."""

    delay_s: float = 0.0
    fail: bool = False


class FaultyResponder:
    """A Responder that misbehaves on request, then behaves like the one it wraps."""

    def __init__(
        self, inner: Responder, timeout_s: float, notify: Callable[[str], None] | None = None
    ) -> None:
        self.inner = inner
        self.supports_tools = inner.supports_tools
        self.timeout_s = timeout_s
        self.calls = 0
        self._planned: list[LlmFault] = []
        self._notify = notify

    @property
    def planned(self) -> int:
        return len(self._planned)

    def fail_next(self, times: int = 1) -> None:
        self._planned += [LlmFault(fail=True) for _ in range(times)]

    def slow_next(self, delay_s: float, times: int = 1) -> None:
        self._planned += [LlmFault(delay_s=delay_s) for _ in range(times)]

    def clear(self) -> None:
        self._planned.clear()

    def _say(self, text: str) -> None:
        if self._notify:
            self._notify(text)

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], user: str
    ) -> Completion:
        self.calls += 1
        fault = self._planned.pop(0) if self._planned else None
        if fault is None:
            return await self.inner.complete(messages, tools, user)
        event(log, "llm_fault_injected", delay_s=fault.delay_s, fail=fault.fail)
        if fault.delay_s:
            if fault.delay_s >= self.timeout_s:
                self._say(f"LLM call hangs; the broker gives up after LLM_TIMEOUT_S={self.timeout_s:g} s")
                await asyncio.sleep(self.timeout_s)
                self._say("LLM call timed out (injected): the customer should get an apology")
                raise LlmError("timed out (injected)")
            self._say(f"LLM call slowed down by {fault.delay_s:g} s (injected)")
            await asyncio.sleep(fault.delay_s)
        if fault.fail:
            self._say("LLM call failed (injected): the customer should get an apology")
            raise LlmError("failed (injected)")
        return await self.inner.complete(messages, tools, user)


FaultKind = Literal["braze_429", "braze_500", "llm_slow", "llm_fail", "llm_timeout", "clear"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "braze_429",
    "braze_500",
    "llm_slow",
    "llm_fail",
    "llm_timeout",
    "clear",
)
TRIGGER_SEND = "/campaigns/trigger/send"
# Braze's 429 names the second its window resets; one second keeps the demonstration short.
RATE_LIMIT_RESET_S = 1.0


class Faults:
    """The simulator's fault panel: Braze answers through the stand-in, LLM calls through the wrapper."""

    def __init__(self, standin: BrazeStandIn, llm: FaultyResponder) -> None:
        self.standin = standin
        self.llm = llm

    def inject(self, kind: FaultKind, times: int = 1, seconds: float = 3.0) -> str:
        """Plan the fault; returns a sentence saying what will happen."""
        plural = "s" if times != 1 else ""
        if kind == "braze_429":
            self.standin.fail_next(TRIGGER_SEND, 429, times, reset_in_s=RATE_LIMIT_RESET_S)
            return f"Braze will answer 429 (rate limited) to the next {times} send{plural}"
        if kind == "braze_500":
            self.standin.fail_next(TRIGGER_SEND, 500, times)
            return f"Braze will answer 500 to the next {times} send{plural}"
        if kind == "llm_slow":
            self.llm.slow_next(seconds, times)
            return f"The next {times} LLM call{plural} will take {seconds:g} s longer"
        if kind == "llm_fail":
            self.llm.fail_next(times)
            return f"The next {times} LLM call{plural} will fail"
        if kind == "llm_timeout":
            self.llm.slow_next(self.llm.timeout_s + 1, times)
            return f"The next {times} LLM call{plural} will hang until the {self.llm.timeout_s:g} s timeout"
        self.llm.clear()
        for planned in self.standin.faults.values():
            planned.clear()
        return "Planned faults cleared"


def wrapped_responder(settings: Settings, notify: Callable[[str], None] | None = None) -> FaultyResponder:
    """The responder the settings select, wrapped; close it with `close_responder`."""
    inner = make_responder(settings, Metrics(), load_prompts())
    return FaultyResponder(inner, settings.llm_timeout_s, notify)


async def close_responder(responder: FaultyResponder) -> None:
    if isinstance(responder.inner, OpenAIResponder):
        await responder.inner.close()
