"""pytest_bkjobs.ci: build context, current-job helpers, job selection and retry_failed_siblings.

These tests drive both clients (``make_client``) against a small in-test Buildkite whose faults
are exact; the end-to-end tests against the real fake live in test_cli_e2e.py.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_bkjobs import ConfigurationError, InvalidArgumentError, Job, JobsClient
from pytest_bkjobs.ci import (
    BuildContext,
    NotInBuildkiteError,
    RetryAbortedError,
    RetryInterrupted,
    RetryOptions,
    RetryReport,
    async_retry_failed_siblings,
    current_job,
    current_job_env,
    current_job_log,
    download_current_job_log,
    retry_failed_siblings,
    select_job,
)
from tests.conftest import AsyncAsSync

CTX = BuildContext(org="acme", pipeline="app", build=7, job_id="self")
STEP_ENV = {
    "BUILDKITE": "true",
    "BUILDKITE_ORGANIZATION_SLUG": "acme",
    "BUILDKITE_PIPELINE_SLUG": "app",
    "BUILDKITE_BUILD_NUMBER": "7",
    "BUILDKITE_BUILD_ID": "0190-build",
    "BUILDKITE_JOB_ID": "self",
    "BUILDKITE_STEP_KEY": "",
    "BUILDKITE_RETRY_COUNT": "0",
}


# -- BuildContext -------------------------------------------------------------------------------


def test_from_env_reads_the_step() -> None:
    ctx = BuildContext.from_env({**STEP_ENV, "BUILDKITE_PARALLEL_JOB": "2"} | {"X": "1"})
    assert ctx == BuildContext(
        org="acme",
        pipeline="app",
        build=7,
        job_id="self",
        build_id="0190-build",
        step_key=None,
        retry_count=0,
        parallel_job=2,
        parallel_job_count=None,
    )


def test_from_env_names_each_missing_variable() -> None:
    with pytest.raises(NotInBuildkiteError) as info:
        BuildContext.from_env({"BUILDKITE_PIPELINE_SLUG": "app", "BUILDKITE_JOB_ID": " "})
    assert info.value.missing == [
        "BUILDKITE_ORGANIZATION_SLUG",
        "BUILDKITE_BUILD_NUMBER",
        "BUILDKITE_JOB_ID",
    ]
    message = str(info.value)
    assert "BUILDKITE_ORGANIZATION_SLUG, BUILDKITE_BUILD_NUMBER, BUILDKITE_JOB_ID are not set" in (
        message
    )
    assert "--pipeline" in message
    assert isinstance(info.value, ConfigurationError)


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in STEP_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BUILDKITE_STEP_KEY", "tests")
    assert BuildContext.from_env().step_key == "tests"


@pytest.mark.parametrize("number", ["abc", "0", "-3", "7.0", "0190-build"])
def test_from_env_rejects_a_build_number_that_is_not_one(number: str) -> None:
    with pytest.raises(ConfigurationError, match="BUILDKITE_BUILD_NUMBER must be the build number"):
        BuildContext.from_env({**STEP_ENV, "BUILDKITE_BUILD_NUMBER": number})


def test_from_env_rejects_a_bad_count() -> None:
    with pytest.raises(ConfigurationError, match="BUILDKITE_RETRY_COUNT must be an integer"):
        BuildContext.from_env({**STEP_ENV, "BUILDKITE_RETRY_COUNT": "x"})


# -- current job --------------------------------------------------------------------------------

JOB_PATH = "/v2/organizations/acme/pipelines/app/builds/7/jobs/self"


def current_job_handler(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == JOB_PATH:
        return httpx.Response(200, json={"id": "self", "type": "script", "state": "running"})
    if path == JOB_PATH + "/env":
        return httpx.Response(200, json={"env": {"CI": "true", "MY_TOKEN": "s3cret"}})
    if path == JOB_PATH + "/log" and request.headers.get("accept") == "text/plain":
        return httpx.Response(200, text="\x1b_bk;t=1\x07~~~ Running\r\npartial")
    return httpx.Response(404, json={"message": f"No route {path}"})


def test_current_job_helpers_use_build_scoped_routes(make_client: Any, tmp_path: Path) -> None:
    client = make_client(current_job_handler)
    if isinstance(client, AsyncAsSync):
        from pytest_bkjobs import ci

        raw = client._client
        job = client._run(ci.async_current_job(raw, CTX))
        env = client._run(ci.async_current_job_env(raw, CTX))
        log = client._run(ci.async_current_job_log(raw, CTX))
        size = client._run(ci.async_download_current_job_log(raw, CTX, tmp_path / "job.log"))
    else:
        job = current_job(client, CTX)
        env = current_job_env(client, CTX)
        log = current_job_log(client, CTX)
        size = download_current_job_log(client, CTX, tmp_path / "job.log")
    assert job.id == "self"
    assert env == {"CI": "true", "MY_TOKEN": "s3cret"}
    assert log == "\x1b_bk;t=1\x07~~~ Running\r\npartial"
    assert (tmp_path / "job.log").read_bytes() == log.encode()
    assert size == len(log.encode())


def test_current_job_needs_a_job_id(make_client: Any) -> None:
    client = make_client(current_job_handler)
    with pytest.raises(InvalidArgumentError, match="has no job_id"):
        current_job(client, BuildContext(org="acme", pipeline="app", build=7))


# -- select_job ---------------------------------------------------------------------------------


def job(**fields: Any) -> Job:
    data = {"id": "j1", "type": "script", "state": "failed", "name": "tests", "step_key": "test"}
    data.update(fields)
    return Job.from_api(data)


OPTS = RetryOptions.build()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"id": "self"}, "the current job"),
        ({"type": "waiter", "state": None}, "a waiter job, not a script job"),
        ({"type": "manual"}, "a manual job, not a script job"),
        ({"retried": True, "retried_in_job_id": "j2"}, "already retried (as job j2)"),
        ({"retried": "true"}, "already retried"),
        ({"state": "running"}, "listed as failed early"),
        ({"state": "passed"}, "its own state is passed"),
        ({"state": "canceled"}, "not failed/timed_out"),
        ({"soft_failed": True}, "a soft failure"),
        ({"retries_count": 2}, None),
    ],
)
def test_select_job_default_rules(fields: dict[str, Any], reason: str | None) -> None:
    selected, why = select_job(job(**fields), CTX, OPTS)
    assert selected is (reason is None)
    if reason is not None:
        assert why is not None
        assert reason in why


def test_select_job_options() -> None:
    soft = job(soft_failed=True)
    assert select_job(soft, CTX, RetryOptions.build(include_soft_failed=True)) == (True, None)
    tired = job(retries_count=2)
    assert select_job(tired, CTX, RetryOptions.build(max_attempts=3)) == (True, None)
    selected, why = select_job(tired, CTX, RetryOptions.build(max_attempts=2))
    assert not selected
    assert why == "retried 2 times already (max attempts 2)"
    keys = RetryOptions.build(step_keys=["lint", "test-*"])
    assert select_job(job(step_key="test-unit"), CTX, keys) == (True, None)
    assert select_job(job(step_key="test"), CTX, keys)[1] == (
        "step key test matches none of lint, test-*"
    )
    assert select_job(job(step_key=None), CTX, keys)[0] is False
    canceled = RetryOptions.build(states=["canceled"])
    assert select_job(job(state="canceled"), CTX, canceled) == (True, None)
    other_self = RetryOptions.build(exclude_self=False)
    assert select_job(job(id="self"), CTX, other_self) == (True, None)


def test_select_job_hook_overrides_preferences_not_safety() -> None:
    calls: list[str] = []

    def hook(j: Job, ctx: BuildContext) -> bool | None:
        calls.append(j.id)
        return {"a": True, "b": False}.get(j.id)

    assert select_job(job(id="a", soft_failed=True), CTX, OPTS, hook) == (True, None)
    assert select_job(job(id="b"), CTX, OPTS, hook) == (
        False,
        "declined by a bkjobs_select_job hook",
    )
    assert select_job(job(id="c", soft_failed=True), CTX, OPTS, hook)[0] is False
    assert select_job(job(id="a", state="running"), CTX, OPTS, hook)[0] is False
    assert select_job(job(id="self"), CTX, OPTS, hook)[0] is False
    assert calls == ["a", "b", "c"]  # never asked about unsafe jobs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"states": ["finished"]}, "states must be job states"),
        ({"states": []}, "states must be job states"),
        ({"step_keys": [""]}, "step_keys must be non-empty glob patterns"),
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"max_attempts": True}, "max_attempts must be an integer >= 1"),
    ],
)
def test_retry_options_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        RetryOptions.build(**kwargs)


def test_retry_options_accept_a_single_string() -> None:
    assert RetryOptions.build(states="failed", step_keys="t*").states == ("failed",)
    assert RetryOptions.build(step_keys="t*").step_keys == ("t*",)


# -- a small Buildkite with exact faults ---------------------------------------------------------

LIST_PATH = "/v2/organizations/acme/pipelines/app/builds/7/jobs"


class MiniBuildkite:
    """Jobs of one build; retries executed server-side are counted in ``executed``."""

    def __init__(self, *jobs: dict[str, Any], finish_after: int = 1) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        for data in (
            {"id": "self", "type": "script", "state": "running", "name": "retry step"},
            *jobs,
        ):
            self.jobs[data["id"]] = {"type": "script", "name": data["id"], **data}
        self.faults: dict[str, list[str]] = {}  # job id -> faults of successive PUTs
        self.results: dict[str, str] = {}  # old job id -> final state of its retry
        self.finish_after = finish_after
        self.polls: Counter[str] = Counter()
        self.puts: Counter[str] = Counter()
        self.executed: Counter[str] = Counter()
        self.list_queries: list[str] = []

    def add(self, **data: Any) -> None:
        self.jobs[data["id"]] = {"type": "script", "name": data["id"], **data}

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == LIST_PATH:
            return self._list(request)
        match = re.fullmatch(LIST_PATH + r"/([^/]+)(/retry)?", path)
        if not match or match.group(1) not in self.jobs:
            return httpx.Response(404, json={"message": "No job found"})
        job_id = match.group(1)
        if match.group(2):
            return self._retry(request, job_id)
        return httpx.Response(200, json=self._render(self._poll(job_id)))

    def _render(self, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if not k.startswith("_")}

    def _list(self, request: httpx.Request) -> httpx.Response:
        self.list_queries.append(str(request.url.query, "ascii"))
        states = request.url.params.get_list("state[]")
        latest = request.url.params.get("include_retried_jobs") == "false"
        items = [
            self._render(j)
            for j in self.jobs.values()
            if (not states or j.get("_listed_as", j.get("state")) in states)
            and not (latest and j.get("retried"))
        ]
        return httpx.Response(200, json={"items": items, "links": {"self": str(request.url)}})

    def _poll(self, job_id: str) -> dict[str, Any]:
        data = self.jobs[job_id]
        source = data.get("_retry_of")
        if source and data["state"] not in ("passed", "failed"):
            self.polls[job_id] += 1
            if self.polls[job_id] >= self.finish_after and source in self.results:
                data["state"] = self.results[source]
            else:
                data["state"] = "running"
        return data

    def _execute(self, job_id: str) -> dict[str, Any]:
        self.executed[job_id] += 1
        old = self.jobs[job_id]
        new_id = f"{job_id}-r{self.executed[job_id]}"
        new = {
            "id": new_id,
            "type": "script",
            "name": old["name"],
            "step_key": old.get("step_key"),
            "state": "scheduled",
            "retries_count": (old.get("retries_count") or 0) + 1,
            "retry_source": {"job_id": job_id, "retry_type": "manual"},
            "_retry_of": job_id,
        }
        self.jobs[new_id] = new
        old.update(retried=True, retried_in_job_id=new_id)
        return new

    def _retry(self, request: httpx.Request, job_id: str) -> httpx.Response:
        assert request.method == "PUT"
        self.puts[job_id] += 1
        faults = self.faults.get(job_id) or []
        fault = faults.pop(0) if faults else "ok"
        if fault == "429":
            return httpx.Response(429, json={"message": "slow down", "scope": "rest", "reset": 2})
        if fault == "500":
            return httpx.Response(500, text="<html>oops</html>")
        if fault == "reset":
            raise httpx.ReadError("connection reset by peer", request=request)
        if fault == "422":
            return httpx.Response(
                422, json={"message": "Jobs from canceled builds cannot be retried"}
            )
        if self.jobs[job_id].get("retried"):
            return httpx.Response(400, json={"message": "Jobs can only be retried once"})
        new = self._execute(job_id)
        if fault == "lost":
            raise httpx.ReadTimeout("timed out", request=request)
        if fault == "502-executed":
            return httpx.Response(502, text="Bad Gateway")
        if fault == "garbled":  # executed, but a proxy mangled the answer
            return httpx.Response(200, text="<html>maintenance</html>")
        return httpx.Response(201, json=self._render(new))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


def run(client: Any, ctx: BuildContext = CTX, **kwargs: Any) -> RetryReport:
    """retry_failed_siblings or its async twin, depending on the client's flavour."""
    clock = Clock()
    kwargs.setdefault("clock", clock)
    messages: list[str] = []
    kwargs.setdefault("progress", messages.append)
    if isinstance(client, AsyncAsSync):

        async def sleep(delay: float) -> None:
            clock.sleep(delay)

        return client._run(  # type: ignore[no-any-return]
            async_retry_failed_siblings(client._client, ctx, sleep=sleep, **kwargs)
        )
    return retry_failed_siblings(client, ctx, sleep=clock.sleep, **kwargs)


