"""``AsyncJobsClient``: the asynchronous Buildkite Jobs API client."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
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
    _wrap_async_stream,
)
from ._config import DEFAULT_BASE_URL, masked, settings_from_env
from ._errors import ConfigurationError
from ._files import AtomicFile, check_destination
from ._models import Job, JobLog, JobsPage

__all__ = ["AsyncJobsClient"]

#: download_job_log hands chunks to its disk thread in batches of about this many bytes.
_WRITE_BATCH = 1024 * 1024


async def _on_disk_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking file work in a thread; on cancel, let it finish so cleanup never races it."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        # A thread cannot be interrupted: wait for it (through further cancels too), so the
        # caller's cleanup never closes or removes a file the thread is still writing.
        while not work.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([work])
        raise


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
                    raise self._status_error(response, waited)
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
        chunk_size: int | None = CHUNK_SIZE,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Async context manager yielding the raw log as byte chunks (``None``: as they arrive)."""
        chunk_size = ep.check_chunk_size(chunk_size)
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
        async with self.stream_job_log(
            job_id, pipeline=pipeline, build=build, chunk_size=None
        ) as chunks:
            # Disk work runs in a worker thread to keep the event loop free, in batches of
            # about a MiB: a hop per 64 KiB chunk would cost more than the writes.
            file = AtomicFile(dest)  # quick (an open), and never left half-made by a cancel
            try:
                batch: list[bytes] = []
                size = 0
                async for chunk in chunks:
                    batch.append(chunk)
                    size += len(chunk)
                    if size >= _WRITE_BATCH:
                        await _on_disk_thread(file.writelines, batch)
                        batch, size = [], 0
                await _on_disk_thread(file.writelines, batch)
                # A cancel from here on lets the commit end: dest then holds the whole log
                # although the call raises CancelledError (whole or old, never half a file).
                await _on_disk_thread(file.commit)
            except BaseException:
                file.discard()
                raise
        return file.written

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
