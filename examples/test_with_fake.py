"""The ``bk_fake`` fixture: a stateful fake Buildkite driving a retry-failed scenario offline.

No cassette and no server: ``bk_fake.client()`` talks to the fake in-process, and
``bk_build_context`` is the context of the fake's sample build (as its running step sees it).
"""

from __future__ import annotations

from pytest_bkjobs import FakeBuildkite
from pytest_bkjobs.ci import BuildContext, retry_failed_siblings


def _no_sleep(seconds: float) -> None:
    """Polls need no real wait against the fake."""


def test_retry_failed_siblings(bk_fake: FakeBuildkite, bk_build_context: BuildContext) -> None:
    # bk_build_context seeded bk_fake's sample build and acts as its running `bkjobs` step.
    # Retried jobs finish on their own: the flaky E2E shard fails again, the others pass.
    bk_fake.on_retry(lambda job: "failed" if job["step_key"] == "e2e" else "passed", after_polls=1)

    with bk_fake.client() as client:
        report = retry_failed_siblings(client, bk_build_context, wait=True, sleep=_no_sleep)

    retried = {o.step_key: o.final_state for o in report.retried}
    assert retried == {"unit-tests": "passed", "integration": "passed", "e2e": "failed"}
    assert [o.step_key for o in report.skipped] == ["lint"]  # soft failures are left alone
    assert report.exit_code == 3  # a retried job did not pass
    # Exactly once each, and never the step doing the retrying.
    assert all(bk_fake.retry_calls(o.job_id) == 1 for o in report.retried)
    assert bk_fake.retry_calls(bk_build_context.job_id) == 0
    assert "E2E 2/3" in report.to_markdown()  # for buildkite-agent annotate
    sample = bk_fake.last_sample  # the build bk_build_context seeded, with every job by role
    assert sample is not None
    assert bk_fake.job(sample.job_ids["failed"])["retried"] is True


def test_dry_run_sends_no_retry(bk_fake: FakeBuildkite, bk_build_context: BuildContext) -> None:
    with bk_fake.client() as client:
        report = retry_failed_siblings(client, bk_build_context, dry_run=True)
    assert {o.outcome for o in report.outcomes} == {"would_retry", "skipped"}
    assert not [r for r in bk_fake.requests if r.method == "PUT"]
