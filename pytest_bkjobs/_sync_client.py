"""``JobsClient``: the synchronous Buildkite Jobs API client."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import httpx

from . import _endpoints as ep
from ._client_base import (
    CHUNK_SIZE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_WAIT,
    DEFAULT_TIMEOUT,
    T,
    _BaseClient,
    _next_url,
    _reason,
    _Token,
    _wrap_stream,
)
from ._config import DEFAULT_BASE_URL, masked, settings_from_env
from ._errors import ConfigurationError
from ._files import atomic_writer, check_destination
from ._models import Job, JobLog, JobsPage

__all__ = ["JobsClient"]


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
                    raise self._status_error(response, waited)
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
        chunk_size: int | None = CHUNK_SIZE,
    ) -> Iterator[Iterator[bytes]]:
        """Context manager yielding the raw log as byte chunks, without holding it in memory.

        ``chunk_size=None`` yields chunks as they arrive (no re-chunking copy: the fastest).
        """
        chunk_size = ep.check_chunk_size(chunk_size)
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
        with (
            self.stream_job_log(job_id, pipeline=pipeline, build=build, chunk_size=None) as chunks,
            atomic_writer(dest) as file,
        ):
            for chunk in chunks:
                file.write(chunk)
        return file.written

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
