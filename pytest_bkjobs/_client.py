"""``JobsClient`` and ``AsyncJobsClient``: thin senders over the sans-IO endpoints."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import _endpoints as ep
from ._config import DEFAULT_BASE_URL, masked, settings_from_env
from ._errors import (
    APIConnectionError,
    APITimeoutError,
    BuildkiteError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidResponseError,
    error_for_status,
)
from ._files import atomic_writer, check_destination
from ._models import Job, JobLog, JobsPage
from ._policy import NOT_SENT_ERRORS, RetryPolicy, rate_limit_info

__all__ = ["AsyncJobsClient", "JobsClient"]

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
        return f"{type(self).__name__}(org={self.org!r}, base_url={self.base_url!r})"

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

    def _status_error(self, response: httpx.Response) -> Exception:
        info = rate_limit_info(response) if response.status_code == 429 else None
        return error_for_status(
            response.status_code,
            response.content,
            method=response.request.method,
            url=str(response.request.url),
            scope=info.scope if info else None,
            reset_after=info.reset_after if info else None,
        )

    def _connection_error(
        self, exc: httpx.TransportError, request: httpx.Request
    ) -> APIConnectionError:
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        detail = str(exc).replace(self._token.reveal(), "***")
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


class JobsClient(_BaseClient):
    """Synchronous Buildkite Jobs API client."""

    def __init__(
        self,
        *,
        token: str,
        org: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        user_agent: str | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        secret = _Token(token if isinstance(token, str) else "")
        del token  # tracebacks show this frame's locals
        super().__init__(
            token=secret,
            org=org,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            max_wait=max_wait,
            user_agent=user_agent,
        )
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise ConfigurationError(
                f"JobsClient needs a sync httpx transport, got {type(transport).__name__}"
                " (use AsyncJobsClient for an async transport)"
            )
        self._sleep = sleep
        self._http = httpx.Client(
            auth=self._auth, headers=self._headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        dotenv_path: str | os.PathLike[str] | None = ".env",
        **kwargs: Any,
    ) -> JobsClient:
        """Build from the ``BUILDKITE_API_TOKEN``/``_ORGANIZATION_SLUG``/``_API_URL`` settings."""
        environ = masked(environ)  # tracebacks show this frame's locals
        settings = settings_from_env(environ, dotenv_path)
        kwargs.setdefault("base_url", settings.base_url)
        return cls(token=settings.token, org=settings.org, **kwargs)

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- sending --------------------------------------------------------------------------------

    def _send(self, call: ep.Call[Any], *, stream: bool = False) -> httpx.Response:
        self._check_open(self._http)
        request = self._request(self._http, call)
        attempt, waited = 0, 0.0
        while True:
            try:
                response = self._http.send(request, stream=stream)
            except httpx.DecodingError as exc:
                raise self._decoding_error(exc, request) from exc
            except httpx.TransportError as exc:
                delay = self._policy.after_exception(exc, attempt, call.idempotent, waited)
                if delay is None:
                    raise self._connection_error(exc, request) from exc
                reason = type(exc).__name__
            else:
                if self._ok(call, response):
                    return response
                if stream:
                    response.read()
                    response.close()
                delay = self._policy.after_status(response, attempt, call.idempotent, waited)
                if delay is None:
                    raise self._status_error(response)
                reason = _reason(response)
            self._log_retry(request, reason, delay)
            self._sleep(delay)
            attempt, waited = attempt + 1, waited + delay

    def _call(self, call: ep.Call[T]) -> T:
        return call.parse(self._send(call))

    # -- endpoints ------------------------------------------------------------------------------

    def list_jobs(
        self,
        pipeline: str,
        build: int | str,
        *,
        state: str | Iterable[str] | None = None,
        include_retried_jobs: bool | None = None,
        per_page: int | None = None,
        after: str | None = None,
        before: str | None = None,
        step_key: str | None = None,
    ) -> JobsPage:
        """One page of a build's jobs; follow ``page.next_url`` or use ``iter_jobs``."""
        return self._call(
            ep.list_jobs(
                self.org,
                pipeline,
                build,
                state=state,
                include_retried_jobs=include_retried_jobs,
                per_page=per_page,
                after=after,
                before=before,
                step_key=step_key,
            )
        )

    def list_jobs_page(self, next_url: str) -> JobsPage:
        """The page at a ``links.next`` URL, exactly as the server gave it."""
        return self._call(ep.next_page(next_url))

    def iter_jobs(
        self,
        pipeline: str,
        build: int | str,
        *,
        state: str | Iterable[str] | None = None,
        include_retried_jobs: bool | None = None,
        per_page: int | None = None,
        after: str | None = None,
        before: str | None = None,
        step_key: str | None = None,
    ) -> Iterator[Job]:
        """Every job of a build, fetching one page at a time by following ``links.next``."""
        page = self.list_jobs(
            pipeline,
            build,
            state=state,
            include_retried_jobs=include_retried_jobs,
            per_page=per_page,
            after=after,
            before=before,
            step_key=step_key,
        )
        seen: set[str] = set()
        while True:
            yield from page.items
            next_url = _next_url(page, seen)
            if next_url is None:
                return
            page = self.list_jobs_page(next_url)

    def get_job(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> Job:
        """One job."""
        return self._call(ep.get_job(self.org, job_id, pipeline, build))

    def retry_job(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> Job:
        """Retry a job; returns the NEW job. Never re-sent after a timeout or 5xx."""
        return self._call(ep.retry_job(self.org, job_id, pipeline, build))

    def reprioritize_job(
        self,
        job_id: str,
        priority: int,
        *,
        pipeline: str | None = None,
        build: int | str | None = None,
    ) -> Job:
        """Change a job's priority (higher runs sooner)."""
        return self._call(ep.reprioritize_job(self.org, job_id, priority, pipeline, build))

    def unblock_job(
        self,
        job_id: str,
        *,
        fields: Mapping[str, ep.FieldValue] | None = None,
        unblocker: str | None = None,
        pipeline: str | None = None,
        build: int | str | None = None,
    ) -> Job:
        """Unblock a manual (block step) job, with optional field values."""
        return self._call(ep.unblock_job(self.org, job_id, fields, unblocker, pipeline, build))

    def get_job_log(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> JobLog:
        """The log as JSON: content, size in bytes and header times. Partial while running."""
        return self._call(ep.get_job_log(self.org, job_id, pipeline, build))

    def get_job_log_text(
        self,
        job_id: str,
        *,
        pipeline: str | None = None,
        build: int | str | None = None,
        tail: int | None = None,
    ) -> str:
        """The raw log (``text/plain``); ``tail=N`` gives only the last N bytes."""
        return self._call(ep.get_job_log_text(self.org, job_id, pipeline, build, tail))

    def get_job_log_html(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> str:
        """The log rendered as HTML."""
        return self._call(ep.get_job_log_html(self.org, job_id, pipeline, build))

    def get_job_log_size(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> int:
        """The log's size in bytes (a HEAD request)."""
        return self._call(ep.get_job_log_size(self.org, job_id, pipeline, build))

    @contextmanager
    def stream_job_log(
        self,
        job_id: str,
        *,
        pipeline: str | None = None,
        build: int | str | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> Iterator[Iterator[bytes]]:
        """Context manager yielding the raw log as byte chunks, without holding it in memory."""
        call = ep.stream_job_log(self.org, job_id, pipeline, build)
        response = self._send(call, stream=True)
        try:
            yield _wrap_stream(response, response.iter_bytes(chunk_size))
        finally:
            response.close()

    def download_job_log(
        self,
        job_id: str,
        dest: str | os.PathLike[str],
        *,
        pipeline: str | None = None,
        build: int | str | None = None,
    ) -> int:
        """Stream the raw log into ``dest`` atomically; returns the bytes written."""
        check_destination(dest)
        written = 0
        with (
            self.stream_job_log(job_id, pipeline=pipeline, build=build) as chunks,
            atomic_writer(dest) as handle,
        ):
            for chunk in chunks:
                handle.write(chunk)
                written += len(chunk)
        return written

    def delete_job_log(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> None:
        """Delete a job's log (204)."""
        self._call(ep.delete_job_log(self.org, job_id, pipeline, build))

    def get_job_env(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> dict[str, str]:
        """The job's environment variables (JSON form). They may hold secrets."""
        return self._call(ep.get_job_env(self.org, job_id, pipeline, build))

    def get_job_env_text(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> str:
        """The job's environment as dotenv text; parse it with ``parse_env_text``."""
        return self._call(ep.get_job_env_text(self.org, job_id, pipeline, build))


class AsyncJobsClient(_BaseClient):
    """Asynchronous Buildkite Jobs API client; the same methods as ``JobsClient``, awaitable."""

    def __init__(
        self,
        *,
        token: str,
        org: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        secret = _Token(token if isinstance(token, str) else "")
        del token  # tracebacks show this frame's locals
        super().__init__(
            token=secret,
            org=org,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            max_wait=max_wait,
            user_agent=user_agent,
        )
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise ConfigurationError(
                f"AsyncJobsClient needs an async httpx transport, got {type(transport).__name__}"
                " (use JobsClient for a sync transport)"
            )
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            auth=self._auth, headers=self._headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        dotenv_path: str | os.PathLike[str] | None = ".env",
        **kwargs: Any,
    ) -> AsyncJobsClient:
        """Build from the ``BUILDKITE_API_TOKEN``/``_ORGANIZATION_SLUG``/``_API_URL`` settings."""
        environ = masked(environ)  # tracebacks show this frame's locals
        settings = settings_from_env(environ, dotenv_path)
        kwargs.setdefault("base_url", settings.base_url)
        return cls(token=settings.token, org=settings.org, **kwargs)

    async def __aenter__(self) -> AsyncJobsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- sending --------------------------------------------------------------------------------

    async def _send(self, call: ep.Call[Any], *, stream: bool = False) -> httpx.Response:
        self._check_open(self._http)
        request = self._request(self._http, call)
        attempt, waited = 0, 0.0
        while True:
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.DecodingError as exc:
                raise self._decoding_error(exc, request) from exc
            except httpx.TransportError as exc:
                delay = self._policy.after_exception(exc, attempt, call.idempotent, waited)
                if delay is None:
                    raise self._connection_error(exc, request) from exc
                reason = type(exc).__name__
            else:
                if self._ok(call, response):
                    return response
                if stream:
                    await response.aread()
                    await response.aclose()
                delay = self._policy.after_status(response, attempt, call.idempotent, waited)
                if delay is None:
                    raise self._status_error(response)
                reason = _reason(response)
            self._log_retry(request, reason, delay)
            await self._sleep(delay)
            attempt, waited = attempt + 1, waited + delay

    async def _call(self, call: ep.Call[T]) -> T:
        return call.parse(await self._send(call))

    # -- endpoints ------------------------------------------------------------------------------

    async def list_jobs(
        self,
        pipeline: str,
        build: int | str,
        *,
        state: str | Iterable[str] | None = None,
        include_retried_jobs: bool | None = None,
        per_page: int | None = None,
        after: str | None = None,
        before: str | None = None,
        step_key: str | None = None,
    ) -> JobsPage:
        """One page of a build's jobs; follow ``page.next_url`` or use ``iter_jobs``."""
        return await self._call(
            ep.list_jobs(
                self.org,
                pipeline,
                build,
                state=state,
                include_retried_jobs=include_retried_jobs,
                per_page=per_page,
                after=after,
                before=before,
                step_key=step_key,
            )
        )

    async def list_jobs_page(self, next_url: str) -> JobsPage:
        """The page at a ``links.next`` URL, exactly as the server gave it."""
        return await self._call(ep.next_page(next_url))

    async def iter_jobs(
        self,
        pipeline: str,
        build: int | str,
        *,
        state: str | Iterable[str] | None = None,
        include_retried_jobs: bool | None = None,
        per_page: int | None = None,
        after: str | None = None,
        before: str | None = None,
        step_key: str | None = None,
    ) -> AsyncIterator[Job]:
        """Every job of a build, fetching one page at a time by following ``links.next``."""
        page = await self.list_jobs(
            pipeline,
            build,
            state=state,
            include_retried_jobs=include_retried_jobs,
            per_page=per_page,
            after=after,
            before=before,
            step_key=step_key,
        )
        seen: set[str] = set()
        while True:
            for job in page.items:
                yield job
            next_url = _next_url(page, seen)
            if next_url is None:
                return
            page = await self.list_jobs_page(next_url)

    async def get_job(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> Job:
        """One job."""
        return await self._call(ep.get_job(self.org, job_id, pipeline, build))

    async def retry_job(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> Job:
        """Retry a job; returns the NEW job. Never re-sent after a timeout or 5xx."""
        return await self._call(ep.retry_job(self.org, job_id, pipeline, build))

    async def reprioritize_job(
        self,
        job_id: str,
        priority: int,
        *,
        pipeline: str | None = None,
        build: int | str | None = None,
    ) -> Job:
        """Change a job's priority (higher runs sooner)."""
        return await self._call(ep.reprioritize_job(self.org, job_id, priority, pipeline, build))

    async def unblock_job(
        self,
        job_id: str,
        *,
        fields: Mapping[str, ep.FieldValue] | None = None,
        unblocker: str | None = None,
        pipeline: str | None = None,
        build: int | str | None = None,
    ) -> Job:
        """Unblock a manual (block step) job, with optional field values."""
        return await self._call(
            ep.unblock_job(self.org, job_id, fields, unblocker, pipeline, build)
        )

    async def get_job_log(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> JobLog:
        """The log as JSON: content, size in bytes and header times. Partial while running."""
        return await self._call(ep.get_job_log(self.org, job_id, pipeline, build))

    async def get_job_log_text(
        self,
        job_id: str,
        *,
        pipeline: str | None = None,
        build: int | str | None = None,
        tail: int | None = None,
    ) -> str:
        """The raw log (``text/plain``); ``tail=N`` gives only the last N bytes."""
        return await self._call(ep.get_job_log_text(self.org, job_id, pipeline, build, tail))

    async def get_job_log_html(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> str:
        """The log rendered as HTML."""
        return await self._call(ep.get_job_log_html(self.org, job_id, pipeline, build))

    async def get_job_log_size(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> int:
        """The log's size in bytes (a HEAD request)."""
        return await self._call(ep.get_job_log_size(self.org, job_id, pipeline, build))

    @asynccontextmanager
    async def stream_job_log(
        self,
        job_id: str,
        *,
        pipeline: str | None = None,
        build: int | str | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Async context manager yielding the raw log as byte chunks."""
        call = ep.stream_job_log(self.org, job_id, pipeline, build)
        response = await self._send(call, stream=True)
        try:
            yield _wrap_async_stream(response, response.aiter_bytes(chunk_size))
        finally:
            await response.aclose()

    async def download_job_log(
        self,
        job_id: str,
        dest: str | os.PathLike[str],
        *,
        pipeline: str | None = None,
        build: int | str | None = None,
    ) -> int:
        """Stream the raw log into ``dest`` atomically; returns the bytes written."""
        check_destination(dest)
        written = 0
        async with self.stream_job_log(job_id, pipeline=pipeline, build=build) as chunks:
            with atomic_writer(dest) as handle:
                async for chunk in chunks:
                    await asyncio.to_thread(handle.write, chunk)  # keep the event loop free
                    written += len(chunk)
        return written

    async def delete_job_log(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> None:
        """Delete a job's log (204)."""
        await self._call(ep.delete_job_log(self.org, job_id, pipeline, build))

    async def get_job_env(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> dict[str, str]:
        """The job's environment variables (JSON form). They may hold secrets."""
        return await self._call(ep.get_job_env(self.org, job_id, pipeline, build))

    async def get_job_env_text(
        self, job_id: str, *, pipeline: str | None = None, build: int | str | None = None
    ) -> str:
        """The job's environment as dotenv text; parse it with ``parse_env_text``."""
        return await self._call(ep.get_job_env_text(self.org, job_id, pipeline, build))


# A build holds at most 4,000 jobs: even one job a page stays far below this.
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
