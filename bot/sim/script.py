"""`python -m bot simulate --script FILE`: run a conversation script and check its expectations.

A script is YAML: a customer, which model answers (`llm: faq | scripted | env`), rules for the
scripted model, and steps. Each step is one line of the report (✓ passed, ✗ failed with what was
expected and what happened, · skipped after a failure); the exit status is 0 only when every step
passed, 1 when one failed, 2 when the script itself is invalid. FILE may also be a folder: every
`*.yaml` / `*.yml` in it runs, each in a fresh simulation.

Steps (a list; each item a one-key mapping, or a bare word for `release`, `claim` and
`expect_no_reply`):

    user: text                      the customer writes (then the pipeline is left to finish)
    burst: [text, text]             several messages at once: answered together in one turn
    duplicate: text                 the same webhook delivered twice: 202, then 200 duplicate
    expect: regex                   the next message to the customer matches (re.search)
    expect: {text: regex, timeout: 20s}
    expect_no_reply                 nothing more was sent to the customer
    expect_status: waiting          the conversation reaches this status (bot, waiting, with_agent)
    expect_profile: {email: a@b.c}  a Braze /users/track attributes object for the customer has these
    expect_event: Name              a Braze /users/track event with this name for the customer
    agent: text                     an agent replies through the agent API (claims it first if needed)
    claim / release                 agent API claim / release
    fault: braze_500 x2             also braze_429, llm_fail, llm_slow 3s, llm_timeout, clear
    wait: 2s
    customer: {user_id: u-2, phone: "+15550002002", name: Ann}    talk as another customer
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, cast
from urllib.parse import quote

import aiohttp
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bot.models import STATUSES, normalize_phone
from bot.settings import Settings
from bot.sim.faults import FAULT_KINDS, FaultKind, Faults, close_responder, wrapped_responder
from bot.sim.scripted_llm import DEFAULT_REPLY, Rule, ScriptedLLM
from bot.sim.session import Simulation, SimUser, serve_app, simulation

LlmMode = Literal["faq", "scripted", "env"]
LLM_MODES: tuple[LlmMode, ...] = ("faq", "scripted", "env")
DEFAULT_TIMEOUT_S = 10.0
MAX_SHOWN = 160
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|seconds?)?\s*$")


class ScriptError(Exception):
    """The script file cannot be run as written; the message says where and why."""


def parse_duration(value: object, where: str) -> float:
    """`2s`, `500ms`, `1.5` (seconds) -> seconds."""
    if isinstance(value, bool):
        raise ScriptError(f"{where}: expected a duration like 2s or 500ms, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ScriptError(f"{where}: expected a duration like 2s or 500ms, got {value!r}")
    number = float(match.group(1))
    return number / 1000 if match.group(2) == "ms" else number


class CustomerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    user_id: str = Field("", max_length=200)
    phone: str = Field("", max_length=40)
    name: str = Field("", max_length=80)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value) if value else ""

    def as_user(self, fallback_phone: str) -> SimUser:
        return SimUser(user_id=self.user_id, phone=self.phone or fallback_phone, name=self.name)


class ScriptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    description: str = ""
    llm: LlmMode = "faq"
    rules: list[Rule] = Field(default_factory=list)
    default_reply: str = DEFAULT_REPLY
    customer: CustomerSpec = Field(default_factory=lambda: CustomerSpec(user_id="script-user-1"))
    timeout: str | float = DEFAULT_TIMEOUT_S
    # Broker settings for this script (e.g. llm_timeout_s: 2, braze_subscription_group_id: sg-1).
    settings: dict[str, Any] = Field(default_factory=dict)
    steps: list[str | dict[str, Any]] = Field(min_length=1)


STEP_KINDS = (
    "user",
    "burst",
    "duplicate",
    "expect",
    "expect_no_reply",
    "expect_status",
    "expect_profile",
    "expect_event",
    "agent",
    "claim",
    "release",
    "fault",
    "wait",
    "customer",
)
BARE_STEPS = ("release", "claim", "expect_no_reply")


@dataclass
class Step:
    number: int
    kind: str
    arg: Any
    timeout_s: float
    label: str


@dataclass
class Outcome:
    ok: bool
    detail: str = ""
    lines: list[str] = field(default_factory=list)


def _short(text: str, limit: int = MAX_SHOWN) -> str:
    flat = text.replace("\n", " ⏎ ")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _label(kind: str, arg: Any) -> str:
    if arg is None:
        return kind
    if isinstance(arg, dict):
        inner = ", ".join(f"{k}: {v}" for k, v in arg.items())
        return f"{kind}: {{{inner}}}"
    if isinstance(arg, list):
        return f"{kind}: [{', '.join(str(a) for a in arg)}]"
    return f"{kind}: {arg}"


def parse_steps(raw_steps: list[str | dict[str, Any]], default_timeout: float) -> list[Step]:
    steps: list[Step] = []
    for number, raw in enumerate(raw_steps, start=1):
        where = f"step {number}"
        if isinstance(raw, str):
            kind, arg = raw.strip(), None
            if kind not in BARE_STEPS:
                raise ScriptError(
                    f"{where}: {kind!r} is not a step; write `- user: {kind}` to send it as a message, "
                    f"or one of: {', '.join(STEP_KINDS)}"
                )
        elif isinstance(raw, dict) and len(raw) == 1:
            kind, arg = next(iter(raw.items()))
        else:
            raise ScriptError(f"{where}: each step is one `kind: value` pair, got {raw!r}")
        if kind not in STEP_KINDS:
            raise ScriptError(f"{where}: unknown step {kind!r} (known: {', '.join(STEP_KINDS)})")
        timeout = default_timeout
        label = _label(kind, arg)
        if kind in ("user", "duplicate", "agent"):
            if arg is None or isinstance(arg, dict | list) or not str(arg).strip():
                raise ScriptError(f"{where}: `{kind}` needs a message text")
            arg = str(arg)
        elif kind == "burst":
            if not isinstance(arg, list) or not arg or not all(isinstance(a, str | int | float) for a in arg):
                raise ScriptError(f"{where}: `burst` needs a list of message texts")
            arg = [str(a) for a in arg]
        elif kind == "expect":
            if isinstance(arg, dict):
                unknown = set(arg) - {"text", "timeout"}
                if unknown or "text" not in arg:
                    raise ScriptError(f"{where}: `expect` takes a regex, or {{text: regex, timeout: 10s}}")
                if "timeout" in arg:
                    timeout = parse_duration(arg["timeout"], where)
                arg = arg["text"]
                label = f"expect: {arg}"
            if arg is None:
                raise ScriptError(f"{where}: `expect` needs a regular expression")
            try:
                re.compile(str(arg))
            except re.error as exc:
                raise ScriptError(f"{where}: {arg!r} is not a valid regular expression: {exc}") from None
            arg = str(arg)
        elif kind == "expect_status":
            if isinstance(arg, dict):
                if "timeout" in arg:
                    timeout = parse_duration(arg["timeout"], where)
                arg = arg.get("status")
                label = f"expect_status: {arg}"
            if arg not in STATUSES:
                raise ScriptError(f"{where}: `expect_status` is one of {', '.join(STATUSES)}, got {arg!r}")
        elif kind == "expect_profile":
            if not isinstance(arg, dict) or not arg:
                raise ScriptError(f"{where}: `expect_profile` needs attribute: value pairs")
        elif kind == "expect_event":
            if not isinstance(arg, str) or not arg.strip():
                raise ScriptError(f"{where}: `expect_event` needs an event name")
        elif kind == "fault":
            arg = parse_fault(str(arg or ""), where)
        elif kind == "wait":
            arg = parse_duration(arg, where)
        elif kind == "customer":
            if not isinstance(arg, dict):
                raise ScriptError(f"{where}: `customer` needs {{user_id: …, phone: …, name: …}}")
            try:
                arg = CustomerSpec.model_validate(arg)
            except ValidationError as exc:
                raise ScriptError(f"{where}: {_validation(exc)}") from None
            if not arg.user_id and not arg.phone:
                raise ScriptError(f"{where}: a customer needs a user_id, a phone, or both")
        elif arg is not None:
            raise ScriptError(f"{where}: `{kind}` takes no value")
        steps.append(Step(number, kind, arg, timeout, label))
    return steps


@dataclass
class FaultSpec:
    kind: FaultKind
    times: int = 1
    seconds: float = 3.0


def parse_fault(text: str, where: str) -> FaultSpec:
    """`braze_500 x2`, `llm_slow 3s`, `llm_fail`, `clear`."""
    words = text.split()
    if not words or words[0] not in FAULT_KINDS:
        raise ScriptError(f"{where}: `fault` is one of {', '.join(FAULT_KINDS)} (optionally xN, Ns)")
    spec = FaultSpec(kind=next(k for k in FAULT_KINDS if k == words[0]))
    for word in words[1:]:
        if re.fullmatch(r"x\d+", word):
            spec.times = int(word[1:])
        else:
            spec.seconds = parse_duration(word, where)
    if not 1 <= spec.times <= 20:
        raise ScriptError(f"{where}: a fault repeats 1 to 20 times")
    return spec


def _validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "script"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


@dataclass
class Script:
    path: Path
    spec: ScriptFile
    steps: list[Step]
    timeout_s: float


def load_script(path: Path) -> Script:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScriptError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScriptError(f"{path} is not valid YAML: {exc}") from None
    if isinstance(raw, list):
        raw = {"steps": raw}
    if not isinstance(raw, dict):
        raise ScriptError(f"{path}: expected a mapping with `steps:` (or a list of steps)")
    try:
        spec = ScriptFile.model_validate(raw)
    except ValidationError as exc:
        raise ScriptError(f"{path}: {_validation(exc)}") from None
    timeout = parse_duration(spec.timeout, "timeout")
    return Script(path, spec, parse_steps(spec.steps, timeout), timeout)


# -- running ---------------------------------------------------------------------------------------------
class Runner:
    """Runs one script's steps against a live simulation."""

    def __init__(self, sim: Simulation, faults: Faults, script: Script) -> None:
        self.sim = sim
        self.faults = faults
        self.script = script
        spec = script.spec.customer
        self.user = spec.as_user("+15550009001")
        self.cursor: dict[str, int] = {}
        self.http = sim.http

    @property
    def conv(self) -> str:
        return self.user.user_id or self.user.phone

    def _messages(self) -> list[str]:
        return self.sim.standin.messages_for(self.user.address)

    async def _poll(self, check: Callable[[], Any], timeout_s: float) -> Any:
        """The first truthy result of `check` within the timeout, else the last (falsy) one."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result or time.monotonic() >= deadline:
                return result
            await asyncio.sleep(0.02)

    async def _settle(self, timeout_s: float) -> Outcome | None:
        if not await self.sim.wait_idle(timeout_s):
            return Outcome(False, f"the broker was still busy after {timeout_s:g} s")
        return None

    async def _sent(self, what: str, timeout_s: float) -> Outcome:
        """Wait until the broker has done everything the step caused (turn, sends, retries)."""
        started = time.monotonic()
        busy = await self._settle(timeout_s)
        return busy or Outcome(True, f"{what}; broker idle after {time.monotonic() - started:.2f} s")

    async def _send(self, text: str, message_id: str | None = None) -> dict[str, Any]:
        return await self.sim.send(self.user, text, message_id=message_id)

    async def run_step(self, step: Step) -> Outcome:
        handler = getattr(self, f"_step_{step.kind}")
        return cast(Outcome, await handler(step))

    async def _step_user(self, step: Step) -> Outcome:
        answer = await self._send(step.arg)
        if answer["http_status"] != 202:
            return Outcome(False, f"the webhook answered {answer['http_status']}: {answer}")
        # A person waits for the answer before typing on; `burst` is for messages sent together.
        return await self._sent("202 accepted", step.timeout_s)

    async def _step_burst(self, step: Step) -> Outcome:
        answers = [await self._send(text) for text in step.arg]
        bad = [a for a in answers if a["http_status"] != 202]
        if bad:
            return Outcome(False, f"the webhook answered {bad[0]['http_status']}: {bad[0]}")
        return await self._sent(f"{len(answers)} x 202 accepted", step.timeout_s)

    async def _step_duplicate(self, step: Step) -> Outcome:
        message_id = f"dup-{step.number}-{time.time_ns()}"
        first = await self._send(step.arg, message_id)
        second = await self._send(step.arg, message_id)
        got = " then ".join(
            f"{a['http_status']} {a.get('status', a.get('error', ''))}" for a in (first, second)
        )
        if first["http_status"] != 202 or second["http_status"] != 200 or second.get("status") != "duplicate":
            return Outcome(False, f"expected 202 accepted then 200 duplicate; got {got}")
        return await self._sent(got, step.timeout_s)

    async def _step_expect(self, step: Step) -> Outcome:
        index = self.cursor.get(self.user.address, 0)
        started = time.monotonic()
        arrived = await self._poll(lambda: len(self._messages()) > index, step.timeout_s)
        if not arrived:
            return Outcome(
                False,
                f"no message to {self.user.address} within {step.timeout_s:g} s",
                [f"expected  /{step.arg}/", f"got       nothing (messages so far: {index})"],
            )
        text = self._messages()[index]
        self.cursor[self.user.address] = index + 1
        if re.search(step.arg, text) is None:
            return Outcome(
                False,
                "the next message does not match",
                [f"expected  /{step.arg}/", f'got       "{_short(text)}"'],
            )
        waited = time.monotonic() - started
        return Outcome(True, f'"{_short(text, 70)}"' + (f" (after {waited:.2f} s)" if waited >= 0.05 else ""))

    async def _step_expect_no_reply(self, step: Step) -> Outcome:
        busy = await self._settle(step.timeout_s)
        if busy:
            return busy
        index = self.cursor.get(self.user.address, 0)
        extra = self._messages()[index:]
        if extra:
            self.cursor[self.user.address] = len(self._messages())
            return Outcome(
                False,
                f"{len(extra)} unexpected message(s)",
                ["expected  no further message", *(f'got       "{_short(t)}"' for t in extra)],
            )
        return Outcome(True, "nothing more was sent")

    async def _status(self) -> tuple[str, str]:
        state = await self.sim.runtime.store.state(self.conv)
        return (state.status, state.agent) if state else ("(no conversation yet)", "")

    async def _step_expect_status(self, step: Step) -> Outcome:
        async def reached() -> bool:
            return bool((await self._status())[0] == step.arg)

        if await self._poll(reached, step.timeout_s):
            status, agent = await self._status()
            return Outcome(True, f"{status}" + (f" (agent {agent})" if agent else ""))
        status, _ = await self._status()
        return Outcome(
            False,
            f"status stayed {status} for {step.timeout_s:g} s",
            [f"expected  {step.arg}", f"got       {status}"],
        )

    def _track_objects(self, part: str) -> list[dict[str, Any]]:
        found = []
        for body in self.sim.standin.track_bodies:
            for obj in body.get(part) or []:
                ident = obj.get("external_id") or (obj.get("user_alias") or {}).get("alias_name")
                if ident == self.user.address:
                    found.append(obj)
        return found

    async def _step_expect_profile(self, step: Step) -> Outcome:
        wanted = {str(k): v for k, v in step.arg.items()}

        def merged() -> dict[str, Any]:
            attrs: dict[str, Any] = {}
            for obj in self._track_objects("attributes"):
                attrs.update(obj)
            return attrs

        if await self._poll(lambda: all(merged().get(k) == v for k, v in wanted.items()), step.timeout_s):
            return Outcome(True, _short(", ".join(f"{k}={v}" for k, v in wanted.items()), 90))
        got = {k: merged().get(k, "(not sent)") for k in wanted}
        return Outcome(
            False,
            f"Braze /users/track did not receive these attributes within {step.timeout_s:g} s",
            [f"expected  {wanted}", f"got       {got}"],
        )

    async def _step_expect_event(self, step: Step) -> Outcome:
        def names() -> list[str]:
            return [str(o.get("name")) for o in self._track_objects("events")]

        if await self._poll(lambda: step.arg in names(), step.timeout_s):
            return Outcome(True, f"event {step.arg!r} tracked")
        return Outcome(
            False,
            f"Braze /users/track did not receive the event within {step.timeout_s:g} s",
            [f"expected  {step.arg}", f"got       {names() or 'no events'}"],
        )

    # -- the agent side, through the agent HTTP API (CONTRACT.md) --------------------------------------
    async def _agent(self, method: str, action: str = "", body: Any = None) -> tuple[int, Any]:
        url = f"{self.sim.broker_url}/agent/conversations/{quote(self.conv, safe='')}"
        if action:
            url += f"/{action}"
        async with self.http.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {self.sim.agent_token}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            try:
                return resp.status, await resp.json()
            except (aiohttp.ContentTypeError, ValueError):
                return resp.status, await resp.text()

    def _agent_api_missing(self) -> bool:
        paths = {getattr(r, "canonical", "") for r in self.sim.app.router.resources()}
        return not any(p.startswith("/agent/conversations") for p in paths)

    def _agent_failed(self, what: str, status: int, body: Any) -> Outcome:
        if status == 404 and self._agent_api_missing():
            return Outcome(False, f"{what}: the agent API (/agent/conversations/…) is not part of this build")
        return Outcome(False, f"{what}: the agent API answered {status}: {_short(str(body))}")

    async def _claim_if_needed(self) -> Outcome | None:
        status, body = await self._agent("GET")
        if status != 200:
            return self._agent_failed("reading the conversation", status, body)
        agent = self.sim.settings.agent_api_tokens.get(self.sim.agent_token, "")
        if body.get("status") == "with_agent" and body.get("assigned_agent") == agent:
            return None
        status, body = await self._agent("POST", "claim")
        if status >= 300:
            return self._agent_failed("claim", status, body)
        return None

    async def _step_agent(self, step: Step) -> Outcome:
        failed = await self._claim_if_needed()
        if failed:
            return failed
        status, body = await self._agent("POST", "messages", {"text": step.arg})
        if status >= 300:
            return self._agent_failed("sending the agent's message", status, body)
        return await self._sent(f"sent ({status})", step.timeout_s)

    async def _step_claim(self, step: Step) -> Outcome:
        status, body = await self._agent("POST", "claim")
        if status >= 300:
            return self._agent_failed("claim", status, body)
        return await self._sent(f"claimed ({status})", step.timeout_s)

    async def _step_release(self, step: Step) -> Outcome:
        status, body = await self._agent("POST", "release")
        if status >= 300:
            return self._agent_failed("release", status, body)
        return await self._sent(f"released ({status})", step.timeout_s)

    # -- the rest --------------------------------------------------------------------------------------
    async def _step_fault(self, step: Step) -> Outcome:
        spec: FaultSpec = step.arg
        return Outcome(True, self.faults.inject(spec.kind, spec.times, spec.seconds))

    async def _step_wait(self, step: Step) -> Outcome:
        await asyncio.sleep(step.arg)
        return Outcome(True)

    async def _step_customer(self, step: Step) -> Outcome:
        spec: CustomerSpec = step.arg
        self.user = spec.as_user(self.user.phone)
        return Outcome(True, f"now writing as {self.user.address}")


def _settings_for(base: Settings, script: Script, mode: LlmMode, llm_url: str | None) -> Settings:
    update: dict[str, Any] = {}
    try:
        overrides = Settings.model_validate({**base.model_dump(), **script.spec.settings})
    except ValidationError as exc:
        raise ScriptError(f"{script.path}: settings: {_validation(exc)}") from None
    for name in script.spec.settings:
        if name not in Settings.model_fields:
            raise ScriptError(f"{script.path}: settings: {name!r} is not a broker setting")
        update[name] = getattr(overrides, name)
    if mode == "faq":
        update["llm_backend"] = "faq"
    elif mode == "scripted":
        update.update(
            llm_backend="openai",
            openai_base_url=f"{llm_url}/v1",
            openai_api_key=SecretStr("scripted-llm"),
            openai_model="scripted",
            llm_max_retries=0,
        )
    else:
        if not (base.openai_api_key or base.openai_base_url):
            raise ScriptError("llm: env needs OPENAI_API_KEY and/or OPENAI_BASE_URL (and OPENAI_MODEL)")
        update["llm_backend"] = "openai"
    return base.model_copy(update=update)


@contextlib.asynccontextmanager
async def _scripted_server(script: Script, mode: LlmMode) -> AsyncIterator[str | None]:
    if mode != "scripted":
        yield None
        return
    llm = ScriptedLLM(script.spec.rules, script.spec.default_reply)
    runner, url = await serve_app(llm.app)
    try:
        yield url
    finally:
        await runner.cleanup()


async def run_one(base: Settings, script: Script, out: TextIO, llm: LlmMode | None = None) -> bool:
    mode = llm or script.spec.llm
    title = script.spec.name or script.path.stem
    note = " — rules ignored, the real model answers" if mode == "env" and script.spec.rules else ""
    print(f"{script.path}: {title} (llm: {mode}{note})", file=out, flush=True)
    started = time.monotonic()
    results: list[tuple[Step, Outcome | None]] = []
    async with _scripted_server(script, mode) as llm_url:
        settings = _settings_for(base, script, mode, llm_url)
        responder = wrapped_responder(settings)
        try:
            async with simulation(settings, responder=responder) as sim:
                runner = Runner(sim, Faults(sim.standin, responder), script)
                failed = False
                for step in script.steps:
                    if failed:
                        results.append((step, None))
                        _print_step(out, step, None)
                        continue
                    try:
                        outcome = await runner.run_step(step)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
                    results.append((step, outcome))
                    _print_step(out, step, outcome)
                    failed = not outcome.ok
                if failed:
                    _print_transcripts(out, sim, runner)
        finally:
            await close_responder(responder)
    passed = sum(1 for _, o in results if o and o.ok)
    failed_n = sum(1 for _, o in results if o and not o.ok)
    skipped = sum(1 for _, o in results if o is None)
    verdict = "PASSED" if not failed_n else "FAILED"
    print(
        f"{verdict}: {passed} passed, {failed_n} failed, {skipped} skipped "
        f"({time.monotonic() - started:.1f} s)\n",
        file=out,
        flush=True,
    )
    return not failed_n


def _print_step(out: TextIO, step: Step, outcome: Outcome | None) -> None:
    mark = "·" if outcome is None else ("✓" if outcome.ok else "✗")
    label = _short(step.label, 60)
    detail = "skipped" if outcome is None else outcome.detail
    print(f"  {mark} {step.number:>2}  {label:<60}  {detail}".rstrip(), file=out, flush=True)
    for line in outcome.lines if outcome else []:
        print(f"          {line}", file=out, flush=True)


def _print_transcripts(out: TextIO, sim: Simulation, runner: Runner) -> None:
    users = sorted({d.user for d in sim.standin.delivered} | {runner.user.address})
    for user in users:
        texts = sim.standin.messages_for(user)
        print(f"  messages sent to {user} ({len(texts)}):", file=out)
        for number, text in enumerate(texts, start=1):
            print(f"    {number}. {_short(text, 100)}", file=out)
    if runner.faults.llm.planned or any(runner.faults.standin.faults.values()):
        print("  (some injected faults were never used)", file=out)


def script_paths(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        if not found:
            raise ScriptError(f"{path} holds no *.yaml scripts")
        return found
    if not path.exists():
        raise ScriptError(f"{path} does not exist")
    return [path]


async def run_script(
    settings: Settings, path: Path | str, *, llm: LlmMode | None = None, out: TextIO | None = None
) -> int:
    """0 when every script passed, 1 when an expectation failed, 2 when a script is invalid."""
    stream = out or sys.stdout
    try:
        scripts = [load_script(p) for p in script_paths(Path(path))]
    except ScriptError as exc:
        print(f"error: {exc}", file=stream, flush=True)
        return 2
    outcomes = []
    for script in scripts:
        try:
            outcomes.append(await run_one(settings, script, stream, llm))
        except ScriptError as exc:
            print(f"error: {exc}", file=stream, flush=True)
            return 2
    if len(scripts) > 1:
        print(f"{sum(outcomes)} of {len(scripts)} scripts passed", file=stream, flush=True)
    return 0 if all(outcomes) else 1
