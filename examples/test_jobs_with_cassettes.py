"""The Jobs API through recorded cassettes: list and filter, get, retry, unblock, log, env.

Replayed offline from ``cassettes/test_jobs_with_cassettes/`` (``pytest examples/``). The
cassettes were recorded against the fake Buildkite by ``examples/record_cassettes.sh``; to
record against the real API instead, see "Recording against the real Buildkite safely" in the
README.
"""

from __future__ import annotations

from typing import Any

from pytest_bkjobs import Job, JobsClient, JobState
from pytest_bkjobs.ci import strip_log

# The build `bkjobs fake-server --sample` serves: cassettes replay it without a server.
PIPELINE, BUILD = "sample-app", 1


def _by_step_key(client: JobsClient, step_key: str) -> Job:
    """The latest attempt of the job of a step (a build-scoped listing filtered by step key)."""
    page = client.list_jobs(PIPELINE, BUILD, step_key=step_key, include_retried_jobs=False)
    assert len(page.items) == 1, page.items
    return page.items[0]


def test_list_and_filter(bk_client: JobsClient) -> None:
    failed = list(bk_client.iter_jobs(PIPELINE, BUILD, state=["failed", "timed_out"]))
    assert sorted(job.step_key or "" for job in failed) == [
        "e2e",
        "integration",
        "lint",
        "unit-tests",
    ]
    assert [job.display_name for job in failed if job.soft_failed] == [":lint-roller: Lint"]

    # Pages of 3: iter_jobs follows links.next; list_jobs gives one page.
    first = bk_client.list_jobs(PIPELINE, BUILD, per_page=3)
    assert len(first.items) == 3
    assert first.next_url is not None
    everything = list(bk_client.iter_jobs(PIPELINE, BUILD, per_page=3))
    assert {job.type for job in everything} == {"script", "trigger", "waiter", "manual"}


def test_get(bk_client: JobsClient) -> None:
    listed = _by_step_key(bk_client, "unit-tests")
    job = bk_client.get_job(listed.id)  # the org-scoped route: any build's job
    assert job.state is JobState.FAILED
    assert job.exit_status == 1
    assert job.name == ":pytest: Unit tests"


def test_retry(bk_client: JobsClient) -> None:
    failed = _by_step_key(bk_client, "unit-tests")
    new = bk_client.retry_job(failed.id, pipeline=PIPELINE, build=BUILD)
    assert new.id != failed.id  # a retry is a new job
    assert new.retries_count == 1
    old = bk_client.get_job(failed.id)
    assert old.retried
    assert old.retried_in_job_id == new.id


def test_unblock(bk_client: JobsClient) -> None:
    gate = _by_step_key(bk_client, "deploy-gate")
    assert gate.type == "manual"
    assert gate.state is JobState.BLOCKED
    job = bk_client.unblock_job(gate.id, fields={"release": "v1.2", "regions": ["eu", "us"]})
    assert job.state is JobState.UNBLOCKED


def test_log(bk_client: JobsClient) -> None:
    job = _by_step_key(bk_client, "build")
    raw = bk_client.get_job_log_text(job.id, pipeline=PIPELINE, build=BUILD)
    assert "\x1b_bk;t=" in raw  # the agent's timestamp markers
    text = strip_log(raw)
    assert "~~~ Running commands" in text.splitlines()
    assert text.endswith("Built sample_app\n")
    tail = bk_client.get_job_log_text(job.id, tail=64)  # Range: bytes=-64
    assert len(tail.encode()) == 64
    assert bk_client.get_job_log_size(job.id) == len(raw.encode())


def test_env(bk_client: JobsClient, bk_cassette: Any) -> None:
    job = _by_step_key(bk_client, "build")
    env = bk_client.get_job_env(job.id)
    assert env["APP_ENV"] == "ci"
    assert env["BUILDKITE_PIPELINE_SLUG"] == PIPELINE
    if bk_cassette.replaying:
        # Secrets never reach the cassette: the defaults (*_TOKEN, *_PASSWORD, ...) and
        # bk_redact_env in pytest.ini (DATABASE_URL) were masked when it was recorded.
        assert env["DEPLOY_API_TOKEN"] == "[REDACTED]"
        assert env["DATABASE_PASSWORD"] == "[REDACTED]"
        assert env["DATABASE_URL"] == "[REDACTED]"
