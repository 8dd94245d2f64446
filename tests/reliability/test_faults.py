"""The fault matrix: every fault kind against iter_jobs, retry_failed_siblings and downloads.

Each case runs against the fake on a loopback port with one fault kind switched on at a rate
that makes it hit many times per run; each asserts the invariant and that the fault did hit.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_bkjobs import BuildkiteError, JobsClient
from pytest_bkjobs.ci import BuildContext, retry_failed_siblings
from pytest_bkjobs.fake import LogSource

from ._support import FAULTS, PATIENT, Rig, leftovers, make_rig, record_figures

pytestmark = pytest.mark.slow

JOBS = 500
PER_PAGE = 5  # 100 pages: many requests, so each fault hits many times
FAILED_JOBS = 50
MIN_HITS = 10  # "many times per run"
# Slow answers cost real time (a client timeout each): fewer of them keep the suite fast.
MIN_SLOW_HITS = 5
# (rate of the fault, rate of slow answers) per check: a check that makes fewer requests
# needs a higher rate for as many hits.
ITER_RATES = (0.25, 0.07)  # ~100 requests
RETRY_RATES = (0.4, 0.15)  # ~60 requests
DOWNLOAD_RATES = (0.3, 0.15)  # ~70 requests


def rate_of(fault: str, rates: tuple[float, float]) -> float:
    return rates[1] if fault == "slow" else rates[0]


def enough(fault: str) -> int:
    return MIN_SLOW_HITS if fault == "slow" else MIN_HITS


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Rig:
    return make_rig(request.param, seed=sum(map(ord, request.node.name)))


# -- iter_jobs over 500 jobs --------------------------------------------------------------------


@pytest.mark.parametrize("rig", FAULTS, indirect=True)
def test_iter_jobs_is_exact_under_faults(rig: Rig) -> None:
    fake = rig.fake
    build = fake.add_build("big")
    for i in range(JOBS):
        exit_status = 0 if i % 7 else 1
        fake.add_job("big", build, name=f"job {i}", step_key=f"k{i % 13}", exit_status=exit_status)
    with (
        fake.serve() as url,
        JobsClient(token=fake.token, org=fake.org, base_url=url, **rig.client_kwargs()) as client,
    ):
        expected = [job.raw for job in client.iter_jobs("big", build, per_page=PER_PAGE)]
        clean_requests = len(fake.requests)
        fake.clear_requests()
        rig.arm(rate_of(rig.fault, ITER_RATES), seed=1)
        got = [job.raw for job in client.iter_jobs("big", build, per_page=PER_PAGE)]
    assert len(expected) == JOBS
    assert got == expected
    hits = rig.injected()
    assert hits >= enough(rig.fault), rig.outcomes()
    record_figures(
        f"iter_jobs-{rig.fault}",
        check="iter_jobs over 500 jobs",
        fault=rig.fault,
        injected=hits,
        requests=len(fake.requests),
        fault_free_requests=clean_requests,
        result=f"{len(got)} jobs, identical to the fault-free listing",
    )


# -- retry_failed_siblings over 50 failed jobs --------------------------------------------------


@pytest.mark.parametrize("rig", FAULTS, indirect=True)
def test_retry_failed_siblings_retries_each_job_exactly_once(rig: Rig) -> None:
    fake = rig.fake
    build = fake.add_build("app")
    current = fake.add_job("app", build, name="bkjobs", step_key="bkjobs", state="running")
    failed = [
        fake.add_job("app", build, name=f"test {i}", step_key="tests", exit_status=1)
        for i in range(FAILED_JOBS)
    ]
    fake.add_job("app", build, name="lint", exit_status=0)
    ctx = BuildContext(org=fake.org, pipeline="app", build=build, job_id=current)
    rounds: list[dict[str, int]] = []
    # A PUT lost before Buildkite executed it (502, reset, ...) is reported "outcome unknown",
    # never re-sent; running the step again picks up exactly the jobs not retried yet.
    rig.arm(rate_of(rig.fault, RETRY_RATES), seed=2)
    with (
        fake.serve() as url,
        JobsClient(token=fake.token, org=fake.org, base_url=url, **rig.client_kwargs()) as client,
    ):
        for _ in range(30):
            report = retry_failed_siblings(client, ctx, concurrency=4, sleep=rig.clock.sleep)
            rig.slow.wait_idle()  # a slow PUT is executed after the client gave up on it
            calls = {job_id: fake.retry_calls(job_id) for job_id in failed}
            assert max(calls.values()) <= 1, "a job was retried twice"
            for outcome in report.outcomes:
                if outcome.outcome == "retried":
                    assert calls[outcome.job_id] == 1
                    assert outcome.new_job_id == fake.job(outcome.job_id)["retried_in_job_id"]
            assert current not in {o.job_id for o in report.retried}
            rounds.append(
                {
                    "retried": len(report.retried),
                    "unknown": len(report.failed),
                    "calls": sum(calls.values()),
                }
            )
            if all(calls.values()):
                break
    assert all(fake.retry_calls(job_id) == 1 for job_id in failed)
    assert fake.retry_calls(current) == 0
    assert not any(r.status == 400 for r in fake.requests if r.method == "PUT")
    hits = rig.injected()
    put_hits = rig.injected("PUT")
    assert hits >= enough(rig.fault), rig.outcomes()
    if rig.fault != "slow":
        assert put_hits >= 3, rig.outcomes("PUT")
    record_figures(
        f"retry-{rig.fault}",
        check="retry_failed_siblings over 50 failed jobs",
        fault=rig.fault,
        injected=hits,
        injected_on_put=put_hits,
        requests=len(fake.requests),
        runs=len(rounds),
        result=f"each of {FAILED_JOBS} jobs retried exactly once server-side over"
        f" {len(rounds)} run(s); never twice",
    )


# -- download_job_log ---------------------------------------------------------------------------

LOG = b"".join(
    b"\x1b_bk;t=%d\x07line %06d of a build log \xe2\x9c\x93\r\n" % (1700000000000 + i, i)
    for i in range(6000)
)  # ~250 KiB: several 64 KiB chunks
PREVIOUS = b"the previous download, to be replaced whole or kept whole\n"
DOWNLOADS = 60


class CutLog(LogSource):
    """A log whose body is cut off mid-stream on a seeded share of requests."""

    def __init__(self, data: bytes, rate: float, seed: int) -> None:
        self.data = data
        self.rate = rate
        self.rng = random.Random(seed)
        self.cuts = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        stop = self.size if end is None else end
        cut = self.rng.random() < self.rate
        for offset in range(start, stop, 65536):
            if cut and offset > start:
                self.cuts += 1
                raise ConnectionResetError("fake: the connection broke mid-body")
            yield self.data[offset : min(offset + 65536, stop)]


@pytest.mark.parametrize("rig", [*FAULTS, "cut-mid-body"], indirect=True)
def test_download_leaves_the_complete_file_or_the_previous_one(rig: Rig, tmp_path: Path) -> None:
    fake = rig.fake
    build = fake.add_build("app")
    cut = rig.fault == "cut-mid-body"
    log = CutLog(LOG, rate=0.25, seed=3) if cut else LOG
    job = fake.add_job("app", build, name="tests", exit_status=1, log=log)
    dest = tmp_path / "job.log"
    dest.write_bytes(PREVIOUS)
    if not cut:
        rig.arm(rate_of(rig.fault, DOWNLOAD_RATES), seed=4)
    kwargs = {**rig.client_kwargs(), "max_retries": 1}  # so that some downloads fail
    wanted = hashlib.sha256(LOG).hexdigest()
    done = failed = 0
    with (
        fake.serve() as url,
        JobsClient(token=fake.token, org=fake.org, base_url=url, **kwargs) as client,
    ):
        for _ in range(DOWNLOADS):
            before = dest.read_bytes()
            try:
                written = client.download_job_log(job, dest)
            except BuildkiteError:
                failed += 1
                assert dest.read_bytes() == before
            else:
                done += 1
                assert written == len(LOG)
                assert hashlib.sha256(dest.read_bytes()).hexdigest() == wanted
            assert leftovers(tmp_path, lambda p: p == dest) == []
    hits = log.cuts if isinstance(log, CutLog) else rig.injected()
    assert hits >= enough(rig.fault)
    assert done > 0
    record_figures(
        f"download-{rig.fault}",
        check="download_job_log (250 KiB, max_retries=1)",
        fault=rig.fault,
        injected=hits,
        requests=len(fake.requests),
        downloads=DOWNLOADS,
        complete=done,
        failed_kept_previous=failed,
        result=f"{done} complete files, {failed} failures left the previous file;"
        " no partial or temporary file",
    )


# -- the async client, every fault kind at once --------------------------------------------------


def test_async_client_under_mixed_faults() -> None:
    import asyncio

    from pytest_bkjobs import AsyncJobsClient
    from pytest_bkjobs.ci import async_retry_failed_siblings

    rig = make_rig("502")
    fake = rig.fake
    build = fake.add_build("app")
    current = fake.add_job("app", build, name="bkjobs", state="running")
    failed = [fake.add_job("app", build, name=f"t{i}", exit_status=1) for i in range(FAILED_JOBS)]
    for i in range(JOBS - FAILED_JOBS):
        fake.add_job("app", build, name=f"ok {i}", exit_status=0)
    ctx = BuildContext(org=fake.org, pipeline="app", build=build, job_id=current)

    async def run(url: str) -> tuple[list[dict[str, object]], list[dict[str, object]], int]:
        async with AsyncJobsClient(
            token=fake.token, org=fake.org, base_url=url, sleep=rig.clock.async_sleep, **PATIENT
        ) as client:
            expected = [job.raw async for job in client.iter_jobs("app", build, per_page=PER_PAGE)]
            fake.set_rate_limits(org=6, user=4, window=60)
            fake.random_faults(
                0.3, seed=9, kinds=("error", "drop", "lost"), statuses=(502, 503, 504)
            )
            got = [job.raw async for job in client.iter_jobs("app", build, per_page=PER_PAGE)]
            runs = 0
            while not all(fake.retry_calls(job_id) for job_id in failed) and runs < 30:
                runs += 1
                await async_retry_failed_siblings(
                    client, ctx, concurrency=8, sleep=rig.clock.async_sleep
                )
                assert max(fake.retry_calls(job_id) for job_id in failed) <= 1
            return expected, got, runs

    with fake.serve() as url:
        expected, got, runs = asyncio.run(run(url))
    assert got == expected
    assert len(got) == JOBS + 1
    assert all(fake.retry_calls(job_id) == 1 for job_id in failed)
    outcomes = rig.outcomes()
    hits = {kind: outcomes[kind] for kind in ("429", "502", "503", "504", "dropped", "lost")}
    assert all(count >= 3 for count in hits.values()), hits
    record_figures(
        "async-mixed",
        check="AsyncJobsClient: iter_jobs over 500 jobs, then async_retry_failed_siblings",
        fault="429 (org and user), 502, 503, 504, reset, lost, all at once",
        injected=sum(hits.values()),
        requests=len(fake.requests),
        result=f"listing identical to the fault-free one; each of {FAILED_JOBS} jobs retried"
        f" exactly once over {runs} run(s)",
    )
