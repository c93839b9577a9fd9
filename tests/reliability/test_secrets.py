"""Secrets and PII stay out of the logs: a whole conversation (webhooks, model, Braze, handoff,
Zendesk, agent API, Regal, admin API, failures) with every log record captured at DEBUG, access
logs included."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.app import create_app
from bot.sim.session import serve_app
from tests.fakes.braze import BrazeStandIn
from tests.fakes.llm import FakeLLM
from tests.fakes.regal import FakeRegal
from tests.fakes.zendesk import API_TOKEN, EMAIL, WEBHOOK_SECRET, FakeZendesk, signed_headers, trigger_body
from tests.harness import AGENT2_TOKEN, AGENT_TOKEN, BRAZE_KEY, SECRET, Broker, inbound, make_settings

ADMIN_TOKEN = "admin-secret-token-xyz"
OPENAI_KEY = "sk-test-openai-key-abcdef"
REGAL_SECRET = "regal-webhook-secret-qrs"
PHONE_USER = "+15557654321"
NAMED_PHONE = "+15551234567"
BODIES = [
    "zebra banana forty-two",
    "my private question about quokkas",
    "while waiting: walrus account 991",
    "agent says narwhal",
    "zendesk agent says pelican",
    "please do not log platypus",
]


@contextlib.asynccontextmanager
async def logged_broker(redis_url: str) -> AsyncIterator[tuple[Broker, FakeZendesk, FakeRegal]]:
    """The real app with every integration, served the way `python -m bot serve` serves it."""
    from bot.__main__ import runner_for

    braze, llm, zendesk, regal = BrazeStandIn(api_key=BRAZE_KEY), FakeLLM(), FakeZendesk(), FakeRegal()
    fakes = [await serve_app(x.app) for x in (braze, llm, zendesk, regal)]
    (_, braze_url), (_, llm_url), (_, zendesk_url), (_, regal_url) = fakes
    settings = make_settings(
        braze_url,
        llm_url + "/v1",
        redis_url,
        openai_api_key=SecretStr(OPENAI_KEY),
        admin_api_tokens={ADMIN_TOKEN: "ops"},
        zendesk_url=zendesk_url,
        zendesk_email=EMAIL,
        zendesk_api_token=SecretStr(API_TOKEN),
        zendesk_webhook_secret=SecretStr(WEBHOOK_SECRET),
        regal_api_key=SecretStr(regal.api_key),
        regal_events_url=regal_url + "/events",
        regal_webhook_secret=SecretStr(REGAL_SECRET),
        log_level="DEBUG",
    )
    app = create_app(settings, redis_url)
    runner = runner_for(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http = aiohttp.ClientSession()
    try:
        yield (
            Broker(f"http://127.0.0.1:{port}", settings, app, braze, llm, http, braze_url, llm_url),
            zendesk,
            regal,
        )
    finally:
        await http.close()
        await runner.cleanup()
        for fake_runner, _ in fakes:
            await fake_runner.cleanup()


async def agent(b: Broker, method: str, conv: str, action: str = "", body: object = None) -> int:
    path = f"/agent/conversations/{quote(conv, safe='')}" + (f"/{action}" if action else "")
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    async with b.http.request(
        method, b.url + path, headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, **kwargs
    ) as resp:
        await resp.read()
        return resp.status


async def test_a_full_conversation_logs_no_secret_no_body_and_no_phone(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from bot import logs

    logs.configure("DEBUG")  # what an operator gets with LOG_LEVEL=DEBUG ...
    logging.getLogger().addHandler(caplog.handler)  # ... captured here as well,
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG)  # with the access log switched on
    caplog.set_level(logging.DEBUG)
    async with logged_broker(redis_url) as (b, zendesk, regal):
        # a phone-only user: the conversation id is the phone number
        assert (await b.say(BODIES[0], user_id="", phone=PHONE_USER))[0] == 202
        await b.replies(PHONE_USER)
        assert (await b.say(BODIES[0], user_id="", phone=PHONE_USER))[0] == 200  # duplicate
        assert (await b.post(inbound(BODIES[5]), secret="wrong"))[0] == 401
        # failures on the way out and in the model
        b.braze.fail_next("/campaigns/trigger/send", 429, reset_in_s=0.5)
        b.llm.faults.append(500)
        await b.say(BODIES[1], user_id="u-secret", phone=NAMED_PHONE, profile_name="Jane Secret")
        await b.replies("u-secret")
        await b.say(BODIES[1] + "?", user_id="u-secret", phone=NAMED_PHONE)
        await b.replies("u-secret", 2)
        # handoff with a Zendesk ticket, a message while waiting, agent and Zendesk replies
        await b.say("agent", user_id="u-secret", phone=NAMED_PHONE)
        await b.replies("u-secret", 3)
        await b.wait_for(lambda: bool(zendesk.tickets), what="a Zendesk ticket")
        await b.say(BODIES[2], user_id="u-secret", phone=NAMED_PHONE)
        ticket = next(iter(zendesk.tickets.values()))
        raw = trigger_body(ticket.id, "u-secret", "open", BODIES[4], "agent")
        async with b.http.post(b.url + "/webhooks/zendesk", data=raw, headers=signed_headers(raw)) as resp:
            assert resp.status == 200, await resp.text()
        await b.replies("u-secret", 4)
        # an agent takes the phone-only conversation, answers and gives it back
        assert await agent(b, "POST", PHONE_USER, "claim") == 200
        assert await agent(b, "POST", PHONE_USER, "messages", {"text": BODIES[3]}) in (200, 202)
        await b.replies(PHONE_USER, 3)
        assert await agent(b, "GET", PHONE_USER) == 200
        assert await agent(b, "POST", PHONE_USER, "release") == 200
        # the agent console's event stream authenticates with a query token
        with contextlib.suppress(TimeoutError):
            async with b.http.get(
                f"{b.url}/agent/events?token={AGENT2_TOKEN}", timeout=aiohttp.ClientTimeout(total=0.3)
            ) as resp:
                await resp.content.read(1)
        # a call request goes to Regal; Regal reports back
        await b.say("call me", user_id="", phone=PHONE_USER)
        await b.wait_for(lambda: bool(regal.events), what="a Regal event")
        regal_body = {
            "userId": "u-secret",
            "traits": {"phone": NAMED_PHONE, "email": "jane@example.com"},
            "name": "call.completed",
            "properties": {"notes": BODIES[5]},
            "originalTimestamp": "1657855059",
        }
        assert (await b.post(regal_body, secret=REGAL_SECRET, path="/webhooks/regal"))[0] < 300
        async with b.http.get(
            b.url + "/admin/dead-letters", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as resp:
            assert resp.status == 200
        await b.settle(0.5)

    text = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records)
    logging.getLogger().removeHandler(caplog.handler)
    assert "event=turn" in text and "aiohttp.access" in text, "logs were captured"
    secrets = [
        SECRET,
        BRAZE_KEY,
        OPENAI_KEY,
        AGENT_TOKEN,
        AGENT2_TOKEN,
        ADMIN_TOKEN,
        API_TOKEN,
        WEBHOOK_SECRET,
        REGAL_SECRET,
        regal.api_key,
    ]
    private = [*BODIES, "Jane Secret", "jane@example.com"]
    phones = [form for p in (PHONE_USER, NAMED_PHONE) for form in (p.lstrip("+"), p[2:], quote(p, safe=""))]
    leaks = [
        (kind, value[:6] + "…", line[:160])
        for kind, values in (("secret", secrets), ("private text", private), ("phone", phones))
        for value in values
        for line in text.splitlines()
        if value in line
    ]
    assert leaks == [], "\n".join(map(str, leaks))
