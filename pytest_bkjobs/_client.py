"""The two clients, from one import: ``JobsClient`` (sync) and ``AsyncJobsClient``."""

from __future__ import annotations

from ._async_client import AsyncJobsClient
from ._sync_client import JobsClient

__all__ = ["AsyncJobsClient", "JobsClient"]
