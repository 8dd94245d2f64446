"""The pure half of ``retry-failed``: options, the choice of jobs, outcomes and the report.

No I/O here: the sync and async runners in ``_retry_failed`` share all of it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import BuildkiteError, InvalidArgumentError
from ._models import FILTER_STATES, Job

if TYPE_CHECKING:
    from .ci import BuildContext

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_RETRIED_JOBS_DID_NOT_PASS",
    "EXIT_USAGE",
    "JobOutcome",
    "RetryAbortedError",
    "RetryInterrupted",
    "RetryOptions",
    "RetryReport",
    "SelectHook",
    "select_job",
]

#: Exit statuses of ``bkjobs retry-failed`` (``RetryReport.exit_code``).
EXIT_OK = 0  # every chosen job was retried (with wait: every retry passed); or nothing to do
EXIT_FAILED = 1  # a retry failed or its outcome is unknown, the run was aborted, or an error
EXIT_USAGE = 2  # bad command line
EXIT_RETRIED_JOBS_DID_NOT_PASS = 3  # with wait: a retried job failed or did not finish in time

SelectHook = Callable[[Job, "BuildContext"], "bool | None"]
Progress = Callable[[str], None]

RETRIED, WOULD_RETRY, SKIPPED, FAILED = "retried", "would_retry", "skipped", "failed"


class RetryAbortedError(BuildkiteError):
    """The run stopped: Buildkite refused a retry for the whole build (a canceled build).

    ``report`` holds what happened before the stop (jobs retried, skipped, not sent).
    """

    def __init__(self, message: str, report: RetryReport) -> None:
        super().__init__(message)
        self.message = message
        self.report = report


class RetryInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; ``report`` says what was done (retries in flight finished)."""

    def __init__(self, report: RetryReport) -> None:
        super().__init__("interrupted")
        self.report = report


@dataclass(frozen=True)
class RetryOptions:
    """Which failed jobs to retry; validated by ``RetryOptions.build``."""

    states: tuple[str, ...] = ("failed", "timed_out")
    include_soft_failed: bool = False
    step_keys: tuple[str, ...] | None = None
    exclude_self: bool = True
    max_attempts: int | None = None

    @classmethod
    def build(
        cls,
        *,
        states: Iterable[str] = ("failed", "timed_out"),
        include_soft_failed: bool = False,
        step_keys: Iterable[str] | None = None,
        exclude_self: bool = True,
        max_attempts: int | None = None,
    ) -> RetryOptions:
        """Check the options and return them; ``InvalidArgumentError`` says what is wrong."""
        if isinstance(states, str):
            states = (states,)
        chosen = tuple(states)
        bad = [s for s in chosen if s not in FILTER_STATES]
        if not chosen or bad:
            raise InvalidArgumentError(
                f"states must be job states such as 'failed' or 'timed_out'; got {bad or chosen!r}"
                f" (accepted: {', '.join(FILTER_STATES)})"
            )
        keys = None
        if step_keys is not None:
            keys = (step_keys,) if isinstance(step_keys, str) else tuple(step_keys)
            if not keys or not all(isinstance(k, str) and k for k in keys):
                raise InvalidArgumentError(
                    f"step_keys must be non-empty glob patterns such as 'test-*', got {keys!r}"
                )
        if max_attempts is not None and (
            isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
        ):
            raise InvalidArgumentError(
                f"max_attempts must be an integer >= 1 (or None for no limit), got {max_attempts!r}"
            )
        return cls(chosen, include_soft_failed, keys, exclude_self, max_attempts)


