"""`python -m bot simulate --web`: a phone-like chat page over the real pipeline and the Braze stand-in.

The page and its small API live on the broker's own app (added only in simulate mode), so the
page, the agent console at `/agent` and the agent API share one origin. Everything the page shows
comes from what really happened: messages are what the Braze stand-in received, statuses are read
from Redis, and the event log narrates Braze answers, retries, dead letters and injected faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
import webbrowser
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.logs import event
from bot.models import normalize_phone
from bot.settings import Settings
from bot.sim.braze_standin import Delivered
from bot.sim.faults import FAULT_KINDS, TRIGGER_SEND, FaultKind, Faults, close_responder, wrapped_responder
from bot.sim.session import Simulation, SimUser, simulation
from bot.web.common import error, field_errors

log = logging.getLogger("bot.sim.web")

STATIC = Path(__file__).parent / "static"
POLL_S = 0.2
MAX_EVENTS = 5000
KEEPALIVE_S = 15.0
NAMES = ("Jane", "Sam", "Priya", "Lukas", "Amara", "Tom", "Yuki", "Carlos", "Ines", "Omar")


class Customer(BaseModel):
    id: str  # the conversation id: the Braze external id, else the phone
    user_id: str
    phone: str
    name: str

    def as_user(self) -> SimUser:
        return SimUser(user_id=self.user_id, phone=self.phone, name=self.name)


class NewCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field("", max_length=80)
    user_id: str = Field("", max_length=200)
    phone: str = Field("", max_length=40)
    with_user_id: bool = True

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value) if value else ""


class SendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=4096)
    duplicate: bool = False


class FaultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    times: int = Field(1, ge=1, le=20)
    seconds: float = Field(3.0, gt=0, le=120)


class EventHub:
    """Everything the page shows, numbered, replayable from any point (SSE `Last-Event-ID`)."""

    def __init__(self) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.seq = 0
        self.closed = asyncio.Event()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def emit(self, kind: str, **data: Any) -> dict[str, Any]:
        self.seq += 1
        item = {"seq": self.seq, "kind": kind, "at": time.time(), **data}
        self.events.append(item)
        for queue in self._subscribers:
            queue.put_nowait(item)
        return item

    def log(self, text: str, level: Literal["info", "warn", "error", "ok"] = "info") -> None:
        self.emit("log", text=text, level=level)

    def since(self, seq: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["seq"] > seq]

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)


SIMULATOR: web.AppKey[SimulatorWeb] = web.AppKey("simulator")


class SimulatorWeb:
    """The simulator's routes, its customers, and the watchers that feed the event log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub = EventHub()
        self.customers: dict[str, Customer] = {}
        self.status: dict[str, tuple[str, str]] = {}
        self._sim: Simulation | None = None
        self._faults: Faults | None = None
        self._deliveries: asyncio.Queue[Delivered] = asyncio.Queue()
        self._failed_sends: dict[
            str, tuple[float, int, int]
        ] = {}  # address -> (first failure, attempts, status)
        self._dead = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._counter = 0

    # -- wiring ---------------------------------------------------------------------------------
    @property
    def sim(self) -> Simulation:
        if self._sim is None:
            raise web.HTTPServiceUnavailable(reason="the simulation is starting")
        return self._sim

    @property
    def faults(self) -> Faults:
        if self._faults is None:
            raise web.HTTPServiceUnavailable(reason="the simulation is starting")
        return self._faults

    def setup(self, app: web.Application) -> None:
        app[SIMULATOR] = self
        app.router.add_get("/simulator", self._page)
        app.router.add_get("/simulator/", self._page)
        app.router.add_static("/simulator/static", STATIC, append_version=True)
        app.router.add_get("/simulator/api/config", self._config)
        app.router.add_get("/simulator/api/events", self._events)
        app.router.add_post("/simulator/api/customers", self._new_customer)
        app.router.add_post("/simulator/api/send", self._send)
        app.router.add_post("/simulator/api/faults", self._fault)
        app.on_shutdown.append(self._on_shutdown)
        self._app = app

    async def _on_shutdown(self, app: web.Application) -> None:
        # Open event streams would otherwise hold the server's shutdown for its full timeout.
        self.hub.closed.set()

    async def attach(self, sim: Simulation, faults: Faults) -> None:
        self._sim = sim
        self._faults = faults
        sim.standin.on_delivery(self._deliveries.put_nowait)
        sim.standin.on_request(self._braze_request)
        self._tasks = [
            asyncio.create_task(self._relay_deliveries(), name="sim-deliveries"),
            asyncio.create_task(self._watch(), name="sim-watch"),
        ]
        self.add_customer(Customer(id="sim-u-1001", user_id="sim-u-1001", phone="+15550001001", name="Jane"))
        self.add_customer(Customer(id="+15550001002", user_id="", phone="+15550001002", name="Sam"))
        self._counter = 2
        self.hub.log(
            f"Simulator ready: {sim.settings.backend} backend, Braze stand-in, private pipeline", "ok"
        )

    async def detach(self) -> None:
        self.hub.closed.set()
        for task in self._tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self._tasks, timeout=5)
        for task in stuck:
            event(log, "simulator_task_stuck", logging.WARNING, task=task.get_name())

    def add_customer(self, customer: Customer) -> Customer:
        known = self.customers.get(customer.id)
        if known:
            return known
        self.customers[customer.id] = customer
        self.status[customer.id] = ("new", "")
        self.hub.emit("customer", customer=customer.model_dump(), status="new")
        return customer

    def console_available(self) -> bool:
        return any(getattr(r, "canonical", "") in ("/agent", "/agent/") for r in self._app.router.resources())

    @staticmethod
    def console_link(conv_id: str) -> str:
        # The page hands the console its token through sessionStorage (see simulator.js), not the URL.
        return f"/agent?conversation={quote(conv_id, safe='')}"

    # -- watchers -------------------------------------------------------------------------------
    @staticmethod
    def _customer_of(address: str) -> str:
        # Braze addresses a user by external id when the conversation has one, else by the phone
        # alias: either way, the conversation id.
        return address

    def _name(self, address: str) -> str:
        customer = self.customers.get(self._customer_of(address))
        return customer.name if customer else address

    async def _relay_deliveries(self) -> None:
        """One at a time, so the page shows messages in the order Braze received them."""
        while not self.hub.closed.is_set():
            item = await self._deliveries.get()
            conv = self._customer_of(item.user)
            role, agent = "bot", ""
            with contextlib.suppress(Exception):
                for entry in reversed(await self.sim.runtime.store.history(conv)):
                    if entry.text == item.text and entry.role != "user":
                        role, agent = entry.role, entry.agent
                        break
            template = item.campaign_id == self.sim.settings.braze_template_campaign_id
            self.hub.emit(
                "message",
                customer=conv,
                direction="out",
                text=item.text,
                role=role,
                agent=agent,
                template=template,
            )

    def _braze_request(self, record: dict[str, Any]) -> None:
        body = record.get("body") or {}
        status = int(record.get("status") or 0)
        if record.get("path") == TRIGGER_SEND:
            addresses = [
                r.get("external_user_id") or (r.get("user_alias") or {}).get("alias_name", "")
                for r in body.get("recipients") or []
                if isinstance(r, dict)
            ]
            who = ", ".join(self._name(a) for a in addresses) or "nobody"
            if status == 201:
                retried = []
                for address in addresses:
                    failed = self._failed_sends.pop(address, None)
                    if failed:
                        first, attempts, code = failed
                        retried.append(address)
                        self.hub.log(
                            f"Braze accepted the retry to {self._name(address)} "
                            f"{time.time() - first:.1f} s after the first {code} (attempt {attempts + 1})",
                            "ok",
                        )
                fresh = [a for a in addresses if a not in retried]
                if fresh:
                    self.hub.log(
                        f"Braze accepted the send to {', '.join(self._name(a) for a in fresh)} (201)"
                    )
                return
            for address in addresses:
                first, attempts, _ = self._failed_sends.get(address, (time.time(), 0, status))
                self._failed_sends[address] = (first, attempts + 1, status)
            if status == 429:
                self.hub.log(
                    f"Braze answered 429 (rate limited) to the send for {who}; the broker waits", "warn"
                )
            else:
                self.hub.log(f"Braze answered {status} to the send for {who}; the broker retries", "warn")
        elif record.get("path") == "/users/track" and status == 201:
            parts = []
            for name in ("attributes", "events"):
                for obj in body.get(name) or []:
                    fields = sorted(
                        k for k in obj if k not in ("external_id", "user_alias", "_update_existing_only")
                    )
                    label = obj.get("name") if name == "events" else ", ".join(fields)
                    parts.append(f"{name[:-1]} {label}")
            self.hub.log("Braze /users/track: " + ("; ".join(parts) or "empty"), "info")

    async def _watch(self) -> None:
        """Statuses of the customers (whoever changed them: worker, agent API, timeout) and dead letters."""
        # Stops on `hub.closed` too: a cancellation that lands inside a Redis call can be absorbed
        # by the client library, and the loop must still end.
        while not self.hub.closed.is_set():
            with contextlib.suppress(Exception):
                await self._poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hub.closed.wait(), POLL_S)

    async def _poll(self) -> None:
        store = self.sim.runtime.store
        ids = list(self.customers)
        for state in await store.states(ids):
            now = (state.status, state.agent)
            before = self.status.get(state.id)
            if before != now:
                self.status[state.id] = now
                self.hub.emit("status", customer=state.id, status=state.status, agent=state.agent)
                if before and before[0] != "new":
                    await self._log_status(state.id, before[0], state.status, state.agent)
        dead = await self.sim.runtime.streams.dead_depth()
        if dead > self._dead:
            self.hub.log(
                f"{dead - self._dead} send(s) dead-lettered after {self.settings.braze_max_attempts} "
                "attempts: kept for an operator to replay, not dropped",
                "error",
            )
        self._dead = dead

    async def _log_status(self, conv: str, before: str, status: str, agent: str) -> None:
        audit = await self.sim.runtime.store.audit(conv)
        change: dict[str, Any] = next((a for a in reversed(audit) if a.get("to") == status), {})
        why = f" ({change['reason']})" if change.get("reason") else ""
        name = self.customers[conv].name if conv in self.customers else conv
        shown = {"bot": "the bot", "waiting": "waiting for an agent", "with_agent": f"agent {agent}"}
        self.hub.log(f"{name}'s conversation: {shown.get(before, before)} → {shown.get(status, status)}{why}")

    # -- views ----------------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "simulator.html", headers={"Cache-Control": "no-store"})

    async def _config(self, request: web.Request) -> web.Response:
        sim = self.sim
        return web.json_response(
            {
                "backend": sim.settings.backend,
                "agent_id": sim.settings.agent_api_tokens.get(sim.agent_token, ""),
                "agent_token": sim.agent_token,
                "console": self.console_available(),
                "customers": [
                    {
                        **c.model_dump(),
                        "status": self.status.get(c.id, ("new", ""))[0],
                        "console_url": self.console_link(c.id),
                    }
                    for c in self.customers.values()
                ],
                "faults": [k for k in FAULT_KINDS if k != "clear"],
                "llm_timeout_s": sim.settings.llm_timeout_s,
                "braze_max_attempts": sim.settings.braze_max_attempts,
            }
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        raw = request.headers.get("Last-Event-ID") or request.query.get("since") or "0"
        last = int(raw) if raw.isdigit() else 0
        queue = self.hub.subscribe()
        closed = asyncio.create_task(self.hub.closed.wait())
        try:
            for item in self.hub.since(last):
                await self._write(resp, item)
                last = item["seq"]
            while not self.hub.closed.is_set():
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {getter, closed}, timeout=KEEPALIVE_S, return_when="FIRST_COMPLETED"
                )
                if getter not in done:
                    getter.cancel()
                    if not done:
                        await resp.write(b": keepalive\n\n")
                    continue
                item = getter.result()
                if item["seq"] > last:
                    await self._write(resp, item)
                    last = item["seq"]
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            closed.cancel()
            self.hub.unsubscribe(queue)
        return resp

    @staticmethod
    async def _write(resp: web.StreamResponse, item: dict[str, Any]) -> None:
        await resp.write(f"id: {item['seq']}\ndata: {json.dumps(item)}\n\n".encode())

    async def _body(self, request: web.Request, model: type[BaseModel]) -> Any:
        try:
            raw = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(reason="body is not JSON") from None
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            fields = field_errors(exc)
            raise _Invalid(fields) from None

    async def _new_customer(self, request: web.Request) -> web.Response:
        try:
            body: NewCustomer = await self._body(request, NewCustomer)
        except _Invalid as exc:
            return exc.response()
        self._counter += 1
        n = self._counter
        phone = body.phone or f"+1555000{1000 + n}"
        user_id = body.user_id or (f"sim-u-{1000 + n}" if body.with_user_id else "")
        name = body.name or NAMES[(n - 1) % len(NAMES)]
        customer = self.add_customer(Customer(id=user_id or phone, user_id=user_id, phone=phone, name=name))
        self.hub.log(
            f"New customer {customer.name}: "
            + (f"Braze user_id {user_id}, phone {phone}" if user_id else f"known only by phone {phone}")
        )
        return web.json_response(
            {**customer.model_dump(), "status": "new", "console_url": self.console_link(customer.id)}
        )

    async def _send(self, request: web.Request) -> web.Response:
        try:
            body: SendBody = await self._body(request, SendBody)
        except _Invalid as exc:
            return exc.response()
        customer = self.customers.get(body.customer)
        if customer is None:
            return error(404, "not_found", f"no simulated customer {body.customer!r}")
        message_id = uuid.uuid4().hex[:16]
        first = await self.sim.send(customer.as_user(), body.text, message_id=message_id)
        answers = [first]
        self.hub.emit(
            "message", customer=customer.id, direction="in", text=body.text, http_status=first["http_status"]
        )
        self.hub.log(
            f"Webhook from {customer.name}: {_answer(first)}",
            "info" if first["http_status"] < 400 else "error",
        )
        if body.duplicate:
            # Braze redelivers the same rendered body when our first answer was slow or lost.
            second = await self.sim.send(customer.as_user(), body.text, message_id=message_id)
            answers.append(second)
            ok = second["http_status"] == 200 and second.get("status") == "duplicate"
            self.hub.log(
                f"Same webhook delivered again: {_answer(second)}"
                + (" (no second reply will follow)" if ok else " (expected 200 duplicate!)"),
                "ok" if ok else "error",
            )
        return web.json_response({"answers": answers})

    async def _fault(self, request: web.Request) -> web.Response:
        try:
            body: FaultBody = await self._body(request, FaultBody)
        except _Invalid as exc:
            return exc.response()
        said = self.faults.inject(body.kind, body.times, body.seconds)
        self.hub.log(f"Fault injected: {said}" if body.kind != "clear" else said, "warn")
        return web.json_response({"planned": said})


