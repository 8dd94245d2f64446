"""Retry a build's failed jobs exactly once: selection, the retry itself, waiting, the report.

The choice of jobs is one pure function (``select_job``) shared by the sync and async runners;
the runners differ only in how they send requests.

Exactly once: a retry whose answer was lost (timeout, connection error, 5xx) may have been
executed, and a second PUT would answer "Jobs can only be retried once" or, worse, retry the job
twice in spirit. So the runner re-reads the job and takes ``retried_in_job_id`` as the result;
if the job does not show as retried, the outcome is recorded as unknown and nothing is re-sent.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._errors import (
    APIConnectionError,
    APIStatusError,
    BadRequestError,
    BuildkiteError,
    InvalidArgumentError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    UnprocessableEntityError,
)
from ._models import Job
from ._retry_model import (
    FAILED,
    RETRIED,
    SKIPPED,
    WOULD_RETRY,
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
    from .ci import BuildContext

__all__ = ["async_retry_failed_siblings", "retry_failed_siblings"]

Progress = Callable[[str], None]

#: Seconds between two "still waiting" progress lines when nothing changed.
PROGRESS_EVERY = 30.0

# -- shared pieces of the two runners -----------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """Arguments of one run, checked once."""

    ctx: BuildContext
    options: RetryOptions
    dry_run: bool
    concurrency: int
    wait: bool
    wait_timeout: float
    poll_interval: float
    hook: SelectHook | None
    progress: Progress


def _make_run(ctx: BuildContext, options: RetryOptions, **kw: Any) -> _Run:
    concurrency = kw["concurrency"]
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidArgumentError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    for name in ("wait_timeout", "poll_interval"):
        value = kw[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)  # nan would wait forever and break the sleep
            or value < 0
        ):
            raise InvalidArgumentError(
                f"{name} must be a finite number of seconds >= 0, got {value!r}"
            )
    progress = kw.pop("progress") or (lambda message: None)
    return _Run(ctx=ctx, options=options, progress=progress, **kw)


def _plan(jobs: Iterable[Job], run: _Run) -> list[tuple[Job, JobOutcome | None]]:
    """Each listed job once, with a skip outcome, or ``None`` when it is to be retried."""
    plan: list[tuple[Job, JobOutcome | None]] = []
    seen: set[str] = set()
    for job in jobs:
        if job.id in seen:  # a listing that changed between pages can repeat a job
            continue
        seen.add(job.id)
        selected, reason = select_job(job, run.ctx, run.options, run.hook)
        plan.append((job, None if selected else _outcome(job, SKIPPED, reason=reason)))
    return plan


def _outcome(job: Job, outcome: str, **kw: Any) -> JobOutcome:
    state = job.raw_state or (job.state.value if job.state else None)
    return JobOutcome(
        job_id=job.id,
        name=job.display_name,
        step_key=job.step_key,
        state=state,
        outcome=outcome,
        web_url=job.web_url,
        **kw,
    )


# Errors after which a PUT may have been executed: a 2xx with an unreadable body is one too.
_UNKNOWN_ERRORS = (APIConnectionError, ServerError, InvalidResponseError)
_TRANSIENT_ERRORS = (APIConnectionError, ServerError, RateLimitError)


def _is_abort(exc: BaseException) -> bool:
    return isinstance(exc, UnprocessableEntityError) and "cancel" in exc.message.lower()


def _lost_race(exc: BuildkiteError) -> bool:
    """Buildkite's answer to retrying a job that was retried after we listed it."""
    return isinstance(exc, BadRequestError) and exc.already_retried


def _after_error(job: Job, exc: BuildkiteError) -> JobOutcome:
    message = exc.message if isinstance(exc, APIStatusError) else str(exc)
    if isinstance(exc, RateLimitError):
        if exc.reset_after is not None and exc.reset_after > exc.waited:
            message = (
                f"rate limited: the limit resets in {exc.reset_after:g}s, longer than the client"
                f" waits (gave up after {exc.waited:g}s): {message}"
            )
        else:
            message = f"still rate limited after waiting {exc.waited:g}s: {message}"
    status = exc.status_code if isinstance(exc, APIStatusError) else None
    return _outcome(job, FAILED, reason=message, status_code=status)


