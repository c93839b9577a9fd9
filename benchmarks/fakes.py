"""Lean loopback fakes for the benchmark: an OpenAI-compatible LLM and Braze's REST API.

A raw asyncio protocol (HTTP/1.1 keep-alive, Content-Length or chunked bodies) instead of aiohttp,
so that the fakes take as little of the machine as possible from the broker they measure:
bot/sim/braze_standin.py parses and keeps every request, which costs several times more.

Every message the benchmark sends carries a tag `#T<n>#`. The LLM answers with the tag of the last
user message it was given, so the fake Braze can tell which message each reply answers and when it
arrived. Run one process per role:

    python benchmarks/fakes.py --port 8301      # then POST /control {"latency_ms": 500}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

TAG = re.compile(rb"#T(\d+)#")
RATE_HEADERS = (
    b"X-RateLimit-Limit: 250000\r\nX-RateLimit-Remaining: 249000\r\nX-RateLimit-Reset: 4102444800\r\n"
)


class State:
    def __init__(self) -> None:
        self.latency_s = 0.0
        self.reply_chars = 40
        self.record_llm = False
        # closed: model calls wait until it opens (lets a benchmark queue work up before timing it)
        self.gate = asyncio.Event()
        self.gate.set()
        self.reset()

    def reset(self) -> None:
        self.llm_calls = 0
        self.llm_times: dict[str, tuple[float, float]] = {}
        self.trigger_requests = 0
        self.recipients: list[int] = []
        self.delivered: dict[str, float] = {}
        self.first_delivery = 0.0
        self.track_requests = 0
        self.waiters: dict[str, asyncio.Future[float]] = {}

    def completion(self, tag: str) -> bytes:
        text = f"Reply #T{tag}# "
        text += "x" * max(0, self.reply_chars - len(text))
        return json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "bench",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        ).encode()

    def stats(self, with_times: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "llm_calls": self.llm_calls,
            "trigger_requests": self.trigger_requests,
            "recipients": self.recipients,
            "delivered": len(self.delivered),
            "track_requests": self.track_requests,
        }
        if with_times:
            body["delivered_at"] = self.delivered
            body["llm_times"] = self.llm_times
        return body


class HttpFake(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        """Parse one complete request from the buffer, if there is one, and answer it."""
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        lines = self.buf[:head_end].split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        start = head_end + 4
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body, consumed = _dechunk(self.buf, start)
            if body is None:
                return
        else:
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buf) - start < length:
                return
            body, consumed = self.buf[start : start + length], start + length
        self.buf = self.buf[consumed:]
        keep = headers.get(b"connection", b"").lower() != b"close"
        self.busy = True
        answer = self._route(method.decode(), target.decode(), body)
        if isinstance(answer, tuple):
            self._respond(*answer, keep=keep)
        else:
            task = asyncio.ensure_future(answer)
            task.add_done_callback(lambda t: self._respond(*t.result(), keep=keep))

    def _respond(self, status: int, body: bytes, extra: bytes = b"", *, keep: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = {200: b"OK", 201: b"Created", 404: b"Not Found"}.get(status, b"OK")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, reason, len(body), extra, body)
        )
        self.busy = False
        if not keep:
            self.transport.close()
        elif self.buf:
            self._next()

    def _route(self, method: str, target: str, body: bytes) -> Any:
        path = target.split("?", 1)[0]
        if path == "/v1/chat/completions":
            return self._llm(body)
        if path == "/campaigns/trigger/send":
            return self._trigger(body)
        if path == "/users/track":
            self.state.track_requests += 1
            return 201, b'{"message":"success"}', RATE_HEADERS
        if path == "/stats":
            query = parse_qs(urlsplit(target).query)
            return 200, json.dumps(self.state.stats("times" in query)).encode()
        if path == "/control":
            return self._control(body)
        if path == "/wait":
            return self._wait(target)
        return 404, b'{"message":"not found"}'

    async def _llm(self, body: bytes) -> tuple[int, bytes]:
        state = self.state
        started = time.time()
        state.llm_calls += 1
        found = TAG.findall(body)
        tag = found[-1].decode() if found else "0"
        if not state.gate.is_set():
            await state.gate.wait()
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        if state.record_llm:
            state.llm_times[tag] = (started, time.time())
        return 200, state.completion(tag)

    def _trigger(self, body: bytes) -> tuple[int, bytes, bytes]:
        state = self.state
        now = time.time()
        recipients = json.loads(body).get("recipients") or []
        state.trigger_requests += 1
        state.recipients.append(len(recipients))
        state.first_delivery = state.first_delivery or now
        for rec in recipients:
            text = str((rec.get("trigger_properties") or {}).get("external_system_msg_body", ""))
            for tag in TAG.findall(text.encode()):
                key = tag.decode()
                state.delivered.setdefault(key, now)
                waiter = state.waiters.pop(key, None)
                if waiter and not waiter.done():
                    waiter.set_result(now)
        return 201, b'{"dispatch_id":"bench","message":"success"}', RATE_HEADERS

    def _control(self, body: bytes) -> tuple[int, bytes]:
        state = self.state
        change = json.loads(body or b"{}")
        if change.get("reset"):
            state.reset()
        if "latency_ms" in change:
            state.latency_s = float(change["latency_ms"]) / 1000
        if "reply_chars" in change:
            state.reply_chars = int(change["reply_chars"])
        if "record_llm" in change:
            state.record_llm = bool(change["record_llm"])
        if "gate_open" in change:
            (state.gate.set if change["gate_open"] else state.gate.clear)()
        return 200, b'{"ok":true}'

    async def _wait(self, target: str) -> tuple[int, bytes]:
        """Long poll: when was the reply with this tag delivered (null after the timeout)."""
        query = parse_qs(urlsplit(target).query)
        tag, timeout = query["tag"][0], float(query.get("timeout", ["10"])[0])
        state = self.state
        if tag in state.delivered:
            return 200, json.dumps({"at": state.delivered[tag]}).encode()
        waiter = state.waiters.setdefault(tag, asyncio.get_running_loop().create_future())
        try:
            at: float | None = await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            at = None
        return 200, json.dumps({"at": at}).encode()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _dechunk(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    out = []
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None, 0
        size = int(buf[pos:line_end].split(b";")[0], 16)
        pos = line_end + 2
        if len(buf) < pos + size + 2:
            return None, 0
        if size == 0:
            return b"".join(out), pos + 2
        out.append(buf[pos : pos + size])
        pos += size + 2


async def serve(port: int) -> None:
    state = State()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpFake(state), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.port))


if __name__ == "__main__":
    main()