def standard_build() -> MiniBuildkite:
    return MiniBuildkite(
        {"id": "unit", "state": "failed", "step_key": "test-unit", "exit_status": 1},
        {"id": "lint", "state": "timed_out", "step_key": "lint", "exit_status": -1},
        {"id": "early", "state": "running", "_listed_as": "failed", "step_key": "test-e2e"},
        {"id": "soft", "state": "failed", "soft_failed": True, "step_key": "docs"},
        {"id": "wait", "type": "waiter", "_listed_as": "failed"},
        {"id": "again", "state": "failed", "retries_count": 3, "step_key": "flaky"},
        {"id": "old", "state": "failed", "retried": True, "retried_in_job_id": "x"},
        {"id": "ok", "state": "passed"},
    )


def test_retry_failed_siblings_retries_exactly_the_right_jobs(make_client: Any) -> None:
    bk = standard_build()
    report = run(make_client(bk.handler), max_attempts=3)
    assert bk.list_queries == [
        "state%5B%5D=failed&state%5B%5D=timed_out&include_retried_jobs=false"
    ]
    assert [(o.job_id, o.outcome, o.new_job_id) for o in report.retried] == [
        ("unit", "retried", "unit-r1"),
        ("lint", "retried", "lint-r1"),
    ]
    assert {o.job_id: o.reason for o in report.skipped} == {
        "early": "its own state is running, not failed/timed_out (listed as failed early;"
        " it has not finished)",
        "soft": "a soft failure (use include_soft_failed / --include-soft-failed)",
        "wait": "a waiter job, not a script job",
        "again": "retried 3 times already (max attempts 3)",
    }
    assert bk.executed == Counter({"unit": 1, "lint": 1})
    assert report.exit_code == 0
    assert report.ok
    assert not report.waited