def _after_race(job: Job, exc: BuildkiteError, fresh: Job | BuildkiteError) -> JobOutcome:
    """A retry refused because the job was retried meanwhile (by someone, or automatically)."""
    if isinstance(fresh, Job) and fresh.retried:
        new = fresh.retried_in_job_id
        return _outcome(
            job,
            SKIPPED,
            reason=f"already retried as job {new or '?'} (by someone else or an automatic retry,"
            " after the listing)",
        )
    return _after_error(job, exc)


def _after_reread(job: Job, exc: BuildkiteError, fresh: Job | BuildkiteError) -> JobOutcome:
    """The outcome of a retry whose answer was lost, from a fresh read of the old job."""
    if isinstance(fresh, Job) and fresh.retried_in_job_id:
        return _outcome(job, RETRIED, new_job_id=fresh.retried_in_job_id, recovered=True)
    if isinstance(fresh, Job) and fresh.retried:
        return _outcome(job, RETRIED, recovered=True, reason="retried; new job id not shown")
    why = (
        "the job does not show as retried"
        if isinstance(fresh, Job)
        else f"re-reading it failed ({fresh})"
    )
    return _outcome(
        job,
        FAILED,
        reason=f"outcome unknown: the retry's answer was lost ({type(exc).__name__}) and {why};"
        " not sent again to avoid retrying twice: running retry-failed again is safe (a job"
        " that does not show as retried is picked up again)",
    )


def _not_sent(job: Job, why: str) -> JobOutcome:
    return _outcome(job, SKIPPED, reason=f"not sent: the run stopped ({why})")


def _finish(
    run: _Run, planned: list[tuple[Job, JobOutcome | None]], results: dict[str, JobOutcome]
) -> list[JobOutcome]:
    return [skip if skip is not None else results[job.id] for job, skip in planned]


def _report(
    run: _Run,
    outcomes: Sequence[JobOutcome],
    aborted: str | None = None,
    *,
    interrupted: bool = False,
) -> RetryReport:
    return RetryReport(
        org=run.ctx.org,
        pipeline=run.ctx.pipeline,
        build=run.ctx.build,
        current_job_id=run.ctx.job_id,
        outcomes=tuple(outcomes),
        dry_run=run.dry_run,
        waited=run.wait and not run.dry_run and aborted is None,
        aborted=aborted,
        interrupted=interrupted,
    )


_INTERRUPTED = "interrupted (Ctrl-C)"


def _interrupted(run: _Run, outcomes: Sequence[JobOutcome], *, waited: bool) -> RetryInterrupted:
    report = replace(_report(run, outcomes, interrupted=True), waited=waited)
    return RetryInterrupted(report)


def _abort(run: _Run, outcomes: Sequence[JobOutcome], why: str) -> RetryAbortedError:
    message = f"Buildkite refused to retry jobs of {run.ctx.pipeline} #{run.ctx.build}: {why}"
    return RetryAbortedError(message, _report(run, outcomes, aborted=message))


