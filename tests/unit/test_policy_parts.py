"""Small pure pieces: keywords, FAQ matching, splitting, prompts, tool validation, masking, settings."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pytest

from bot.errors import ConfigError
from bot.faq import FaqMatcher
from bot.logs import event, mask_id, mask_phone
from bot.models import InboundWebhook, normalize_phone
from bot.outbox import split_text
from bot.settings import load_settings
from handlers.keywords import matches
from handlers.tools import TOOLS, validate_profile
from prompts import load_prompts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("agent", True),
        ("Agent!", True),
        ("  AGENT?! ", True),
        ("my travel agent", False),
        ("agents", False),
        ("", False),
        ("human.", True),
    ],
)
def test_keywords_match_whole_messages(text: str, expected: bool) -> None:
    assert matches(text, ("agent", "human")) is expected


def test_multi_word_keywords() -> None:
    assert matches("Call me!", ("call me",))
    assert matches("call   me", ("call me",))
    assert not matches("please call me", ("call me",))


@pytest.mark.parametrize(
    ("question", "answer_contains"),
    [
        ("where is my oder??", "tracking"),
        ("How long does shipping take", "working days"),
        ("I want my money back", "return"),
        ("can i pay with paypal", "PayPal"),
        ("hello", "virtual assistant"),
        ("when are you open", "Monday"),
    ],
)
def test_faq_finds_the_best_answer(question: str, answer_contains: str) -> None:
    entry, score = FaqMatcher(load_prompts().faq).best(question)
    assert entry is not None, f"no match for {question!r} (score {score:.2f})"
    assert answer_contains in entry.answer


def test_faq_declines_what_it_does_not_know() -> None:
    entry, _ = FaqMatcher(load_prompts().faq).best("what is the airspeed of an unladen swallow")
    assert entry is None


def test_split_text_keeps_everything_in_order_within_the_limit() -> None:
    text = "\n\n".join(f"para {i} " + "x" * 1500 for i in range(8))
    parts = split_text(text, 4096)
    assert all(len(p) <= 4096 for p in parts)
    assert "".join(parts).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")
    assert split_text("y" * 5000, 4096) == ["y" * 4096, "y" * 904]
    assert split_text("short") == ["short"]


def test_every_prompt_renders() -> None:
    prompts = load_prompts()
    values = {"agent": "Ann", "back": "Monday at 09:00"}
    for name in prompts.texts:
        rendered = prompts.text(name, **values)
        assert rendered and "$" not in rendered
    system = prompts.system_prompt(company="Acme")
    assert "Acme" in system and "$" not in system
    assert len(prompts.faq) >= 5


def test_profile_fields_are_validated_one_by_one() -> None:
    past = (date.today() - timedelta(days=365 * 30)).isoformat()
    future = (date.today() + timedelta(days=3)).isoformat()
    accepted, refused = validate_profile(
        f'{{"first_name": " Jane ", "email": "jane@@example", "dob": "{past}", "home_city": "Berlin"}}'
    )
    assert accepted == {"first_name": "Jane", "dob": past, "home_city": "Berlin"}
    assert set(refused) == {"email"}
    _, refused = validate_profile(f'{{"dob": "{future}", "external_id": "someone-else"}}')
    assert set(refused) == {"dob", "external_id"}
    assert validate_profile("not json") == ({}, {})


def test_tools_take_no_conversation_or_user_identifier() -> None:
    for tool in TOOLS:
        properties = tool["function"]["parameters"]["properties"]
        assert not {"user_id", "external_id", "conversation", "conversation_id", "phone"} & set(properties)


def test_phone_numbers_are_masked_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert mask_phone("+15551234567") == "+1555***4567"
    assert mask_id("+15551234567") == "+1555***4567"
    assert mask_id("u-123") == "u-123"
    logger = logging.getLogger("test.mask")
    with caplog.at_level(logging.INFO):
        event(logger, "x", conv="+15551234567")
    assert "+15551234567" not in caplog.text and "4567" in caplog.text


def test_phone_normalization() -> None:
    assert normalize_phone("+1 (555) 123-4567") == "+15551234567"
    assert normalize_phone("15551234567") == "+15551234567"
    assert normalize_phone("0044 7700 900123") == "+447700900123"
    with pytest.raises(ValueError):
        normalize_phone("12ab")


def test_liquid_empty_strings_count_as_absent() -> None:
    body = InboundWebhook.model_validate(
        {"user_id": "", "phone_number": "+447700900123", "message": "hi", "message_id": "", "unknown": 1}
    )
    assert body.conv_id == "+447700900123"
    with pytest.raises(ValueError):
        InboundWebhook.model_validate({"user_id": "", "phone_number": "", "message": "hi"})


def test_settings_parse_lists_and_tokens() -> None:
    settings = load_settings(None, handoff_keywords="agent, human ,", agent_api_tokens="alice:t1,bob:t2")
    assert settings.handoff_keywords == ("agent", "human")
    assert settings.agent_api_tokens == {"t1": "alice", "t2": "bob"}
    assert settings.backend == "faq"
    assert load_settings(None, openai_base_url="http://127.0.0.1:1/v1").backend == "openai"
    with pytest.raises(ConfigError) as caught:
        load_settings(None, redis_url="http://nope", braze_rest_endpoint="nope")
    assert len(caught.value.lines) == 2