def test_the_current_job_is_never_retried(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "unit", "state": "failed"})
    bk.jobs["self"].update(state="failed")  # even when it reads failed (early failure)
    report = run(make_client(bk.handler))
    assert report.skipped[0].job_id == "self"
    assert report.skipped[0].reason == "the current job (a running job cannot retry itself)"
    assert "self" not in bk.puts


def test_dry_run_sends_no_retry(make_client: Any) -> None:
    bk = standard_build()
    report = run(make_client(bk.handler), dry_run=True, step_keys=["test-*"])
    assert [o.job_id for o in report.would_retry] == ["unit"]
    assert "step key lint matches none of test-*" in [o.reason for o in report.skipped]
    assert not bk.puts
    assert report.exit_code == 0
    assert report.summary().startswith("build app #7: 1 would be retried, 0 failed")


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize(
    ("fault", "outcome", "recovered"),
    [
        ("lost", "retried", True),  # executed, answer lost: read back, not re-sent
        ("502-executed", "retried", True),
        ("garbled", "retried", True),
        ("500", "failed", False),  # not executed: unknown, still not re-sent
        ("reset", "failed", False),  # sent, connection reset before an answer
        ("429", "retried", False),  # not executed: waited out and sent again
    ],
)
def test_exactly_once_under_faults(
    make_client: Any, fault: str, outcome: str, recovered: bool, concurrency: int
) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"}, {"id": "b", "state": "failed"})
    bk.faults = {"a": [fault], "b": [fault]}
    report = run(make_client(bk.handler), concurrency=concurrency)
    assert [(o.job_id, o.outcome, o.recovered) for o in report.outcomes] == [
        ("a", outcome, recovered),
        ("b", outcome, recovered),
    ]
    assert bk.puts == Counter({"a": 2, "b": 2} if fault == "429" else {"a": 1, "b": 1})
    if outcome == "retried":
        assert bk.executed == Counter({"a": 1, "b": 1})
        assert [o.new_job_id for o in report.retried] == ["a-r1", "b-r1"]
        assert report.exit_code == 0
    else:
        assert not bk.executed
        reason = report.failed[0].reason or ""
        assert reason.startswith("outcome unknown: the retry's answer was lost")
        assert "not sent again" in reason
        assert report.exit_code == 1


