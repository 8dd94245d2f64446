"""``bkjobs demo``: ``retry-failed --wait`` against a built-in fake build, offline."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable

from ._retry_model import EXIT_FAILED, EXIT_OK, EXIT_RETRIED_JOBS_DID_NOT_PASS

_MEANING = {
    EXIT_OK: "every retried job passed",
    EXIT_FAILED: "a retry failed or the run was aborted",
    EXIT_RETRIED_JOBS_DID_NOT_PASS: "some retried jobs failed again",
}


def demo_outcome(job: dict[str, object]) -> str:
    """How the fake's retried jobs end: the flaky E2E shard fails again, the rest pass."""
    return "failed" if job.get("step_key") == "e2e" else "passed"


def serve_fake(
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    sample: bool = False,
    print_fn: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    env_file: str | None = None,
) -> int:
    """``bkjobs fake-server``: serve a fake until Ctrl-C; with ``sample``, retries finish.

    ``fake.run_fake_server``, plus: with the sample build, retried jobs finish on their own
    after two polls (the E2E shard fails again, the rest pass), as in ``bkjobs demo``.
    """
    from .fake import FakeBuildkite, run_fake_server

    def finish_retries(fake: FakeBuildkite) -> str:
        fake.on_retry(demo_outcome, after_polls=2)
        return (
            "Retried jobs finish on their own after two polls (the e2e shard fails again,"
            " the others pass)."
        )

    return run_fake_server(
        port,
        sample,
        print_fn=print_fn,
        host=host,
        stop=stop,
        configure=finish_retries if sample else None,
        env_file=env_file,
    )


def run_demo(*, json_output: bool = False, poll_interval: float = 0.2) -> int:
    """Run the demo; 0 when it ran as designed, whatever the report's own exit status."""
    from .ci import BuildContext
    from .cli import run_retry_failed
    from .fake import FakeBuildkite, SteppingClock

    fake = FakeBuildkite(clock=SteppingClock())  # the same timestamps on every run
    sample = fake.sample_build()
    fake.on_retry(demo_outcome, after_polls=2)
    ctx = BuildContext(
        org=fake.org,
        pipeline=sample.pipeline,
        build=sample.number,
        job_id=sample.current_job_id,
        step_key="bkjobs",
    )

    def note(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    note(
        f"bkjobs demo: a fake build {ctx.pipeline} #{ctx.build} (in-process: no token, no"
        " network) with failed, timed-out, soft-failed, passed, waiter, trigger and block jobs."
    )
    note(
        f"Acting as its running job {ctx.job_id} (step 'bkjobs'), as"
        " `bkjobs retry-failed --wait` would inside a real step:"
    )
    args = argparse.Namespace(
        state=None,
        include_soft_failed=False,
        step_key=None,
        max_attempts=None,
        dry_run=False,
        concurrency=4,
        wait=True,
        timeout=60.0,
        poll_interval=poll_interval,
        annotate=None,
        json=json_output,
    )
    with fake.client() as client:
        code = run_retry_failed(client, ctx, args)
    sys.stdout.flush()
    if not json_output:
        note(
            "In a step, add --annotate report.md and run `buildkite-agent annotate"
            " --style warning < report.md` to show this report on the build page."
        )
    note(
        f"In a pipeline this run would exit with status {code}"
        f" ({_MEANING.get(code, 'see the README')}); the demo exits 0 because it ran as designed."
    )
    retried = [fake.retry_calls(job_id) for job_id in sample.job_ids.values()]
    if code == EXIT_FAILED or max(retried) > 1:
        return EXIT_FAILED  # the demo itself went wrong
    return EXIT_OK
