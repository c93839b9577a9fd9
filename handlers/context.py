"""What a policy function sees of one turn, and the helpers that record its effects."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from bot.clients.llm import Responder
from bot.metrics import Metrics
from bot.models import ConvState, HistoryItem, InboxEntry, Status
from bot.outbox import OutboxWriter
from bot.settings import Settings
from bot.store.conversations import Mutation
from prompts import Prompts

if TYPE_CHECKING:
    from bot.limits import Limits


@dataclass
class Services:
    settings: Settings
    prompts: Prompts
    responder: Responder
    outbox: OutboxWriter
    metrics: Metrics
    limits: Limits | None = None


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def braze_identifier(state: ConvState) -> dict[str, Any]:
    """How `/users/track` names this conversation's user: external id, else the phone alias."""
    if state.user_id:
        return {"external_id": state.user_id}
    return {"user_alias": {"alias_name": state.phone, "alias_label": "phone"}}


@dataclass
class TurnContext:
    services: Services
    state: ConvState
    entries: list[InboxEntry]
    history: list[HistoryItem]
    now: float
    mutation: Mutation = field(default_factory=Mutation)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def texts(self) -> Prompts:
        return self.services.prompts

    def burst_text(self) -> str:
        return "\n".join(e.text for e in self.entries if e.text)

    def record_user_messages(self) -> None:
        for entry in self.entries:
            text = entry.text or f"[media] {entry.media_urls}"
            self.mutation.history.append(HistoryItem(role="user", text=text, at=entry.at))
        self.mutation.touch = True

    def say(
        self,
        text: str,
        kind: Literal["bot", "system"] = "bot",
        *,
        campaign_id: str | None = None,
        props: dict[str, Any] | None = None,
    ) -> None:
        """Send `text` to the user (after the turn commits) and keep it in the history."""
        self.mutation.out += self.services.outbox.rows(
            self.state, text, kind=kind, now=self.now, campaign_id=campaign_id, props=props
        )
        self.mutation.history.append(HistoryItem(role="bot", text=text, at=self.now))

    def set_status(self, status: Status, *, by: str, reason: str) -> None:
        """A status change: stored with who, when and why, and announced to live agent views."""
        self.mutation.status = status
        self.mutation.incr_epoch = True
        self.mutation.audit.append(
            {"at": self.now, "from": self.state.status, "to": status, "by": by, "reason": reason}
        )
        self.mutation.publish.append(
            {"type": "status", "id": self.state.id, "status": status, "at": self.now}
        )

    def track_event(self, name: str, properties: dict[str, Any] | None = None) -> None:
        """A Braze custom event for this user, sent to `/users/track` by the profile loop (bot/track.py)."""
        obj = {**braze_identifier(self.state), "name": name, "time": iso(self.now)}
        if properties:
            # Braze refuses event property strings over 255 characters.
            obj["properties"] = {k: v[:255] if isinstance(v, str) else v for k, v in properties.items()}
        self.mutation.track.append({"type": "event", "obj": obj})

    def track_attributes(self, attributes: dict[str, Any]) -> None:
        """Braze attributes for this user; an alias-only user's profile is created if missing."""
        obj = {**braze_identifier(self.state), **attributes}
        if not self.state.user_id:
            obj["_update_existing_only"] = False
        self.mutation.track.append({"type": "attributes", "obj": obj})

    def save_profile(self, fields: dict[str, str]) -> None:
        """Validated `update_profile` fields: Braze attributes, and kept on the conversation
        (`profile.<field>`) for what needs them later, such as the Regal call request."""
        if not fields:
            return
        self.track_attributes(fields)
        self.mutation.set.update({f"profile.{name}": value for name, value in fields.items()})
        self.mutation.audit.append({"at": self.now, "event": "profile_updated", "fields": sorted(fields)})

    def job(self, kind: str, payload: dict[str, Any], key: str | None = None) -> None:
        """Durable outbound work (Zendesk, Regal) done after the turn commits, with retries."""
        self.mutation.jobs.append(
            {"kind": kind, "conv": self.state.id, "key": key or uuid.uuid4().hex, "payload": payload}
        )