def test_a_job_retried_by_someone_else_is_skipped_not_failed(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"}, {"id": "b", "state": "failed"})

    def racing(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path.endswith("/a/retry"):
            # another retry (a person, or Buildkite's automatic one) landed between list and PUT
            bk.jobs["a"].update(retried=True, retried_in_job_id="a-auto")
        return bk.handler(request)

    report = run(make_client(racing))
    assert [(o.job_id, o.reason) for o in report.skipped] == [
        ("a", "already retried as job a-auto (by someone else or an automatic retry, after the"
         " listing)")
    ]  # fmt: skip
    assert [o.job_id for o in report.retried] == ["b"]
    assert not report.failed
    assert report.exit_code == 0


def test_a_refusal_to_retry_twice_of_a_job_that_is_not_retried_stays_a_failure(
    make_client: Any,
) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})

    def refusing(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(400, json={"message": "Jobs can only be retried once"})
        return bk.handler(request)

    report = run(make_client(refusing))
    assert [(o.job_id, o.reason, o.status_code) for o in report.failed] == [
        ("a", "Jobs can only be retried once", 400)
    ]
    assert report.exit_code == 1


def test_a_403_records_its_status(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})

    def forbidden(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(403, json={"message": "Forbidden"})
        return bk.handler(request)

    report = run(make_client(forbidden))
    assert [(o.outcome, o.status_code) for o in report.outcomes] == [("failed", 403)]


def test_a_rate_limit_longer_than_the_budget_says_so(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})

    def limited(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(
                429, headers={"RateLimit-Reset": "300"}, json={"message": "Too many requests"}
            )
        return bk.handler(request)

    report = run(make_client(limited, max_wait=1.0))
    reason = report.failed[0].reason or ""
    assert reason.startswith("rate limited: the limit resets in 300s, longer than the client waits")
    assert "still rate limited after waiting" not in reason


def test_a_canceled_build_stops_the_run(make_client: Any) -> None:
    bk = MiniBuildkite(*({"id": f"j{i}", "state": "failed"} for i in range(4)))
    bk.faults = {"j1": ["422"]}
    with pytest.raises(RetryAbortedError) as info:
        run(make_client(bk.handler), concurrency=1)
    message = str(info.value)
    assert message == (
        "Buildkite refused to retry jobs of app #7: Jobs from canceled builds cannot be retried"
    )
    report = info.value.report
    assert report.aborted == message
    assert [(o.job_id, o.outcome) for o in report.outcomes] == [
        ("j0", "retried"),
        ("j1", "skipped"),
        ("j2", "skipped"),
        ("j3", "skipped"),
    ]
    assert report.outcomes[2].reason == (
        "not sent: the run stopped (Jobs from canceled builds cannot be retried)"
    )
    assert set(bk.puts) == {"j0", "j1"}
    assert report.exit_code == 1
    assert "**Stopped:**" in report.to_markdown()


def test_wait_reports_final_states(make_client: Any) -> None:
    bk = MiniBuildkite(
        {"id": "a", "state": "failed"},
        {"id": "b", "state": "failed"},
        finish_after=3,
    )
    bk.results = {"a": "passed", "b": "failed"}
    messages: list[str] = []
    report = run(make_client(bk.handler), wait=True, poll_interval=2.0, progress=messages.append)
    assert [(o.job_id, o.final_state, o.finished) for o in report.retried] == [
        ("a", "passed", True),
        ("b", "failed", True),
    ]
    assert bk.polls == Counter({"a-r1": 3, "b-r1": 3})
    assert report.waited
    assert report.exit_code == 3
    assert [o.job_id for o in report.not_passed] == ["b"]
    assert "waiting for retried jobs: 0 finished (0 passed), 2 still running after 0s" in messages
    assert "retried a (a -> a-r1)" in messages


def test_wait_all_passed_exits_zero(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})
    bk.results = {"a": "passed"}
    report = run(make_client(bk.handler), wait=True)
    assert report.retried[0].final_state == "passed"
    assert report.exit_code == 0
    assert report.summary() == (
        "build app #7: 1 retried, 0 failed, 0 skipped, 1 of 1 retries passed"
    )


