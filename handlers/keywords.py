"""Whole-message keyword matching (CONTRACT: case, surrounding space and trailing punctuation ignored)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_TRAILING = re.compile(r"[\s.!?,;:…¡¿'\"*]+$")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _SPACES.sub(" ", _TRAILING.sub("", text.strip())).casefold().strip()


def matches(text: str, keywords: Iterable[str]) -> bool:
    """`Agent!` matches `agent`; `my travel agent` does not."""
    said = normalize(text)
    return bool(said) and any(said == normalize(k) for k in keywords)
