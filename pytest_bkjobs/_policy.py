"""When to wait and send a request again: rate limits, backoff, and never re-sending a PUT."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

RETRYABLE_STATUSES = frozenset({502, 503, 504})

# Failures before the request left this machine: safe to send again, even a PUT.
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True)
class RateLimitInfo:
    """Which window a 429 came from and how long until it resets."""

    scope: str | None
    reset_after: float | None


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if number >= 0 else None
    return None


def rate_limit_info(response: httpx.Response) -> RateLimitInfo:
    """Find the scope that fired and its reset, from the body, then the headers."""
    body: object = None
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    body_scope = body.get("scope") if isinstance(body, dict) else None
    scope = body_scope if isinstance(body_scope, str) else None
    headers = response.headers
    if scope is None:
        if headers.get("ratelimit-user-remaining") == "0":
            scope = "rest_user"
        elif headers.get("ratelimit-remaining") == "0":
            scope = "rest"
        else:
            scope = headers.get("ratelimit-scope")
    reset_header = "ratelimit-user-reset" if scope == "rest_user" else "ratelimit-reset"
    reset = _number(headers.get(reset_header))
    if reset is None and isinstance(body, dict):
        reset = _number(body.get("reset"))
    return RateLimitInfo(scope, reset)


@dataclass
class RetryPolicy:
    """Decides the delay before sending again, or ``None`` to give up."""

    max_retries: int = 3
    max_wait: float = 120.0  # total seconds one call may spend waiting
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    random: Callable[[], float] = field(default=random.random)

    def _backoff(self, attempt: int) -> float:
        delay: float = min(self.backoff_cap, self.backoff_base * (2**attempt))
        return delay * (0.5 + self.random() / 2)  # "equal jitter": spread clients apart

    def _within_budget(self, delay: float, attempt: int, waited: float) -> float | None:
        if attempt >= self.max_retries or waited + delay > self.max_wait:
            return None
        return delay

    def after_status(
        self, response: httpx.Response, attempt: int, idempotent: bool, waited: float
    ) -> float | None:
        """Delay before re-sending after a non-2xx answer."""
        if response.status_code == 429:
            # A 429 was not executed, so even a PUT may be sent again once the window resets.
            info = rate_limit_info(response)
            if info.reset_after is None:
                delay = self._backoff(attempt)
            else:
                # Jitter only pushes past the reset, and never beyond the budget.
                room = max(0.0, self.max_wait - waited - info.reset_after)
                delay = info.reset_after + min(self.random(), room)
            return self._within_budget(delay, attempt, waited)
        if idempotent and response.status_code in RETRYABLE_STATUSES:
            return self._within_budget(self._backoff(attempt), attempt, waited)
        return None

    def after_exception(
        self, exc: httpx.TransportError, attempt: int, idempotent: bool, waited: float
    ) -> float | None:
        """Delay before re-sending after a transport failure (a PUT only if it was not sent)."""
        if not idempotent and not isinstance(exc, NOT_SENT_ERRORS):
            return None
        return self._within_budget(self._backoff(attempt), attempt, waited)
