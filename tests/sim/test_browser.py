"""The simulator page in headless Chromium: chat, faults, customers, and a handoff answered from the
agent console. With UPDATE_SCREENSHOTS=1 the tests also refresh the README's screenshots."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from bot.settings import Settings
from bot.sim.web import running
from tests.sim.conftest import agent_console_present

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT: ViewportSize = {"width": 1440, "height": 860}


async def screenshot(page: Page, name: str) -> None:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def say(page: Page, text: str) -> None:
    await page.get_by_test_id("composer").fill(text)
    await page.get_by_test_id("send").click()


async def open_simulator(page: Page, base: str) -> None:
    await page.goto(base + "/simulator")
    await expect(page.get_by_test_id("connection")).to_have_text("live")
    await expect(page.get_by_test_id("who-name")).to_have_text("Jane")


async def test_chat_faults_and_customers_in_the_page(sim_settings: Settings, browser: Browser) -> None:
    async with running(sim_settings) as (ui, base):
        page = await browser.new_page(viewport=VIEWPORT)
        try:
            await open_simulator(page, base)
            received = page.get_by_test_id("received")

            await say(page, "hello")
            await expect(page.get_by_test_id("sent").last).to_contain_text("hello")
            await expect(received.first).to_contain_text("I'm the virtual assistant")
            await expect(page.get_by_test_id("status")).to_have_text("bot")
            assert (
                ui.sim.standin.messages_for("sim-u-1001")[0]
                == await received.first.locator(".text").inner_text()
            )

            # The fault panel: the model fails once; the customer gets an apology, the log says why.
            await page.get_by_test_id("fault-llm_fail").click()
            await say(page, "what are your opening hours?")
            await expect(received.nth(1)).to_contain_text("Sorry, I'm having trouble")
            log = page.get_by_test_id("event-log")
            await expect(log).to_contain_text("LLM call failed (injected)")

            # A duplicate webhook delivery is acknowledged and not answered twice.
            await page.get_by_test_id("fault-duplicate").click()
            await say(page, "what are your opening hours?")
            await expect(received.nth(2)).to_contain_text("Monday to Friday")
            await expect(log).to_contain_text("200 duplicate (no second reply will follow)")
            assert await ui.sim.wait_idle(10)
            await expect(received).to_have_count(3)

            # A new customer known only by phone, then back to the first one.
            await page.get_by_label("has a Braze user_id").uncheck()
            await page.get_by_test_id("new-customer").click()
            await expect(page.get_by_test_id("who-id")).to_contain_text("no Braze user_id")
            await expect(received).to_have_count(0)
            await say(page, "where is my order?")
            await expect(received.first).to_contain_text("tracking link")
            await expect(page.get_by_test_id("customer-item")).to_have_count(3)
            await page.get_by_test_id("customer-item").first.click()
            await expect(received).to_have_count(3)
        finally:
            await page.close()


async def test_a_handoff_answered_from_the_agent_console(sim_settings: Settings, browser: Browser) -> None:
    if not agent_console_present(sim_settings):
        pytest.skip("the agent console (/agent, issue 3) is not part of this build")
    async with running(sim_settings) as (_, base):
        context = await browser.new_context(viewport=VIEWPORT)
        try:
            page = await context.new_page()
            await open_simulator(page, base)
            received = page.get_by_test_id("received")
            await say(page, "hi")
            await expect(received.first).to_contain_text("virtual assistant")
            await say(page, "agent")
            await expect(received.nth(1)).to_contain_text("connecting you")
            await expect(page.get_by_test_id("status")).to_have_text("waiting for an agent")

            # The link opens the console in a second page, signed in, on this conversation.
            async with context.expect_page() as opened:
                await page.get_by_test_id("console-link").click()
            console = await opened.value
            await console.wait_for_load_state()
            await expect(console.locator("#conversation")).to_be_visible()
            await expect(console.locator("#transcript")).to_contain_text("agent")
            await console.locator("#reply").fill("Hi Jane, this is Alex from the support team.")
            await console.locator("#send").click()

            agent_says = received.filter(has_text="Alex from the support team")
            await expect(agent_says).to_have_count(1)
            await expect(agent_says).to_have_attribute("data-role", "agent")
            await expect(page.get_by_test_id("status")).to_have_text("with agent sim-agent")
            await expect(page.get_by_test_id("event-log")).to_contain_text("Webhook from Jane: 202 accepted")

            # The customer answers; the agent sees it live in the console.
            await say(page, "Thanks Alex! My parcel arrived broken.")
            await expect(console.locator("#transcript")).to_contain_text("My parcel arrived broken")
            await screenshot(page, "simulator")
            await screenshot(console, "agent-console")

            await console.locator("#release").click()
            await expect(page.get_by_test_id("status")).to_have_text("bot")
            await expect(received.last).to_contain_text("left the conversation")
        finally:
            await context.close()


async def test_simulate_web_as_a_new_user_would(browser: Browser, tmp_path: Path) -> None:
    """`python -m bot simulate --web` with no keys and no services, then chatting in the printed page."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "REDIS_URL")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "simulate",
        "--web",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        found = re.search(r"http://127\.0\.0\.1:\d+/simulator", line)
        assert found, line
        page = await browser.new_page(viewport=VIEWPORT)
        try:
            await page.goto(found.group(0))
            await expect(page.get_by_test_id("connection")).to_have_text("live")
            await expect(page.get_by_test_id("backend")).to_have_text("faq backend")
            await say(page, "How long does delivery take?")
            await expect(page.get_by_test_id("received").first).to_contain_text("working days")
        finally:
            await page.close()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
