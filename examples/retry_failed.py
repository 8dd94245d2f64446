"""Retry the failed jobs of the running build, once each, the way a pipeline step does.

In a Buildkite step (after a ``wait`` step with ``continue_on_failure: true``)::

    python examples/retry_failed.py --report report.md
    buildkite-agent annotate --style warning < report.md

It reads the step's ``BUILDKITE_*`` variables (organisation, pipeline, build number, its own job
id) and a REST API token in ``BUILDKITE_API_TOKEN`` (environment or ``.env``; scopes
``read_builds`` and ``write_builds``). ``BUILDKITE_API_URL`` points it at another API, such as
``bkjobs fake-server --sample``. The exit status is ``RetryReport.exit_code``: 0 every retry
passed, 1 a retry failed, 3 a retried job did not pass.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_bkjobs import BuildkiteError, JobsClient
from pytest_bkjobs.ci import BuildContext, RetryAbortedError, retry_failed_siblings


def main(argv: Sequence[str] | None = None) -> int:
    """Retry, wait, write the Markdown report; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--report", default="report.md", help="Markdown report (default: %(default)s)"
    )
    parser.add_argument("--step-key", action="append", help="only these step keys (globs)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait")
    parser.add_argument("--poll-interval", type=float, default=10.0, help="seconds between polls")
    args = parser.parse_args(argv)

    try:
        ctx = BuildContext.from_env()  # NotInBuildkiteError names each missing variable
        with JobsClient.from_env() as client:  # ConfigurationError if the token is missing
            report = retry_failed_siblings(
                client,
                ctx,
                step_keys=args.step_key,  # None: every step
                wait=True,
                wait_timeout=args.timeout,
                poll_interval=args.poll_interval,
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            )
    except RetryAbortedError as exc:  # a canceled build: still report what was done
        print(f"retry_failed.py: error: {exc}", file=sys.stderr)
        report = exc.report
    except BuildkiteError as exc:  # one line, never a traceback; the token is never in it
        print(f"retry_failed.py: error: {exc}", file=sys.stderr)
        return 1
    # Written whole or not at all: the annotate step never reads half a report.
    partial = Path(f"{args.report}.partial")
    partial.write_text(report.to_markdown(), encoding="utf-8")
    os.replace(partial, args.report)
    print(report.summary())
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
