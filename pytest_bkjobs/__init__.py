"""pytest-bkjobs: a Buildkite Jobs API client, pytest plugin, fake and in-pipeline helpers.

Public names are loaded lazily (PEP 562): the pytest plugin imports this package in every test
run, so importing it must not import httpx or respx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cassette import (
        CassetteError,
        CassetteExhaustedError,
        CassetteFormatError,
        CassetteMissError,
        CassetteNotFoundError,
        DropInteraction,
    )
    from ._client import AsyncJobsClient, JobsClient
    from ._env import is_secret_name, parse_env_text, redact_env
    from ._errors import (
        APIConnectionError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BuildkiteError,
        ConfigurationError,
        InvalidArgumentError,
        InvalidResponseError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
        ServerError,
        UnprocessableEntityError,
    )
    from ._models import FILTER_STATES, Job, JobLog, JobsPage, JobState, RetrySource, User
    from .ci import (
        BuildContext,
        JobOutcome,
        LogSection,
        NotInBuildkiteError,
        RetryAbortedError,
        RetryReport,
        async_retry_failed_siblings,
        current_job,
        current_job_env,
        current_job_log,
        download_current_job_log,
        iter_strip_log,
        retry_failed_siblings,
        split_sections,
        strip_log,
    )
    from .fake import FakeBuildkite

_EXPORTS: dict[str, str] = {
    "JobsClient": "._client",
    "FakeBuildkite": ".fake",
    "BuildContext": ".ci",
    "JobOutcome": ".ci",
    "LogSection": ".ci",
    "NotInBuildkiteError": ".ci",
    "RetryAbortedError": ".ci",
    "RetryReport": ".ci",
    "async_retry_failed_siblings": ".ci",
    "current_job": ".ci",
    "current_job_env": ".ci",
    "current_job_log": ".ci",
    "download_current_job_log": ".ci",
    "iter_strip_log": ".ci",
    "retry_failed_siblings": ".ci",
    "split_sections": ".ci",
    "strip_log": ".ci",
    "AsyncJobsClient": "._client",
    "parse_env_text": "._env",
    "redact_env": "._env",
    "is_secret_name": "._env",
    "Job": "._models",
    "JobLog": "._models",
    "JobsPage": "._models",
    "JobState": "._models",
    "RetrySource": "._models",
    "User": "._models",
    "FILTER_STATES": "._models",
    "APIConnectionError": "._errors",
    "APIStatusError": "._errors",
    "APITimeoutError": "._errors",
    "AuthenticationError": "._errors",
    "BadRequestError": "._errors",
    "CassetteError": "._cassette",
    "CassetteExhaustedError": "._cassette",
    "CassetteFormatError": "._cassette",
    "CassetteMissError": "._cassette",
    "CassetteNotFoundError": "._cassette",
    "DropInteraction": "._cassette",
    "BuildkiteError": "._errors",
    "ConfigurationError": "._errors",
    "InvalidArgumentError": "._errors",
    "InvalidResponseError": "._errors",
    "NotFoundError": "._errors",
    "PermissionDeniedError": "._errors",
    "RateLimitError": "._errors",
    "ServerError": "._errors",
    "UnprocessableEntityError": "._errors",
}

__all__ = [
    "FILTER_STATES",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncJobsClient",
    "AuthenticationError",
    "BadRequestError",
    "BuildContext",
    "BuildkiteError",
    "CassetteError",
    "CassetteExhaustedError",
    "CassetteFormatError",
    "CassetteMissError",
    "CassetteNotFoundError",
    "ConfigurationError",
    "DropInteraction",
    "FakeBuildkite",
    "InvalidArgumentError",
    "InvalidResponseError",
    "Job",
    "JobLog",
    "JobOutcome",
    "JobState",
    "JobsClient",
    "JobsPage",
    "LogSection",
    "NotFoundError",
    "NotInBuildkiteError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryAbortedError",
    "RetryReport",
    "RetrySource",
    "ServerError",
    "UnprocessableEntityError",
    "User",
    "__version__",
    "async_retry_failed_siblings",
    "current_job",
    "current_job_env",
    "current_job_log",
    "download_current_job_log",
    "is_secret_name",
    "iter_strip_log",
    "parse_env_text",
    "redact_env",
    "retry_failed_siblings",
    "split_sections",
    "strip_log",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("pytest-bkjobs")
        except PackageNotFoundError:
            return "0+unknown"
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_bkjobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
