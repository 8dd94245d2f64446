"""What ``bkjobs`` says when something goes wrong: one line, what happened and what to do."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ._errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BuildkiteError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)

#: The token scope each command needs, named in 403 messages that do not say it.
SCOPES = {
    "list": "read_builds",
    "get": "read_builds",
    "env": "read_job_env",
    "log": "read_build_logs",
    "retry": "write_builds",
    "retry-failed": "write_builds (and read_builds)",
    "unblock": "write_builds",
    "reprioritize": "write_builds",
    "delete-log": "write_build_logs",
}

#: Commands that act on a build's jobs, not on one job: a 404 there is never about a job id.
LISTINGS = frozenset({"list", "retry-failed"})


class UsageError(Exception):
    """A command line that parses but makes no sense (exit status 2)."""


def describe_error(exc: BaseException, command: str = "", base_url: str = "") -> str:
    """One line: what went wrong; what to do."""
    if isinstance(exc, AuthenticationError):
        text = (
            f"Buildkite rejected the API token (401: {exc.message}); set BUILDKITE_API_TOKEN to"
            " a valid REST API access token (BUILDKITE_AGENT_ACCESS_TOKEN is not one)"
        )
    elif isinstance(exc, PermissionDeniedError):
        scope = exc.required_scope or SCOPES.get(command, "the needed")
        text = (
            f"the API token may not do this (403: {exc.message}); give the token the {scope}"
            " scope (Buildkite > Personal Settings > API Access Tokens) or use one that has it"
        )
    elif isinstance(exc, NotFoundError):
        what = (
            "the organisation, pipeline and build number (--org/--pipeline/--build)"
            if command in LISTINGS
            else "the job id and --org/--pipeline/--build"
        )
        text = (
            f"not found (404: {exc.message}; {exc.method} {exc.url}); check {what},"
            " and that the token can see this organisation"
        )
    elif isinstance(exc, RateLimitError):
        text = _rate_limit(exc, command)
    elif isinstance(exc, ServerError):
        text = (
            f"Buildkite failed ({exc.status_code}: {_short(exc.message)}; {exc.method} {exc.url});"
            " try again later"
        )
    elif isinstance(exc, APIStatusError):
        text = f"Buildkite answered {exc.status_code}: {exc.message} ({exc.method} {exc.url})"
    elif isinstance(exc, APIConnectionError):
        where = base_url or "the API"
        text = f"{exc.message}; check the network and --api-url/BUILDKITE_API_URL ({where})"
    elif isinstance(exc, InvalidResponseError):
        text = f"{exc}; is --api-url pointing at the Buildkite REST API?"
    elif isinstance(exc, BuildkiteError | UsageError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = f"{exc.strerror or exc} ({exc.filename or ''}); check the path and permissions"
    else:
        text = (
            f"internal error: {type(exc).__name__}: {exc}; rerun with --debug for a traceback"
            " and report it"
        )
    return " ".join(text.split())


def _rate_limit(exc: RateLimitError, command: str) -> str:
    what = f"Buildkite rate limit reached (429, scope {exc.scope or 'unknown'}: {exc.message})"
    if exc.reset_exceeds_budget:
        text = (
            f"{what}; it resets in {exc.reset_after:g}s, longer than bkjobs waits for a rate"
            f" limit ({exc.max_wait:g}s; gave up after {exc.waited:g}s): run again after"
            " the reset"
        )
    else:
        reset = f" in {exc.reset_after:g}s" if exc.reset_after is not None else " soon"
        text = (
            f"{what}, still limited after waiting {exc.waited:g}s; it resets{reset}: run again then"
        )
    if command == "retry-failed":
        text += ", or lower --concurrency"
    return text


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _short(message: str, limit: int = 120) -> str:
    """A one-line excerpt of an error body: an HTML page gives its title, never its markup."""
    if "<" in message and ">" in message:
        title = _TITLE.search(message)
        message = title.group(1) if title else _TAG.sub(" ", message)
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit] + "…"


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Replace each secret in ``text`` by ``***`` (a last guard: messages never hold one)."""
    from ._client_base import scrub_secret

    for secret in secrets:
        text = scrub_secret(text, secret)
    return text
