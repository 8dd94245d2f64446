"""Inputs found by trying to break the client: each one failed once, each stays fixed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_bkjobs import (
    APIConnectionError,
    APITimeoutError,
    AsyncJobsClient,
    BuildkiteError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidResponseError,
    Job,
    JobsClient,
    JobsPage,
)
from tests.conftest import TOKEN, ClientFactory

JOB = {"id": "j1", "type": "script", "state": "failed"}


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=JOB)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.retry_job(".."),
        lambda c: c.get_job("."),
        lambda c: c.get_job("..", pipeline="p", build=1),
        lambda c: c.get_job("x", pipeline="..", build=1),
        lambda c: c.list_jobs(".", 1),
    ],
)
def test_dot_segments_never_reach_another_endpoint(make_client: ClientFactory, call: Any):
    sent: list[httpx.Request] = []
    with pytest.raises(InvalidArgumentError, match="is not a valid"):
        call(make_client(lambda r: sent.append(r) or ok(r)))  # type: ignore[func-returns-value]
    assert sent == []


def test_dot_org_is_refused():
    with pytest.raises(InvalidArgumentError, match="org '..' is not a valid org"):
        JobsClient(token=TOKEN, org="..")


@pytest.mark.parametrize("build", ["²", "٤٢", "4 2", "-1", 1.0])
def test_only_ascii_digit_build_numbers(make_client: ClientFactory, build: Any):
    with pytest.raises(InvalidArgumentError, match="build must be the build number"):
        make_client(ok).get_job("j", pipeline="p", build=build)


@pytest.mark.parametrize("state", [123, b"failed", {"failed": 1}, [1]])
def test_state_of_the_wrong_type(make_client: ClientFactory, state: Any):
    with pytest.raises(InvalidArgumentError, match="state"):
        make_client(ok).list_jobs("p", 1, state=state)


def test_bytes_field_values_are_refused(make_client: ClientFactory):
    with pytest.raises(InvalidArgumentError, match="field 'a' must be a string"):
        make_client(ok).unblock_job("j", fields={"a": b""})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"token": "tok-SECRET\n-123"}, "token contains whitespace or control characters"),
        ({"token": "tok SECRET"}, "token contains whitespace"),
        ({"base_url": "http://"}, "with a host"),
        ({"timeout": "abc"}, "timeout must be a positive number"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"max_wait": float("nan")}, "max_wait must be a number of seconds >= 0"),
        ({"max_wait": "abc"}, "max_wait must be"),
        ({"user_agent": 5}, "user_agent must be a string"),
    ],
)
def test_constructor_refuses_bad_settings_without_showing_the_token(
    kwargs: dict[str, Any], message: str
):
    kwargs = {"token": TOKEN, "org": "acme", **kwargs}
    with pytest.raises(BuildkiteError, match=message) as info:
        JobsClient(**kwargs)
    assert "SECRET" not in str(info.value)
    assert TOKEN not in str(info.value)


def test_transport_flavour_mismatch_is_explained():
    class SyncOnly(httpx.BaseTransport):
        pass

    class AsyncOnly(httpx.AsyncBaseTransport):
        pass

    with pytest.raises(ConfigurationError, match="use AsyncJobsClient"):
        JobsClient(token=TOKEN, org="a", transport=AsyncOnly())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="use JobsClient"):
        AsyncJobsClient(token=TOKEN, org="a", transport=SyncOnly())  # type: ignore[arg-type]


def test_a_closed_client_says_so(make_client: ClientFactory):
    client = make_client(ok)
    client.close()
    with pytest.raises(BuildkiteError, match="is closed; create a new one"):
        client.get_job("j1")


def test_iterating_a_stream_after_its_block_says_so():
    from tests.test_client_endpoints import _IterStream

    def streamed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_IterStream([b"a", b"b"]))

    client = JobsClient(token=TOKEN, org="a", transport=httpx.MockTransport(streamed))
    with client.stream_job_log("j1") as chunks:
        pass
    with pytest.raises(BuildkiteError, match="inside the stream_job_log"):
        list(chunks)


def test_bad_gzip_is_an_invalid_response(make_client: ClientFactory):
    def bad_gzip(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"not gzip", headers={"content-encoding": "gzip"})

    with pytest.raises(InvalidResponseError, match="could not be decoded"):
        make_client(bad_gzip).get_job("j1")


def test_deeply_nested_json_is_an_invalid_response(make_client: ClientFactory):
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidResponseError, match="nested too deeply"):
        make_client(lambda r: httpx.Response(200, content=body)).get_job("j1")


def paged(next_link: str) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("after"):
            return httpx.Response(200, json={"items": [{"id": "b"}], "links": {}})
        return httpx.Response(200, json={"items": [{"id": "a"}], "links": {"next": next_link}})

    return handler


@pytest.mark.parametrize(
    ("link", "url"),
    [
        (
            "/v2/organizations/acme/pipelines/p/builds/1/jobs?after=x",
            "https://api.buildkite.com/v2/organizations/acme/pipelines/p/builds/1/jobs?after=x",
        ),
        (
            "?after=x",
            "https://api.buildkite.com/v2/organizations/acme/pipelines/p/builds/1/jobs?after=x",
        ),
    ],
)
def test_relative_next_links_resolve_against_the_page(
    make_client: ClientFactory, link: str, url: str
):
    seen: list[str] = []
    handler = paged(link)

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return handler(request)  # type: ignore[no-any-return]

    assert [j.id for j in make_client(record).iter_jobs("p", 1)] == ["a", "b"]
    assert seen[1] == url


@pytest.mark.parametrize(
    "link",
    ["HTTPS://evil.example/x", "ftp://api.buildkite.com/x", "//evil.example/x", "http://[::1/x"],
)
def test_hostile_next_links_are_refused(make_client: ClientFactory, link: str):
    with pytest.raises(InvalidResponseError, match="pagination link"):
        list(make_client(paged(link)).iter_jobs("p", 1))


def test_a_next_link_back_to_the_first_page_is_caught_at_once(make_client: ClientFactory):
    first = "https://api.buildkite.com/v2/organizations/acme/pipelines/p/builds/1/jobs"

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        links = {"self": first, "next": first}
        return httpx.Response(200, json={"items": [{"id": "a"}], "links": links})

    with pytest.raises(InvalidResponseError, match="pagination loop"):
        list(make_client(handler).iter_jobs("p", 1))
    assert len(sent) == 1


def test_connect_error_on_a_put_is_sent_again(make_client: ClientFactory):
    calls: list[int] = []

    def refuse_once(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused")
        return ok(request)

    assert make_client(refuse_once).retry_job("j1").id == "j1"
    assert len(calls) == 2  # it never reached the server, so sending again is safe


def test_read_timeout_mid_stream_is_a_timeout(make_client: ClientFactory, tmp_path: Path):
    from tests.test_client_endpoints import _IterStream

    def slow(request: httpx.Request) -> httpx.Response:
        def chunks():  # type: ignore[no-untyped-def]
            yield b"abc"
            raise httpx.ReadTimeout("slow")

        return httpx.Response(200, stream=_IterStream(chunks()))

    with pytest.raises(APITimeoutError, match="timed out reading the body"):
        make_client(slow).download_job_log("j1", tmp_path / "log")
    assert list(tmp_path.iterdir()) == []


def test_token_is_scrubbed_from_transport_error_messages(make_client: ClientFactory):
    def leaky(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError(f"bad header {request.headers['authorization']}")

    with pytest.raises(APIConnectionError) as info:
        make_client(leaky, max_retries=0).get_job("j1")
    assert TOKEN not in str(info.value)
    assert "***" in str(info.value)


def test_a_placeholder_token_does_not_garble_messages(make_client: ClientFactory):
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(APIConnectionError, match="Connection refused"):
        make_client(refused, token="t", max_retries=0).get_job("j1")


def test_download_keeps_the_mode_of_an_existing_file(make_client: ClientFactory, tmp_path: Path):
    dest = tmp_path / "job.log"
    dest.write_bytes(b"old")
    dest.chmod(0o640)
    make_client(lambda r: httpx.Response(200, content=b"new")).download_job_log("j1", dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert dest.read_bytes() == b"new"


def test_download_creates_files_with_the_umask(make_client: ClientFactory, tmp_path: Path):
    old = os.umask(0o022)
    try:
        make_client(lambda r: httpx.Response(200, content=b"x")).download_job_log(
            "j1", tmp_path / "a.log"
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.log").stat().st_mode) == 0o644


def test_download_through_a_symlink_writes_its_target(make_client: ClientFactory, tmp_path: Path):
    target = tmp_path / "real.log"
    target.write_bytes(b"old")
    link = tmp_path / "link.log"
    link.symlink_to(target)
    make_client(lambda r: httpx.Response(200, content=b"new")).download_job_log("j1", link)
    assert link.is_symlink()
    assert target.read_bytes() == b"new"


def test_download_dest_of_the_wrong_type(make_client: ClientFactory):
    with pytest.raises(InvalidArgumentError, match="destination must be a file path"):
        make_client(ok).download_job_log("j1", 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-05-09T21:05:59.87Z", datetime(2015, 5, 9, 21, 5, 59, 870000, tzinfo=timezone.utc)),
        ("2015-05-09T21:05:59.874123456Z", datetime(2015, 5, 9, 21, 5, 59, 874123, timezone.utc)),
        (
            "2015-05-09T21:05:59+1000",
            datetime(2015, 5, 9, 21, 5, 59, tzinfo=timezone(timedelta(hours=10))),
        ),
        ("2015-04-23 16:55:52 +0000", datetime(2015, 4, 23, 16, 55, 52, tzinfo=timezone.utc)),
        ("2015-04-23 16:55:52.5 UTC", datetime(2015, 4, 23, 16, 55, 52, 500000, timezone.utc)),
        ("2015-13-23T16:55:52Z", None),
    ],
)
def test_timestamps_parse_the_same_on_every_python(text: str, expected: datetime | None):
    assert Job.from_api({"id": "j", "created_at": text}).created_at == expected


def test_jobs_and_pages_are_hashable():
    job = Job.from_api({"id": "x", "agent": {"name": "a"}, "matrix": {"os": "linux"}})
    assert hash(job) == hash(Job.from_api({"id": "x", "agent": {"name": "b"}}))
    assert hash(JobsPage(items=(job,), links={"next": "u"}))


def test_new_documented_fields():
    job = Job.from_api(
        {
            "id": "x",
            "cluster_url": "https://c",
            "cluster_queue_url": "https://q",
            "step": {"id": "s", "signature": {"algorithm": "EdDSA"}},
        }
    )
    assert (job.cluster_url, job.cluster_queue_url, job.step_id) == ("https://c", "https://q", "s")
    assert job.step_signature == {"algorithm": "EdDSA"}


def test_rate_limit_jitter_stays_inside_the_wait_budget(make_client: ClientFactory):
    limited = {"message": "x", "scope": "rest", "reset": 119.5}
    answers = iter([httpx.Response(429, json=limited), httpx.Response(200, json=JOB)])
    client = make_client(lambda r: next(answers), max_wait=120)
    assert client.get_job("j1").id == "j1"
    assert 119.5 <= make_client.sleeps[0] <= 120


def test_empty_env_variable_does_not_hide_dotenv(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("BUILDKITE_API_TOKEN=from-file\nBUILDKITE_ORGANIZATION_SLUG=${HOME}\n")
    client = JobsClient.from_env({"BUILDKITE_API_TOKEN": ""}, dotenv_path=dotenv)
    assert client._token.reveal() == "from-file"
    assert client.org == "${HOME}"  # .env is read as written, never interpolated


def test_no_token_in_showlocals_of_a_failed_construction(pytester: pytest.Pytester):
    pytester.makepyfile(
        textwrap.dedent(
            """
            import os
            from pytest_bkjobs import JobsClient

            def test_missing_org():
                JobsClient.from_env(
                    {"BUILDKITE_API_TOKEN": os.environ["SECRET"]}, dotenv_path=None
                )

            def test_bad_org():
                JobsClient(token=os.environ["SECRET"], org="")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--showlocals", "-vv"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        env={**os.environ, "SECRET": TOKEN},
    )
    assert "2 failed" in result.stdout
    assert "ConfigurationError" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize("chunk_size", [0, -1, True, "64"])
def test_chunk_size_is_checked(make_client: ClientFactory, chunk_size: Any):
    client = make_client(ok)
    with (
        pytest.raises(InvalidArgumentError, match="chunk_size must be a positive number"),
        client.stream_job_log("j1", chunk_size=chunk_size),
    ):
        pass


def test_chunks_as_they_arrive(make_client: ClientFactory):
    body = b"x" * 300_000
    with make_client(lambda r: httpx.Response(200, content=body)).stream_job_log(
        "j1", chunk_size=None
    ) as chunks:
        assert b"".join(chunks) == body