class _Invalid(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields

    def response(self) -> web.Response:
        return error(422, "invalid_fields", str(self), fields=self.fields)


def _answer(answer: dict[str, Any]) -> str:
    status = answer.get("http_status")
    if "status" in answer:
        return f"{status} {answer['status']}"
    return f"{status} {answer.get('error', {}).get('code', '')}".strip()


@contextlib.asynccontextmanager
async def running(settings: Settings, port: int = 0) -> AsyncIterator[tuple[SimulatorWeb, str]]:
    """The whole web simulator; yields it and the broker's base URL."""
    ui = SimulatorWeb(settings)
    responder = wrapped_responder(settings, notify=lambda text: ui.hub.log(text, "warn"))
    try:
        async with simulation(settings, port=port, responder=responder, setup_app=ui.setup) as sim:
            await ui.attach(sim, Faults(sim.standin, responder))
            try:
                yield ui, sim.broker_url
            finally:
                await ui.detach()
    finally:
        await close_responder(responder)


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_web(settings: Settings, port: int = 0) -> int:
    async with running(settings, port) as (_, base):
        url = f"{base}/simulator"
        print(f"Simulator running at {url}  ({settings.backend} backend; Ctrl-C to stop)", flush=True)
        event(log, "simulator_web", url=url, backend=settings.backend)
        if _has_display():
            loop = asyncio.get_running_loop()
            with contextlib.suppress(Exception):
                await loop.run_in_executor(None, webbrowser.open, url)
        await _until_signalled()
        print("Simulator stopped.", flush=True)
    return 0
