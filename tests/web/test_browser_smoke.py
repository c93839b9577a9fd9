"""The browser fixture itself works: headless Chromium renders a page the broker serves."""

from __future__ import annotations

from playwright.async_api import Browser

from tests.harness import Broker


async def test_chromium_renders_a_broker_page(broker: Broker, browser: Browser) -> None:
    page = await browser.new_page()
    try:
        response = await page.goto(broker.url + "/healthz")
        assert response is not None and response.status == 200
        assert '"ok"' in await page.content()
    finally:
        await page.close()
