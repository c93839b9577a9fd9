"""The agent console in headless Chromium: sign in, live queue, claim, reply, release."""

from __future__ import annotations

from playwright.async_api import Browser, ConsoleMessage, Page

from tests.handoff.helpers import detail, wait_status
from tests.harness import AGENT_TOKEN, Broker


async def _sign_in(page: Page, url: str, token: str = AGENT_TOKEN) -> None:
    await page.goto(url)
    await page.fill("#token", token)
    await page.click("#signin-button")


async def test_console_sign_in_live_queue_claim_reply_release(broker: Broker, browser: Browser) -> None:
    page = await browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    def console_error(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", console_error)
    try:
        await _sign_in(page, broker.url + "/agent", token="not-a-token")
        await page.wait_for_selector("#signin-error:has-text('not valid')")
        problems.clear()  # the refused sign-in logs its 401 in the console, as browsers do

        await _sign_in(page, broker.url + "/agent")
        await page.wait_for_selector("#who:has-text('alice')")
        await page.wait_for_selector("#live.live")  # the event stream is connected
        assert await page.locator("#conversations li").count() == 0

        # A customer asks for a person: the queue updates without reloading the page.
        await broker.say("agent", profile_name="Jane")
        item = page.locator('#conversations li[data-id="u-123"]')
        await item.wait_for(timeout=10_000)
        await page.wait_for_selector("#count-waiting:has-text('1')")
        await item.click()
        await page.wait_for_selector("#conv-status.waiting")
        await page.wait_for_selector("#transcript li.user:has-text('agent')")
        await page.wait_for_selector("#audit li:has-text('bot → waiting')")
        assert "conversation=u-123" in page.url

        await page.click("#claim")
        await page.wait_for_selector("#conv-status.with_agent")
        await page.fill("#reply", "Hello Jane, this is Alice.")
        await page.click("#send")
        await broker.wait_for(
            lambda: "Hello Jane, this is Alice." in broker.braze.messages_for("u-123"), what="the agent reply"
        )
        await page.wait_for_selector("#transcript li.agent:has-text('Hello Jane, this is Alice.')")

        # The customer answers: it shows up live in the open conversation.
        await broker.say("thank you!")
        await page.wait_for_selector("#transcript li.user:has-text('thank you!')")

        await page.click("#release")
        await page.wait_for_selector("#conv-status.bot")
        view = await wait_status(broker, "u-123", "bot")
        assert [a["to"] for a in view["audit"] if a["event"] == "status"] == ["waiting", "with_agent", "bot"]
        assert problems == []
    finally:
        await page.close()


async def test_console_opens_a_conversation_from_the_link(broker: Broker, browser: Browser) -> None:
    await broker.say("agent", user_id="", phone="+15550002222")
    await broker.replies("+15550002222", 1)
    assert (await detail(broker, "+15550002222"))["status"] == "waiting"
    page = await browser.new_page()
    try:
        await _sign_in(page, broker.url + "/agent?conversation=%2B15550002222")
        await page.wait_for_selector("#conv-title:has-text('+15550002222')")
        await page.wait_for_selector("#conv-status.waiting")
        # Customer text is shown as text, never as markup.
        await broker.say("<img src=x onerror=alert(1)>", user_id="", phone="+15550002222")
        await page.wait_for_selector("#transcript li.user:has-text('<img src=x onerror=alert(1)>')")
        assert await page.locator("#transcript img").count() == 0
    finally:
        await page.close()
