"""A fake Regal events API (`POST /events`): records what it receives and can be told to fail."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class FakeRegal:
    def __init__(self, api_key: str = "regal-test-key") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []  # every request: {"body", "auth", "status"}
        self.faults: list[int] = []
        self.app = web.Application()
        self.app.router.add_post("/events", self._events)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Bodies Regal accepted."""
        return [r["body"] for r in self.requests if r["status"] == 200]

    def fail_next(self, status: int, times: int = 1) -> None:
        self.faults += [status] * times

    async def _events(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        record: dict[str, Any] = {"body": body, "auth": request.headers.get("Authorization", ""), "status": 0}
        self.requests.append(record)
        if self.faults:
            record["status"] = self.faults.pop(0)
            return web.json_response({"error": "simulated"}, status=record["status"])
        # Regal takes the raw key (no "Bearer"), and needs a phone to reach the contact.
        if record["auth"] != self.api_key:
            record["status"] = 401
            return web.json_response({"error": "unauthorized"}, status=401)
        traits = body.get("traits") if isinstance(body, dict) else None
        if not isinstance(traits, dict) or not traits.get("phone") or not body.get("name"):
            record["status"] = 400
            return web.json_response({"error": "traits.phone and name are required"}, status=400)
        record["status"] = 200
        return web.json_response({"status": "ok"})
