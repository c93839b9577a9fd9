"""The web simulator's API over the real pipeline: customers, live events, duplicates and faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bot.settings import Settings
from bot.sim.web import SimulatorWeb, running

JANE = "sim-u-1001"  # the first customer the simulator offers (has a Braze user_id)
SAM = "+15550001002"  # the second one, known only by phone


@dataclass
class WebSim:
    ui: SimulatorWeb
    base: str
    http: aiohttp.ClientSession

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.http.post(f"{self.base}/simulator/api/{path}", json=body) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.base}/simulator/api/{path}") as resp:
            return resp.status, await resp.json()

    def delivered(self, address: str) -> list[str]:
        return self.ui.sim.standin.messages_for(address)

    def logs(self) -> list[str]:
        return [e["text"] for e in self.ui.hub.events if e["kind"] == "log"]

    async def until(self, check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; log: {self.logs()}")
            await asyncio.sleep(0.02)


@pytest.fixture
async def web_sim(sim_settings: Settings) -> AsyncIterator[WebSim]:
    async with running(sim_settings) as (ui, base), aiohttp.ClientSession() as http:
        yield WebSim(ui, base, http)


async def test_the_page_and_its_assets_are_served(web_sim: WebSim) -> None:
    for path in ("/simulator", "/simulator/static/simulator.js", "/simulator/static/simulator.css"):
        async with web_sim.http.get(web_sim.base + path) as resp:
            assert resp.status == 200, path
            assert len(await resp.read()) > 500


async def test_config_names_the_customers_and_the_agent(web_sim: WebSim) -> None:
    status, config = await web_sim.get("config")
    assert status == 200
    assert config["backend"] == "faq"
    assert config["agent_id"] == "sim-agent" and config["agent_token"] == web_sim.ui.sim.agent_token
    ids = [c["id"] for c in config["customers"]]
    assert ids == [JANE, SAM]
    assert config["customers"][1]["console_url"] == "/agent?conversation=%2B15550001002"


async def test_a_message_is_answered_through_the_braze_stand_in(web_sim: WebSim) -> None:
    status, body = await web_sim.post("send", {"customer": JANE, "text": "where is my order?"})
    assert status == 200 and body["answers"][0]["http_status"] == 202
    await web_sim.until(lambda: len(web_sim.delivered(JANE)) == 1, "the reply")
    assert "tracking link" in web_sim.delivered(JANE)[0]
    await web_sim.until(lambda: web_sim.ui.status[JANE] == ("bot", ""), "the status")
    kinds = [(e["kind"], e.get("direction")) for e in web_sim.ui.hub.events if e.get("customer") == JANE]
    assert ("message", "in") in kinds and ("message", "out") in kinds and ("status", None) in kinds


async def test_a_new_customer_without_user_id_is_addressed_by_phone(web_sim: WebSim) -> None:
    status, customer = await web_sim.post("customers", {"name": "Ines", "with_user_id": False})
    assert status == 200
    assert customer["user_id"] == "" and customer["id"] == customer["phone"]
    await web_sim.post("send", {"customer": customer["id"], "text": "hello"})
    await web_sim.until(lambda: len(web_sim.delivered(customer["phone"])) == 1, "the reply by phone alias")
    sent = web_sim.ui.sim.standin.trigger_requests()[-1]["body"]["recipients"][0]
    assert sent["user_alias"] == {"alias_name": customer["phone"], "alias_label": "phone"}


async def test_a_duplicate_delivery_is_acknowledged_and_answered_once(web_sim: WebSim) -> None:
    status, body = await web_sim.post(
        "send", {"customer": SAM, "text": "how long is delivery?", "duplicate": True}
    )
    assert status == 200
    first, second = body["answers"]
    assert first["http_status"] == 202 and first["status"] == "accepted"
    assert second["http_status"] == 200 and second["status"] == "duplicate"
    await web_sim.until(lambda: len(web_sim.delivered(SAM)) == 1, "the reply")
    assert await web_sim.ui.sim.wait_idle(10)
    assert len(web_sim.delivered(SAM)) == 1
    assert any("200 duplicate (no second reply will follow)" in line for line in web_sim.logs())


async def test_braze_429_is_waited_out_and_narrated(web_sim: WebSim) -> None:
    status, body = await web_sim.post("faults", {"kind": "braze_429"})
    assert status == 200 and "429" in body["planned"]
    await web_sim.post("send", {"customer": JANE, "text": "hello"})
    await web_sim.until(lambda: len(web_sim.delivered(JANE)) == 1, "the reply after the 429")
    sends = [r["status"] for r in web_sim.ui.sim.standin.requests if r["path"] == "/campaigns/trigger/send"]
    assert sends == [429, 201]
    await web_sim.until(lambda: any("accepted the retry" in line for line in web_sim.logs()), "the log")
    logs = web_sim.logs()
    assert any("Braze answered 429" in line for line in logs)
    assert any("after the first 429 (attempt 2)" in line for line in logs)


async def test_braze_500_until_dead_lettered_is_kept_not_dropped(sim_settings: Settings) -> None:
    quick = sim_settings.model_copy(update={"braze_max_attempts": 3, "braze_retry_max_wait_s": 0.1})
    async with running(quick) as (ui, base), aiohttp.ClientSession() as http:
        web_sim = WebSim(ui, base, http)
        await web_sim.post("faults", {"kind": "braze_500", "times": 3})
        await web_sim.post("send", {"customer": JANE, "text": "hello"})
        await web_sim.until(
            lambda: any("dead-lettered" in line for line in web_sim.logs()), "the dead letter"
        )
        assert web_sim.delivered(JANE) == []
        sends = [r["status"] for r in ui.sim.standin.requests if r["path"] == "/campaigns/trigger/send"]
        assert sends == [500, 500, 500]
        assert await ui.sim.runtime.streams.dead_depth() == 1
        assert any("dead-lettered after 3 attempts" in line for line in web_sim.logs())


async def test_a_failing_llm_gets_the_customer_an_apology(web_sim: WebSim) -> None:
    await web_sim.post("faults", {"kind": "llm_fail"})
    await web_sim.post("send", {"customer": JANE, "text": "what are your opening hours?"})
    await web_sim.until(lambda: len(web_sim.delivered(JANE)) == 1, "the apology")
    assert web_sim.delivered(JANE)[0].startswith("Sorry, I'm having trouble")
    assert any("LLM call failed (injected)" in line for line in web_sim.logs())
    await web_sim.post("send", {"customer": JANE, "text": "what are your opening hours?"})
    await web_sim.until(lambda: len(web_sim.delivered(JANE)) == 2, "the answer")
    assert "Monday to Friday" in web_sim.delivered(JANE)[1]


async def test_a_hanging_llm_times_out_into_an_apology(web_sim: WebSim) -> None:
    await web_sim.post("faults", {"kind": "llm_timeout"})
    started = time.monotonic()
    await web_sim.post("send", {"customer": JANE, "text": "hello"})
    await web_sim.until(lambda: len(web_sim.delivered(JANE)) == 1, "the apology")
    assert time.monotonic() - started >= web_sim.ui.settings.llm_timeout_s
    assert web_sim.delivered(JANE)[0].startswith("Sorry")


async def test_a_handoff_shows_up_as_a_live_status(web_sim: WebSim) -> None:
    await web_sim.post("send", {"customer": SAM, "text": "agent"})
    await web_sim.until(lambda: web_sim.ui.status[SAM][0] == "waiting", "status waiting")
    assert "connecting you" in web_sim.delivered(SAM)[0]


async def test_the_event_stream_replays_and_then_follows(web_sim: WebSim) -> None:
    await web_sim.post("send", {"customer": JANE, "text": "hello"})
    await web_sim.until(lambda: len(web_sim.delivered(JANE)) == 1, "the reply")
    seen: list[dict[str, Any]] = []
    async with web_sim.http.get(web_sim.base + "/simulator/api/events") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        sent_second = False
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            seen.append(json.loads(line[6:]))
            replies = [e for e in seen if e["kind"] == "message" and e["direction"] == "out"]
            if len(replies) == 1 and not sent_second:
                sent_second = True
                await web_sim.post("send", {"customer": JANE, "text": "thanks"})
            if len(replies) == 2:
                break
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
    assert seen[0]["kind"] == "customer"
    assert "welcome" in replies[1]["text"] and replies[1]["role"] == "bot"
    # A reconnecting EventSource sends Last-Event-ID and gets only what it missed.
    last = seen[-1]["seq"]
    await web_sim.post("send", {"customer": JANE, "text": "bye"})
    async with web_sim.http.get(
        web_sim.base + "/simulator/api/events", headers={"Last-Event-ID": str(last)}
    ) as resp:
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                assert json.loads(line[6:])["seq"] == last + 1
                break


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("send", {"customer": "nobody", "text": "hi"}, 404),
        ("send", {"customer": JANE, "text": ""}, 422),
        ("faults", {"kind": "redis_down"}, 422),
        ("faults", {"kind": "braze_500", "times": 500}, 422),
        ("customers", {"phone": "not a phone"}, 422),
    ],
)
async def test_bad_requests_get_the_contract_error_body(
    web_sim: WebSim, path: str, body: dict[str, Any], status: int
) -> None:
    got, answer = await web_sim.post(path, body)
    assert got == status
    assert set(answer["error"]) >= {"code", "message"}
