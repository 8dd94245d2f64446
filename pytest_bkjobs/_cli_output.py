"""What ``bkjobs`` prints: jobs, reports, progress."""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

from ._cli_parser import PROG

if TYPE_CHECKING:
    from ._models import Job
    from ._retry_model import RetryReport


def print_json(value: Any, stream: IO[str] | None = None) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str), file=stream or sys.stdout)


def job_dict(job: Job) -> dict[str, Any]:
    return dict(job.raw)


def job_line(job: Job) -> str:
    exit_status = "" if job.exit_status is None else str(job.exit_status)
    state = job.raw_state or (job.state.value if job.state else "-")
    retried = f" (retried as {job.retried_in_job_id})" if job.retried else ""
    return (
        f"{job.id}  {state:<10} {exit_status:>4}  {job.type or '-':<7} "
        f"{job.step_key or '-':<16} {job.display_name}{retried}"
    )


def job_details(job: Job) -> str:
    rows = [
        ("id", job.id),
        ("name", job.display_name),
        ("type", job.type),
        ("state", job.raw_state or (job.state.value if job.state else None)),
        ("exit_status", job.exit_status),
        ("soft_failed", job.soft_failed),
        ("step_key", job.step_key),
        ("retried", job.retried),
        ("retried_in_job_id", job.retried_in_job_id),
        ("retries_count", job.retries_count),
        ("started_at", job.started_at),
        ("finished_at", job.finished_at),
        ("web_url", job.web_url),
    ]
    return "\n".join(f"{key + ':':<19}{value}" for key, value in rows if value is not None)


_PROGRESS_LOCK = threading.Lock()


def progress(message: str) -> None:
    """One line on stderr; safe from worker threads (one write per line, under a lock)."""
    with _PROGRESS_LOCK:
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()


def report_text(report: RetryReport) -> str:
    """The human-readable report ``retry-failed`` prints."""
    lines = [report.summary()]
    for o in report.outcomes:
        what = o.outcome.replace("_", " ")
        detail = ""
        if o.new_job_id:
            detail = f" -> {o.new_job_id}" + (" (answer lost; read back)" if o.recovered else "")
        if o.final_state:
            timed_out = "" if o.finished else ", not finished: timed out waiting"
            detail += f" [{o.final_state}{timed_out}]"
        if o.reason:
            detail += f": {o.reason}"
        key = f" [{o.step_key}]" if o.step_key else ""
        lines.append(f"  {what:<11} {o.name}{key} {o.job_id}{detail}")
    return "\n".join(lines)