class _Waiting:
    """Book-keeping of the retried jobs being waited for."""

    def __init__(self, outcomes: list[JobOutcome]) -> None:
        self.outcomes = outcomes
        # index in outcomes -> the job id to poll (it moves on when Buildkite auto-retries)
        self.pending = {
            i: o.new_job_id for i, o in enumerate(outcomes) if o.outcome == RETRIED and o.new_job_id
        }
        self._last: tuple[str, float] | None = None  # last progress message and when

    def update(self, index: int, job: Job) -> None:
        state = job.raw_state or (job.state.value if job.state else None)
        if job.is_finished and job.retried and job.retried_in_job_id and state != "passed":
            self.pending[index] = job.retried_in_job_id  # an automatic retry: follow it
            self.outcomes[index] = replace(self.outcomes[index], final_state=state, finished=False)
            return
        self.outcomes[index] = replace(
            self.outcomes[index], final_state=state, finished=job.is_finished, final_job_id=job.id
        )
        if job.is_finished:
            del self.pending[index]

    def poll_failed(self, run: _Run, index: int, job_id: str, exc: BuildkiteError) -> None:
        """Poll again after a passing failure; give up on this job (not the run) otherwise."""
        if isinstance(exc, _TRANSIENT_ERRORS):
            run.progress(f"could not poll job {job_id} ({exc}); trying again")
            return
        # The retries are sent: losing the whole report over one unreadable job would be worse.
        del self.pending[index]
        why = f"stopped waiting: polling job {job_id} failed ({exc})"
        self.outcomes[index] = replace(self.outcomes[index], finished=False, reason=why)
        run.progress(why)

    def report(self, run: _Run, elapsed: float) -> None:
        """Tell progress when a job finished, and at least every ``PROGRESS_EVERY`` seconds."""
        done = [o for o in self.outcomes if o.outcome == RETRIED and o.finished]
        passed = sum(1 for o in done if o.final_state == "passed")
        counts = f"{len(done)} finished ({passed} passed), {len(self.pending)} still running"
        if self._last and self._last[0] == counts and elapsed - self._last[1] < PROGRESS_EVERY:
            return  # a long wait stays visible without a line per poll
        self._last = (counts, elapsed)
        run.progress(f"waiting for retried jobs: {counts} after {elapsed:.0f}s")

    def done(self, run: _Run, elapsed: float) -> None:
        """The last progress line: all finished, or the timeout."""
        if not any(o.outcome == RETRIED for o in self.outcomes):
            return
        done = [o for o in self.outcomes if o.outcome == RETRIED and o.finished]
        passed = sum(1 for o in done if o.final_state == "passed")
        counts = f"{len(done)} finished ({passed} passed)"
        if self.pending:
            run.progress(
                f"stopped waiting at the {run.wait_timeout:g}s timeout: {counts},"
                f" {len(self.pending)} still running"
            )
        else:
            run.progress(f"done waiting after {elapsed:.0f}s: {counts}")


# -- sync ---------------------------------------------------------------------------------------


def retry_failed_siblings(
    client: JobsClient,
    ctx: BuildContext,
    *,
    states: Iterable[str] = ("failed", "timed_out"),
    include_soft_failed: bool = False,
    step_keys: Iterable[str] | None = None,
    exclude_self: bool = True,
    max_attempts: int | None = None,
    dry_run: bool = False,
    concurrency: int = 4,
    wait: bool = False,
    wait_timeout: float = 600.0,
    poll_interval: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    hook: SelectHook | None = None,
    progress: Progress | None = None,
) -> RetryReport:
    """Retry each failed job of the build once, in parallel; see ``select_job`` for the choice.

    Lists the latest attempts only (``include_retried_jobs=false``). With ``wait=True`` polls
    the new jobs every ``poll_interval`` seconds until they finish or ``wait_timeout`` passes.
    ``hook(job, ctx)`` may override the default choice (see ``select_job``); ``progress``
    receives one-line status messages. Raises ``RetryAbortedError`` (with ``.report``) when
    Buildkite refuses retries for the whole build (422, canceled build).
    """
    options = RetryOptions.build(
        states=states,
        include_soft_failed=include_soft_failed,
        step_keys=step_keys,
        exclude_self=exclude_self,
        max_attempts=max_attempts,
    )
    run = _make_run(
        ctx, options, dry_run=dry_run, concurrency=concurrency, wait=wait,
        wait_timeout=wait_timeout, poll_interval=poll_interval, hook=hook, progress=progress,
    )  # fmt: skip
    jobs = client.iter_jobs(
        ctx.pipeline, ctx.build, state=list(options.states), include_retried_jobs=False
    )
    planned = _plan(jobs, run)
    chosen = [job for job, skip in planned if skip is None]
    if run.dry_run:
        return _report(run, [skip or _outcome(job, WOULD_RETRY) for job, skip in planned])
    run.progress(f"retrying {len(chosen)} job(s) of {ctx.pipeline} #{ctx.build}")
    stop = threading.Event()
    why: list[str] = []

    def one(job: Job) -> JobOutcome:
        if stop.is_set():
            return _not_sent(job, why[0])
        try:
            outcome = _retry_one(client, run, job)
        except KeyboardInterrupt:
            why.insert(0, _INTERRUPTED)
            stop.set()
            raise
        if isinstance(outcome, BuildkiteError):
            why.append(outcome.message if isinstance(outcome, APIStatusError) else str(outcome))
            stop.set()
            return _not_sent(job, why[0])
        run.progress(_describe(outcome))
        return outcome

    interrupted = False
    with ThreadPoolExecutor(max_workers=run.concurrency) as pool:
        futures = [pool.submit(one, job) for job in chosen]
        try:
            done = [future.result() for future in futures]
        except KeyboardInterrupt:
            # Send nothing more; the retries in flight finish so that the report is true.
            interrupted = True
            if _INTERRUPTED not in why:
                why.insert(0, _INTERRUPTED)
            stop.set()
            done = [_result(future, job) for future, job in zip(futures, chosen, strict=True)]
    outcomes = _finish(run, planned, {o.job_id: o for o in done})
    if interrupted:
        raise _interrupted(run, outcomes, waited=False)
    if stop.is_set():
        raise _abort(run, outcomes, why[0])
    if run.wait:
        outcomes, interrupted = _wait(client, run, outcomes, sleep, clock)
        if interrupted:
            raise _interrupted(run, outcomes, waited=True)
    return _report(run, outcomes)


