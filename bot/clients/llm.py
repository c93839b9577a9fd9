"""The language model: one shared AsyncOpenAI client (aiohttp transport) behind a small interface."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from openai import AsyncOpenAI, DefaultAioHttpClient
from openai.types.chat import ChatCompletion

from bot.errors import LlmError
from bot.metrics import Metrics
from bot.settings import Settings


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Completion:
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tokens: int = 0


class Responder(Protocol):
    supports_tools: bool

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], user: str
    ) -> Completion: ...


def safety_id(conv_id: str) -> str:
    """A stable pseudonym for the conversation, sent as the request's `user` (no PII leaves)."""
    return hashlib.sha256(conv_id.encode()).hexdigest()[:24]


class OpenAIResponder:
    supports_tools = True

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
        self._client = AsyncOpenAI(
            api_key=key,
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            http_client=DefaultAioHttpClient(),
        )
        self._model = settings.openai_model
        self._max_tokens = settings.llm_max_tokens
        self._metrics = metrics

    async def close(self) -> None:
        await self._client.close()

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], user: str
    ) -> Completion:
        started = time.monotonic()
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "max_tokens": self._max_tokens,
            "user": user,
        }
        if tools:
            body["tools"] = tools
        try:
            # The request create() would send, through the same client (timeouts, retries, errors,
            # typed answer), minus create()'s parameter transform: it walks every message and tool
            # schema against the SDK's TypedDicts, about half the SDK's CPU per call (see the README's
            # "Scaling"), and our messages are plain JSON already.
            resp = await self._client.post("/chat/completions", cast_to=ChatCompletion, body=body)
        except openai.APITimeoutError as exc:
            self._metrics.llm_errors.labels("timeout").inc()
            raise LlmError("timed out") from exc
        except openai.APIStatusError as exc:
            self._metrics.llm_errors.labels(f"http_{exc.status_code}").inc()
            raise LlmError(f"HTTP {exc.status_code}") from exc
        except openai.APIError as exc:
            self._metrics.llm_errors.labels("connection").inc()
            raise LlmError(type(exc).__name__) from exc
        finally:
            self._metrics.llm_seconds.observe(time.monotonic() - started)
        if not resp.choices:
            self._metrics.llm_errors.labels("empty").inc()
            raise LlmError("no choices in the answer")
        message = resp.choices[0].message
        calls = [
            ToolCall(id=tc.id, name=tc.function.name, arguments=tc.function.arguments or "{}")
            for tc in (message.tool_calls or [])
            if tc.type == "function"
        ]
        tokens = resp.usage.total_tokens if resp.usage else 0
        self._metrics.llm_tokens.inc(tokens)
        return Completion(text=(message.content or "").strip(), tool_calls=calls, tokens=tokens)
