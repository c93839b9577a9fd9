"""Pydantic models at the boundaries: the inbound webhook, queue entries, stored state."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Status = Literal["bot", "waiting", "with_agent"]
STATUSES: tuple[Status, ...] = ("bot", "waiting", "with_agent")
Role = Literal["user", "bot", "agent", "system"]

_E164 = re.compile(r"\+[1-9]\d{6,14}")
_PHONE_NOISE = re.compile(r"[\s\-().]")


def normalize_phone(raw: str) -> str:
    """E.164 or a ValueError; Braze renders `{{${phone_number}}}` with or without the plus."""
    phone = _PHONE_NOISE.sub("", raw)
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    if not phone.startswith("+"):
        phone = "+" + phone
    if not _E164.fullmatch(phone):
        raise ValueError("must be a phone number in E.164 form, like +15551234567")
    return phone


class InboundWebhook(BaseModel):
    """The body the Braze webhook campaign renders; Liquid renders missing values as ""."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    user_id: str = Field("", max_length=512)
    phone_number: str = Field("", max_length=64)
    message: str = Field("", max_length=16_384)
    message_id: str = Field("", max_length=256)
    profile_name: str = Field("", max_length=256)
    media_urls: str = Field("", max_length=8_192)
    sent_at: str = Field("", max_length=64)

    @field_validator("*", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return "" if value is None else value

    @field_validator("phone_number")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value) if value else ""

    @model_validator(mode="after")
    def _required(self) -> InboundWebhook:
        if not self.user_id and not self.phone_number:
            raise ValueError("one of user_id or phone_number is required")
        if not self.message and not self.media_urls:
            raise ValueError("one of message or media_urls is required")
        return self

    @property
    def conv_id(self) -> str:
        return self.user_id or self.phone_number


class InboxEntry(BaseModel):
    """One accepted inbound message, as queued in the conversation's inbox."""

    id: str
    text: str
    at: float
    user_id: str = ""
    phone: str = ""
    message_id: str = ""
    profile_name: str = ""
    media_urls: str = ""


class HistoryItem(BaseModel):
    role: Role
    text: str
    at: float
    # Markers such as "human_start" / "human_end" that shape the model's view of the history.
    marker: str = ""
    agent: str = ""


class OutRow(BaseModel):
    """One message to one user, waiting in the outbox for the Braze sender."""

    id: str
    conv: str
    user_id: str = ""
    phone: str = ""
    campaign_id: str
    text: str
    kind: Literal["bot", "agent", "system"] = "bot"
    # The conversation's ownership epoch when the text was written: a bot row from an older epoch
    # than the conversation's current one was overtaken by a human and is never sent.
    epoch: int = 0
    props: dict[str, Any] = Field(default_factory=dict)
    created_at: float = 0.0
    attempts: int = 0


class ConvState(BaseModel):
    """The `conv:` hash of one conversation."""

    id: str
    status: Status = "bot"
    epoch: int = 0
    user_id: str = ""
    phone: str = ""
    profile_name: str = ""
    agent: str = ""
    waiting_since: float = 0.0
    last_in: float = 0.0
    last_msg_at: float = 0.0
    opted_out: bool = False
    ticket_id: str = ""
    llm_failures: int = 0
    turn_crashes: int = 0
    created_at: float = 0.0
    # The message rate limit's window (bot/limits.py): since when, messages in it, notice sent.
    rate_since: float = 0.0
    rate_count: int = 0
    rate_noticed: bool = False

    @classmethod
    def from_hash(cls, conv_id: str, raw: dict[str, str]) -> ConvState:
        data: dict[str, Any] = {k: v for k, v in raw.items() if k in cls.model_fields}
        if "opted_out" in data:
            data["opted_out"] = data["opted_out"] == "1"
        data["id"] = conv_id
        return cls.model_validate(data)

    def window_open(self, now: float) -> bool:
        return self.last_in > 0 and now - self.last_in < 24 * 3600
