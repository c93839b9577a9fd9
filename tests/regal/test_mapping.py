"""The Regal -> Braze mapping as a pure function: the cases the webhook tests do not walk through."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bot.regal_mapping import RegalWebhook, Unmappable, iso_time, to_track
from tests.regal.helpers import fixture

NOW = 1_700_000_000.0


def mapped(body: dict[str, Any], groups: dict[str, str] | None = None) -> list[dict[str, Any]]:
    entries = to_track(RegalWebhook.model_validate(body), subscription_groups=groups or {}, now=NOW)
    return [{"type": e.type, **e.obj} for e in entries]


def test_iso_times_are_utc_with_a_z() -> None:
    assert iso_time(1657855059) == "2022-07-15T03:17:39Z"
    assert iso_time(1657855059.25) == "2022-07-15T03:17:39.250Z"


def test_a_missing_timestamp_is_the_time_the_event_arrived() -> None:
    body = {"userId": "1", "name": "call.completed", "properties": {"a": 1}}
    assert mapped(body)[0]["time"] == iso_time(NOW)
    assert mapped({**body, "originalTimestamp": ""})[0]["time"] == iso_time(NOW)


def test_unsubscribe_uses_the_channels_group_else_the_catch_all() -> None:
    body = fixture("contact_unsubscribed")
    voice = mapped(body, {"voice": "g-voice", "sms": "g-sms"})
    assert voice[0]["subscription_groups"] == [
        {"subscription_group_id": "g-voice", "subscription_state": "unsubscribed"}
    ]
    sms = {**body, "properties": {**body["properties"], "channel": "sms"}}
    assert (
        mapped(sms, {"voice": "g-voice", "sms": "g-sms"})[0]["subscription_groups"][0][
            "subscription_group_id"
        ]
        == "g-sms"
    )
    assert mapped(body, {"*": "g-all"})[0]["subscription_groups"][0]["subscription_group_id"] == "g-all"


def test_unsubscribe_without_a_configured_group_is_kept_as_an_event() -> None:
    [obj] = mapped(fixture("contact_unsubscribed"))
    assert obj["type"] == "event"
    assert obj["name"] == "contact.unsubscribed"
    assert obj["properties"]["channel"] == "voice"


def test_identifier_precedence_is_user_id_then_email_then_phone_alias() -> None:
    traits = {"phone": "+1 762-555-5555", "email": "a@example.com"}
    assert mapped({"userId": "u-9", "traits": traits, "name": "x"})[0]["external_id"] == "u-9"
    assert mapped({"userId": "", "traits": traits, "name": "x"})[0]["email"] == "a@example.com"
    only_phone = mapped({"traits": {"phone": "17625555555", "email": ""}, "name": "x"})[0]
    assert only_phone["user_alias"] == {"alias_name": "+17625555555", "alias_label": "phone"}
    # A numeric userId is still an external id, as a string.
    assert mapped({"userId": 123, "name": "x"})[0]["external_id"] == "123"
    with pytest.raises(Unmappable):
        mapped({"traits": {"phone": "call me maybe", "email": "nope"}, "name": "x"})


def test_attribute_edits_cannot_readdress_the_update() -> None:
    body = {
        "userId": "u-1",
        "name": "contact.attribute.edited",
        "properties": {
            "changes": {
                "custom_properties": {
                    "plan": {"old_value": "basic", "new_value": "gold"},
                    "external_id": {"old_value": "u-1", "new_value": "u-2"},
                    "_update_existing_only": {"old_value": None, "new_value": True},
                }
            }
        },
    }
    assert mapped(body) == [
        {"type": "attributes", "external_id": "u-1", "_update_existing_only": False, "plan": "gold"}
    ]


def test_an_edit_of_no_custom_field_writes_nothing() -> None:
    assert mapped({"userId": "u-1", "name": "contact.attribute.edited", "properties": {}}) == []
    assert mapped({"userId": "u-1", "name": "contact.attribute.edited", "properties": {"changes": {}}}) == []


def test_event_properties_fit_brazes_limits() -> None:
    body = {
        "userId": "u-1",
        "name": "call.completed",
        "properties": {"notes": "n" * 400, "$bad": 1, "time": 2},
    }
    [obj] = mapped(body)
    assert obj["properties"] == {"notes": "n" * 255}


def test_a_body_that_is_not_a_regal_event_is_refused() -> None:
    with pytest.raises(ValidationError):
        RegalWebhook.model_validate({"userId": "u-1"})
