"""The fault-injection soak: many conversations, real HTTP, real worker processes, faults everywhere.

    python benchmarks/soak.py            # about 3-4 minutes, loopback only, finishes by itself
    python benchmarks/soak.py --quick    # the CI variant (tests/reliability/test_soak.py), < 60 s

What runs: a private redis-server with `appendonly yes`; the broker's HTTP tier (the real app,
`workers=False`) in this process; `python -m bot worker` subprocesses configured through the
environment like production; the Braze stand-in and a fake OpenAI-compatible model on loopback.

What it does to them, while conversations send bursts through POST /webhooks/braze/whatsapp:
Braze redelivers webhooks (at once and late), delivers some late and out of order; the Braze
stand-in answers 429 (with X-RateLimit-Reset), 5xx and hangs past the client timeout; the model
fails and hangs; worker processes get `kill -9` at random moments and are restarted; Redis is
restarted once (SIGTERM, same port, same append-only file); agents take conversations over in the
middle of turns through the agent API, reply and give them back; some users ask for a person.
A few malformed and unauthenticated webhooks are thrown in.

Afterwards, with the faults stopped and the pipeline drained, it checks DESIGN.md's invariants
from what reached the Braze stand-in and what the store recorded, and prints a table.

Definitions (what the acceptance figures count):
- A *message* is one logical user message (redeliveries of it are not messages). The fake model
  answers "ack <ids of the messages of this burst> <nonce>", so every reply names what it answers.
- A message is *answered* when the reply the broker recorded for its burst (the first bot or
  agent message after it in the conversation's history) reached Braze; or when it arrived while a
  human owned the conversation (it is recorded for the human); or when the bot's reply was
  dropped because a human took over right after (the human answers it). An apology for a failed
  model call, the handoff notice and an agent's message all count as answers. A reply that
  could not be sent is *held* when it sits in a dead letter (visible, replayable: a worker was
  killed while a request carrying it was on the wire, so the broker cannot know whether Braze
  took it, and does not guess). *Never answered*: a message with no recorded reply, or whose
  reply was neither delivered nor held: lost without a trace.
- A *duplicate* is a reply delivered more than once (the same text, which carries a per-call
  nonce, delivered twice to the same user), a message acknowledged by two different delivered
  replies, or a delivered reply the broker never recorded.
- A *reply after a takeover* is a bot reply computed before a human stretch (it precedes the
  stretch's start in the history) that reached Braze after the stretch's first message to the
  user (the handoff notice or the agent's "joined" message) did.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.app import create_app  # noqa: E402
from bot.deadletters import DeadLetters  # noqa: E402
from bot.models import HistoryItem  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.sim.braze_standin import BrazeStandIn, Delivered  # noqa: E402
from bot.sim.session import serve_app  # noqa: E402
from bot.store.connection import EmbeddedRedis, free_port  # noqa: E402
from bot.store.keys import PartitionKeys  # noqa: E402
from bot.store.streams import GROUP  # noqa: E402

SECRET = "soak-webhook-secret"
BRAZE_KEY = "soak-braze-key"
AGENT_TOKEN = "soak-agent-token"
WEBHOOK = "/webhooks/braze/whatsapp"
TRIGGER = "/campaigns/trigger/send"
ID = re.compile(r"\bc\d+-m\d+\b")
HUMAN_START, HUMAN_END = "human_start", "human_end"


@dataclass
class SoakConfig:
    conversations: int = 200
    traffic_s: float = 130.0
    workers: int = 3
    partitions: int = 8
    kills: int = 6
    redis_restart_at: float | None = 0.45  # fraction of the traffic phase; None: no restart
    takeovers: int = 40
    bursts_per_conversation: tuple[int, int] = (3, 7)
    burst_size: tuple[int, int] = (1, 4)
    think_s: tuple[float, float] = (2.0, 12.0)
    llm_latency_s: tuple[float, float] = (0.05, 0.4)
    handoff_share: float = 0.03
    redelivery_share: float = 0.15
    late_share: float = 0.05
    out_of_order_share: float = 0.08
    bad_input_share: float = 0.01
    braze_faults: int = 50
    llm_faults: int = 30
    settle_timeout_s: float = 75.0
    seed: int = 7
    verbose: bool = True

    @classmethod
    def quick(cls) -> SoakConfig:
        return cls(
            conversations=40,
            traffic_s=18.0,
            workers=2,
            partitions=4,
            kills=2,
            takeovers=8,
            bursts_per_conversation=(2, 4),
            think_s=(1.0, 5.0),
            braze_faults=10,
            llm_faults=8,
            settle_timeout_s=30.0,
            verbose=False,
        )


@dataclass
class Msg:
    id: str
    conv: str
    text: str
    message_id: str
    accepted_at: float = 0.0
    posts: int = 0
    statuses: list[int] = field(default_factory=list)


@dataclass
class Report:
    messages: int = 0
    webhook_posts: int = 0
    replies_delivered: int = 0
    duplicates: int = 0
    never_answered: int = 0
    held: int = 0
    after_takeover: int = 0
    answered_by_bot: int = 0
    answered_by_human: int = 0
    overtaken: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    p50_s: float = 0.0
    p99_s: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    invariants: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.duplicates == 0
            and self.never_answered == 0
            and self.after_takeover == 0
            and all(v == "ok" for v in self.invariants.values())
        )

    def table(self) -> str:
        rows = [
            ("messages sent (logical, accepted)", self.messages),
            ("webhook posts (incl. redeliveries, retries)", self.webhook_posts),
            ("replies delivered (bot, system, agent)", self.replies_delivered),
            ("duplicates delivered", self.duplicates),
            ("messages never answered", self.never_answered),
            ("messages whose reply is held in a dead letter", self.held),
            ("replies sent after a takeover", self.after_takeover),
            (
                "answered by the bot / recorded for a human",
                f"{self.answered_by_bot} / {self.answered_by_human}",
            ),
            ("bot replies dropped for a takeover", self.overtaken),
            (
                "dead letters by reason",
                ", ".join(f"{k}={v}" for k, v in sorted(self.dead_letters.items())) or "none",
            ),
            ("time to reply p50 / p99", f"{self.p50_s * 1000:.0f} ms / {self.p99_s * 1000:.0f} ms"),
            ("faults injected", ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))),
            ("elapsed", f"{self.elapsed_s:.0f} s"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines.append("")
        lines += [f"invariant {name:<{width - 10}}  {verdict}" for name, verdict in self.invariants.items()]
        lines += [f"problem: {p}" for p in self.problems[:30]]
        return "\n".join(lines)


# -- the fake model ---------------------------------------------------------------------------------


class SoakLLM:
    """An OpenAI-compatible fake: answers "ack <ids of the burst> <nonce>"; fails and hangs on cue."""

    def __init__(self, latency: tuple[float, float], rng: random.Random) -> None:
        self.latency = latency
        self.rng = rng
        self.faults: list[int | str] = []
        self.calls = 0
        self.active: Counter[str] = Counter()
        self.overlaps: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._complete)

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls += 1
        if self.faults:
            fault = self.faults.pop(0)
            if fault == "hang":
                # The client gives up at LLM_TIMEOUT_S; this request is no longer part of any turn.
                await asyncio.sleep(30)
                fault = 500
            return web.json_response(
                {"error": {"message": "simulated", "type": "server_error"}}, status=int(fault)
            )
        who = str(body.get("user", ""))
        if self.active[who]:
            self.overlaps.append(who)
        self.active[who] += 1
        try:
            await asyncio.sleep(self.rng.uniform(*self.latency))
        finally:
            self.active[who] -= 1
        burst: list[str] = []
        for message in reversed(body["messages"]):
            if message["role"] != "user":
                break
            burst.insert(0, str(message["content"]))
        ids = [found for text in burst for found in ID.findall(text)]
        text = "ack " + " ".join(ids) + f" ~{uuid.uuid4().hex[:8]}"
        return web.json_response(
            {
                "id": "chatcmpl-soak",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "soak",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )


# -- the run ----------------------------------------------------------------------------------------


class Soak:
    def __init__(self, cfg: SoakConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.workdir = workdir
        self.report = Report()
        self.msgs: dict[str, Msg] = {}
        self.order: dict[str, list[str]] = defaultdict(list)  # accept order of message ids per conv
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.procs: list[subprocess.Popen[bytes] | None] = []
        self.stop_traffic = asyncio.Event()
        self.redis_down = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.last_burst: dict[str, float] = {}
        from prompts import load_prompts

        self.apology = load_prompts().text("apology")

    def log(self, text: str) -> None:
        if self.cfg.verbose:
            print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=sys.stderr, flush=True)

    # environment ---------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            "BRAZE_REST_ENDPOINT": self.braze_url,
            "BRAZE_API_KEY": BRAZE_KEY,
            "BRAZE_REPLY_CAMPAIGN_ID": "reply-campaign",
            "BRAZE_TEMPLATE_CAMPAIGN_ID": "template-campaign",
            "WEBHOOK_SECRET": SECRET,
            "REDIS_URL": self.redis.url,
            "OPENAI_BASE_URL": self.llm_url + "/v1",
            "OPENAI_API_KEY": "sk-soak",
            "LLM_BACKEND": "openai",
            "LLM_TIMEOUT_S": "1.5",
            "LLM_MAX_RETRIES": "0",
            "AGENT_API_TOKENS": f"alice:{AGENT_TOKEN}",
            "QUEUE_PARTITIONS": str(self.cfg.partitions),
            "LEASE_TTL_MS": "3000",
            "BRAZE_TIMEOUT_S": "2.5",
            "BRAZE_MAX_ATTEMPTS": "8",
            "BRAZE_RETRY_MAX_WAIT_S": "1.0",
            "BRAZE_BATCH_LINGER_MS": "10",
            "RATE_LIMIT_MESSAGES": "100000",
            "RATE_LIMIT_LLM_CALLS": "100000",
            "HISTORY_KEEP": "5000",
            "SWEEP_INTERVAL_S": "2",
            "SWEEP_STUCK_AFTER_S": "8",
            "HANDOFF_TIMEOUT_S": "3600",
            "ROUTES_FILE": "",
            "LOG_LEVEL": "WARNING",
        }

    def start_worker(self, index: int) -> None:
        log = open(self.workdir / f"worker-{index}.log", "ab")  # noqa: SIM115 - the child keeps it
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAZE_", "OPENAI_", "REDIS_"))}
        env.update(self.env())
        env["PYTHONPATH"] = str(ROOT)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker", "--env-file", "/nonexistent"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        while len(self.procs) <= index:
            self.procs.append(None)
        self.procs[index] = proc

    async def run(self) -> Report:
        # The HTTP tier's own warnings (503s while Redis restarts, ...) go to a file, not the table.
        handler = logging.FileHandler(self.workdir / "http.log")
        handler.setLevel(logging.WARNING)
        logging.getLogger().addHandler(handler)
        try:
            return await self._run()
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()

    async def _run(self) -> Report:
        self.started = time.monotonic()
        cfg = self.cfg
        self.redis = EmbeddedRedis(self.workdir / "redis", free_port()).start()  # appendonly yes
        self.braze = BrazeStandIn(api_key=BRAZE_KEY)
        self.llm = SoakLLM(cfg.llm_latency_s, self.rng)
        braze_runner, self.braze_url = await serve_app(self.braze.app)
        llm_runner, self.llm_url = await serve_app(self.llm.app)
        values: dict[str, Any] = {k.lower(): v for k, v in self.env().items()}
        self.settings = Settings(_env_file=None, **values)
        app = create_app(self.settings, self.redis.url, workers=False)
        runner, self.url = await serve_app(app)
        self.runtime = app  # for the store, once started
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            for index in range(cfg.workers):
                self.start_worker(index)
            self.log(f"broker at {self.url}, {cfg.workers} workers, redis on port {self.redis.port}")
            await self._traffic()
            await self._settle()
            await self._analyse(app)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for proc in self.procs:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self.procs:
                if proc is not None:
                    try:
                        proc.wait(timeout=25)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            await self.http.close()
            await runner.cleanup()
            await llm_runner.cleanup()
            await braze_runner.cleanup()
            self.redis.stop()
        self.report.elapsed_s = time.monotonic() - self.started
        return self.report

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # traffic ---------------------------------------------------------------------------------------
    async def _traffic(self) -> None:
        cfg = self.cfg
        users = [self.spawn(self._user(i)) for i in range(cfg.conversations)]
        chaos = [
            self.spawn(self._kills()),
            self.spawn(self._braze_faults()),
            self.spawn(self._llm_faults()),
            self.spawn(self._takeovers()),
        ]
        self.desk = self.spawn(self._agent_desk())
        if cfg.redis_restart_at is not None:
            chaos.append(self.spawn(self._redis_restart(cfg.traffic_s * cfg.redis_restart_at)))
        await asyncio.sleep(cfg.traffic_s)
        self.stop_traffic.set()
        self.log("traffic phase over; letting late deliveries and retries finish")
        await asyncio.gather(*users, *chaos, return_exceptions=False)

    async def _post(self, body: bytes, secret: str = SECRET) -> int:
        """One webhook call; connection failures count as a 599 (Braze would retry)."""
        self.report.webhook_posts += 1
        try:
            async with self.http.post(
                self.url + WEBHOOK,
                data=body,
                headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            ) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return 599

    async def _deliver(self, msg: Msg) -> None:
        """Braze's delivery of one message: retried like Braze retries 5xx, in arrival order per conv."""
        body = json.dumps(
            {
                "user_id": msg.conv,
                "phone_number": "",
                "message": msg.text,
                "message_id": msg.message_id,
                "profile_name": "",
                "media_urls": "",
                "sent_at": "",
            }
        ).encode()
        delay = 0.2
        async with self.locks[msg.conv]:
            while True:
                msg.posts += 1
                status = await self._post(body)
                msg.statuses.append(status)
                if status in (200, 202):
                    if not msg.accepted_at:
                        msg.accepted_at = time.time()
                        self.order[msg.conv].append(msg.id)
                    break
                if status < 500:
                    self.report.problems.append(f"{msg.id}: webhook answered {status}")
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)
        if self.rng.random() < self.cfg.redelivery_share:
            self.report.faults["webhook_redelivery"] += 1
            later = self.rng.random() < 0.5
            self.spawn(self._redeliver(msg, body, self.rng.uniform(1.0, 6.0) if later else 0.0))

    async def _redeliver(self, msg: Msg, body: bytes, after: float) -> None:
        await asyncio.sleep(after)
        async with self.locks[msg.conv]:
            status = await self._post(body)
        if status == 202:
            self.report.problems.append(f"{msg.id}: a redelivery was accepted as new")
        msg.statuses.append(status)

    async def _user(self, index: int) -> None:
        cfg, rng = self.cfg, self.rng
        conv = f"soak-u{index}"
        await asyncio.sleep(rng.uniform(0, min(cfg.traffic_s / 3, 10)))
        counter = 0
        pending: list[asyncio.Task[None]] = []
        for _ in range(rng.randint(*cfg.bursts_per_conversation)):
            if self.stop_traffic.is_set():
                break
            burst: list[Msg] = []
            for _ in range(rng.randint(*cfg.burst_size)):
                counter += 1
                mid = f"c{index}-m{counter}"
                text = "agent" if rng.random() < cfg.handoff_share else f"{mid} where is my order?"
                msg = Msg(mid, conv, text, f"dispatch-{uuid.uuid4().hex[:12]}")
                self.msgs[mid] = msg
                burst.append(msg)
            if len(burst) > 1 and rng.random() < cfg.out_of_order_share:
                self.report.faults["out_of_order"] += 1
                burst[0], burst[1] = burst[1], burst[0]
            self.last_burst[conv] = time.monotonic()
            for msg in burst:
                if rng.random() < cfg.late_share:
                    self.report.faults["late_delivery"] += 1
                    pending.append(self.spawn(self._late(msg, rng.uniform(1.0, 4.0))))
                else:
                    await self._deliver(msg)
                await asyncio.sleep(rng.uniform(0, 0.08))
            if rng.random() < cfg.bad_input_share:
                await self._bad_input(conv)
            await asyncio.sleep(rng.uniform(*cfg.think_s))
        await asyncio.gather(*pending)

    async def _late(self, msg: Msg, after: float) -> None:
        await asyncio.sleep(after)
        await self._deliver(msg)

    async def _bad_input(self, conv: str) -> None:
        self.report.faults["bad_input"] += 1
        cases: list[tuple[bytes, str, int]] = [
            (b"{not json", SECRET, 400),
            (json.dumps({"user_id": conv, "message": ""}).encode(), SECRET, 422),
            (json.dumps({"user_id": conv, "message": "x-bad-secret"}).encode(), "wrong", 401),
        ]
        body, secret, expected = self.rng.choice(cases)
        status = await self._post(body, secret)
        if status != expected and status < 500:
            self.report.problems.append(f"bad input answered {status}, expected {expected}")

    # chaos -----------------------------------------------------------------------------------------
    async def _kills(self) -> None:
        cfg = self.cfg
        moments = sorted(self.rng.uniform(2, cfg.traffic_s - 2) for _ in range(cfg.kills))
        started = time.monotonic()
        for moment in moments:
            await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
            index = self.rng.randrange(cfg.workers)
            proc = self.procs[index]
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.report.faults["worker_kill9"] += 1
            self.log(f"kill -9 worker {index} (pid {proc.pid})")
            await asyncio.sleep(self.rng.uniform(0.3, 2.0))
            self.start_worker(index)

    async def _redis_restart(self, at: float) -> None:
        await asyncio.sleep(at)
        self.log("restarting redis (SIGTERM, same port and append-only file)")
        self.redis_down.set()
        await asyncio.to_thread(self.redis.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(self.redis.start)
        self.redis_down.clear()
        self.report.faults["redis_restart"] += 1
        self.log("redis is back")

    async def _braze_faults(self) -> None:
        cfg = self.cfg
        gap = cfg.traffic_s / max(cfg.braze_faults, 1)
        for _ in range(cfg.braze_faults):
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * gap)
            if self.stop_traffic.is_set():
                return
            kind = self.rng.choice(["429", "5xx", "timeout"])
            if kind == "429":
                self.braze.fail_next(TRIGGER, 429, reset_in_s=self.rng.uniform(0.5, 1.5))
            elif kind == "5xx":
                self.braze.fail_next(TRIGGER, self.rng.choice([500, 502, 503]), times=self.rng.randint(1, 3))
            else:
                # Hangs past the client's timeout and fails: Braze did not take it.
                self.braze.fail_next(TRIGGER, 503, delay_s=2.8)
            self.report.faults[f"braze_{kind}"] += 1

    async def _llm_faults(self) -> None:
        cfg = self.cfg
        gap = cfg.traffic_s / max(cfg.llm_faults, 1)
        for _ in range(cfg.llm_faults):
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * gap)
            if self.stop_traffic.is_set():
                return
            choices: list[int | str] = [500, 503, "hang"]
            fault = self.rng.choice(choices)
            self.llm.faults.append(fault)
            self.report.faults["llm_hang" if fault == "hang" else "llm_5xx"] += 1

    async def _agent(self, method: str, conv: str, action: str = "", body: Any = None) -> int:
        path = f"/agent/conversations/{conv}" + (f"/{action}" if action else "")
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        try:
            async with self.http.request(
                method, self.url + path, headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, **kwargs
            ) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return 599

    async def _agent_until(self, method: str, conv: str, action: str = "", body: Any = None) -> int:
        """An agent's action, retried while the store is unavailable (the console would retry)."""
        for _ in range(40):
            status = await self._agent(method, conv, action, body)
            if status < 500:
                return status
            await asyncio.sleep(0.25)
        return status

    async def _take_over(self, conv: str) -> None:
        self.report.faults["takeover"] += 1
        status = await self._agent_until("POST", conv, "claim")
        if status not in (200, 404, 409):  # 404: its first message is not processed yet
            self.report.problems.append(f"claim {conv}: {status}")
            return
        await asyncio.sleep(self.rng.uniform(0.2, 1.5))
        await self._agent_until("POST", conv, "messages", {"text": f"agent note {uuid.uuid4().hex[:10]}"})
        await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        await self._agent_until("POST", conv, "release")

    async def _takeovers(self) -> None:
        cfg = self.cfg
        gap = cfg.traffic_s / max(cfg.takeovers, 1)
        busy: set[str] = set()
        for _ in range(cfg.takeovers):
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * gap)
            if self.stop_traffic.is_set():
                return
            # Mid-turn: a conversation that sent a burst a moment ago (its model call is running).
            recent = [c for c, t in self.last_burst.items() if time.monotonic() - t < 0.4 and c not in busy]
            if not recent:
                continue
            conv = self.rng.choice(recent)
            busy.add(conv)
            task = self.spawn(self._take_over(conv))
            task.add_done_callback(functools.partial(_forget, busy, conv))

    async def _agent_desk(self) -> None:
        """Agents answer everyone who asked for a person (or whom the bot handed over)."""
        handling: set[str] = set()
        while True:
            await asyncio.sleep(1.0)
            try:
                async with self.http.get(
                    self.url + "/agent/conversations?status=waiting",
                    headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
                ) as resp:
                    if resp.status != 200:
                        continue
                    waiting = [c["id"] for c in (await resp.json())["conversations"]]
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            for conv in waiting:
                if conv not in handling:
                    handling.add(conv)
                    task = self.spawn(self._take_over(conv))
                    task.add_done_callback(functools.partial(_forget, handling, conv))

    # settle ----------------------------------------------------------------------------------------
    async def _settle(self) -> None:
        """Until nothing is queued, in flight or held by a human, and deliveries stopped changing."""
        from bot.appkeys import RUNTIME

        rt = self.runtime[RUNTIME]
        self.braze.faults[TRIGGER].clear()
        self.llm.faults.clear()
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        quiet_since, seen = time.monotonic(), -1
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            try:
                busy = await self._busy(rt)
            except Exception:
                continue
            delivered = len(self.braze.delivered)
            if busy or delivered != seen:
                quiet_since, seen = time.monotonic(), delivered
                continue
            if time.monotonic() - quiet_since > 2.5:
                self.log("drained")
                self.desk.cancel()
                return
        self.report.problems.append(
            f"did not drain within {self.cfg.settle_timeout_s}s: {await self._busy(rt)}"
        )
        self.desk.cancel()

    async def _busy(self, rt: Any) -> str:
        parts = range(self.cfg.partitions)
        async with rt.redis.pipeline(transaction=False) as pipe:
            for p in parts:
                keys = PartitionKeys(p)
                pipe.zcard(keys.ready)
                for stream in (keys.outbox, keys.jobs, keys.track):
                    pipe.xlen(stream)
                pipe.zcard(keys.status_index("waiting"))
                pipe.zcard(keys.status_index("with_agent"))
            counts = await pipe.execute()
        names = ["ready", "outbox", "jobs", "track", "waiting", "with_agent"]
        totals = Counter({n: sum(counts[i::6]) for i, n in enumerate(names)})
        return ", ".join(f"{k}={v}" for k, v in totals.items() if v)

    # analysis --------------------------------------------------------------------------------------
    async def _analyse(self, app: web.Application) -> None:
        from bot.appkeys import RUNTIME

        rt = app[RUNTIME]
        report = self.report
        accepted = [m for m in self.msgs.values() if m.accepted_at]
        report.messages = len(accepted)
        for m in self.msgs.values():
            if not m.accepted_at:
                report.problems.append(f"{m.id}: never accepted ({m.statuses})")
        delivered: dict[str, list[Delivered]] = defaultdict(list)
        for d in self.braze.delivered:
            delivered[d.user].append(d)
        report.replies_delivered = len(self.braze.delivered)

        self.dead_texts: dict[str, set[str]] = defaultdict(set)
        for letter in await DeadLetters(rt.redis, self.cfg.partitions).find(limit=100_000):
            if letter.kind == "send":
                self.dead_texts[letter.conv].add(str(letter.payload.get("text", "")))
        lost = reordered = inbound_dupes = extra_replies = 0
        latencies: list[float] = []
        acked_by: dict[str, set[str]] = defaultdict(set)
        for conv in sorted(self.order):
            history = await rt.store.history(conv)
            lost_here, dupes_here, order_ok = self._check_inbound(conv, history)
            lost += lost_here
            inbound_dupes += dupes_here
            reordered += 0 if order_ok else 1
            extra_replies += self._check_answers(conv, history, delivered[conv], latencies, acked_by)
        for items in delivered.values():
            for d in items:
                for mid in ID.findall(d.text) if d.text.startswith("ack ") else []:
                    acked_by[mid].add(d.text)
        report.duplicates += sum(len(texts) - 1 for texts in acked_by.values() if len(texts) > 1)
        report.dead_letters = await DeadLetters(rt.redis, self.cfg.partitions).counts()
        if latencies:
            latencies.sort()
            report.p50_s = statistics.median(latencies)
            report.p99_s = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]

        pending = 0
        for p in range(self.cfg.partitions):
            keys = PartitionKeys(p)
            for stream in (keys.outbox, keys.jobs, keys.track):
                with contextlib.suppress(Exception):
                    pending += int((await rt.redis.xpending(stream, GROUP))["pending"])
        depth = await self._busy(rt)
        report.invariants = {
            "1 a 2xx means the message is stored (once)": "ok"
            if not lost and not inbound_dupes
            else f"{lost} lost, {inbound_dupes} stored twice",
            "2 one reply per burst, no duplicates": "ok"
            if not report.duplicates and not extra_replies
            else f"{report.duplicates} duplicates, {extra_replies} bursts with extra replies",
            "3 turns never overlap or reorder": "ok"
            if not self.llm.overlaps and not reordered
            else f"{len(self.llm.overlaps)} overlapping model calls, {reordered} conversations reordered",
            "4 no bot reply over a human": "ok" if not report.after_takeover else f"{report.after_takeover}",
            "5 every outbound call ends done or dead-lettered": "ok"
            if not depth and not pending
            else f"still queued: {depth or '-'}; unsettled: {pending}",
            "6 bad input changes nothing": "ok"
            if not any("bad input" in p or "x-bad-secret" in p for p in report.problems)
            else "see problems",
        }

    def _check_inbound(self, conv: str, history: list[HistoryItem]) -> tuple[int, int, bool]:
        expected = [self.msgs[mid].text for mid in self.order[conv]]
        got = [h.text for h in history if h.role == "user"]
        lost = sum((Counter(expected) - Counter(got)).values())
        dupes = sum((Counter(got) - Counter(expected)).values())
        for text in Counter(expected) - Counter(got):
            self.report.problems.append(f"{conv}: accepted but not in history: {text[:30]}")
        if "x-bad-secret" in got:
            self.report.problems.append(f"{conv}: a webhook with a wrong secret was stored")
        return lost, dupes, got == expected

    def _check_answers(
        self,
        conv: str,
        history: list[HistoryItem],
        delivered: list[Delivered],
        latencies: list[float],
        acked_by: dict[str, set[str]],
    ) -> int:
        report = self.report
        pool: dict[str, deque[Delivered]] = defaultdict(deque)
        for d in delivered:
            pool[d.text].append(d)
        # Which history reply reached Braze, and when.
        sent_at: dict[int, float] = {}
        for index, item in enumerate(history):
            if item.role in ("bot", "agent") and not item.marker and pool[item.text]:
                sent_at[index] = pool[item.text].popleft().at
        for text, left in pool.items():
            if left:
                report.duplicates += len(left)
                report.problems.append(f"{conv}: delivered {len(left)}x more than recorded: {text[:40]}")
        by_text = {self.msgs[mid].text: self.msgs[mid] for mid in self.order[conv]}
        human = False
        extra = 0
        stretch_start: int | None = None
        last_bot_run_end = 0
        for index, item in enumerate(history):
            if item.marker == HUMAN_START:
                human, stretch_start = True, index
                self._check_fence(history, sent_at, last_bot_run_end, index)
                continue
            if item.marker == HUMAN_END:
                human, last_bot_run_end = False, index
                continue
            if item.role != "user":
                continue
            msg = by_text.get(item.text)
            if human:
                report.answered_by_human += 1
                continue
            answer = next(
                (
                    j
                    for j in range(index + 1, len(history))
                    if history[j].role in ("bot", "agent") and not history[j].marker
                ),
                None,
            )
            if answer is None:
                report.never_answered += 1
                report.problems.append(f"{conv}: no reply recorded for {item.text[:30]}")
                continue
            if answer in sent_at:
                report.answered_by_bot += 1
                if msg is not None and ID.search(msg.text):
                    latencies.append(sent_at[answer] - msg.accepted_at)
                continue
            later_start = any(h.marker == HUMAN_START for h in history[answer + 1 :])
            if history[answer].role == "bot" and later_start:
                report.overtaken += 1
                report.answered_by_human += 1
                continue
            if history[answer].text in self.dead_texts.get(conv, set()):
                report.held += 1
                continue
            report.never_answered += 1
            report.problems.append(f"{conv}: reply never delivered: {history[answer].text[:40]}")
        # More than one bot reply after one burst (the handoff notice follows its marker, not a burst).
        run = 0
        for item in history:
            if item.role == "user" or item.marker:
                run = 0
            elif item.role == "bot" and item.text.startswith("ack "):
                run += 1
                if run > 1:
                    extra += 1
        del stretch_start
        return extra

    def _check_fence(
        self, history: list[HistoryItem], sent_at: dict[int, float], since: int, start: int
    ) -> None:
        """Bot replies from before a human stretch must not reach Braze after its first message."""
        end = next(
            (j for j in range(start + 1, len(history)) if history[j].marker == HUMAN_END), len(history)
        )
        opened = [sent_at[j] for j in range(start, end) if j in sent_at]
        if not opened:
            return
        first = min(opened)
        for j in range(since, start):
            bot_kind = history[j].text.startswith("ack ") or history[j].text == self.apology
            if history[j].role == "bot" and bot_kind and j in sent_at and sent_at[j] > first:
                self.report.after_takeover += 1
                self.report.problems.append(f"bot reply after a takeover: {history[j].text[:40]}")


def _forget(names: set[str], name: str, _task: asyncio.Task[Any]) -> None:
    names.discard(name)


async def run_soak(cfg: SoakConfig, keep: Path | None = None) -> Report:
    with tempfile.TemporaryDirectory(prefix="soak-") as made:
        tmp = str(keep) if keep else made
        os.makedirs(tmp, exist_ok=True)
        soak = Soak(cfg, Path(tmp))
        report = await soak.run()
        if not report.ok and cfg.verbose:
            for name in [f"worker-{i}" for i in range(len(soak.procs))] + ["http"]:
                path = Path(tmp) / f"{name}.log"
                if path.exists():
                    tail = path.read_text(errors="replace").splitlines()[-15:]
                    print(f"--- {name}.log (tail)", *tail, sep="\n", file=sys.stderr)
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short CI variant")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep", type=Path, help="keep the workers' logs and Redis files in this folder")
    args = parser.parse_args(argv)
    cfg = SoakConfig.quick() if args.quick else SoakConfig()
    cfg.verbose = True
    if args.seed is not None:
        cfg.seed = args.seed
    report = asyncio.run(run_soak(cfg, args.keep))
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
