"""retry_failed_siblings against the fake: what a step's retry script does, offline."""

from __future__ import annotations

from pytest_bkjobs.ci import BuildContext, retry_failed_siblings
from pytest_bkjobs.fake import FakeBuildkite


def main() -> int:
    """Retry the sample build's failed jobs as its running step would; returns the exit status."""
    fake = FakeBuildkite()
    sample = fake.sample_build()
    fake.on_retry("passed", after_polls=1)  # every retried job passes on its second poll
    ctx = BuildContext.from_env(sample.env)  # in a real step: BuildContext.from_env()
    with fake.client() as client:  # in a real step: JobsClient.from_env()
        report = retry_failed_siblings(client, ctx, wait=True, poll_interval=0.1, progress=print)
    print(report.to_markdown())
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
