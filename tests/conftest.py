"""Shared fixtures: one test body drives both the sync and the async client."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_bkjobs import AsyncJobsClient, JobsClient

FIXTURES = Path(__file__).parent / "fixtures" / "real"
TOKEN = "bkua_test_token_0123456789abcdefghij"
ORG = "acme"
BASE = "https://api.buildkite.com/v2"

Handler = Callable[[httpx.Request], httpx.Response]


def load_json(name: str) -> Any:
    """A real payload from tests/fixtures/real/json/."""
    return json.loads((FIXTURES / "json" / name).read_text(encoding="utf-8"))


class AsyncAsSync:
    """Drives an ``AsyncJobsClient`` from sync test code, so one test covers both clients."""

    def __init__(self, client: AsyncJobsClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def _run(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(awaitable)

    def close(self) -> None:
        self._run(self._client.aclose())

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name == "iter_jobs":
            return lambda *a, **k: iter(self._run(_collect(attr(*a, **k))))
        if name == "stream_job_log":
            return lambda *a, **k: self._stream(attr(*a, **k))
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._run(attr(*a, **k))
        return attr

    @contextmanager
    def _stream(self, manager: Any) -> Iterator[Iterator[bytes]]:
        chunks = self._run(manager.__aenter__())
        try:
            yield iter(self._run(_collect(chunks)))
        finally:
            self._run(manager.__aexit__(None, None, None))


async def _collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


class ClientFactory:
    """Builds a client of the parametrized flavour around a request handler."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour
        self.sleeps: list[float] = []
        self._loop = asyncio.new_event_loop()
        self._clients: list[Any] = []

    def __call__(self, handler: Handler, **kwargs: Any) -> Any:
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("org", ORG)
        transport = httpx.MockTransport(handler)
        if self.flavour == "sync":
            client: Any = JobsClient(transport=transport, sleep=self.sleeps.append, **kwargs)
        else:

            async def sleep(delay: float) -> None:
                self.sleeps.append(delay)

            client = AsyncAsSync(
                AsyncJobsClient(transport=transport, sleep=sleep, **kwargs), self._loop
            )
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._loop.close()


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[ClientFactory]:
    """``make_client(handler)`` gives a JobsClient, or an AsyncJobsClient driven synchronously."""
    factory = ClientFactory(request.param)
    yield factory
    factory.close()
