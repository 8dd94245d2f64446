"""Every endpoint, on both route families and in every format, through sync and async clients."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_bkjobs import InvalidArgumentError, InvalidResponseError, Job, JobState
from tests.conftest import BASE, TOKEN, ClientFactory, load_json

JOB_ID = "b63254c0-3271-4a98-8270-7cfbd6c2f14e"
BUILD_SCOPED = f"/v2/organizations/acme/pipelines/my-pipeline/builds/1/jobs/{JOB_ID}"
ORG_SCOPED = f"/v2/organizations/acme/jobs/{JOB_ID}"
ROUTES = {"build": ({"pipeline": "my-pipeline", "build": 1}, BUILD_SCOPED), "org": ({}, ORG_SCOPED)}


class Server:
    """A canned answer per request, and every request kept for assertions."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response]) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.respond(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def answer(body: Any = None, status: int = 200, **kwargs: Any) -> Server:
    """A server that always gives the same answer."""
    if isinstance(body, (dict, list)):
        return Server(lambda r: httpx.Response(status, json=body, **kwargs))
    return Server(lambda r: httpx.Response(status, content=body or b"", **kwargs))


@pytest.fixture(params=sorted(ROUTES))
def route(request: pytest.FixtureRequest) -> tuple[dict[str, Any], str]:
    """The keyword arguments selecting a route family, and the path it must produce."""
    return ROUTES[request.param]


def job_payload() -> dict[str, Any]:
    return dict(load_json("docs_list_jobs_cursor_paginated.json")["items"][0])


def test_get_job_on_both_routes(make_client: ClientFactory, route: tuple[dict[str, Any], str]):
    kwargs, path = route
    server = answer(job_payload())
    job = make_client(server).get_job(JOB_ID, **kwargs)
    assert isinstance(job, Job)
    assert job.id == JOB_ID
    assert job.state is JobState.PASSED
    assert server.last.method == "GET"
    assert server.last.url.path == path
    assert server.last.headers["authorization"] == f"Bearer {TOKEN}"
    assert server.last.headers["accept"] == "application/json"
    assert server.last.headers["user-agent"].startswith("pytest-bkjobs/")


def test_retry_returns_the_new_job(make_client: ClientFactory, route: tuple[dict[str, Any], str]):
    kwargs, path = route
    new = {**job_payload(), "id": "new-id", "state": "scheduled", "retries_count": 1}
    new["retry_source"] = {"job_id": JOB_ID, "retry_type": "manual"}
    server = answer(new)
    job = make_client(server).retry_job(JOB_ID, **kwargs)
    assert (server.last.method, server.last.url.path) == ("PUT", path + "/retry")
    assert job.id == "new-id"
    assert job.retry_source is not None
    assert job.retry_source.job_id == JOB_ID
    assert job.retries_count == 1


def test_reprioritize_sends_the_priority(
    make_client: ClientFactory, route: tuple[dict[str, Any], str]
):
    kwargs, path = route
    server = answer({**job_payload(), "priority": {"number": 5}})
    job = make_client(server).reprioritize_job(JOB_ID, 5, **kwargs)
    assert (server.last.method, server.last.url.path) == ("PUT", path + "/reprioritize")
    assert json.loads(server.last.content) == {"priority": 5}
    assert server.last.headers["content-type"] == "application/json"
    assert job.priority == 5


@pytest.mark.parametrize(
    ("call_kwargs", "body"),
    [
        ({}, {}),
        ({"fields": {"name": "Ann", "regions": ["eu", "us"]}}, None),
        ({"unblocker": "user-1"}, {"unblocker": "user-1"}),
    ],
    ids=["no-fields", "string-and-list-fields", "unblocker"],
)
def test_unblock_body(
    make_client: ClientFactory,
    route: tuple[dict[str, Any], str],
    call_kwargs: dict[str, Any],
    body: dict[str, Any] | None,
):
    kwargs, path = route
    server = answer(load_json("docs_unblock_manual_job_response.json"))
    job = make_client(server).unblock_job(JOB_ID, **call_kwargs, **kwargs)
    assert (server.last.method, server.last.url.path) == ("PUT", path + "/unblock")
    expected = body if body is not None else {"fields": call_kwargs["fields"]}
    assert json.loads(server.last.content) == expected
    assert job.type == "manual"
    assert job.label == "Deploy"
    assert job.display_name == "Deploy"
    assert job.unblocked_by is not None
    assert job.unblocked_by.name == "Example Unblocker"


def test_log_json_keeps_nanosecond_header_times_exact(
    make_client: ClientFactory, route: tuple[dict[str, Any], str]
):
    kwargs, path = route
    raw = Path(__file__).parent / "fixtures/real/json/docs_job_log_response_header_times.json"
    server = answer(raw.read_bytes(), headers={"content-type": "application/json"})
    log = make_client(server).get_job_log(JOB_ID, **kwargs)
    assert server.last.url.path == path + "/log"
    assert server.last.headers["accept"] == "application/json"
    assert log.content == "This is the job's log output"
    assert log.size == 28
    assert log.header_times[0] == 1563337899810051000  # above 2**53: a float would round it
    assert log.header_times[-1] == 156333791038291900


@pytest.mark.parametrize(
    ("method", "accept"), [("get_job_log_text", "text/plain"), ("get_job_log_html", "text/html")]
)
def test_log_text_and_html_by_accept(
    make_client: ClientFactory, route: tuple[dict[str, Any], str], method: str, accept: str
):
    kwargs, path = route
    server = answer("héllo ✓\n".encode(), headers={"content-type": accept})
    text = getattr(make_client(server), method)(JOB_ID, **kwargs)
    assert server.last.url.path == path + "/log"
    assert server.last.headers["accept"] == accept
    assert text == "héllo ✓\n"


