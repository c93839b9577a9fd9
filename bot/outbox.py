"""Turning a text for a user into outbox rows: campaign choice, addressing and splitting."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from bot.errors import WindowClosed
from bot.models import ConvState, OutRow
from bot.settings import Settings

MAX_TEXT = 4096


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Parts of at most `limit` characters, cut at a paragraph, line or word boundary when possible."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        if cut < limit // 2:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


class OutboxWriter:
    """Builds the rows for one message to one conversation's user."""

    def __init__(self, settings: Settings) -> None:
        self._reply_campaign = settings.braze_reply_campaign_id or ""
        self._template_campaign = settings.braze_template_campaign_id

    def rows(
        self,
        state: ConvState,
        text: str,
        *,
        kind: Literal["bot", "agent", "system"],
        now: float,
        campaign_id: str | None = None,
        props: dict[str, Any] | None = None,
    ) -> list[OutRow]:
        """Rows for `text`; the template campaign when the 24-hour window is closed."""
        campaign = campaign_id or self._reply_campaign
        if campaign_id is None and not state.window_open(now):
            if not self._template_campaign:
                raise WindowClosed(state.id)
            campaign = self._template_campaign
        return [
            OutRow(
                id=uuid.uuid4().hex,
                conv=state.id,
                user_id=state.user_id,
                phone=state.phone,
                campaign_id=campaign,
                text=part,
                kind=kind,
                epoch=state.epoch,
                props=props or {},
                created_at=now,
            )
            for part in split_text(text)
        ]