def test_wait_times_out(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})  # its retry never finishes
    report = run(make_client(bk.handler), wait=True, wait_timeout=12, poll_interval=5)
    outcome = report.retried[0]
    assert (outcome.final_state, outcome.finished) == ("running", False)
    assert report.exit_code == 3
    assert "running (timed out waiting)" in report.to_markdown()


def test_long_waits_report_progress_every_30_seconds(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})  # its retry never finishes
    messages: list[str] = []
    run(make_client(bk.handler), wait=True, wait_timeout=100, progress=messages.append)
    waiting = [m for m in messages if m.startswith("waiting")]
    assert waiting == [
        f"waiting for retried jobs: 0 finished (0 passed), 1 still running after {t}s"
        for t in (0, 30, 60, 90)
    ]


def test_wait_follows_an_automatic_retry(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})
    bk.results = {"a": "failed", "a-r1": "passed"}

    def auto_retry(request: httpx.Request) -> httpx.Response:
        response = bk.handler(request)
        new = bk.jobs.get("a-r1")
        if new and new["state"] == "failed" and not new.get("retried"):
            bk._execute("a-r1")  # Buildkite retried it by itself as it failed (agent lost)
            return httpx.Response(200, json=bk._render(new))
        return response

    report = run(make_client(auto_retry), wait=True)
    outcome = report.retried[0]
    assert outcome.new_job_id == "a-r1"
    assert (outcome.final_job_id, outcome.final_state) == ("a-r1-r1", "passed")
    assert report.exit_code == 0


