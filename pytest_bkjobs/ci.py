"""Helpers for code running inside a Buildkite step: the build context, the current job's env
and log, log cleaning, and retrying the build's failed jobs exactly once.

    from pytest_bkjobs import JobsClient
    from pytest_bkjobs.ci import BuildContext, retry_failed_siblings

    ctx = BuildContext.from_env()          # BUILDKITE_* variables of the running step
    with JobsClient.from_env() as client:  # BUILDKITE_API_TOKEN (a REST token, not the agent's)
        report = retry_failed_siblings(client, ctx, wait=True)
    print(report.to_markdown())
    raise SystemExit(report.exit_code)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import ConfigurationError, InvalidArgumentError
from ._logs import LogSection, iter_strip_log, split_sections, strip_log
from ._retry_failed import async_retry_failed_siblings, retry_failed_siblings
from ._retry_model import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_RETRIED_JOBS_DID_NOT_PASS,
    EXIT_USAGE,
    JobOutcome,
    RetryAbortedError,
    RetryInterrupted,
    RetryOptions,
    RetryReport,
    SelectHook,
    select_job,
)

if TYPE_CHECKING:
    from ._client import AsyncJobsClient, JobsClient
    from ._models import Job

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_RETRIED_JOBS_DID_NOT_PASS",
    "EXIT_USAGE",
    "BuildContext",
    "JobOutcome",
    "LogSection",
    "NotInBuildkiteError",
    "RetryAbortedError",
    "RetryInterrupted",
    "RetryOptions",
    "RetryReport",
    "SelectHook",
    "async_current_job",
    "async_current_job_env",
    "async_current_job_log",
    "async_download_current_job_log",
    "async_retry_failed_siblings",
    "current_job",
    "current_job_env",
    "current_job_log",
    "download_current_job_log",
    "iter_strip_log",
    "retry_failed_siblings",
    "select_job",
    "split_sections",
    "strip_log",
]

#: The variables a running step always has, and the field each one fills.
REQUIRED_VARS: tuple[tuple[str, str], ...] = (
    ("BUILDKITE_ORGANIZATION_SLUG", "org"),
    ("BUILDKITE_PIPELINE_SLUG", "pipeline"),
    ("BUILDKITE_BUILD_NUMBER", "build"),
    ("BUILDKITE_JOB_ID", "job_id"),
)


class NotInBuildkiteError(ConfigurationError):
    """The ``BUILDKITE_*`` variables of a running step are missing; ``missing`` names them."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            f"not inside a Buildkite step: {', '.join(self.missing)}"
            f" {'is' if len(self.missing) == 1 else 'are'} not set. Run this from a"
            " Buildkite job, or give the build explicitly (BuildContext(org=..., pipeline=...,"
            " build=..., job_id=...) or the CLI's --org/--pipeline/--build/--job)"
        )


def _optional_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class BuildContext:
    """Where a step runs: organisation, pipeline, build number and (usually) the job's id.

    ``job_id`` is ``None`` only for a context built by hand for a build seen from outside it.
    """

    org: str
    pipeline: str
    build: int
    job_id: str | None = None
    build_id: str | None = None
    step_key: str | None = None
    retry_count: int | None = None
    parallel_job: int | None = None
    parallel_job_count: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BuildContext:
        """Read the running step's ``BUILDKITE_*`` variables (``os.environ`` by default).

        Raises ``NotInBuildkiteError`` naming every missing variable, and
        ``ConfigurationError`` for a build number or count that is not an integer.
        """
        env = os.environ if environ is None else environ
        missing = [name for name, _ in REQUIRED_VARS if not env.get(name, "").strip()]
        if missing:
            raise NotInBuildkiteError(missing)
        number = env["BUILDKITE_BUILD_NUMBER"].strip()
        if not number.isdigit() or int(number) < 1:
            raise ConfigurationError(
                f"BUILDKITE_BUILD_NUMBER must be the build number (a positive integer such as"
                f" 42), got {number!r}; BUILDKITE_BUILD_ID holds the build's UUID"
            )
        return cls(
            org=env["BUILDKITE_ORGANIZATION_SLUG"].strip(),
            pipeline=env["BUILDKITE_PIPELINE_SLUG"].strip(),
            build=int(number),
            job_id=env["BUILDKITE_JOB_ID"].strip(),
            build_id=env.get("BUILDKITE_BUILD_ID", "").strip() or None,
            step_key=env.get("BUILDKITE_STEP_KEY", "").strip() or None,
            retry_count=_optional_int(env, "BUILDKITE_RETRY_COUNT"),
            parallel_job=_optional_int(env, "BUILDKITE_PARALLEL_JOB"),
            parallel_job_count=_optional_int(env, "BUILDKITE_PARALLEL_JOB_COUNT"),
        )

    def require_job_id(self) -> str:
        """The current job's id, or a clear error when the context has none."""
        if not self.job_id:
            raise InvalidArgumentError(
                "this BuildContext has no job_id: build it with BuildContext.from_env() inside"
                " a step, or pass job_id=..."
            )
        return self.job_id


# -- the current job (build-scoped routes) ------------------------------------------------------


def current_job(client: JobsClient, ctx: BuildContext) -> Job:
    """The running job itself."""
    return client.get_job(ctx.require_job_id(), pipeline=ctx.pipeline, build=ctx.build)


def current_job_env(client: JobsClient, ctx: BuildContext) -> dict[str, str]:
    """The running job's environment as the API shows it (it may hold secrets)."""
    return client.get_job_env(ctx.require_job_id(), pipeline=ctx.pipeline, build=ctx.build)


def current_job_log(client: JobsClient, ctx: BuildContext) -> str:
    """The running job's raw log so far.

    The agent uploads a running job's log in chunks, so this is partial: the last seconds of
    output are usually missing. Use ``strip_log`` to remove markers and escapes.
    """
    return client.get_job_log_text(ctx.require_job_id(), pipeline=ctx.pipeline, build=ctx.build)


def download_current_job_log(
    client: JobsClient, ctx: BuildContext, dest: str | os.PathLike[str]
) -> int:
    """Stream the running job's (partial) raw log into ``dest`` atomically; returns bytes."""
    return client.download_job_log(
        ctx.require_job_id(), dest, pipeline=ctx.pipeline, build=ctx.build
    )


async def async_current_job(client: AsyncJobsClient, ctx: BuildContext) -> Job:
    """The running job itself (async)."""
    return await client.get_job(ctx.require_job_id(), pipeline=ctx.pipeline, build=ctx.build)


async def async_current_job_env(client: AsyncJobsClient, ctx: BuildContext) -> dict[str, str]:
    """The running job's environment (async; it may hold secrets)."""
    return await client.get_job_env(ctx.require_job_id(), pipeline=ctx.pipeline, build=ctx.build)


async def async_current_job_log(client: AsyncJobsClient, ctx: BuildContext) -> str:
    """The running job's raw log so far (async); partial while the job runs."""
    return await client.get_job_log_text(
        ctx.require_job_id(), pipeline=ctx.pipeline, build=ctx.build
    )


async def async_download_current_job_log(
    client: AsyncJobsClient, ctx: BuildContext, dest: str | os.PathLike[str]
) -> int:
    """Stream the running job's (partial) raw log into ``dest`` atomically (async)."""
    return await client.download_job_log(
        ctx.require_job_id(), dest, pipeline=ctx.pipeline, build=ctx.build
    )
