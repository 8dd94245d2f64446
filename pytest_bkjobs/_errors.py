"""The exception tree of pytest-bkjobs.

    BuildkiteError
    ├── ConfigurationError          missing token/org, bad settings
    ├── InvalidArgumentError        a bad argument, caught before sending (also a ValueError)
    ├── APIConnectionError          transport failure (timeout, reset, DNS), from httpx's
    │   └── APITimeoutError
    ├── InvalidResponseError        a 2xx whose body is not what the endpoint returns
    └── APIStatusError              any non-2xx answer
        ├── BadRequestError         400
        ├── AuthenticationError     401
        ├── PermissionDeniedError   403 (``required_scope`` when the message names one)
        ├── NotFoundError           404
        ├── UnprocessableEntityError 422
        ├── RateLimitError          429 (``scope``, ``reset_after``)
        └── ServerError             5xx

Messages carry the method and URL of the request, never its headers (the token lives there).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BuildkiteError",
    "ConfigurationError",
    "InvalidArgumentError",
    "InvalidResponseError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "UnprocessableEntityError",
    "error_for_status",
]

_EXCERPT_CHARS = 200
_SCOPE_RE = re.compile(r"\b(read_[a-z_]+|write_[a-z_]+)\b")


class BuildkiteError(Exception):
    """Root of every error pytest-bkjobs raises on purpose."""


class ConfigurationError(BuildkiteError):
    """Settings are missing or invalid (token, organisation, base URL)."""


class InvalidArgumentError(BuildkiteError, ValueError):
    """An argument is invalid; raised before anything is sent."""


class APIConnectionError(BuildkiteError):
    """The request could not be sent or its answer was not received."""

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url


class APITimeoutError(APIConnectionError):
    """The request timed out; a PUT may still have been executed."""


class InvalidResponseError(BuildkiteError):
    """A successful answer whose body is not what the endpoint returns."""

    def __init__(self, message: str, *, method: str = "", url: str = "", body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.body = body


class APIStatusError(BuildkiteError):
    """Buildkite answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        method: str,
        url: str,
        body: Any = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.method = method
        self.url = url
        self.body = body
        super().__init__(f"{status_code} {message} ({method} {url}){self._hint()}")

    def _hint(self) -> str:
        return ""


class BadRequestError(APIStatusError):
    """400: invalid parameters, or an action the job's state does not allow."""

    @property
    def already_retried(self) -> bool:
        """True for Buildkite's "Jobs can only be retried once" (someone retried it first)."""
        return "only be retried once" in self.message.lower()


class AuthenticationError(APIStatusError):
    """401: the token is missing, wrong or revoked."""

    def _hint(self) -> str:
        return (
            ". Check BUILDKITE_API_TOKEN: it must be a REST API access token"
            " (BUILDKITE_AGENT_ACCESS_TOKEN is not one)"
        )


class PermissionDeniedError(APIStatusError):
    """403: the token lacks a scope or access to the organisation."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        match = _SCOPE_RE.search(message)
        self.required_scope: str | None = match.group(1) if match else None
        super().__init__(message, **kwargs)

    def _hint(self) -> str:
        if self.required_scope:
            return f". Add the {self.required_scope} scope to the API token"
        return ""


class NotFoundError(APIStatusError):
    """404: no such organisation, pipeline, build or job (or no access to it)."""


class UnprocessableEntityError(APIStatusError):
    """422: the request is well-formed but cannot be carried out (e.g. a canceled build)."""


class RateLimitError(APIStatusError):
    """429: a rate-limit window is exhausted and the retry budget ran out."""

    def __init__(
        self, message: str, *, scope: str | None = None, reset_after: float | None = None, **kw: Any
    ) -> None:
        self.scope = scope
        self.reset_after = reset_after
        self.waited = 0.0
        self.max_wait: float | None = None
        super().__init__(message, **kw)

    def _hint(self) -> str:
        where = f" for scope {self.scope}" if self.scope else ""
        when = f" in {self.reset_after:g}s" if self.reset_after is not None else ""
        return (
            f". The rate limit{where} resets{when}; wait, send fewer requests,"
            " or raise the client's max_retries / max_wait"
        )

    @property
    def reset_exceeds_budget(self) -> bool:
        """True when the window resets later than the client was allowed to wait."""
        if self.reset_after is None or self.max_wait is None:
            return False
        return self.reset_after > self.max_wait - self.waited

    def add_wait_note(self, waited: float, max_wait: float) -> None:
        """Say how long the client waited before giving up, and why it stopped."""
        self.waited = waited
        self.max_wait = max_wait
        if self.reset_exceeds_budget:
            note = (
                f" (gave up after waiting {waited:g}s: the reset is longer than"
                f" the {max_wait:g}s wait budget, max_wait)"
            )
        else:
            note = f" (gave up after waiting {waited:g}s in all)"
        self.args = (str(self) + note,)


class ServerError(APIStatusError):
    """5xx: Buildkite or a proxy in front of it failed."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]+>")


def excerpt(text: str) -> str:
    """A short, one-line excerpt of a non-JSON body; an HTML page gives its title."""
    if "<" in text[:200]:
        title = _TITLE_RE.search(text)
        text = f"HTML page: {title.group(1)}" if title else _TAG_RE.sub(" ", text)
    excerpt = " ".join(text.split())
    if len(excerpt) > _EXCERPT_CHARS:
        excerpt = excerpt[:_EXCERPT_CHARS] + "…"
    return excerpt


def parse_error_body(content: bytes) -> tuple[str, Any]:
    """Return (message, decoded body) for an error answer, JSON or not."""
    text = content.decode("utf-8", errors="replace")
    try:
        body: Any = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        body = text
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message: str = body["message"]
        errors = body.get("errors")
        if errors:
            message = f"{message}: {json.dumps(errors, ensure_ascii=False)}"
        return message, body
    return excerpt(text) or "(empty body)", body


def error_for_status(
    status_code: int,
    content: bytes,
    *,
    method: str,
    url: str,
    scope: str | None = None,
    reset_after: float | None = None,
) -> APIStatusError:
    """Build the exception that matches a non-2xx answer."""
    message, body = parse_error_body(content)
    common: dict[str, Any] = {
        "status_code": status_code,
        "method": method,
        "url": url,
        "body": body,
    }
    if status_code == 429:
        if isinstance(body, dict):
            scope = scope or (body.get("scope") if isinstance(body.get("scope"), str) else None)
        return RateLimitError(message, scope=scope, reset_after=reset_after, **common)
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else APIStatusError
    return cls(message, **common)
