"""Logging: one line per event, `key=value` pairs, no secrets, no message bodies, masked phones."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

_PHONE = re.compile(r"\+?\d[\d\s\-]{6,}\d")


def mask_phone(value: str) -> str:
    """`+15551234567` -> `+1555***4567`: enough to correlate, not enough to dial."""
    digits = value.strip()
    if len(digits) <= 6:
        return "***"
    return f"{digits[:5]}***{digits[-4:]}"


def mask_id(conv_id: str) -> str:
    """Conversation ids are phone numbers when the user has no external id."""
    return mask_phone(conv_id) if _PHONE.fullmatch(conv_id) else conv_id


def _fmt(value: Any) -> str:
    text = str(value)
    if _PHONE.fullmatch(text):
        text = mask_phone(text)
    return f'"{text}"' if (" " in text or not text) else text


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={name}"] + [f"{key}={_fmt(val)}" for key, val in fields.items() if val is not None]
    logger.log(level, " ".join(parts))


def configure(level: str = "INFO") -> None:
    """Called by the CLI only: libraries and tests keep their own logging set-up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The openai SDK's HTTP stack logs every request at INFO: a line per LLM call costs CPU and noise.
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