def test_log_text_with_invalid_utf8_is_decoded_with_replacement(make_client: ClientFactory):
    server = answer(b"ok \xff\xfe done\n")
    assert make_client(server).get_job_log_text(JOB_ID) == "ok \ufffd\ufffd done\n"


def test_log_tail_sends_a_range_and_treats_416_as_empty(make_client: ClientFactory):
    server = answer(b"last bytes", status=206)
    client = make_client(server)
    assert client.get_job_log_text(JOB_ID, tail=10) == "last bytes"
    assert server.last.headers["range"] == "bytes=-10"
    empty = answer(b"", status=416)
    assert make_client(empty).get_job_log_text(JOB_ID, tail=10) == ""


def test_log_size_from_head(make_client: ClientFactory, route: tuple[dict[str, Any], str]):
    kwargs, path = route
    server = answer(headers={"content-length": "31556"})
    assert make_client(server).get_job_log_size(JOB_ID, **kwargs) == 31556
    assert (server.last.method, server.last.url.path) == ("HEAD", path + "/log")


def test_stream_job_log_yields_chunks(make_client: ClientFactory):
    body = bytes(range(256)) * 1000
    server = answer(body)
    client = make_client(server)
    with client.stream_job_log(JOB_ID, chunk_size=4096) as chunks:
        received = list(chunks)
    assert b"".join(received) == body
    assert len(received) > 1
    assert server.last.headers["accept"] == "text/plain"


def test_download_job_log_writes_the_file(make_client: ClientFactory, tmp_path: Path):
    body = (
        Path(__file__).parent / "fixtures/real/logs/buildkite_logs_bash_example.log"
    ).read_bytes()
    dest = tmp_path / "job.log"
    written = make_client(answer(body)).download_job_log(JOB_ID, dest)
    assert written == len(body)
    assert dest.read_bytes() == body
    assert [p.name for p in tmp_path.iterdir()] == ["job.log"]


def test_download_failure_leaves_no_file_and_keeps_an_old_one(
    make_client: ClientFactory, tmp_path: Path
):
    dest = tmp_path / "job.log"
    dest.write_bytes(b"previous")

    def drop_mid_body(request: httpx.Request) -> httpx.Response:
        def chunks():  # type: ignore[no-untyped-def]
            yield b"partial"
            raise httpx.ReadError("connection reset")

        return httpx.Response(200, stream=_IterStream(chunks()))

    client = make_client(drop_mid_body, max_retries=0)
    with pytest.raises(Exception, match="connection failed while reading"):
        client.download_job_log(JOB_ID, dest)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["job.log"]


class _IterStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body stream that works for both sync and async transports."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from self._chunks

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for chunk in self._chunks:
            yield chunk


def test_download_to_a_directory_is_refused_before_sending(
    make_client: ClientFactory, tmp_path: Path
):
    server = answer(b"x")
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        make_client(server).download_job_log(JOB_ID, tmp_path)
    assert server.requests == []


def test_delete_log(make_client: ClientFactory, route: tuple[dict[str, Any], str]):
    kwargs, path = route
    server = answer(status=204)
    assert make_client(server).delete_job_log(JOB_ID, **kwargs) is None
    assert (server.last.method, server.last.url.path) == ("DELETE", path + "/log")


def test_env_json(make_client: ClientFactory, route: tuple[dict[str, Any], str]):
    kwargs, path = route
    server = answer({"env": {"CI": "true", "BUILDKITE_BUILD_NUMBER": 15, "EMPTY": None}})
    env = make_client(server).get_job_env(JOB_ID, **kwargs)
    assert server.last.url.path == path + "/env"
    assert env == {"CI": "true", "BUILDKITE_BUILD_NUMBER": "15", "EMPTY": ""}


def test_env_text(make_client: ClientFactory, route: tuple[dict[str, Any], str]):
    kwargs, path = route
    server = answer(b'CI="true"\nMULTI="a\\nb"\n', headers={"content-type": "text/plain"})
    text = make_client(server).get_job_env_text(JOB_ID, **kwargs)
    assert server.last.headers["accept"] == "text/plain"
    assert server.last.url.path == path + "/env"
    assert text == 'CI="true"\nMULTI="a\\nb"\n'


def test_path_segments_are_escaped(make_client: ClientFactory):
    server = answer(job_payload())
    make_client(server).get_job("a/b", pipeline="my pipe", build="7")
    assert server.last.url.raw_path.decode() == (
        "/v2/organizations/acme/pipelines/my%20pipe/builds/7/jobs/a%2Fb"
    )


def test_base_url_without_v2_suffix_is_respected(make_client: ClientFactory):
    server = answer(job_payload())
    make_client(server, base_url="http://127.0.0.1:9999/v2/").get_job(JOB_ID)
    assert str(server.last.url) == f"http://127.0.0.1:9999{ORG_SCOPED}"


@pytest.mark.parametrize(
    "body",
    [b"", b"<html><body>502 Bad Gateway</body></html>", b'{"items": [', b"[1, 2]"],
    ids=["empty", "html", "truncated", "wrong-shape"],
)
def test_a_2xx_with_the_wrong_body_is_invalid_response(make_client: ClientFactory, body: bytes):
    with pytest.raises(InvalidResponseError) as info:
        make_client(answer(body)).get_job(JOB_ID)
    assert info.value.url == f"{BASE}/organizations/acme/jobs/{JOB_ID}"
    assert TOKEN not in str(info.value)
