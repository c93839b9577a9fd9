"""Keyword routes from routes.yaml: answered before (and without) the language model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import load_settings
from prompts import load_prompts
from tests.harness import REPLY_CAMPAIGN, start_broker

ROUTES = """
routes:
  - name: spring-offer
    keyword: [offers, deals]
    action: campaign
    campaign_id: promo-campaign
    text: Here are this week's offers.
    properties: {offer_code: SPRING25, image_url: "https://example.com/spring.jpg"}
    event: WhatsApp Offer Asked
  - keyword: pricing
    action: reply
    text: Plans start at 9 EUR a month.
  - regex: '\\border\\s*#?\\s*\\d{6,}'
    action: faq
    question: Where is my order? How do I track my order or package?
  - keyword: billing
    action: handoff
    reason: billing question
"""

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "routes.yaml"


def rewrite(path: Path, text: str, later: float) -> None:
    """Edit the file with a clearly later modification time (file systems may tick coarsely)."""
    before = path.stat().st_mtime
    path.write_text(text)
    os.utime(path, (before + later, before + later))


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES)
    return path


async def test_a_route_sends_through_its_own_campaign_with_its_properties_without_the_llm(
    redis_url: str, routes_file: Path
) -> None:
    async with start_broker(redis_url, routes_file=str(routes_file)) as broker:
        await broker.say("Offers?")
        await broker.replies("u-123", 1)
        [sent] = [d for d in broker.braze.delivered if d.user == "u-123"]
        assert sent.campaign_id == "promo-campaign"
        assert sent.properties == {
            "external_system_msg_body": "Here are this week's offers.",
            "offer_code": "SPRING25",
            "image_url": "https://example.com/spring.jpg",
        }
        await broker.say("pricing")
        assert (await broker.replies("u-123", 2))[1] == "Plans start at 9 EUR a month."
        assert broker.braze.delivered[-1].campaign_id == REPLY_CAMPAIGN
        await broker.say("where is order #1234567")
        faq = load_prompts().faq[1]
        assert (await broker.replies("u-123", 3))[2] == faq.answer
        assert broker.llm.requests == []
        # Anything else still goes to the model.
        await broker.say("my offers were great")
        assert (await broker.replies("u-123", 4))[3] == "Echo: my offers were great"
        assert len(broker.llm.requests) == 1
        await broker.wait_for(
            lambda: any(
                o["name"] == "WhatsApp Offer Asked"
                for b in broker.braze.track_bodies
                for o in b.get("events") or []
            ),
            what="the route's Braze event",
        )


async def test_a_handoff_route_hands_over(redis_url: str, routes_file: Path) -> None:
    async with start_broker(redis_url, routes_file=str(routes_file)) as broker:
        await broker.say("Billing")
        assert await broker.replies("u-123", 1) == [load_prompts().text("handoff")]
        state = await broker.runtime.store.state("u-123")
        assert state is not None and state.status == "waiting"
        assert broker.llm.requests == []


async def test_routes_are_read_again_when_the_file_changes(redis_url: str, routes_file: Path) -> None:
    async with start_broker(redis_url, routes_file=str(routes_file)) as broker:
        await broker.say("pricing", message_id="m1")
        assert await broker.replies("u-123", 1) == ["Plans start at 9 EUR a month."]
        rewrite(routes_file, ROUTES.replace("Plans start at 9 EUR", "Plans start at 7 EUR"), later=5)
        await broker.say("pricing", message_id="m2")
        assert (await broker.replies("u-123", 2))[1] == "Plans start at 7 EUR a month."
        # A broken edit keeps the routes in force.
        rewrite(routes_file, "routes:\n  - keyword: pricing\n    action: reply\n", later=10)
        await broker.say("pricing", message_id="m3")
        assert (await broker.replies("u-123", 3))[2] == "Plans start at 7 EUR a month."


def test_an_invalid_routes_file_stops_the_start_with_a_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text("routes:\n  - keyword: offers\n    action: campaign\n    text: hi\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(None, routes_file=str(bad))
    assert caught.value.lines == [
        f"ROUTES_FILE is malformed: {bad}: routes.0: action `campaign` needs `campaign_id`"
    ]
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(None, routes_file=str(tmp_path / "missing.yaml"))
    bad.write_text("routes:\n  - regex: '('\n    action: faq\n")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        load_settings(None, routes_file=str(bad))
    bad.write_text("routes:\n  - keyword: x\n    action: faq\n    question: Is this in the FAQ?\n")
    with pytest.raises(ConfigError, match="no such question"):
        load_settings(None, routes_file=str(bad))


def test_the_documented_example_file_is_valid() -> None:
    settings = load_settings(None, routes_file=str(EXAMPLE))
    from handlers.routes import routes_for

    table = routes_for(settings)
    assert [r.action for r in table.routes] == ["reply", "campaign", "faq", "handoff", "call"]
    assert table.match(["Order #1234567 please"]) is table.routes[2]


async def test_a_call_route_requests_a_call(redis_url: str, tmp_path: Path) -> None:
    from tests.regal.helpers import regal_broker

    path = tmp_path / "routes.yaml"
    path.write_text(
        "routes:\n  - keyword: [callback, phone me]\n    action: call\n    reason: wants a callback\n"
    )
    async with regal_broker(redis_url, routes_file=str(path)) as (broker, regal):
        await broker.say("Phone me!")
        assert await broker.replies("u-123", 1) == [load_prompts().text("call_requested")]
        await broker.wait_for(lambda: regal.events != [], what="the Regal event")
        assert regal.events[0]["properties"]["reason"] == "wants a callback"
        assert regal.events[0]["properties"]["trigger"] == "route"
        assert broker.llm.requests == []
