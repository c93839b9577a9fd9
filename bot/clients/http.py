"""The one place that maps outside HTTP answers to the broker's exceptions, and the retry policy."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from bot.errors import OutboundError, RateLimited

T = TypeVar("T")

MAX_RATE_LIMIT_WAIT_S = 3600.0


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float:
    """Seconds to wait after a 429: `X-RateLimit-Reset` (Braze, epoch seconds) or `Retry-After`."""
    now = time.time() if now is None else now
    reset = headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset")
    if reset:
        try:
            return min(max(float(reset) - now, 0.5), MAX_RATE_LIMIT_WAIT_S)
        except ValueError:
            pass
    after = headers.get("Retry-After") or headers.get("retry-after")
    if after:
        try:
            return min(max(float(after), 0.5), MAX_RATE_LIMIT_WAIT_S)
        except ValueError:
            try:
                return min(max(parsedate_to_datetime(after).timestamp() - now, 0.5), MAX_RATE_LIMIT_WAIT_S)
            except (TypeError, ValueError):
                pass
    return 60.0


async def check_response(service: str, resp: aiohttp.ClientResponse) -> Any:
    """The JSON body of a 2xx answer; otherwise the exception that says whether to retry."""
    if resp.status == 429:
        raise RateLimited(service, retry_after_s(resp.headers))
    if resp.status >= 500 or resp.status == 408:
        raise OutboundError(service, f"HTTP {resp.status}", retryable=True, status=resp.status)
    if resp.status >= 400:
        detail = (await resp.text())[:200].replace("\n", " ")
        raise OutboundError(service, f"HTTP {resp.status}: {detail}", retryable=False, status=resp.status)
    if resp.content_type == "application/json":
        return await resp.json()
    return {}


async def call_json(
    service: str,
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout_s: float,
    **kwargs: Any,
) -> Any:
    """One HTTP call with a timeout; network failures become retryable OutboundErrors."""
    try:
        async with session.request(
            method, url, timeout=aiohttp.ClientTimeout(total=timeout_s), **kwargs
        ) as resp:
            return await check_response(service, resp)
    except TimeoutError as exc:
        raise OutboundError(service, "timed out", retryable=True) from exc
    except aiohttp.ClientError as exc:
        raise OutboundError(service, f"network error: {type(exc).__name__}", retryable=True) from exc


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, OutboundError) and exc.retryable


def _wait(max_wait_s: float) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(multiplier=0.5, max=max_wait_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            return exc.retry_after
        return float(backoff(state))

    return wait


async def with_retries(call: Callable[[], Awaitable[T]], *, attempts: int, max_wait_s: float = 30.0) -> T:
    """Run `call` until it succeeds, fails for good, or `attempts` are spent (then the last error)."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(attempts),
        wait=_wait(max_wait_s),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover
