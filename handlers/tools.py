"""The tools offered to the model, their argument models, and validation."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


class ReasonArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500)


class ProfileArgs(BaseModel):
    """Fields the model may write to the user's Braze profile; each validated on its own."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    first_name: str | None = Field(None, min_length=1, max_length=100)
    last_name: str | None = Field(None, min_length=1, max_length=100)
    email: str | None = Field(None, max_length=254)
    dob: str | None = None
    home_city: str | None = Field(None, min_length=1, max_length=100)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.fullmatch(value):
            raise ValueError("not a valid email address")
        return value.lower() if value else value

    @field_validator("dob")
    @classmethod
    def _dob(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            born = date.fromisoformat(value)
        except ValueError:
            raise ValueError("dob must be a date as YYYY-MM-DD") from None
        if len(value) != 10 or born >= date.today() or born.year < 1900:
            raise ValueError("dob must be a real date in the past, as YYYY-MM-DD")
        return value


TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "handoff_to_agent",
            "description": "Hand the conversation to a human agent. Use when the customer asks for a person "
            "or needs something you cannot do.",
            "parameters": {
                "type": "object",
                "properties": {"reason": {"type": "string", "description": "Why a human is needed"}},
                "required": ["reason"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "request_phone_call",
            "description": "Arrange for the team to call the customer on their WhatsApp number.",
            "parameters": {
                "type": "object",
                "properties": {"reason": {"type": "string", "description": "What the call is about"}},
                "required": ["reason"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "update_profile",
            "description": "Save details the customer told you about themselves. Only pass what they said.",
            "parameters": {
                "type": "object",
                "properties": {
                    "first_name": {"type": "string"},
                    "last_name": {"type": "string"},
                    "email": {"type": "string"},
                    "dob": {"type": "string", "description": "Date of birth, YYYY-MM-DD"},
                    "home_city": {"type": "string"},
                },
            },
        },
    },
]


def parse_arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def reason_of(raw: str) -> str:
    try:
        return ReasonArgs.model_validate(parse_arguments(raw)).reason
    except ValidationError:
        return ""


def validate_profile(raw: str) -> tuple[dict[str, str], dict[str, str]]:
    """(accepted fields, refused fields with the reason): each field is judged on its own."""
    args = parse_arguments(raw)
    accepted: dict[str, str] = {}
    refused: dict[str, str] = {}
    for name, value in args.items():
        if name not in ProfileArgs.model_fields:
            refused[name] = "not a field that can be saved"
            continue
        if value is None or value == "":
            continue
        try:
            one = ProfileArgs.model_validate({name: value})
        except ValidationError as exc:
            refused[name] = exc.errors()[0]["msg"].removeprefix("Value error, ")
            continue
        accepted[name] = str(getattr(one, name))
    return accepted, refused
