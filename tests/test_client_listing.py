"""Listing: query parameters, cursor pagination, and validation before anything is sent."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from pytest_bkjobs import (
    FILTER_STATES,
    AsyncJobsClient,
    InvalidArgumentError,
    InvalidResponseError,
    JobsClient,
)
from tests.conftest import ORG, TOKEN, ClientFactory, load_json

LIST_PATH = "/v2/organizations/acme/pipelines/my-pipeline/builds/1/jobs"


def job(n: int) -> dict[str, Any]:
    return {"id": f"job-{n}", "type": "script", "state": "failed", "exit_status": 1}


class PagedServer:
    """Serves ``pages`` pages of two jobs, linking them with opaque ``after`` cursors."""

    def __init__(self, pages: int, *, host: str = "https://api.buildkite.com") -> None:
        self.pages = pages
        self.host = host
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        index = int(request.url.params.get("after", "c0")[1:])
        links = {"self": str(request.url)}
        if index + 1 < self.pages:
            # A cursor the client must pass back untouched, including its odd characters.
            links["next"] = f"{self.host}{LIST_PATH}?after=c{index + 1}&per_page=2&x=%2B%20"
        items = [job(2 * index), job(2 * index + 1)]
        return httpx.Response(200, json={"items": items, "links": links})


def test_list_jobs_sends_filters_as_the_api_expects(make_client: ClientFactory):
    server = PagedServer(1)
    page = make_client(server).list_jobs(
        "my-pipeline",
        1,
        state=["failed", "timed_out"],
        include_retried_jobs=False,
        per_page=2,
        step_key="tests",
    )
    request = server.requests[0]
    assert request.url.path == LIST_PATH
    assert request.url.params.get_list("state[]") == ["failed", "timed_out"]
    assert request.url.params["include_retried_jobs"] == "false"
    assert request.url.params["per_page"] == "2"
    assert request.url.params["step_key"] == "tests"
    assert [j.id for j in page.items] == ["job-0", "job-1"]
    assert page.next_url is None


def test_a_single_state_string_is_one_value(make_client: ClientFactory):
    server = PagedServer(1)
    make_client(server).list_jobs("my-pipeline", 1, state="running")
    assert server.requests[0].url.params.get_list("state[]") == ["running"]


def test_no_filters_sends_no_query(make_client: ClientFactory):
    server = PagedServer(1)
    make_client(server).list_jobs("my-pipeline", 1)
    assert server.requests[0].url.query == b""


def test_iter_jobs_follows_links_next_exactly(make_client: ClientFactory):
    server = PagedServer(3)
    jobs = list(make_client(server).iter_jobs("my-pipeline", 1, state="failed"))
    assert [j.id for j in jobs] == [f"job-{n}" for n in range(6)]
    assert len(server.requests) == 3  # no extra request for an empty page
    assert server.requests[1].url.query == b"after=c1&per_page=2&x=%2B%20"


def test_iter_jobs_fetches_one_page_at_a_time():
    sync_server, async_server = PagedServer(3), PagedServer(3)
    with JobsClient(token=TOKEN, org=ORG, transport=httpx.MockTransport(sync_server)) as client:
        assert next(client.iter_jobs("my-pipeline", 1)).id == "job-0"
    assert len(sync_server.requests) == 1

    async def first() -> str:
        transport = httpx.MockTransport(async_server)
        async with AsyncJobsClient(token=TOKEN, org=ORG, transport=transport) as client:
            jobs = client.iter_jobs("my-pipeline", 1)
            job = await jobs.__anext__()
            await jobs.aclose()  # type: ignore[attr-defined]
            return job.id

    assert asyncio.run(first()) == "job-0"
    assert len(async_server.requests) == 1


def test_iter_jobs_refuses_a_next_link_to_another_host(make_client: ClientFactory):
    server = PagedServer(2, host="https://evil.example.com")
    with pytest.raises(InvalidResponseError, match="another origin: https://evil.example.com:443"):
        list(make_client(server).iter_jobs("my-pipeline", 1))
    assert len(server.requests) == 1  # the token never went there


def test_iter_jobs_stops_on_a_pagination_loop(make_client: ClientFactory):
    def loop(request: httpx.Request) -> httpx.Response:
        nxt = f"https://api.buildkite.com{LIST_PATH}?after=same"
        return httpx.Response(200, json={"items": [job(1)], "links": {"next": nxt}})

    with pytest.raises(InvalidResponseError, match="pagination loop"):
        list(make_client(loop).iter_jobs("my-pipeline", 1))


def test_real_paginated_listing_parses(make_client: ClientFactory):
    payload = load_json("docs_list_jobs_cursor_paginated.json")
    page = make_client(lambda r: httpx.Response(200, json=payload)).list_jobs("my-pipeline", 1)
    assert len(page.items) == 1
    assert page.next_url == payload["links"]["next"]
    assert "after=" in (page.next_url or "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state": "finished"}, "use 'passed' and/or 'failed'"),
        ({"state": ["failed", "bogus"]}, "unknown job state 'bogus'; accepted values: pending"),
        ({"after": "a", "before": "b"}, "mutually exclusive"),
        ({"per_page": 0}, "per_page must be an integer from 1 to 100"),
        ({"per_page": 101}, "per_page must be an integer from 1 to 100"),
        ({"per_page": True}, "per_page must be an integer"),
        ({"include_retried_jobs": "false"}, "include_retried_jobs must be True, False or None"),
        ({"after": ""}, "after must be a non-empty cursor string"),
    ],
)
def test_list_validation_happens_before_sending(
    make_client: ClientFactory, kwargs: dict[str, Any], message: str
):
    server = PagedServer(1)
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(")):
        make_client(server).list_jobs("my-pipeline", 1, **kwargs)
    assert server.requests == []


def test_every_documented_filter_state_is_accepted(make_client: ClientFactory):
    server = PagedServer(1)
    make_client(server).list_jobs("my-pipeline", 1, state=FILTER_STATES)
    assert server.requests[0].url.params.get_list("state[]") == list(FILTER_STATES)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.get_job(""), "job_id must be a non-empty string"),
        (lambda c: c.get_job("  "), "job_id must be a non-empty string"),
        (lambda c: c.get_job(None), "job_id must be a non-empty string"),
        (lambda c: c.get_job("j", pipeline="p"), "give both pipeline and build"),
        (lambda c: c.get_job("j", build=3), "give both pipeline and build"),
        (lambda c: c.get_job("j", pipeline="p", build="abc"), "build must be the build number"),
        (lambda c: c.get_job("j", pipeline="p", build=0), "positive integer"),
        (lambda c: c.get_job("j", pipeline="p", build=True), "build must be the build number"),
        (lambda c: c.get_job("j", pipeline="", build=1), "pipeline must be a non-empty slug"),
        (lambda c: c.reprioritize_job("j", "5"), "priority must be an integer, got '5'"),
        (lambda c: c.reprioritize_job("j", True), "priority must be an integer, got True"),
        (lambda c: c.reprioritize_job("j", 1.5), "priority must be an integer"),
        (lambda c: c.unblock_job("j", fields={"a": 1}), "field 'a' must be a string or a list"),
        (lambda c: c.unblock_job("j", fields=["a"]), "fields must map each field key"),
        (lambda c: c.get_job_log_text("j", tail=0), "tail must be a positive number"),
        (lambda c: c.list_jobs("p", None), "listing jobs needs both pipeline and build"),
    ],
)
def test_argument_validation(make_client: ClientFactory, call: Any, message: str):
    server = PagedServer(1)
    with pytest.raises(InvalidArgumentError, match=message) as info:
        call(make_client(server))
    assert isinstance(info.value, ValueError)
    assert server.requests == []
