"""The broker's one exception tree."""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every error the broker raises on purpose."""


class ConfigError(BrokerError):
    """Settings are missing or malformed; `lines` names each problem on its own line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


class StoreUnavailable(BrokerError):
    """Redis cannot be reached; callers answer 503 and nothing is lost."""


class LeaseLost(BrokerError):
    """Another worker owns the conversation now; the current turn must not commit."""


class OutboundError(BrokerError):
    """A call to an outside API failed. `retryable` says whether trying again may help."""

    def __init__(self, service: str, reason: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason
        self.retryable = retryable
        self.status = status


class RateLimited(OutboundError):
    """The outside API asked us to wait `retry_after` seconds before the next call."""

    def __init__(self, service: str, retry_after: float, status: int = 429) -> None:
        super().__init__(service, f"rate limited for {retry_after:.1f}s", retryable=True, status=status)
        self.retry_after = retry_after


class LlmError(BrokerError):
    """The language model failed or timed out for this turn."""


class WindowClosed(BrokerError):
    """The 24-hour WhatsApp window is closed and no template campaign is configured."""


class NotFound(BrokerError):
    """The conversation (or other named thing) does not exist."""


class Conflict(BrokerError):
    """The action clashes with the current owner or state."""