def _result(future: Future[JobOutcome], job: Job) -> JobOutcome:
    """A worker's outcome after Ctrl-C; a retry cut off while being sent is unknown."""
    try:
        return future.result()
    except KeyboardInterrupt:
        return _outcome(
            job,
            FAILED,
            reason="outcome unknown: interrupted while the retry was being sent; running"
            " retry-failed again is safe (a job that does not show as retried is picked up again)",
        )


def _retry_one(client: JobsClient, run: _Run, job: Job) -> JobOutcome | BuildkiteError:
    """Retry ``job`` once; an abort-class error is returned, not raised."""
    where: dict[str, Any] = {"pipeline": run.ctx.pipeline, "build": run.ctx.build}
    try:
        new = client.retry_job(job.id, **where)
    except BuildkiteError as exc:
        if not isinstance(exc, _UNKNOWN_ERRORS) and not _lost_race(exc):
            return exc if _is_abort(exc) else _after_error(job, exc)
        try:
            fresh: Job | BuildkiteError = client.get_job(job.id, **where)
        except BuildkiteError as read_error:
            fresh = read_error
        return _after_race(job, exc, fresh) if _lost_race(exc) else _after_reread(job, exc, fresh)
    return _outcome(job, RETRIED, new_job_id=new.id)


def _wait(
    client: JobsClient,
    run: _Run,
    outcomes: list[JobOutcome],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> tuple[list[JobOutcome], bool]:
    """The outcomes with their final states, and whether Ctrl-C stopped the wait."""
    waiting = _Waiting(list(outcomes))
    start, elapsed = clock(), 0.0
    try:
        while waiting.pending:
            for index, job_id in list(waiting.pending.items()):
                try:
                    job = client.get_job(job_id, pipeline=run.ctx.pipeline, build=run.ctx.build)
                except BuildkiteError as exc:
                    waiting.poll_failed(run, index, job_id, exc)
                    continue
                waiting.update(index, job)
            elapsed = clock() - start
            if not waiting.pending or elapsed >= run.wait_timeout:
                break
            waiting.report(run, elapsed)
            sleep(min(run.poll_interval, run.wait_timeout - elapsed))
    except KeyboardInterrupt:
        return waiting.outcomes, True
    waiting.done(run, elapsed)
    return waiting.outcomes, False


def _describe(o: JobOutcome) -> str:
    if o.outcome == RETRIED:
        how = " (answer lost; read back from the job)" if o.recovered else ""
        return f"retried {o.name} ({o.job_id} -> {o.new_job_id}){how}"
    return f"could not retry {o.name} ({o.job_id}): {o.reason}"


# -- async --------------------------------------------------------------------------------------


async def async_retry_failed_siblings(
    client: AsyncJobsClient,
    ctx: BuildContext,
    *,
    states: Iterable[str] = ("failed", "timed_out"),
    include_soft_failed: bool = False,
    step_keys: Iterable[str] | None = None,
    exclude_self: bool = True,
    max_attempts: int | None = None,
    dry_run: bool = False,
    concurrency: int = 4,
    wait: bool = False,
    wait_timeout: float = 600.0,
    poll_interval: float = 5.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    hook: SelectHook | None = None,
    progress: Progress | None = None,
) -> RetryReport:
    """The async twin of ``retry_failed_siblings`` (same choice, same report, same errors)."""
    options = RetryOptions.build(
        states=states,
        include_soft_failed=include_soft_failed,
        step_keys=step_keys,
        exclude_self=exclude_self,
        max_attempts=max_attempts,
    )
    run = _make_run(
        ctx, options, dry_run=dry_run, concurrency=concurrency, wait=wait,
        wait_timeout=wait_timeout, poll_interval=poll_interval, hook=hook, progress=progress,
    )  # fmt: skip
    jobs = [
        job
        async for job in client.iter_jobs(
            ctx.pipeline, ctx.build, state=list(options.states), include_retried_jobs=False
        )
    ]
    planned = _plan(jobs, run)
    chosen = [job for job, skip in planned if skip is None]
    if run.dry_run:
        return _report(run, [skip or _outcome(job, WOULD_RETRY) for job, skip in planned])
    run.progress(f"retrying {len(chosen)} job(s) of {ctx.pipeline} #{ctx.build}")
    semaphore = asyncio.Semaphore(run.concurrency)
    why: list[str] = []

    async def one(job: Job) -> JobOutcome:
        async with semaphore:
            if why:
                return _not_sent(job, why[0])
            outcome = await _async_retry_one(client, run, job)
        if isinstance(outcome, BuildkiteError):
            why.append(outcome.message if isinstance(outcome, APIStatusError) else str(outcome))
            return _not_sent(job, why[0])
        run.progress(_describe(outcome))
        return outcome

    done = await asyncio.gather(*(one(job) for job in chosen))
    outcomes = _finish(run, planned, {o.job_id: o for o in done})
    if why:
        raise _abort(run, outcomes, why[0])
    if run.wait:
        outcomes = await _async_wait(client, run, outcomes, sleep, clock)
    return _report(run, outcomes)


async def _async_retry_one(
    client: AsyncJobsClient, run: _Run, job: Job
) -> JobOutcome | BuildkiteError:
    where: dict[str, Any] = {"pipeline": run.ctx.pipeline, "build": run.ctx.build}
    try:
        new = await client.retry_job(job.id, **where)
    except BuildkiteError as exc:
        if not isinstance(exc, _UNKNOWN_ERRORS) and not _lost_race(exc):
            return exc if _is_abort(exc) else _after_error(job, exc)
        try:
            fresh: Job | BuildkiteError = await client.get_job(job.id, **where)
        except BuildkiteError as read_error:
            fresh = read_error
        return _after_race(job, exc, fresh) if _lost_race(exc) else _after_reread(job, exc, fresh)
    return _outcome(job, RETRIED, new_job_id=new.id)


async def _async_wait(
    client: AsyncJobsClient,
    run: _Run,
    outcomes: list[JobOutcome],
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
) -> list[JobOutcome]:
    waiting = _Waiting(list(outcomes))
    start, elapsed = clock(), 0.0

    semaphore = asyncio.Semaphore(run.concurrency)

    async def poll(index: int, job_id: str) -> None:
        try:
            async with semaphore:
                job = await client.get_job(job_id, pipeline=run.ctx.pipeline, build=run.ctx.build)
        except BuildkiteError as exc:
            waiting.poll_failed(run, index, job_id, exc)
            return
        waiting.update(index, job)

    while waiting.pending:
        await asyncio.gather(*(poll(i, j) for i, j in list(waiting.pending.items())))
        elapsed = clock() - start
        if not waiting.pending or elapsed >= run.wait_timeout:
            break
        waiting.report(run, elapsed)
        await sleep(min(run.poll_interval, run.wait_timeout - elapsed))
    waiting.done(run, elapsed)
    return waiting.outcomes
