"""Keyword routes: an operator's `routes.yaml` maps keywords or patterns to actions, before the LLM.

This is the Braze pattern "different keywords trigger different campaigns", owned by the broker
(one catch-all inbound webhook campaign, so a keyword never produces two answers). Each route has
one trigger and one action:

- trigger: `keyword` (one or a list; a whole message, with the same rules as the other keywords:
  case, surrounding space and trailing punctuation ignored) or `regex` (searched in the message,
  case-insensitive);
- action: `reply` (a fixed `text` through the reply campaign), `campaign` (the `text` through
  another API-triggered campaign, `campaign_id`, with extra trigger `properties`), `handoff`,
  `call` (a phone call request, as `CALL_KEYWORDS`), or `faq` (the answer of one FAQ entry, named
  by its `question`, or of the entry that best matches the message) — none of them calls the LLM.

Routes are tried in file order; the first whose trigger matches any message of the burst wins.
The file is read again when it changes, so routes can be edited without a restart; an edit that
does not validate is logged and the previous routes stay in force. See examples/routes.yaml.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.faq import FaqMatcher
from bot.logs import event
from bot.settings import Settings
from handlers.call import request_call
from handlers.context import TurnContext
from handlers.handoff import request_handoff
from handlers.keywords import matches
from prompts import Prompts, load_prompts

log = logging.getLogger("handlers.routes")

DEFAULT_FILE = "routes.yaml"
MAX_TEXT = 4096 * 4


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field("", max_length=100)
    keyword: list[str] = Field(default_factory=list)
    regex: str | None = Field(None, min_length=1, max_length=1000)
    action: Literal["reply", "campaign", "handoff", "call", "faq"]
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    campaign_id: str | None = Field(None, min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = Field(None, max_length=500)
    question: str | None = Field(None, min_length=1)
    # An optional Braze custom event recorded when the route fires (properties: the route's name).
    event: str | None = Field(None, min_length=1, max_length=255)

    @field_validator("keyword", mode="before")
    @classmethod
    def _keywords(cls, value: object) -> object:
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> Route:
        if bool(self.keyword) == bool(self.regex):
            raise ValueError("give exactly one of `keyword` or `regex`")
        if any(not k.strip() for k in self.keyword):
            raise ValueError("a keyword must not be empty")
        if self.action in ("reply", "campaign") and not self.text:
            raise ValueError(f"action `{self.action}` needs `text`")
        if self.action == "campaign" and not self.campaign_id:
            raise ValueError("action `campaign` needs `campaign_id`")
        if self.action != "campaign" and (self.campaign_id or self.properties):
            raise ValueError("`campaign_id` and `properties` belong to action `campaign`")
        return self

    @property
    def label(self) -> str:
        return self.name or (self.keyword[0] if self.keyword else f"/{self.regex}/")


class RouteFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routes: list[Route] = Field(default_factory=list)


@dataclass
class RouteTable:
    routes: list[Route] = field(default_factory=list)
    _patterns: dict[int, re.Pattern[str]] = field(default_factory=dict)
    _faq: FaqMatcher | None = None

    def __post_init__(self) -> None:
        for index, route in enumerate(self.routes):
            if route.regex:
                self._patterns[index] = re.compile(route.regex, re.IGNORECASE)

    def match(self, texts: list[str]) -> Route | None:
        for index, route in enumerate(self.routes):
            pattern = self._patterns.get(index)
            for text in texts:
                if not text:
                    continue
                if (pattern and pattern.search(text)) or (route.keyword and matches(text, route.keyword)):
                    return route
        return None

    def faq_answer(self, prompts: Prompts, route: Route, said: str) -> str:
        if route.question:
            wanted = route.question.casefold()
            for item in prompts.faq:
                if item.question.casefold() == wanted:
                    return item.answer
        if self._faq is None:
            self._faq = FaqMatcher(prompts.faq)
        entry, _ = self._faq.best(said)
        return entry.answer if entry else prompts.text("faq_fallback")


class RoutesError(ValueError):
    pass


def parse_routes(text: str, source: str = DEFAULT_FILE) -> RouteTable:
    """A route table from YAML text; RoutesError names what is wrong."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RoutesError(f"{source} is not valid YAML: {exc}") from None
    if raw is None:
        return RouteTable()
    try:
        parsed = RouteFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "file"
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise RoutesError(f"{source}: " + "; ".join(problems)) from None
    return RouteTable(parsed.routes)


def route_path(routes_file: str | None) -> Path | None:
    """ROUTES_FILE: unset = `routes.yaml` in the working directory when present; "" = no routes."""
    if routes_file is None:
        default = Path(DEFAULT_FILE)
        return default if default.is_file() else None
    if not routes_file.strip():
        return None
    return Path(routes_file)


def load_routes(path: Path) -> RouteTable:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutesError(f"{path} cannot be read: {exc.strerror or exc}") from None
    table = parse_routes(text, str(path))
    questions = {entry.question.casefold() for entry in load_prompts().faq}
    for index, route in enumerate(table.routes):
        if route.question and route.question.casefold() not in questions:
            raise RoutesError(f"{path}: routes.{index}.question: no such question in prompts/faq.yaml")
    return table


class _Cache:
    """The table of one file, read again when its modification time changes."""

    def __init__(self) -> None:
        self._tables: dict[Path, tuple[int, RouteTable]] = {}

    def table(self, path: Path) -> RouteTable:
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            stamp = -1
        known = self._tables.get(path)
        if known and known[0] == stamp:
            return known[1]
        try:
            table = load_routes(path)
        except RoutesError as exc:
            event(log, "routes_invalid", logging.ERROR, file=str(path), detail=str(exc)[:300])
            table = known[1] if known else RouteTable()
        else:
            if known:
                event(log, "routes_reloaded", file=str(path), routes=len(table.routes))
        self._tables[path] = (stamp, table)
        return table


_CACHE = _Cache()


def routes_for(settings: Settings) -> RouteTable:
    path = route_path(settings.routes_file)
    return _CACHE.table(path) if path else RouteTable()


def apply_routes(ctx: TurnContext) -> bool:
    """Run the first route matching this burst; True when one did (the LLM is not asked)."""
    table = routes_for(ctx.settings)
    if not table.routes:
        return False
    route = table.match([e.text for e in reversed(ctx.entries)])
    if route is None:
        return False
    reason = route.reason or f"route {route.label}"
    if route.action == "reply":
        assert route.text
        ctx.say(route.text, "bot")
    elif route.action == "campaign":
        assert route.text and route.campaign_id
        ctx.say(route.text, "bot", campaign_id=route.campaign_id, props=dict(route.properties))
    elif route.action == "handoff":
        request_handoff(ctx, reason=reason, trigger="route")
    elif route.action == "call":
        request_call(ctx, reason=reason, trigger="route")
    else:
        ctx.say(table.faq_answer(ctx.texts, route, ctx.burst_text()), "bot")
    if route.event:
        ctx.track_event(route.event, {"route": route.label})
    ctx.mutation.audit.append({"at": ctx.now, "event": "route", "route": route.label, "action": route.action})
    return True
