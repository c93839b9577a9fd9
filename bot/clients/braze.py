"""Braze REST: `/campaigns/trigger/send` and `/users/track`."""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import SecretStr

from bot.clients.http import call_json
from bot.errors import OutboundError
from bot.models import OutRow

MAX_RECIPIENTS = 50


def recipient(row: OutRow, message_property: str) -> dict[str, Any]:
    """A `/campaigns/trigger/send` recipient: the external id, else the phone alias."""
    who: dict[str, Any]
    if row.user_id:
        who = {"external_user_id": row.user_id}
    else:
        who = {"user_alias": {"alias_name": row.phone, "alias_label": "phone"}}
    who["trigger_properties"] = {**row.props, message_property: row.text}
    return who


class BrazeClient:
    def __init__(
        self, session: aiohttp.ClientSession, endpoint: str, api_key: SecretStr, timeout_s: float
    ) -> None:
        self._session = session
        self._endpoint = endpoint.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"}
        self._timeout_s = timeout_s

    async def trigger_send(self, campaign_id: str, recipients: list[dict[str, Any]]) -> dict[str, Any]:
        if not 0 < len(recipients) <= MAX_RECIPIENTS:
            raise ValueError(f"a trigger send carries 1 to {MAX_RECIPIENTS} recipients")
        body = {"campaign_id": campaign_id, "recipients": recipients}
        return await self._post("/campaigns/trigger/send", body)

    async def users_track(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post("/users/track", body)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await call_json(
            "braze",
            self._session,
            "POST",
            self._endpoint + path,
            timeout_s=self._timeout_s,
            json=body,
            headers=self._headers,
        )
        if not isinstance(answer, dict):
            return {}
        message = answer.get("message", "success")
        if message != "success" and not str(message).startswith("queued"):
            raise OutboundError("braze", f"fatal: {str(message)[:200]}", retryable=False)
        return answer