def select_job(
    job: Job, ctx: BuildContext, options: RetryOptions, hook: SelectHook | None = None
) -> tuple[bool, str | None]:
    """Decide whether to retry ``job``: ``(True, None)`` or ``(False, why not)``.

    Safety rules come first and no hook can override them: never the current job, only
    ``script`` jobs, never a job already retried, only jobs whose OWN state is one of
    ``options.states`` (a job listed under ``failed`` may still read ``running``). Then the
    preferences (soft failures, ``max_attempts``, ``step_keys``) give a default that a
    ``bkjobs_select_job`` hook may override by returning True or False (None keeps it).
    """
    if options.exclude_self and ctx.job_id and job.id == ctx.job_id:
        return False, "the current job (a running job cannot retry itself)"
    if job.type != "script":
        return False, f"a {job.type or 'typeless'} job, not a script job"
    if job.retried:
        return False, f"already retried (as job {job.retried_in_job_id or '?'})"
    state = job.raw_state or (job.state.value if job.state else None)
    if state not in options.states:
        early = " (listed as failed early; it has not finished)" if state == "running" else ""
        return (
            False,
            f"its own state is {state or 'missing'}, not {'/'.join(options.states)}{early}",
        )
    default = _preference(job, options)
    if hook is not None:
        verdict = hook(job, ctx)
        if verdict is True:
            return True, None
        if verdict is False:
            return False, "declined by a bkjobs_select_job hook"
    return default