def test_poll_errors_are_retried_until_the_timeout(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})
    bk.results = {"a": "passed"}
    flaky = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("a-r1"):
            flaky["n"] += 1
            if flaky["n"] == 1:
                return httpx.Response(500, json={"message": "boom"})
        return bk.handler(request)

    messages: list[str] = []
    report = run(make_client(handler), wait=True, progress=messages.append)
    assert report.retried[0].final_state == "passed"
    assert any(m.startswith("could not poll job a-r1") for m in messages)


def test_a_poll_that_cannot_succeed_keeps_the_report(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"}, {"id": "b", "state": "failed"})
    bk.results = {"a": "passed", "b": "passed"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/b-r1"):
            return httpx.Response(403, json={"message": "Your access token doesn't have it"})
        return bk.handler(request)

    report = run(make_client(handler), wait=True)
    assert [(o.job_id, o.final_state, o.finished) for o in report.retried] == [
        ("a", "passed", True),
        ("b", None, False),
    ]
    assert (report.retried[1].reason or "").startswith("stopped waiting: polling job b-r1 failed")
    assert report.exit_code == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concurrency": 0}, "concurrency must be an integer >= 1"),
        ({"wait_timeout": -1}, "wait_timeout must be a finite number of seconds"),
        ({"poll_interval": "5"}, "poll_interval must be a finite number of seconds"),
        ({"wait_timeout": float("nan")}, "wait_timeout must be a finite number of seconds"),
        ({"poll_interval": float("nan")}, "poll_interval must be a finite number of seconds"),
        ({"wait_timeout": float("inf")}, "wait_timeout must be a finite number of seconds"),
    ],
)
def test_run_arguments_are_checked_before_sending(
    make_client: Any, kwargs: dict[str, Any], match: str
) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})
    with pytest.raises(InvalidArgumentError, match=match):
        run(make_client(bk.handler), **kwargs)
    assert not bk.list_queries


