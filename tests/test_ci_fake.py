"""retry_failed_siblings and its async twin against FakeBuildkite (in-process), under faults."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pytest_bkjobs.ci import (
    BuildContext,
    RetryAbortedError,
    RetryReport,
    async_current_job_env,
    async_retry_failed_siblings,
    current_job_env,
    retry_failed_siblings,
)
from pytest_bkjobs.fake import FakeBuildkite, SampleBuild

CHOSEN = ("failed", "timed_out", "parallel_2")


async def no_sleep(delay: float) -> None:
    return None


def run(flavour: str, fake: FakeBuildkite, ctx: BuildContext, **kwargs: Any) -> RetryReport:
    """The sync runner or the async twin, with every wait skipped."""
    kwargs.setdefault("poll_interval", 0)
    if flavour == "sync":
        with fake.client(sleep=lambda delay: None, max_retries=5) as client:
            return retry_failed_siblings(client, ctx, sleep=lambda delay: None, **kwargs)

    async def main() -> RetryReport:
        async with fake.async_client(sleep=no_sleep, max_retries=5) as client:
            return await async_retry_failed_siblings(client, ctx, sleep=no_sleep, **kwargs)

    return asyncio.run(main())


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake() -> FakeBuildkite:
    return FakeBuildkite()


@pytest.fixture
def sample(fake: FakeBuildkite) -> SampleBuild:
    return fake.sample_build()


@pytest.fixture
def ctx(sample: SampleBuild) -> BuildContext:
    return BuildContext.from_env(sample.env)


def test_context_from_the_sample_jobs_env(ctx: BuildContext, sample: SampleBuild) -> None:
    assert (ctx.org, ctx.pipeline, ctx.build) == ("acme", sample.pipeline, sample.number)
    assert ctx.job_id == sample.current_job_id
    assert (ctx.step_key, ctx.retry_count) == ("bkjobs", 0)


def test_current_job_env_both_flavours(
    fake: FakeBuildkite, ctx: BuildContext, sample: SampleBuild
) -> None:
    with fake.client() as client:
        assert current_job_env(client, ctx) == dict(sample.env)

    async def main() -> dict[str, str]:
        async with fake.async_client() as client:
            return await async_current_job_env(client, ctx)

    assert asyncio.run(main()) == dict(sample.env)


def test_wait_with_jobs_that_pass_and_fail(
    flavour: str, fake: FakeBuildkite, ctx: BuildContext, sample: SampleBuild
) -> None:
    fake.on_retry(lambda job: "failed" if job.get("step_key") == "e2e" else "passed")
    report = run(flavour, fake, ctx, wait=True)
    finals = {o.job_id: o.final_state for o in report.retried}
    assert finals == {
        sample.job_ids["failed"]: "passed",
        sample.job_ids["timed_out"]: "passed",
        sample.job_ids["parallel_2"]: "failed",
    }
    assert report.exit_code == 3
    assert [fake.retry_calls(sample.job_ids[role]) for role in CHOSEN] == [1, 1, 1]


@pytest.mark.parametrize("kind", ["lost", "error", "drop"])
def test_exactly_once_under_put_faults_and_flaky_gets(
    flavour: str, fake: FakeBuildkite, ctx: BuildContext, sample: SampleBuild, kind: str
) -> None:
    fake.on_retry("passed", after_polls=1)
    fake.inject_fault(kind, method="PUT", path="/retry", times=None, status=503)
    fake.random_faults(0.25, seed=7, methods=["GET"])  # listing, read-backs and polls
    report = run(flavour, fake, ctx, wait=True, concurrency=2)
    executed = [fake.retry_calls(sample.job_ids[role]) for role in CHOSEN]
    puts = [r for r in fake.requests if r.method == "PUT"]
    assert len(puts) == 3  # one PUT per chosen job, whatever happened to it
    if kind == "lost":
        assert executed == [1, 1, 1]
        assert all(o.recovered for o in report.retried)
        assert {o.final_state for o in report.retried} == {"passed"}
        assert report.exit_code == 0
    else:
        assert executed == [0, 0, 0]
        assert len(report.failed) == 3
        assert all("outcome unknown" in (o.reason or "") for o in report.failed)
        assert report.exit_code == 1


def test_an_early_failure_is_not_retried(
    flavour: str, fake: FakeBuildkite, ctx: BuildContext
) -> None:
    job_id = fake.add_job(ctx.pipeline, ctx.build, state="running", declared_failing=True)
    report = run(flavour, fake, ctx, dry_run=True)
    outcome = next(o for o in report.outcomes if o.job_id == job_id)
    assert outcome.outcome == "skipped"
    assert "listed as failed early" in (outcome.reason or "")


def test_a_canceled_build_aborts(
    flavour: str, fake: FakeBuildkite, ctx: BuildContext, sample: SampleBuild
) -> None:
    fake.set_build_state(ctx.pipeline, ctx.build, "canceled")
    with pytest.raises(RetryAbortedError, match="canceled builds cannot be retried") as info:
        run(flavour, fake, ctx, concurrency=1)
    assert info.value.report.exit_code == 1
    assert sum(fake.retry_calls(sample.job_ids[role]) for role in CHOSEN) == 1


def test_max_attempts_counts_earlier_retries(
    flavour: str, fake: FakeBuildkite, ctx: BuildContext, sample: SampleBuild
) -> None:
    first = run(flavour, fake, ctx)
    assert len(first.retried) == 3
    for outcome in first.retried:
        assert outcome.new_job_id is not None
        fake.finish_job(outcome.new_job_id, 1)
    second = run(flavour, fake, ctx, max_attempts=1)
    assert second.retried == []
    assert {o.reason for o in second.skipped} >= {"retried 1 times already (max attempts 1)"}
    third = run(flavour, fake, ctx, max_attempts=2)
    assert len(third.retried) == 3
    assert [fake.retry_calls(sample.job_ids[role]) for role in CHOSEN] == [1, 1, 1]


def test_the_offline_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import runpy
    from pathlib import Path

    example = Path(__file__).parent.parent / "examples" / "retry_failed_offline.py"
    assert runpy.run_path(str(example))["main"]() == 0
    out = capsys.readouterr().out
    assert "3 retried, 0 failed, 1 skipped, 3 of 3 retries passed" in out
    assert "| Job | Step key | State | Outcome | New job | Retry ended | Details |" in out