def _preference(job: Job, options: RetryOptions) -> tuple[bool, str | None]:
    if job.soft_failed and not options.include_soft_failed:
        return False, "a soft failure (use include_soft_failed / --include-soft-failed)"
    retries = job.retries_count or 0
    if options.max_attempts is not None and retries >= options.max_attempts:
        return False, f"retried {retries} times already (max attempts {options.max_attempts})"
    if options.step_keys is not None and not any(
        fnmatch.fnmatchcase(job.step_key or "", pattern) for pattern in options.step_keys
    ):
        return False, (
            f"step key {job.step_key or '(none)'} matches none of {', '.join(options.step_keys)}"
        )
    return True, None


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one listed job.

    ``outcome`` is ``retried`` (``new_job_id`` set), ``would_retry`` (dry run), ``skipped``
    (``reason`` says why) or ``failed`` (``reason`` holds the API's message, with its HTTP
    status in ``status_code``, or says that the outcome is unknown). ``recovered`` means the
    retry's answer was lost and the new id was read back from the job. With waiting,
    ``final_state`` is the retry's last seen state and ``finished`` whether it is final;
    ``final_job_id`` differs from ``new_job_id`` when Buildkite retried the retry automatically.
    """

    job_id: str
    name: str
    step_key: str | None
    state: str | None
    outcome: str
    reason: str | None = None
    new_job_id: str | None = None
    recovered: bool = False
    web_url: str | None = None
    final_state: str | None = None
    finished: bool | None = None
    final_job_id: str | None = None
    status_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "job_id": self.job_id,
            "name": self.name,
            "step_key": self.step_key,
            "state": self.state,
            "outcome": self.outcome,
            "reason": self.reason,
            "new_job_id": self.new_job_id,
            "recovered": self.recovered,
            "web_url": self.web_url,
            "final_state": self.final_state,
            "finished": self.finished,
            "final_job_id": self.final_job_id,
            "status_code": self.status_code,
        }


@dataclass(frozen=True)
class RetryReport:
    """The result of ``retry_failed_siblings``: one ``JobOutcome`` per listed job.

    Exit-code rule (``exit_code``, used by ``bkjobs retry-failed``): 1 if any retry failed or
    has an unknown outcome, or the run was aborted or interrupted; else 3 if waiting and a
    retried job did not pass (failed, timed out, canceled, or not finished by the timeout);
    else 0 (including "nothing to retry" and dry runs). 2 is kept for command-line usage errors.
    """

    org: str
    pipeline: str
    build: int
    current_job_id: str | None
    outcomes: tuple[JobOutcome, ...]
    dry_run: bool = False
    waited: bool = False
    aborted: str | None = None
    interrupted: bool = False  # Ctrl-C: jobs not reached are "not sent", waits not finished

    def _with(self, outcome: str) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.outcome == outcome]

    @property
    def retried(self) -> list[JobOutcome]:
        """Jobs retried (old id -> ``new_job_id``)."""
        return self._with(RETRIED)

    @property
    def would_retry(self) -> list[JobOutcome]:
        """Jobs a dry run would have retried."""
        return self._with(WOULD_RETRY)

    @property
    def skipped(self) -> list[JobOutcome]:
        """Jobs not retried, each with its reason."""
        return self._with(SKIPPED)

    @property
    def failed(self) -> list[JobOutcome]:
        """Jobs whose retry failed or whose outcome is unknown."""
        return self._with(FAILED)

    @property
    def not_passed(self) -> list[JobOutcome]:
        """With waiting: retried jobs whose retry did not end ``passed``."""
        if not self.waited:
            return []
        return [o for o in self.retried if o.final_state != "passed"]

    @property
    def exit_code(self) -> int:
        """0 ok, 1 a retry failed or the run stopped, 3 a waited-for retry did not pass."""
        if self.aborted or self.failed or self.interrupted:
            return EXIT_FAILED
        if self.not_passed:
            return EXIT_RETRIED_JOBS_DID_NOT_PASS
        return EXIT_OK

    @property
    def ok(self) -> bool:
        """True when ``exit_code`` is 0."""
        return self.exit_code == EXIT_OK

    def summary(self) -> str:
        """One line: counts of each outcome."""
        parts = [
            f"{len(self.would_retry)} would be retried"
            if self.dry_run
            else f"{len(self.retried)} retried",
            f"{len(self.failed)} failed",
            f"{len(self.skipped)} skipped",
        ]
        if self.waited:
            passed = sum(1 for o in self.retried if o.final_state == "passed")
            parts.append(f"{passed} of {len(self.retried)} retries passed")
        text = f"build {self.pipeline} #{self.build}: " + ", ".join(parts)
        if self.interrupted:
            text += "; INTERRUPTED (Ctrl-C): the report shows what was done until then"
        return text + (f"; ABORTED: {self.aborted}" if self.aborted else "")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--json`` prints)."""
        return {
            "org": self.org,
            "pipeline": self.pipeline,
            "build": self.build,
            "current_job_id": self.current_job_id,
            "dry_run": self.dry_run,
            "waited": self.waited,
            "aborted": self.aborted,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "counts": {
                "retried": len(self.retried),
                "would_retry": len(self.would_retry),
                "skipped": len(self.skipped),
                "failed": len(self.failed),
                "not_passed": len(self.not_passed),
            },
            "jobs": [o.to_dict() for o in self.outcomes],
        }

    def to_markdown(self) -> str:
        """Markdown for ``buildkite-agent annotate`` (a heading, a summary and a table)."""
        title = "Retry of failed jobs" + (" (dry run)" if self.dry_run else "")
        lines = [f"### {title}: {self.pipeline} #{self.build}", "", _md(self.summary()), ""]
        if self.aborted:
            lines += [f"**Stopped:** {_md(self.aborted)}", ""]
        if not self.outcomes:
            lines.append("No failed jobs were found.")
            return "\n".join(lines) + "\n"
        header = ["Job", "Step key", "State", "Outcome", "New job", "Details"]
        if self.waited:
            header.insert(5, "Retry ended")
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for o in self.outcomes:
            name = f"[{_md(o.name)}]({o.web_url})" if o.web_url else _md(o.name)
            row = [
                name,
                f"`{_md(o.step_key)}`" if o.step_key else "",
                _md(o.state or ""),
                o.outcome.replace("_", " "),
                f"`{o.new_job_id}`" if o.new_job_id else "",
                _md(o.reason or ("answer lost; read back from the job" if o.recovered else "")),
            ]
            if self.waited:
                ended = o.final_state or ""
                if o.finished is False:
                    ended = f"{ended} (timed out waiting)" if ended else "timed out waiting"
                row.insert(5, _md(ended))
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Escape a value for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