def test_wait_progress_has_a_final_line(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"}, finish_after=2)
    bk.results = {"a": "passed"}
    messages: list[str] = []
    report = run(make_client(bk.handler), wait=True, poll_interval=1, progress=messages.append)
    assert report.exit_code == 0
    waits = [m for m in messages if "wait" in m]
    assert waits == [
        "waiting for retried jobs: 0 finished (0 passed), 1 still running after 0s",
        "done waiting after 1s: 1 finished (1 passed)",
    ]


def test_wait_progress_at_the_timeout(make_client: Any) -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"})
    messages: list[str] = []
    run(make_client(bk.handler), wait=True, wait_timeout=2, progress=messages.append)
    assert messages[-1] == (
        "stopped waiting at the 2s timeout: 0 finished (0 passed), 1 still running"
    )


def test_ctrl_c_during_the_wait_keeps_the_report() -> None:
    bk = MiniBuildkite({"id": "a", "state": "failed"}, {"id": "b", "state": "failed"})
    bk.results = {"a": "passed"}
    client = JobsClient(token="t", org="acme", transport=httpx.MockTransport(bk.handler))

    def interrupt(delay: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(RetryInterrupted) as info:
        retry_failed_siblings(client, CTX, wait=True, sleep=interrupt)
    report = info.value.report
    assert isinstance(info.value, KeyboardInterrupt)
    assert report.interrupted
    assert report.waited
    assert [(o.job_id, o.outcome, o.final_state) for o in report.outcomes] == [
        ("a", "retried", "passed"),
        ("b", "retried", "running"),
    ]
    assert "INTERRUPTED (Ctrl-C)" in report.summary()
    assert report.to_dict()["interrupted"] is True
    assert report.exit_code == 1


def test_ctrl_c_while_retrying_sends_nothing_more() -> None:
    jobs = ({"id": name, "state": "failed"} for name in ("a", "b", "c"))
    bk = MiniBuildkite(*jobs)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/b/" in request.url.path:
            raise KeyboardInterrupt
        return bk.handler(request)

    client = JobsClient(token="t", org="acme", transport=httpx.MockTransport(handler))
    with pytest.raises(RetryInterrupted) as info:
        retry_failed_siblings(client, CTX, concurrency=1)
    report = info.value.report
    assert [(o.job_id, o.outcome) for o in report.outcomes] == [
        ("a", "retried"),
        ("b", "failed"),
        ("c", "skipped"),
    ]
    assert (report.outcomes[1].reason or "").startswith("outcome unknown: interrupted")
    assert report.outcomes[2].reason == "not sent: the run stopped (interrupted (Ctrl-C))"
    assert bk.puts == Counter({"a": 1})
    assert not report.waited


# -- the report ---------------------------------------------------------------------------------


def test_report_to_dict_and_markdown(make_client: Any) -> None:
    bk = standard_build()
    bk.jobs["unit"]["web_url"] = "https://buildkite.com/acme/app/builds/7#unit"
    bk.jobs["lint"]["name"] = "lint | style"
    report = run(make_client(bk.handler), max_attempts=3)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["counts"] == {
        "retried": 2,
        "would_retry": 0,
        "skipped": 4,
        "failed": 0,
        "not_passed": 0,
    }
    assert data["jobs"][0] == {
        "job_id": "unit",
        "name": "unit",
        "step_key": "test-unit",
        "state": "failed",
        "outcome": "retried",
        "reason": None,
        "new_job_id": "unit-r1",
        "recovered": False,
        "web_url": "https://buildkite.com/acme/app/builds/7#unit",
        "final_state": None,
        "finished": None,
        "final_job_id": None,
        "status_code": None,
    }
    markdown = report.to_markdown()
    lines = markdown.splitlines()
    assert lines[0] == "### Retry of failed jobs: app #7"
    assert lines[4] == "| Job | Step key | State | Outcome | New job | Details |"
    assert (
        "| [unit](https://buildkite.com/acme/app/builds/7#unit) | `test-unit` | failed | retried"
        " | `unit-r1` |  |"
    ) in lines
    assert "| lint \\| style | `lint` | timed_out | retried | `lint-r1` |  |" in lines
    assert len([ln for ln in lines if ln.startswith("| ")]) == 2 + 6  # header, rule, rows


def test_report_of_an_empty_build() -> None:
    report = RetryReport(org="acme", pipeline="app", build=7, current_job_id=None, outcomes=())
    assert report.exit_code == 0
    assert report.to_markdown().endswith("No failed jobs were found.\n")


# -- toolkit plugins ----------------------------------------------------------------------------


def test_plugin_manager_hooks() -> None:
    import types

    from pytest_bkjobs._toolkit import load_select_hook, plugin_manager
    from pytest_bkjobs.hookspecs import bkjobs_hookimpl

    assert load_select_hook(entry_points=False) is None
    first = types.ModuleType("first")
    second = types.ModuleType("second")
    first.bkjobs_select_job = bkjobs_hookimpl(lambda job, ctx: None)  # type: ignore[attr-defined]
    second.bkjobs_select_job = bkjobs_hookimpl(lambda job, ctx: job.id == "a")  # type: ignore[attr-defined]
    hook = load_select_hook([first, second], entry_points=False)
    assert hook is not None
    assert hook(job(id="a"), CTX) is True
    assert hook(job(id="b"), CTX) is False
    typo = types.ModuleType("typo")
    typo.bkjobs_select_jobs = bkjobs_hookimpl(lambda job, ctx: True)  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="implements an unknown hook"):
        plugin_manager([typo], entry_points=False)


def test_a_failing_hook_is_named() -> None:
    import types

    from pytest_bkjobs._toolkit import load_select_hook
    from pytest_bkjobs.hookspecs import bkjobs_hookimpl

    def broken(job: Job, ctx: BuildContext) -> bool:
        raise KeyError("exit_status")

    plugin = types.ModuleType("broken_plugin")
    plugin.bkjobs_select_job = bkjobs_hookimpl(broken)  # type: ignore[attr-defined]
    hook = load_select_hook([plugin], entry_points=False)
    assert hook is not None
    with pytest.raises(ConfigurationError, match="hook raised KeyError: 'exit_status'") as info:
        hook(job(), CTX)
    assert "plugins: broken_plugin" in str(info.value)
