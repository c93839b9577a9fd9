"""A scripted OpenAI-compatible Chat Completions server on loopback, for conversation scripts.

Rules map a regular expression on the customer's newest message to a reply text or a tool call.
The broker talks to it with the real `openai` client, so tool dispatch (handoff, profile capture,
call requests) runs exactly as it does against a real model, only predictably.

When the model's previous answer was a tool call, the broker sends the tool's result back; the
server then answers with the rule's `reply`, where `{result}` stands for that result (JSON).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

TOOL_NAMES = ("handoff_to_agent", "request_phone_call", "update_profile")


class Rule(BaseModel):
    """`when` the newest user message matches: call `tool` with `arguments`, and/or say `reply`."""

    model_config = ConfigDict(extra="forbid")

    when: str
    reply: str = ""
    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("when")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("tool")
    @classmethod
    def _tool(cls, value: str | None) -> str | None:
        if value is not None and value not in TOOL_NAMES:
            raise ValueError(f"unknown tool {value!r} (known: {', '.join(TOOL_NAMES)})")
        return value

    def matches(self, text: str) -> bool:
        return re.search(self.when, text) is not None


DEFAULT_REPLY = "(the scripted model has no rule for this message)"


def _answer(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


class ScriptedLLM:
    def __init__(self, rules: list[Rule], default_reply: str = DEFAULT_REPLY) -> None:
        self.rules = rules
        self.default_reply = default_reply
        self.requests: list[dict[str, Any]] = []
        self.app = web.Application(client_max_size=4 * 1024 * 1024)
        self.app.router.add_post("/v1/chat/completions", self._complete)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = body.get("messages") or []
        users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        newest = users[-1] if users else ""
        rule = next((r for r in self.rules if r.matches(newest)), None)
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            # The tool ran; close the turn with the rule's words (the model would summarise the result).
            results = [_text(m.get("content")) for m in messages if m.get("role") == "tool"]
            reply = rule.reply if rule and rule.reply else "Done."
            return _answer({"role": "assistant", "content": reply.replace("{result}", results[-1])}, "stop")
        offered = {t["function"]["name"] for t in body.get("tools") or [] if t.get("type") == "function"}
        if rule and rule.tool and rule.tool in offered:
            call = {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": rule.tool, "arguments": json.dumps(rule.arguments)},
            }
            return _answer({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
        reply = rule.reply if rule and rule.reply else self.default_reply
        return _answer({"role": "assistant", "content": reply}, "stop")

    async def _complete(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return web.json_response({"error": {"message": "messages must be a list"}}, status=400)
        self.requests.append(body)
        return web.json_response(self.answer(body))
