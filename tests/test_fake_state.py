"""The fake's seeding, inspection, progress, faults and limits (in-process)."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
import respx

from pytest_bkjobs import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    JobState,
    RateLimitError,
    ServerError,
    UnprocessableEntityError,
)
from pytest_bkjobs.fake import FakeBuildkite, SyntheticLog
from tests.conftest import ORG, TOKEN, ClientFactory, load_json


def _fake(**kwargs: Any) -> FakeBuildkite:
    return FakeBuildkite(org=ORG, token=TOKEN, **kwargs)


def test_script_job_defaults_carry_every_documented_field() -> None:
    fake = _fake()
    number = fake.add_build("p")
    job = fake.job(fake.add_job("p", number))
    documented = set(load_json("docs_list_jobs_cursor_paginated.json")["items"][0])
    assert documented <= set(job)
    assert job["type"] == "script"
    assert job["state"] == "passed"
    assert job["exit_status"] == 0
    assert job["retries_count"] is None
    assert job["log_url"].endswith(f"/builds/{number}/jobs/{job['id']}/log")
    assert job["raw_log_url"].endswith("/log.txt")
    assert job["web_url"] == f"https://buildkite.com/{ORG}/p/builds/{number}#{job['id']}"


@pytest.mark.parametrize(
    ("state", "exit_status", "finished"),
    [("failed", 1, True), ("running", None, False), ("scheduled", None, False)],
)
def test_defaults_follow_the_state(state: str, exit_status: int | None, finished: bool) -> None:
    fake = _fake()
    number = fake.add_build("p")
    job = fake.job(fake.add_job("p", number, state=state))
    assert job["exit_status"] == exit_status
    assert (job["finished_at"] is not None) == finished


def test_exit_status_alone_sets_the_state() -> None:
    fake = _fake()
    number = fake.add_build("p")
    assert fake.job(fake.add_job("p", number, exit_status=3))["state"] == "failed"


def test_other_job_types() -> None:
    fake = _fake()
    number = fake.add_build("p")
    waiter = fake.job(fake.add_job("p", number, type="waiter"))
    assert set(waiter) == {"id", "graphql_id", "type"}
    manual = fake.job(fake.add_job("p", number, type="manual", label="Ship it?"))
    assert manual["label"] == "Ship it?"
    assert manual["state"] == "blocked"
    assert manual["unblockable"] is True
    assert manual["unblock_url"].endswith("/unblock")
    assert "name" not in manual
    trigger = fake.job(fake.add_job("p", number, type="trigger", name="Deploy"))
    assert "log_url" not in trigger
    assert "exit_status" not in trigger


def test_seeding_errors_are_clear() -> None:
    fake = _fake()
    with pytest.raises(LookupError, match="call add_build first"):
        fake.add_job("p", 1)
    number = fake.add_build("p")
    with pytest.raises(ValueError, match="already exists"):
        fake.add_build("p", number=number)
    with pytest.raises(ValueError, match="job type must be"):
        fake.add_job("p", number, type="command")
    with pytest.raises(TypeError, match="log must be str, bytes or"):
        fake.add_job("p", number, log=42)
    with pytest.raises(KeyError, match="no job"):
        fake.job("nope")
    assert fake.add_build("p") == number + 1
    assert fake.add_build("q", number=10) == 10


def test_load_build_from_a_real_payload() -> None:
    fake = _fake()
    payload = load_json("docs_get_build_with_jobs_retry_source.json")
    number = fake.load_build(payload)
    assert number == payload["number"]
    original = payload["jobs"][0]
    client = fake.client()
    job = client.get_job(original["id"])
    assert job.retry_source is not None
    assert job.retry_source.job_id == original["retry_source"]["job_id"]
    assert job.group_key == original["group_key"]
    assert job.log_url is not None
    assert job.log_url.startswith("https://api.buildkite.com/v2/organizations/acme/")
    pipeline = payload["pipeline"]["slug"]
    (listed,) = client.iter_jobs(pipeline, number)
    assert listed.id == original["id"]
    with pytest.raises(ValueError, match="already"):
        fake.load_build(payload, pipeline="elsewhere")


def test_load_builds_from_a_list_payload() -> None:
    fake = _fake()
    payload = load_json("segment_tracing_builds_running_and_assigned.json")
    with pytest.raises(TypeError, match="use load_builds"):
        fake.load_build(payload)
    assert fake.load_builds(payload) == [944, 943, 942]
    client = fake.client()
    running = list(client.iter_jobs("example_repo", 944, state=["running", "assigned"]))
    assert [j.name for j in running] == ["test", "publish"]
    assert all(j.exit_status is None for j in running)


def test_sample_build_shape() -> None:
    fake = _fake()
    sample = fake.sample_build()
    assert dataclasses.is_dataclass(sample)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.number = 2  # type: ignore[misc]
    assert set(sample.job_ids) == {
        "passed",
        "failed",
        "timed_out",
        "soft_failed",
        "parallel_1",
        "parallel_2",
        "parallel_3",
        "trigger",
        "waiter",
        "current",
        "manual",
    }
    assert sample.current_job_id == sample.job_ids["current"]
    assert sample.env["BUILDKITE_JOB_ID"] == sample.current_job_id
    assert sample.env["BUILDKITE_STEP_KEY"] == "bkjobs"
    assert "DEPLOY_API_TOKEN" in sample.env
    log = fake.log(sample.job_ids["failed"]).decode()
    assert "\x1b_bk;t=" in log
    assert "~~~ " in log
    assert "+++ " in log
    assert "\r\n" in log
    assert fake.sample_build("other").pipeline == "other"


def test_synthetic_log_slices_match_the_whole() -> None:
    log = SyntheticLog(200_000, line=b"0123456789abcdef\n")
    whole = b"".join(log.iter_bytes())
    assert len(whole) == 200_000
    assert whole.startswith(b"0123456789abcdef\n0123")
    for start, end in ((0, 5), (7, 70_001), (131_070, 200_000), (199_999, 300_000)):
        assert b"".join(log.iter_bytes(start, end)) == whole[start:end]
    with pytest.raises(ValueError, match="size must be"):
        SyntheticLog(-1)


def test_header_times_come_from_marked_section_headers() -> None:
    fake = _fake()
    number = fake.add_build("p")
    text = "\x1b_bk;t=1000\x07~~~ one\r\n\x1b_bk;t=2000\x07plain\r\n\x1b_bk;t=3000\x07--- two\r\n"
    job_id = fake.add_job("p", number, log=text)
    log = fake.client().get_job_log(job_id)
    assert log.header_times == (1_000_000_000, 3_000_000_000)


def test_append_log_grows_a_running_jobs_log() -> None:
    fake = _fake()
    number = fake.add_build("p")
    job_id = fake.add_job("p", number, state="running", log="part one\n")
    client = fake.client()
    assert client.get_job_log_text(job_id) == "part one\n"
    fake.append_log(job_id, "part two\n")
    assert client.get_job_log_size(job_id) == len("part one\npart two\n")


def test_update_job_and_finish_job_with_a_state() -> None:
    fake = _fake()
    number = fake.add_build("p")
    job_id = fake.add_job("p", number, state="running")
    fake.update_job(job_id, name="renamed", permit_on_passed=True)
    assert fake.job(job_id)["name"] == "renamed"
    fake.finish_job(job_id, -1, state="timed_out")
    job = fake.job(job_id)
    assert (job["state"], job["exit_status"]) == ("timed_out", -1)
    assert job["finished_at"] is not None


def test_script_job_and_outcome_validation() -> None:
    fake = _fake()
    number = fake.add_build("p")
    job_id = fake.add_job("p", number, state="scheduled")
    fake.script_job(job_id, "canceled", after_polls=1)
    assert fake.client().get_job(job_id).state is JobState.CANCELED
    with pytest.raises(ValueError, match="outcome must be one of"):
        fake.on_retry("exploded")
    with pytest.raises(ValueError, match="after_polls must be an integer >= 0"):
        fake.on_retry("passed", after_polls=-1)
    with pytest.raises(TypeError, match="user limit must be an integer"):
        fake.set_rate_limits(user=2.5)  # type: ignore[arg-type]
    fake.on_retry(None)


def test_retry_answer_can_already_be_final_with_zero_polls() -> None:
    fake = _fake()
    sample = fake.sample_build()
    fake.on_retry("failed", after_polls=0)
    client = fake.client()
    new = client.retry_job(sample.job_ids["failed"])
    assert new.state is JobState.SCHEDULED  # the answer to the PUT, as Buildkite gives it
    assert client.get_job(new.id).state is JobState.FAILED


def test_a_build_holds_at_most_4000_jobs() -> None:
    fake = _fake()
    number = fake.add_build("p")
    failed = fake.add_job("p", number, state="failed")
    for _ in range(3999):
        fake.add_job("p", number, type="waiter")
    with pytest.raises(ValueError, match="4000"):
        fake.add_job("p", number)
    with pytest.raises(UnprocessableEntityError, match="4000"):
        fake.client().retry_job(failed)


# -- faults -------------------------------------------------------------------------------------


def test_5xx_html_page_is_retried_for_gets(make_client: ClientFactory) -> None:
    fake = _fake()
    sample = fake.sample_build()
    fault = fake.inject_fault("error", status=502, times=2, path=r"/jobs/[^/]+$")
    client = make_client(fake.handler)
    assert client.get_job(sample.current_job_id).id == sample.current_job_id
    assert fault.hits == 2
    assert len(make_client.sleeps) == 2
    assert [r.status for r in fake.requests] == [502, 502, 200]


def test_put_faults_never_repeat_a_retry(make_client: ClientFactory) -> None:
    fake = _fake()
    sample = fake.sample_build()
    client = make_client(fake.handler)
    failed = sample.job_ids["failed"]
    fake.inject_fault("error", status=503, method="PUT")
    with pytest.raises(ServerError, match="503"):
        client.retry_job(failed)
    fake.inject_fault("drop", method="PUT")
    with pytest.raises(APIConnectionError):
        client.retry_job(failed)
    assert fake.retry_calls(failed) == 0
    assert fake.job(failed)["retried"] is False
    fake.inject_fault("lost", method="PUT")
    with pytest.raises(APITimeoutError, match="may have been executed"):
        client.retry_job(failed)
    assert fake.retry_calls(failed) == 1
    assert fake.job(failed)["retried"] is True
    with pytest.raises(BadRequestError, match="only be retried once"):
        client.retry_job(failed)
    assert fake.retry_calls(failed) == 2


def test_json_and_empty_5xx_bodies() -> None:
    fake = _fake()
    fake.inject_fault("error", status=500, times=None)
    raw = httpx.Client(transport=fake.transport(), base_url="https://api.buildkite.com")
    assert raw.get("/v2/x").json() == {"message": "Internal Server Error"}
    fake.clear_faults()
    fake.inject_fault("error", status=504, body="empty")
    answer = raw.get("/v2/x")
    assert (answer.status_code, answer.content) == (504, b"")


def test_random_faults_are_reproducible_from_the_seed() -> None:
    def statuses(seed: int) -> list[int]:
        fake = _fake()
        sample = fake.sample_build()
        fake.random_faults(0.5, seed=seed, statuses=(500, 502))
        raw = httpx.Client(
            transport=fake.transport(),
            base_url="https://api.buildkite.com/v2",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        return [
            raw.get(f"/organizations/{ORG}/jobs/{sample.current_job_id}").status_code
            for _ in range(30)
        ]

    first = statuses(7)
    assert first == statuses(7)
    assert {500, 502, 200} <= set(first)
    assert first != statuses(8)


def test_latency_uses_the_injected_sleep() -> None:
    slept: list[float] = []
    fake = _fake(sleep=slept.append)
    sample = fake.sample_build()
    fake.latency = 0.25
    fake.client().get_job(sample.current_job_id)
    assert slept == [0.25]


def test_rate_limit_with_a_clock_and_separate_users() -> None:
    now = [1000.0]
    fake = _fake(clock=lambda: now[0])
    sample = fake.sample_build()
    fake.set_rate_limits(user=2, window=10)
    fake.add_token("bkua_second")
    waits: list[float] = []

    def sleep(delay: float) -> None:
        waits.append(delay)
        now[0] += delay

    client = fake.client(sleep=sleep)
    for _ in range(5):  # the client waits out each window on the fake's clock
        client.get_job(sample.current_job_id)
    assert len(waits) == 2
    assert all(10 <= w <= 11 for w in waits)
    other = fake.client(token="bkua_second", max_retries=0)
    other.get_job(sample.current_job_id)
    other.get_job(sample.current_job_id)
    with pytest.raises(RateLimitError) as caught:
        other.get_job(sample.current_job_id)
    assert caught.value.scope == "rest_user"


def test_retry_calls_ignore_requests_that_were_not_executed() -> None:
    fake = _fake(clock=lambda: 1000.0)  # one rate-limit window for the whole test
    sample = fake.sample_build()
    fake.add_token("bkua_read_only", scopes=["read_builds"])
    failed = sample.job_ids["failed"]
    with pytest.raises(Exception, match="write_builds"):
        fake.client(token="bkua_read_only").retry_job(failed)
    fake.set_rate_limits(org=1)  # the 403 above used up the window
    with pytest.raises(RateLimitError):
        fake.client(max_retries=0).retry_job(failed)
    assert fake.retry_calls(failed) == 0


# -- inspection, reset, respx -------------------------------------------------------------------


def test_repr_and_requests_never_show_the_token() -> None:
    fake = _fake()
    sample = fake.sample_build()
    fake.client().get_job(sample.current_job_id)
    assert TOKEN not in repr(fake)
    assert TOKEN not in repr(fake.requests)
    assert fake.token == TOKEN


def test_reset_forgets_everything_but_keeps_the_token() -> None:
    fake = _fake()
    sample = fake.sample_build()
    fake.client().get_job(sample.current_job_id)
    fake.inject_fault("error", times=None)
    fake.reset()
    assert fake.requests == []
    again = fake.sample_build()
    assert again.number == 1
    assert fake.client().get_job(again.current_job_id).step_key == "bkjobs"


def test_async_client_is_wired_to_the_fake() -> None:
    import asyncio

    fake = _fake()
    sample = fake.sample_build()

    async def main() -> list[str]:
        async with fake.async_client() as client:
            async with client.stream_job_log(sample.job_ids["passed"]) as chunks:
                data = b"".join([c async for c in chunks])
            assert data == fake.log(sample.job_ids["passed"])
            return [j.id async for j in client.iter_jobs(sample.pipeline, sample.number)]

    assert asyncio.run(main()) == fake.job_ids(sample.pipeline, sample.number)


def test_usable_as_a_respx_side_effect() -> None:
    fake = _fake()
    sample = fake.sample_build()
    with respx.mock(base_url="https://api.buildkite.com/v2") as router:
        router.route().mock(side_effect=fake.handler)
        with httpx.Client() as http:
            answer = http.get(
                f"https://api.buildkite.com/v2/organizations/{ORG}/jobs/{sample.current_job_id}",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
    assert answer.json()["step_key"] == "bkjobs"


def test_get_build_gives_the_build_with_its_jobs() -> None:
    fake = _fake()
    sample = fake.sample_build()
    raw = httpx.Client(
        transport=fake.transport(),
        base_url="https://api.buildkite.com/v2",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    build = raw.get(f"/organizations/{ORG}/pipelines/{sample.pipeline}/builds/{sample.number}")
    assert build.status_code == 200
    data = build.json()
    assert data["number"] == sample.number
    assert data["state"] == "running"
    assert [j["id"] for j in data["jobs"]] == fake.job_ids(sample.pipeline, sample.number)
    missing = raw.get(f"/organizations/{ORG}/pipelines/{sample.pipeline}/builds/99")
    assert missing.json() == {"message": "No build found"}


def test_scopes_are_checked_when_the_fake_is_built() -> None:
    with pytest.raises(ValueError, match="unknown scope 'read-builds'"):
        _fake(scopes=["read-builds"])
    with pytest.raises(TypeError, match="not the string"):
        _fake(scopes="read_builds")
    narrow = _fake(scopes=["read_builds"])
    sample = narrow.sample_build()
    client = narrow.client()
    assert client.get_job(sample.current_job_id).id == sample.current_job_id
    with pytest.raises(Exception, match="read_job_env"):
        client.get_job_env(sample.current_job_id)


def test_last_sample_is_the_latest_seeded_build_and_reset_forgets_it():
    fake = FakeBuildkite()
    assert fake.last_sample is None
    first = fake.sample_build()
    assert fake.last_sample == first
    second = fake.sample_build("other-app")
    assert fake.last_sample == second
    fake.reset()
    assert fake.last_sample is None
