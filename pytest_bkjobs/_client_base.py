"""What the sync and async clients share: settings, request building, error mapping, paging."""

from __future__ import annotations

import logging
import math
from collections.abc import (
    AsyncIterator,
    Generator,
    Iterator,
)
from typing import Any, TypeVar

import httpx

from . import _endpoints as ep
from ._config import DEFAULT_BASE_URL
from ._errors import (
    APIConnectionError,
    APITimeoutError,
    BuildkiteError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidResponseError,
    RateLimitError,
    error_for_status,
)
from ._models import JobsPage
from ._policy import NOT_SENT_ERRORS, RetryPolicy, rate_limit_info

T = TypeVar("T")
logger = logging.getLogger("pytest_bkjobs")

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_WAIT = 120.0
CHUNK_SIZE = 64 * 1024


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("pytest-bkjobs")
    except PackageNotFoundError:  # running from a source tree
        ours = "0"
    return f"pytest-bkjobs/{ours} httpx/{httpx.__version__}"


class _Token:
    """Holds the token so that no ``repr`` or traceback local ever prints it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"


# Shorter "tokens" are placeholders (tests, the fake); scrubbing them would garble messages
# ("Connec***ion refused" for a token "t"). Real API tokens are 40 characters.
MIN_SCRUB_LENGTH = 6


def scrub_secret(text: str, secret: str) -> str:
    """Replace ``secret`` in ``text`` by ``***`` (placeholders shorter than 6 are left)."""
    return text.replace(secret, "***") if len(secret) >= MIN_SCRUB_LENGTH else text


def _check_token(token: _Token) -> None:
    value = token.reveal()
    if not value.strip():
        raise ConfigurationError(
            "token is empty: pass token=... or use from_env() with BUILDKITE_API_TOKEN set"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in value.strip()):
        raise ConfigurationError(
            "token contains whitespace or control characters; copy the API token again"
            " (a trailing newline from a file is trimmed, anything inside is not)"
        )


def _check_base_url(base_url: object) -> str:
    hint = f"an http(s) URL such as {DEFAULT_BASE_URL!r}"
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must be {hint}, got {base_url!r}")
    try:
        host = httpx.URL(base_url).host
    except (httpx.InvalidURL, ValueError):
        host = ""
    if not host:
        raise ConfigurationError(f"base_url must be {hint} with a host, got {base_url!r}")
    return base_url.rstrip("/")


def _check_number(
    name: str, value: object, *, allow: tuple[type, ...] = (), positive: bool = False
) -> None:
    if isinstance(value, allow):
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and (math.isnan(float(value)) or float(value) < 0 or (positive and value == 0)):  # type: ignore[arg-type]
        ok = False
    if not ok:
        kind = "a positive number of seconds" if positive else "a number of seconds >= 0"
        raise InvalidArgumentError(f"{name} must be {kind}, got {value!r}")


class _BearerAuth(httpx.Auth):
    """Adds the token per request, so no client attribute holds it in plain text."""

    def __init__(self, token: _Token) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth('***')"


class _BaseClient:
    """Settings, request building and error mapping shared by both clients."""

    def __init__(
        self,
        *,
        token: _Token,
        org: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_wait: float = DEFAULT_MAX_WAIT,
        user_agent: str | None = None,
    ) -> None:
        _check_token(token)
        self._token = token
        self.org = ep.check_slug("org", org)
        self.base_url = _check_base_url(base_url)
        self._base = httpx.URL(self.base_url)
        _check_number("timeout", timeout, allow=(httpx.Timeout,), positive=True)
        _check_number("max_wait", max_wait)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if user_agent is not None and not isinstance(user_agent, str):
            raise InvalidArgumentError(f"user_agent must be a string, got {user_agent!r}")
        self._timeout = timeout
        self._policy = RetryPolicy(max_retries=max_retries, max_wait=float(max_wait))
        self._auth = _BearerAuth(self._token)
        self._headers = {"User-Agent": user_agent or _user_agent()}

    def __repr__(self) -> str:
        # getattr: a traceback may show a client whose constructor failed half-way.
        org, base_url = getattr(self, "org", None), getattr(self, "base_url", None)
        return f"{type(self).__name__}(org={org!r}, base_url={base_url!r})"

    def _url(self, call: ep.Call[Any]) -> httpx.URL:
        if not call.absolute:
            return httpx.URL(self.base_url + call.path)
        try:
            url = httpx.URL(call.path)
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidResponseError(
                f"the server gave an invalid pagination link ({exc})", method=call.method
            ) from None
        # A links.next URL on another origin would receive our token: refuse it.
        if _origin(url) != _origin(self._base):
            raise InvalidResponseError(
                f"refusing to follow a pagination link to another origin: {_origin(url)}"
                f" (the client talks to {_origin(self._base)})",
                method=call.method,
                url=str(url.copy_with(query=None)),
            )
        return url

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: ep.Call[Any]) -> httpx.Request:
        kwargs: dict[str, Any] = {
            "params": list(call.params) or None,
            "headers": dict(call.headers),
        }
        if call.has_body:
            kwargs["json"] = call.json_body
        return http.build_request(call.method, self._url(call), **kwargs)

    @staticmethod
    def _ok(call: ep.Call[Any], response: httpx.Response) -> bool:
        return response.is_success or response.status_code in call.ok_statuses

    def _status_error(self, response: httpx.Response, waited: float = 0.0) -> Exception:
        info = rate_limit_info(response) if response.status_code == 429 else None
        content = response.content
        secret = self._token.reveal().encode()
        if len(secret) >= MIN_SCRUB_LENGTH and secret in content:
            content = content.replace(secret, b"***")  # a proxy or server echoing our headers
        error = error_for_status(
            response.status_code,
            content,
            method=response.request.method,
            url=str(response.request.url),
            scope=info.scope if info else None,
            reset_after=info.reset_after if info else None,
        )
        if isinstance(error, RateLimitError):
            error.add_wait_note(waited, self._policy.max_wait)
        return error

    def _connection_error(
        self, exc: httpx.TransportError, request: httpx.Request
    ) -> APIConnectionError:
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        detail = scrub_secret(str(exc), self._token.reveal())
        what = "timed out" if cls is APITimeoutError else f"failed: {type(exc).__name__}: {detail}"
        note = ""
        if request.method == "PUT" and not isinstance(exc, NOT_SENT_ERRORS):
            note = "; the PUT may have been executed, check the job before sending it again"
        return cls(
            f"{request.method} {request.url} {what}{note}",
            method=request.method,
            url=str(request.url),
        )

    def _check_open(self, http: httpx.Client | httpx.AsyncClient) -> None:
        if http.is_closed:
            raise BuildkiteError(
                f"this {type(self).__name__} is closed;"
                " create a new one (or use it in a with block)"
            )

    @staticmethod
    def _decoding_error(exc: httpx.DecodingError, request: httpx.Request) -> InvalidResponseError:
        return InvalidResponseError(
            f"the answer's body could not be decoded ({exc}); a proxy may have mangled it",
            method=request.method,
            url=str(request.url),
        )

    @staticmethod
    def _log_retry(request: httpx.Request, reason: str, delay: float) -> None:
        logger.info("%s %s: %s; sending again in %.1fs", request.method, request.url, reason, delay)


def _origin(url: httpx.URL) -> str:
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return f"{url.scheme}://{url.host}:{port}"


def _reason(response: httpx.Response) -> str:
    if response.status_code == 429:
        info = rate_limit_info(response)
        return f"429 rate limited (scope {info.scope or 'unknown'})"
    return f"{response.status_code} answer"


MAX_PAGES = 10_000


def _next_url(page: JobsPage, seen: set[str]) -> str | None:
    """The next page's URL, refusing a server that sends us round in a loop."""
    if "self" in page.links:
        seen.add(page.links["self"])
    url = page.next_url
    if url is None:
        return None
    if url in seen:
        raise InvalidResponseError(
            f"pagination loop: links.next repeats {url}", method="GET", url=url
        )
    if len(seen) >= MAX_PAGES:
        raise InvalidResponseError(
            f"more than {MAX_PAGES} pages: the server keeps sending links.next", method="GET"
        )
    seen.add(url)
    return url


def _stream_error(exc: Exception, response: httpx.Response) -> BuildkiteError:
    request = response.request
    where = {"method": request.method, "url": str(request.url)}
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(
            f"{request.method} {request.url} timed out reading the body", **where
        )
    if isinstance(exc, httpx.DecodingError):
        return InvalidResponseError(f"the log body could not be decoded ({exc})", **where)
    if isinstance(exc, httpx.StreamError):
        return BuildkiteError(
            "the log stream is closed: iterate the chunks inside the stream_job_log() block"
        )
    return APIConnectionError(
        f"{request.method} {request.url}: the connection failed while reading the body"
        f" ({type(exc).__name__})",
        **where,
    )


_STREAM_ERRORS = (httpx.TransportError, httpx.DecodingError, httpx.StreamError)


def _wrap_stream(response: httpx.Response, chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    except _STREAM_ERRORS as exc:
        raise _stream_error(exc, response) from exc


async def _wrap_async_stream(
    response: httpx.Response, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except _STREAM_ERRORS as exc:
        raise _stream_error(exc, response) from exc
