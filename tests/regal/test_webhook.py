"""Regal reporting webhooks -> Braze `/users/track`, exactly as the contract's table."""

from __future__ import annotations

import time
from typing import Any

from tests.regal.helpers import fixture, post_regal, queued_track, regal_broker, tracked

VOICE_GROUP = "sg-voice-0001"


async def _one_body(broker: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Post one Regal event and return the single `/users/track` body it produced at Braze."""
    before = len(broker.braze.track_bodies)
    status, answer = await post_regal(broker, body)
    assert status == 202, answer
    assert answer == {"status": "accepted", "objects": 1}
    await broker.wait_for(lambda: len(broker.braze.track_bodies) > before, what="a /users/track request")
    await broker.settle(0.1)
    assert len(broker.braze.track_bodies) == before + 1
    result = broker.braze.track_bodies[-1]
    assert isinstance(result, dict)
    return result


async def test_the_four_regal_fixtures_become_the_contracts_users_track_bodies(redis_url: str) -> None:
    async with regal_broker(redis_url, regal_subscription_groups=f"voice:{VOICE_GROUP}") as (broker, _):
        call = fixture("call_completed")
        assert await _one_body(broker, call) == {
            "events": [
                {
                    "external_id": "123",
                    "_update_existing_only": False,
                    "name": "Call Completed",
                    "time": "2022-07-15T03:17:39Z",
                    "properties": call["properties"],
                }
            ]
        }
        assert await _one_body(broker, fixture("contact_attribute_edited")) == {
            "attributes": [{"external_id": "123", "_update_existing_only": False, "annual_income": "300,000"}]
        }
        assert await _one_body(broker, fixture("contact_experiment_assigned")) == {
            "events": [
                {
                    "external_id": "123",
                    "_update_existing_only": False,
                    "name": "Contact Experiment Assigned",
                    "time": "2022-07-15T03:18:38Z",
                    "properties": {
                        "experiment_name": "Post Call Offer Test",
                        "experiment_id": "xxxx-xxxx-xxxx-xxxx",
                        "experiment_variant": "Aggressive Offer - 50%",
                        "journey_uuid": "xxxx-xxxx-xxxx-xxxx",
                        "journey_friendly_id": 220,
                        "journey_name": "Post Call Follow Up",
                    },
                }
            ]
        }
        assert await _one_body(broker, fixture("contact_unsubscribed")) == {
            "attributes": [
                {
                    "external_id": "123",
                    "_update_existing_only": True,
                    "subscription_groups": [
                        {"subscription_group_id": VOICE_GROUP, "subscription_state": "unsubscribed"}
                    ],
                }
            ]
        }
        # Every request went to Braze with the REST key (the stand-in refuses others).
        assert {r["auth"] for r in broker.braze.requests} == {"Bearer test-braze-key"}
        assert await queued_track(broker) == 0


async def test_unknown_events_are_forwarded_and_the_user_is_named_by_email_else_phone_alias(
    redis_url: str,
) -> None:
    async with regal_broker(redis_url) as (broker, _):
        by_email = {
            "traits": {"phone": "+1 (762) 555-5555", "email": "jo@example.com"},
            "name": "sms.sent",
            "properties": {"text_id": "t-1", "nested": {"a": [1, 2]}, "note": None},
            "originalTimestamp": "1657855230",
            "eventSource": "Regal Voice",
        }
        assert await _one_body(broker, by_email) == {
            "events": [
                {
                    "email": "jo@example.com",
                    "_update_existing_only": False,
                    "name": "sms.sent",
                    "time": "2022-07-15T03:20:30Z",
                    "properties": {"text_id": "t-1", "nested": {"a": [1, 2]}, "note": None},
                }
            ]
        }
        by_phone = {
            "traits": {"phone": "+17625555555"},
            "name": "call.placed",
            "originalTimestamp": 1657855230,
        }
        assert await _one_body(broker, by_phone) == {
            "events": [
                {
                    "user_alias": {"alias_name": "+17625555555", "alias_label": "phone"},
                    "_update_existing_only": False,
                    "name": "call.placed",
                    "time": "2022-07-15T03:20:30Z",
                    "properties": {},
                }
            ]
        }


async def test_malformed_bodies_get_422_and_nothing_is_queued(redis_url: str) -> None:
    bad: list[tuple[Any, str]] = [
        ({"name": "call.completed", "traits": {}, "originalTimestamp": "1657855059"}, "userId"),
        ({"userId": "1", "traits": {"phone": "not a phone"}}, "name"),
        ({"userId": "1", "name": "  "}, "name"),
        ({"userId": "1", "name": "call.completed", "originalTimestamp": "yesterday"}, "originalTimestamp"),
        (
            {"userId": "1", "name": "call.completed", "originalTimestamp": "1657855059000"},
            "originalTimestamp",
        ),
        ({"userId": "1", "name": "call.completed", "properties": ["a"]}, "properties"),
        ({"userId": "1", "name": "x", "traits": "phone"}, "traits"),
        (
            {
                "userId": "1",
                "name": "contact.attribute.edited",
                "properties": {"changes": {"custom_properties": {"annual_income": "300,000"}}},
            },
            "properties.changes.custom_properties.annual_income",
        ),
        ([fixture("call_completed")], "body"),
    ]
    async with regal_broker(redis_url) as (broker, _):
        for body, field in bad:
            status, answer = await post_regal(broker, body)
            assert status == 422, (body, answer)
            assert answer["error"]["code"] == "invalid_fields"
            assert field in answer["error"]["fields"], (field, answer)
        status, answer = await post_regal(broker, b"{not json")
        assert (status, answer["error"]["code"]) == (400, "invalid_json")
        await broker.settle(0.2)
        assert await queued_track(broker) == 0
        assert broker.braze.track_bodies == []


async def test_a_wrong_or_missing_secret_is_refused_and_changes_nothing(redis_url: str) -> None:
    async with regal_broker(redis_url) as (broker, _):
        for secret in ("wrong", None, ""):
            status, answer = await post_regal(broker, fixture("call_completed"), secret=secret)
            assert status == 401, answer
            assert answer["error"]["code"] == "unauthorized"
        # A raw key (what Regal's "API key" field would send without "Bearer") is not accepted either.
        status, _ = await broker.post(
            fixture("call_completed"),
            secret=None,
            path="/webhooks/regal",
            headers={"Authorization": "regal-webhook-secret"},
        )
        assert status == 401
        await broker.settle(0.2)
        assert await queued_track(broker) == 0
    async with regal_broker(redis_url, regal_webhook_secret=None) as (broker, _):
        # Without a secret configured, every call is refused rather than trusted.
        status, _ = await post_regal(broker, fixture("call_completed"), secret="")
        assert status == 401


async def test_the_webhook_answers_at_once_even_while_braze_is_slow(redis_url: str) -> None:
    async with regal_broker(redis_url) as (broker, _):
        broker.braze.delay_s = 2.0
        started = time.monotonic()
        status, _ = await post_regal(broker, fixture("call_completed"))
        assert status == 202
        assert time.monotonic() - started < 1.0
        await broker.wait_for(lambda: tracked(broker.braze, "events") != [], timeout=10, what="the event")
        assert tracked(broker.braze, "events")[0]["name"] == "Call Completed"
