"""The one settings object: environment variables and an optional `.env` file (CONTRACT.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

CommaList = Annotated[tuple[str, ...], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    braze_rest_endpoint: str | None = None
    braze_api_key: SecretStr | None = None
    braze_reply_campaign_id: str | None = None
    braze_template_campaign_id: str | None = None
    braze_message_property: str = "external_system_msg_body"
    braze_subscription_group_id: str | None = None
    webhook_secret: SecretStr | None = None

    redis_url: str | None = None
    redis_data_dir: Path = Path(".broker-data/redis")
    queue_partitions: int = Field(16, ge=1, le=1024)

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    llm_backend: Literal["openai", "faq"] | None = None
    llm_timeout_s: float = Field(20.0, gt=0)
    llm_max_retries: int = Field(1, ge=0, le=5)
    llm_max_tokens: int = Field(400, ge=16)
    history_max_messages: int = Field(20, ge=1)
    history_max_chars: int = Field(6000, ge=200)
    # A little more than the model sees (history_max_messages): memory per conversation stays under
    # 8 KiB; Zendesk tickets carry the full transcript for humans.
    history_keep: int = Field(24, ge=10)

    agent_api_tokens: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Operators' tokens for /admin/* (dead letters); same `agent_id:token` format.
    admin_api_tokens: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    handoff_keywords: CommaList = ("agent", "human", "representative", "operator")
    optout_keywords: CommaList = ("stop", "unsubscribe")
    optin_keywords: CommaList = ("start",)
    call_keywords: CommaList = ("call me",)
    handoff_timeout_s: float = Field(900.0, gt=0)
    agent_hours: str | None = None

    zendesk_url: str | None = None
    zendesk_email: str | None = None
    zendesk_api_token: SecretStr | None = None
    zendesk_webhook_secret: SecretStr | None = None
    zendesk_timeout_s: float = Field(10.0, gt=0)

    regal_api_key: SecretStr | None = None
    regal_events_url: str = "https://events.regalvoice.com/events"
    regal_webhook_secret: SecretStr | None = None
    regal_timeout_s: float = Field(5.0, gt=0)
    regal_max_attempts: int = Field(4, ge=1, le=10)
    regal_retry_max_wait_s: float = Field(10.0, gt=0)
    # Braze subscription groups a Regal `contact.unsubscribed` updates: `voice:<id>,sms:<id>`, or one
    # bare `<id>` for every channel (see README "Regal set-up").
    regal_subscription_groups: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    # The /users/track sender (bot/track.py).
    braze_track_batch: int = Field(50, ge=1, le=75)
    braze_track_rate: int = Field(3000, ge=1)  # requests per 3 s for the whole workspace
    braze_track_linger_ms: float = Field(50.0, ge=0)
    braze_track_in_flight: int = Field(4, ge=1, le=64)
    # Keyword routes (handlers/routes.py): unset = `routes.yaml` when present, "" = none.
    routes_file: str | None = Field(None, validate_default=True)

    braze_timeout_s: float = Field(10.0, gt=0)
    braze_max_attempts: int = Field(5, ge=1, le=20)
    braze_retry_max_wait_s: float = Field(30.0, gt=0)
    braze_batch_linger_ms: float = Field(15.0, ge=0)
    braze_max_in_flight: int = Field(8, ge=1, le=64)

    lease_ttl_ms: int = Field(15_000, ge=200)
    worker_concurrency: int = Field(256, ge=1)
    max_burst_messages: int = Field(20, ge=1)
    max_supersede: int = Field(3, ge=0)
    # Abuse and cost limits (bot/limits.py), per conversation.
    rate_limit_messages: int = Field(20, ge=1)
    rate_limit_window_s: float = Field(60.0, gt=0)
    rate_limit_llm_calls: int = Field(20, ge=1)
    llm_daily_token_budget: int = Field(200_000, ge=0)
    budget_exhausted: Literal["handoff", "faq"] = "handoff"
    llm_max_message_chars: int = Field(2000, ge=100)
    # Warn at start-up when Redis could lose data (evicting policy, no persistence); off for the
    # simulator's deliberately in-memory Redis.
    redis_config_check: bool = True
    # The recovery sweep (bot/sweep.py): how often it runs, and when unsettled work counts as stuck.
    sweep_interval_s: float = Field(30.0, gt=0)
    sweep_stuck_after_s: float = Field(120.0, gt=0)

    company_name: str = "our company"
    log_level: str = "INFO"

    @field_validator("handoff_keywords", "optout_keywords", "optin_keywords", "call_keywords", mode="before")
    @classmethod
    def _keywords(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("routes_file")
    @classmethod
    def _routes(cls, value: str | None) -> str | None:
        from handlers.routes import load_routes, route_path

        path = route_path(value)
        if path is not None:
            load_routes(path)  # a RoutesError (ValueError) names the problem
        return value

    @field_validator("regal_subscription_groups", mode="before")
    @classmethod
    def _regal_groups(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        groups: dict[str, str] = {}
        for item in value.split(","):
            channel, sep, group = item.strip().rpartition(":")
            if group.strip():
                groups[channel.strip().lower() if sep else "*"] = group.strip()
        return groups

    @field_validator("agent_api_tokens", "admin_api_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        tokens: dict[str, str] = {}
        for pair in value.split(","):
            if not pair.strip():
                continue
            agent, sep, token = str(pair).partition(":")
            if not sep or not agent.strip() or not token.strip():
                raise ValueError("expected agent_id:token pairs separated by commas")
            tokens[token.strip()] = agent.strip()
        return tokens

    @field_validator("agent_hours")
    @classmethod
    def _agent_hours(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from bot.hours import AgentHours

        return AgentHours.parse(value).spec

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        scheme = urlparse(value).scheme
        if scheme not in {"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"}:
            raise ValueError("must start with redis://, rediss://, unix:// or redis+cluster://")
        return value

    @field_validator("braze_rest_endpoint", "openai_base_url", "zendesk_url", "regal_events_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parsed = urlparse(value)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @property
    def backend(self) -> Literal["openai", "faq"]:
        if self.llm_backend:
            return self.llm_backend
        return "openai" if (self.openai_api_key or self.openai_base_url) else "faq"

    @property
    def zendesk_enabled(self) -> bool:
        return bool(
            self.zendesk_url and self.zendesk_email and self.zendesk_api_token and self.zendesk_webhook_secret
        )

    @property
    def regal_enabled(self) -> bool:
        return bool(self.regal_api_key and self.regal_api_key.get_secret_value().strip())

    def missing_for_serve(self) -> list[str]:
        """One line per required setting that `serve` cannot run without."""
        required = {
            "BRAZE_REST_ENDPOINT": self.braze_rest_endpoint,
            "BRAZE_API_KEY": self.braze_api_key,
            "BRAZE_REPLY_CAMPAIGN_ID": self.braze_reply_campaign_id,
            "WEBHOOK_SECRET": self.webhook_secret,
        }
        return [f"{name} is required but not set" for name, value in required.items() if not value]

    def missing_for_worker(self) -> list[str]:
        """Workers send replies, so they need Braze but not the inbound secret."""
        return [line for line in self.missing_for_serve() if not line.startswith("WEBHOOK_SECRET")]


def load_settings(env_file: str | Path | None = ".env", **overrides: object) -> Settings:
    """Build settings, turning validation errors into one readable line per bad variable."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            lines.append(f"{name} is malformed: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError(lines) from None
