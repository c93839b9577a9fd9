"""A fake OpenAI-compatible Chat Completions server: records requests, detects overlapping turns."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

Script = Callable[[dict[str, Any]], dict[str, Any] | None]


def completion(
    text: str | None = None, tool_calls: list[tuple[str, dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """A Chat Completions answer with `text` and/or tool calls `[(name, arguments)]`."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(tool_calls)
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake",
        "choices": [
            {"index": 0, "finish_reason": "tool_calls" if tool_calls else "stop", "message": message}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def last_user_text(body: dict[str, Any]) -> str:
    users = [m["content"] for m in body["messages"] if m["role"] == "user"]
    return str(users[-1]) if users else ""


class FakeLLM:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.latency_s = 0.0
        self.script: Script | None = None
        # Queued faults: an HTTP status to answer with, or "hang" to never answer in time.
        self.faults: list[int | str] = []
        self.active: dict[str, int] = {}
        self.overlaps: list[str] = []
        self.started = asyncio.Event()
        self._released = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._complete)

    def release(self) -> None:
        """End every hanging answer (so the server can shut down at once)."""
        self._released.set()

    def user_messages(self, index: int = -1) -> list[str]:
        """The user-role contents of one recorded request, in order."""
        return [m["content"] for m in self.requests[index]["messages"] if m["role"] == "user"]

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        who = str(body.get("user", ""))
        if self.active.get(who):
            self.overlaps.append(who)
        self.active[who] = self.active.get(who, 0) + 1
        self.started.set()
        try:
            if self.faults:
                fault = self.faults.pop(0)
                if fault == "hang":
                    await self._released.wait()
                return web.json_response(
                    {"error": {"message": "simulated", "type": "server_error"}}, status=int(fault)
                )
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            answer = self.script(body) if self.script else None
            return web.json_response(answer or completion(f"Echo: {last_user_text(body)}"))
        finally:
            self.active[who] -= 1
