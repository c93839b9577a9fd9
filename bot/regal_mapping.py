"""Regal reporting webhooks -> Braze `/users/track` objects (CONTRACT.md's table, the Regal partner doc).

| Regal event                   | `/users/track`                                                        |
|-------------------------------|-----------------------------------------------------------------------|
| `call.completed`              | event `Call Completed`, `time` from `originalTimestamp`, all properties |
| `contact.attribute.edited`    | attributes: each `changes.custom_properties.<key>.new_value`,          |
|                               | `_update_existing_only: false`                                         |
| `contact.experiment.assigned` | event `Contact Experiment Assigned`, experiment and journey fields     |
| `contact.unsubscribed`        | `subscription_groups` unsubscribed, `_update_existing_only: true`      |
| any other                     | event named as the Regal event, properties copied                      |

The Braze user is `external_id` = `userId`, else `email` = `traits.email`, else the phone alias
(`alias_label` "phone", the alias Braze gives unknown WhatsApp numbers). Events carry
`_update_existing_only: false` as in the Regal partner doc's transformations.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.models import normalize_phone
from bot.track import TrackEntry

CALL_COMPLETED = "call.completed"
ATTRIBUTE_EDITED = "contact.attribute.edited"
EXPERIMENT_ASSIGNED = "contact.experiment.assigned"
UNSUBSCRIBED = "contact.unsubscribed"
EXPERIMENT_FIELDS = (
    "experiment_name",
    "experiment_id",
    "experiment_variant",
    "journey_uuid",
    "journey_friendly_id",
    "journey_name",
)
# Attribute names a Regal custom property must not overwrite (skipped): they address the user or
# steer Braze.
RESERVED_ATTRIBUTES = frozenset(
    {"external_id", "user_alias", "braze_id", "email", "phone"}
    | {"_update_existing_only", "subscription_groups"}
)
MAX_PROPERTY_STRING = 255  # Braze refuses longer event property strings
EARLIEST = 946_684_800  # 2000-01-01: older "timestamps" are not Regal event times


class RegalTraits(BaseModel):
    model_config = ConfigDict(extra="allow")

    phone: str | None = Field(None, max_length=64)
    email: str | None = Field(None, max_length=254)

    # An unusable phone or email only matters when it is the identifier left: then the body is
    # refused for naming no contact, rather than for a field that may not be needed.
    @field_validator("phone", mode="before")
    @classmethod
    def _phone(cls, value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            return None
        try:
            return normalize_phone(value)
        except ValueError:
            return None

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: object) -> object:
        if not isinstance(value, str) or "@" not in value:
            return None
        return value.strip()


class RegalWebhook(BaseModel):
    """A Regal reporting webhook body (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    user_id: str | None = Field(None, alias="userId", max_length=512)
    traits: RegalTraits = Field(default_factory=RegalTraits)
    name: str = Field(min_length=1, max_length=255)
    properties: dict[str, Any] = Field(default_factory=dict)
    original_timestamp: float | None = Field(None, alias="originalTimestamp")
    event_source: str | None = Field(None, alias="eventSource")

    @field_validator("user_id", mode="before")
    @classmethod
    def _user_id(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("properties", mode="before")
    @classmethod
    def _properties(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("original_timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: object) -> object:
        """Unix seconds, sent by Regal as a string ("1657855059"); "" counts as absent."""
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            try:
                return float(value)
            except ValueError:
                raise ValueError('must be unix seconds, like "1657855059"') from None
        return value

    @field_validator("original_timestamp")
    @classmethod
    def _plausible(cls, value: float | None) -> float | None:
        if value is not None and not EARLIEST <= value < 10_000_000_000:
            raise ValueError('must be unix seconds, like "1657855059"')
        return value

    def identifier(self) -> dict[str, Any]:
        """external_id = userId, else email = traits.email, else the phone alias."""
        if self.user_id:
            return {"external_id": self.user_id}
        if self.traits.email:
            return {"email": self.traits.email}
        if self.traits.phone:
            return {"user_alias": {"alias_name": self.traits.phone, "alias_label": "phone"}}
        raise ValueError("names no contact: userId, traits.email or traits.phone is required")


def iso_time(unix_s: float) -> str:
    """`2022-07-15T03:17:39Z`: the ISO 8601 form Braze expects for an event's `time`."""
    moment = datetime.fromtimestamp(unix_s, UTC)
    if moment.microsecond:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_properties(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value[:MAX_PROPERTY_STRING] if isinstance(value, str) else value
        for key, value in properties.items()
        if not key.startswith("$") and key not in ("time", "event_name")
    }


class Unmappable(ValueError):
    """The body is well-formed JSON but cannot become a Braze update (answered with 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def to_track(hook: RegalWebhook, *, subscription_groups: dict[str, str], now: float) -> list[TrackEntry]:
    """The `/users/track` objects for one Regal event (possibly none, e.g. an edit of no custom field)."""
    try:
        who = hook.identifier()
    except ValueError as exc:
        raise Unmappable("userId", str(exc)) from None
    at = iso_time(hook.original_timestamp if hook.original_timestamp is not None else now)
    props = hook.properties
    if hook.name == CALL_COMPLETED:
        return [_event(who, "Call Completed", at, _event_properties(props))]
    if hook.name == EXPERIMENT_ASSIGNED:
        chosen = {key: props[key] for key in EXPERIMENT_FIELDS if key in props}
        return [_event(who, "Contact Experiment Assigned", at, _event_properties(chosen))]
    if hook.name == ATTRIBUTE_EDITED:
        return _attributes_edited(who, props)
    if hook.name == UNSUBSCRIBED:
        channel = str(props.get("channel") or "").lower()
        group = subscription_groups.get(channel) or subscription_groups.get("*")
        if group:
            state = {"subscription_group_id": group, "subscription_state": "unsubscribed"}
            obj = {**who, "_update_existing_only": True, "subscription_groups": [state]}
            return [TrackEntry(type="attributes", obj=obj)]
        # No Braze group for this channel: keep the fact as an event rather than drop it.
    return [_event(who, hook.name, at, _event_properties(props))]


def _event(who: dict[str, Any], name: str, at: str, properties: dict[str, Any]) -> TrackEntry:
    obj = {**who, "_update_existing_only": False, "name": name, "time": at, "properties": properties}
    return TrackEntry(type="event", obj=obj)


def _attributes_edited(who: dict[str, Any], props: dict[str, Any]) -> list[TrackEntry]:
    changes = props.get("changes")
    if changes is None:
        return []
    if not isinstance(changes, dict):
        raise Unmappable("properties.changes", "must be an object")
    custom = changes.get("custom_properties")
    if custom is None:
        return []
    if not isinstance(custom, dict):
        raise Unmappable("properties.changes.custom_properties", "must be an object")
    attributes: dict[str, Any] = {}
    for key, change in custom.items():
        if not isinstance(change, dict) or "new_value" not in change:
            raise Unmappable(f"properties.changes.custom_properties.{key}", "must carry new_value")
        if key in RESERVED_ATTRIBUTES or key.startswith("$"):
            continue  # never let a Regal field re-address the update or steer Braze
        attributes[key] = change["new_value"]
    if not attributes:
        return []
    return [TrackEntry(type="attributes", obj={**who, "_update_existing_only": False, **attributes})]
