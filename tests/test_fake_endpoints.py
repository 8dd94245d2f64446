"""The client against the fake through both front doors (in-process, loopback), sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from pytest_bkjobs import (
    AsyncJobsClient,
    AuthenticationError,
    BadRequestError,
    JobsClient,
    JobState,
    NotFoundError,
    PermissionDeniedError,
    UnprocessableEntityError,
    parse_env_text,
)
from pytest_bkjobs.fake import FakeBuildkite, LogSource, SampleBuild
from tests.conftest import ORG, TOKEN, AsyncAsSync, ClientFactory


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Door:
    """One front door of a fake: builds clients and raw httpx clients talking to it."""

    kind: str
    fake: FakeBuildkite
    base_url: str
    factory: ClientFactory
    _loop: asyncio.AbstractEventLoop | None = None
    _closers: list[Any] = field(default_factory=list)
    _raw: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> Any:
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("org", ORG)
        if self.kind == "inprocess":
            return self.factory(self.fake.handler, base_url=self.base_url, **kwargs)
        if self.factory.flavour == "sync":
            client: Any = JobsClient(
                base_url=self.base_url, sleep=self.factory.sleeps.append, **kwargs
            )
        else:

            async def sleep(delay: float) -> None:
                self.factory.sleeps.append(delay)

            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            client = AsyncAsSync(
                AsyncJobsClient(base_url=self.base_url, sleep=sleep, **kwargs), self._loop
            )
        self._closers.append(client.close)
        return client

    def raw(self, token: str = TOKEN) -> httpx.Client:
        """A plain httpx client, to send what our client refuses to send."""
        if token in self._raw:
            return self._raw[token]  # building an httpx.Client costs ~30 ms (SSL context)
        transport = self.fake.transport() if self.kind == "inprocess" else None
        raw = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
        self._closers.append(raw.close)
        self._raw[token] = raw
        return raw

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        if self._loop is not None:
            self._loop.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["inprocess", "loopback"])
def door(
    request: pytest.FixtureRequest, make_client: ClientFactory, clock: Clock
) -> Iterator[Door]:
    """A fake and a way to reach it: the in-process handler or a loopback server."""
    fake = FakeBuildkite(org=ORG, token=TOKEN, clock=clock)
    if request.param == "inprocess":
        found = Door("inprocess", fake, "https://api.buildkite.com/v2", make_client)
        yield found
        found.close()
        return
    with fake.serve() as url:
        found = Door("loopback", fake, url, make_client)
        yield found
        found.close()


@pytest.fixture
def sample(door: Door) -> SampleBuild:
    return door.fake.sample_build()


def _ids(jobs: Any) -> list[str]:
    return [job.id for job in jobs]


# -- listing ------------------------------------------------------------------------------------


def test_list_pages_follow_absolute_links_on_the_door_origin(
    door: Door, sample: SampleBuild
) -> None:
    client = door.client()
    page = client.list_jobs(sample.pipeline, sample.number, per_page=4)
    assert len(page.items) == 4
    assert page.links["self"].startswith(door.base_url + f"/organizations/{ORG}/pipelines/")
    assert page.next_url is not None
    assert page.next_url.startswith(door.base_url)
    assert "after=" in page.next_url
    everything = list(client.iter_jobs(sample.pipeline, sample.number, per_page=3))
    assert _ids(everything) == door.fake.job_ids(sample.pipeline, sample.number)
    assert len(everything) == len(sample.job_ids)


def test_list_default_page_is_30_and_last_page_has_no_next(door: Door) -> None:
    number = door.fake.add_build("big")
    for index in range(35):
        door.fake.add_job("big", number, name=f"job {index}")
    client = door.client()
    first = client.list_jobs("big", number)
    assert len(first.items) == 30
    assert first.next_url is not None
    second = client.list_jobs_page(first.next_url)
    assert [j.name for j in second.items] == [f"job {i}" for i in range(30, 35)]
    assert "next" not in second.links


def test_list_before_cursor_gives_the_previous_page(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    ids = door.fake.job_ids(sample.pipeline, sample.number)
    page = client.list_jobs(sample.pipeline, sample.number, per_page=5)
    assert page.next_url is not None
    cursor = httpx.URL(page.next_url).params["after"]
    before = client.list_jobs(sample.pipeline, sample.number, per_page=2, before=cursor)
    assert _ids(before.items) == ids[2:4]  # the cursor is the page's last job, ids[4]


def test_list_state_filters_derive_passed_and_failed_from_exit_status(
    door: Door, sample: SampleBuild
) -> None:
    client = door.client()
    failed = client.iter_jobs(sample.pipeline, sample.number, state="failed")
    roles = {v: k for k, v in sample.job_ids.items()}
    assert sorted(roles[j.id] for j in failed) == ["failed", "parallel_2", "soft_failed"]
    either = client.iter_jobs(sample.pipeline, sample.number, state=["timed_out", "blocked"])
    assert sorted(roles[j.id] for j in either) == ["manual", "timed_out"]
    passed = list(client.iter_jobs(sample.pipeline, sample.number, state="passed"))
    assert all(j.exit_status == 0 or j.type == "trigger" for j in passed)
    assert {roles[j.id] for j in passed} >= {"passed", "parallel_1", "parallel_3"}


def test_early_failure_declaration_lists_a_running_job_as_failed(door: Door) -> None:
    number = door.fake.add_build("p")
    job_id = door.fake.add_job("p", number, state="running", declared_failing=True)
    client = door.client()
    (job,) = client.iter_jobs("p", number, state="failed")
    assert job.id == job_id
    assert job.state is JobState.RUNNING
    with pytest.raises(BadRequestError, match="Only failed, timed out or canceled"):
        client.retry_job(job_id)


def test_list_include_retried_jobs_and_step_key(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    old = sample.job_ids["failed"]
    new = client.retry_job(old)
    every = _ids(client.iter_jobs(sample.pipeline, sample.number))
    assert old in every
    assert new.id in every
    latest = _ids(client.iter_jobs(sample.pipeline, sample.number, include_retried_jobs=False))
    assert old not in latest
    assert new.id in latest
    e2e = list(client.iter_jobs(sample.pipeline, sample.number, step_key="e2e"))
    assert [(j.parallel_group_index, j.parallel_group_total) for j in e2e] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("state[]=finished", "Invalid state: 'finished'"),
        ("state[]=exploded", "Invalid state: 'exploded'"),
        ("per_page=0", "per_page must be an integer from 1 to 100"),
        ("per_page=101", "per_page must be an integer from 1 to 100"),
        ("per_page=ten", "per_page must be an integer from 1 to 100"),
        ("after=bm9wZQ", "Invalid cursor"),
        ("after=am9iOjE&before=am9iOjE", "mutually exclusive"),
        ("include_retried_jobs=maybe", "include_retried_jobs must be true or false"),
    ],
)
def test_list_rejects_bad_queries_with_400(
    door: Door, sample: SampleBuild, query: str, message: str
) -> None:
    path = f"/organizations/{ORG}/pipelines/{sample.pipeline}/builds/{sample.number}/jobs"
    answer = door.raw().get(f"{door.base_url}{path}?{query}")
    assert answer.status_code == 400
    assert message in answer.json()["message"]


def test_list_unknown_build_is_404(door: Door, sample: SampleBuild) -> None:
    with pytest.raises(NotFoundError, match="No build found"):
        door.client().list_jobs(sample.pipeline, 999)


# -- one job ------------------------------------------------------------------------------------


def test_get_job_on_both_route_families(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    job_id = sample.job_ids["passed"]
    org_scoped = client.get_job(job_id)
    build_scoped = client.get_job(job_id, pipeline=sample.pipeline, build=sample.number)
    assert org_scoped.raw == build_scoped.raw
    assert org_scoped.name == ":package: Build"
    assert org_scoped.log_url is not None
    assert org_scoped.log_url.startswith(door.base_url)
    assert client.get_job_log_text(job_id) == door.fake.log(job_id).decode()


@pytest.mark.parametrize(("pipeline", "build"), [("other-app", 1), ("sample-app", 2)])
def test_job_under_the_wrong_pipeline_or_build_is_not_found(
    door: Door, sample: SampleBuild, pipeline: str, build: int
) -> None:
    door.fake.add_build("other-app")
    door.fake.add_build("sample-app", number=2)
    with pytest.raises(NotFoundError) as caught:
        door.client().get_job(sample.current_job_id, pipeline=pipeline, build=build)
    assert caught.value.body == {"message": "No job found"}


def test_unknown_job_is_not_found(door: Door) -> None:
    with pytest.raises(NotFoundError, match="No job found"):
        door.client().get_job("00000000-0000-4000-8000-000000000000")


def test_the_sample_build_parses_into_every_kind_of_job(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    jobs = {job.id: job for job in client.iter_jobs(sample.pipeline, sample.number)}
    by_role = {role: jobs[job_id] for role, job_id in sample.job_ids.items()}
    assert by_role["current"].state is JobState.RUNNING
    assert by_role["current"].step_key == "bkjobs"
    assert by_role["soft_failed"].soft_failed is True
    assert by_role["soft_failed"].state is JobState.FAILED
    assert by_role["timed_out"].state is JobState.TIMED_OUT
    assert by_role["waiter"].state is None
    assert by_role["waiter"].type == "waiter"
    assert by_role["manual"].label == ":rocket: Deploy to production?"
    assert by_role["manual"].name is None
    assert by_role["trigger"].triggered_build is not None
    assert by_role["failed"].exit_status == 1


# -- retry --------------------------------------------------------------------------------------


def test_retry_creates_a_new_scheduled_job_and_marks_the_old_one(
    door: Door, sample: SampleBuild
) -> None:
    client = door.client()
    old_id = sample.job_ids["failed"]
    new = client.retry_job(old_id, pipeline=sample.pipeline, build=sample.number)
    assert new.id != old_id
    assert new.state is JobState.SCHEDULED
    assert new.retries_count == 1
    assert new.retry_source is not None
    assert new.retry_source.job_id == old_id
    assert new.retry_source.retry_type == "manual"
    assert new.retry_source.retried_by is not None
    assert new.retry_source.retried_by.id == door.fake.user_id
    assert new.exit_status is None
    old = client.get_job(old_id)
    assert old.retried is True
    assert old.retried_in_job_id == new.id
    assert client.get_job_env(new.id)["BUILDKITE_JOB_ID"] == new.id
    with pytest.raises(BadRequestError) as caught:
        client.retry_job(old_id)
    assert caught.value.message == "Jobs can only be retried once"
    assert door.fake.retry_calls(old_id) == 2


def test_retry_of_the_retry_counts_up(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    first = client.retry_job(sample.job_ids["timed_out"])
    door.fake.finish_job(first.id, 3)
    second = client.retry_job(first.id)
    assert second.retries_count == 2
    assert second.retry_source is not None
    assert second.retry_source.job_id == first.id


@pytest.mark.parametrize("role", ["passed", "current", "waiter", "manual", "trigger"])
def test_retry_refuses_jobs_that_are_not_failed(door: Door, sample: SampleBuild, role: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        door.client().retry_job(sample.job_ids[role])
    assert caught.value.message == "Only failed, timed out or canceled jobs can be retried"


def test_retry_passed_job_when_the_step_permits_it(door: Door) -> None:
    number = door.fake.add_build("p")
    job_id = door.fake.add_job("p", number, state="passed", permit_on_passed=True)
    canceled = door.fake.add_job("p", number, state="canceled")
    client = door.client()
    assert client.retry_job(job_id).state is JobState.SCHEDULED
    assert client.retry_job(canceled).retries_count == 1


def test_retry_in_a_canceled_build_is_422(door: Door, sample: SampleBuild) -> None:
    door.fake.set_build_state(sample.pipeline, sample.number, "canceled")
    with pytest.raises(
        UnprocessableEntityError, match="Jobs from canceled builds cannot be retried"
    ):
        door.client().retry_job(sample.job_ids["failed"])


# -- reprioritize and unblock -------------------------------------------------------------------


def test_reprioritize(door: Door, sample: SampleBuild) -> None:
    job = door.client().reprioritize_job(sample.job_ids["failed"], 7)
    assert job.priority == 7
    assert door.fake.job(sample.job_ids["failed"])["priority"] == {"number": 7}
    path = f"/organizations/{ORG}/jobs/{sample.job_ids['failed']}/reprioritize"
    for body in ({"priority": "high"}, {"priority": True}, {}):
        answer = door.raw().put(door.base_url + path, json=body)
        assert answer.status_code == 400
        assert answer.json() == {"message": "Priority must be an integer"}


def test_unblock_sets_who_when_and_stores_fields(door: Door, sample: SampleBuild) -> None:
    approver = door.fake.add_user("Release Manager", "rm@example.com")
    fields = {"release": "v1.2", "regions": ["eu", "us"]}
    job = door.client().unblock_job(sample.job_ids["manual"], fields=fields, unblocker=approver)
    assert job.state is JobState.UNBLOCKED
    assert job.unblocked_by is not None
    assert job.unblocked_by.name == "Release Manager"
    assert job.unblocked_at is not None
    assert job.unblockable is False
    assert door.fake.unblock_fields(sample.job_ids["manual"]) == fields
    with pytest.raises(UnprocessableEntityError, match="The job's state must be blocked"):
        door.client().unblock_job(sample.job_ids["manual"])


def test_unblock_errors(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    with pytest.raises(BadRequestError, match="This job type cannot be unblocked"):
        client.unblock_job(sample.job_ids["failed"])
    with pytest.raises(UnprocessableEntityError, match="Unblocker is not a valid user id"):
        client.unblock_job(sample.job_ids["manual"], unblocker="no-such-user")
    assert door.fake.job(sample.job_ids["manual"])["state"] == "blocked"
    door.fake.set_build_state(sample.pipeline, sample.number, "canceled")
    with pytest.raises(UnprocessableEntityError, match="canceled builds cannot be unblocked"):
        client.unblock_job(sample.job_ids["manual"])


# -- logs ---------------------------------------------------------------------------------------


def test_log_as_json_text_html_and_size(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    job_id = sample.job_ids["failed"]
    raw = door.fake.log(job_id)
    log = client.get_job_log(job_id)
    assert log.content == raw.decode("utf-8")
    assert log.size == len(raw)
    assert log.header_times
    assert all(t > 2**53 for t in log.header_times)
    assert client.get_job_log_text(job_id) == raw.decode("utf-8")
    assert client.get_job_log_size(job_id) == len(raw)
    html = client.get_job_log_html(job_id)
    assert "\x1b" not in html
    assert "assert 7 == 8" in html
    assert '<div class="line section">+++ :pytest: Running tests</div>' in html
    with client.stream_job_log(job_id, chunk_size=100) as chunks:
        assert b"".join(chunks) == raw


@pytest.mark.parametrize(("suffix", "kind"), [(".txt", "text/plain"), (".html", "text/html")])
def test_log_format_by_suffix(door: Door, sample: SampleBuild, suffix: str, kind: str) -> None:
    job_id = sample.job_ids["passed"]
    answer = door.raw().get(f"{door.base_url}/organizations/{ORG}/jobs/{job_id}/log{suffix}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(kind)
    assert b"Built sample_app" in answer.content


def test_log_html_escapes_markup(door: Door) -> None:
    number = door.fake.add_build("p")
    job_id = door.fake.add_job("p", number, log="<script>alert('x')</script> & done\n")
    html = door.client().get_job_log_html(job_id)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; done" in html


def test_log_tail_uses_a_range_and_an_empty_log_answers_416(
    door: Door, sample: SampleBuild
) -> None:
    client = door.client()
    job_id = sample.job_ids["failed"]
    raw = door.fake.log(job_id)
    assert client.get_job_log_text(job_id, tail=40) == raw[-40:].decode("utf-8", "replace")
    assert client.get_job_log_text(job_id, tail=10**9) == raw.decode("utf-8")
    url = f"{door.base_url}/organizations/{ORG}/jobs/{job_id}/log"
    answer = door.raw().get(url, headers={"Accept": "text/plain", "Range": "bytes=-5"})
    assert answer.status_code == 206
    assert answer.headers["content-range"] == f"bytes {len(raw) - 5}-{len(raw) - 1}/{len(raw)}"
    client.delete_job_log(job_id)
    assert client.get_job_log_text(job_id, tail=5) == ""
    empty = door.raw().get(url, headers={"Accept": "text/plain", "Range": "bytes=-5"})
    assert empty.status_code == 416


def test_delete_log_answers_204_and_empties_it(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    job_id = sample.job_ids["passed"]
    url = f"{door.base_url}/organizations/{ORG}/jobs/{job_id}/log"
    answer = door.raw().delete(url)
    assert answer.status_code == 204
    assert answer.content == b""
    assert client.get_job_log_text(job_id) == ""
    assert client.get_job_log_size(job_id) == 0
    assert client.get_job_log(job_id).size == 0
    client.delete_job_log(sample.job_ids["failed"], pipeline=sample.pipeline, build=sample.number)
    assert door.fake.log(sample.job_ids["failed"]) == b""


def test_download_a_log(door: Door, sample: SampleBuild, tmp_path: Any) -> None:
    job_id = sample.job_ids["parallel_2"]
    dest = tmp_path / "e2e.log"
    written = door.client().download_job_log(job_id, dest)
    assert dest.read_bytes() == door.fake.log(job_id)
    assert written == len(door.fake.log(job_id))


# -- env ----------------------------------------------------------------------------------------


def test_env_as_json_and_dotenv_text_round_trip(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    job_id = sample.job_ids["failed"]
    env = client.get_job_env(job_id)
    assert env == door.fake.env(job_id)
    assert env["BUILDKITE_JOB_ID"] == job_id
    assert env["DEPLOY_API_TOKEN"].startswith("dat_fake_")
    assert parse_env_text(client.get_job_env_text(job_id)) == env
    assert "\n" in env["SSH_PRIVATE_KEY"]
    suffixed = door.raw().get(f"{door.base_url}/organizations/{ORG}/jobs/{job_id}/env.txt")
    assert parse_env_text(suffixed.text) == env


def test_env_with_awkward_values_round_trips(door: Door) -> None:
    number = door.fake.add_build("p")
    awkward = {"A": 'say "hi"', "B": "x=y=z", "C": "line1\nline2\r\n", "D": "", "E": "back\\slash"}
    job_id = door.fake.add_job("p", number, env=awkward)
    text = door.client().get_job_env_text(job_id)
    parsed = parse_env_text(text)
    assert {k: parsed[k] for k in awkward} == awkward


# -- auth ---------------------------------------------------------------------------------------


def test_wrong_token_is_401_with_buildkites_message(door: Door, sample: SampleBuild) -> None:
    client = door.client(token="bkua_wrong")
    with pytest.raises(AuthenticationError) as caught:
        client.get_job(sample.current_job_id)
    assert caught.value.message.startswith("Authentication required. Please supply a valid API")
    answer = door.raw(token="").get(f"{door.base_url}/organizations/{ORG}/jobs/x")
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("method", "scope"),
    [
        ("get_job", "read_builds"),
        ("retry_job", "write_builds"),
        ("get_job_log_text", "read_build_logs"),
        ("delete_job_log", "write_build_logs"),
        ("get_job_env", "read_job_env"),
    ],
)
def test_missing_scope_is_403_naming_it(door: Door, method: str, scope: str) -> None:
    number = door.fake.add_build("p")
    job_id = door.fake.add_job("p", number, state="failed")
    door.fake.add_token("bkua_narrow", scopes=[])
    with pytest.raises(PermissionDeniedError) as caught:
        getattr(door.client(token="bkua_narrow"), method)(job_id)
    assert caught.value.message == f"Your access token doesn't have the {scope} scope"
    assert caught.value.required_scope == scope


def test_listing_needs_read_builds(door: Door, sample: SampleBuild) -> None:
    door.fake.add_token("bkua_logs_only", scopes=["read_build_logs"])
    client = door.client(token="bkua_logs_only")
    assert client.get_job_log_size(sample.job_ids["passed"]) > 0
    with pytest.raises(PermissionDeniedError, match="read_builds"):
        client.list_jobs(sample.pipeline, sample.number)


def test_wrong_org_is_404(door: Door, sample: SampleBuild) -> None:
    with pytest.raises(NotFoundError, match="No organization found"):
        door.client(org="someone-else").get_job(sample.current_job_id)


# -- rate limits --------------------------------------------------------------------------------


def test_rate_limit_headers_on_every_answer(door: Door, sample: SampleBuild) -> None:
    door.fake.set_rate_limits(org=100, user=10, window=60)
    raw = door.raw()
    ok = raw.get(f"{door.base_url}/organizations/{ORG}/jobs/{sample.current_job_id}")
    missing = raw.get(f"{door.base_url}/organizations/{ORG}/jobs/nope")
    for answer, used in ((ok, 1), (missing, 2)):
        assert answer.headers["RateLimit-Scope"] == "rest"
        assert answer.headers["RateLimit-Limit"] == "100"
        assert answer.headers["RateLimit-Remaining"] == str(100 - used)
        assert answer.headers["RateLimit-Reset"] == "60"
        assert answer.headers["RateLimit-User-Limit"] == "10"
        assert answer.headers["RateLimit-User-Remaining"] == str(10 - used)
        assert "RateLimit-User-Reset" in answer.headers


def test_user_rate_limit_429_then_the_client_waits_it_out(
    door: Door, sample: SampleBuild, clock: Clock
) -> None:
    door.fake.set_rate_limits(user=3, window=60)
    raw = door.raw()
    url = f"{door.base_url}/organizations/{ORG}/jobs/{sample.current_job_id}"
    for _ in range(3):
        assert raw.get(url).status_code == 200
    clock.advance(18)
    limited = raw.get(url)
    assert limited.status_code == 429
    assert limited.json() == {
        "message": limited.json()["message"],
        "scope": "rest_user",
        "limit": 3,
        "current": 4,
        "reset": 42,
    }
    assert limited.headers["RateLimit-User-Remaining"] == "0"
    assert limited.headers["RateLimit-User-Reset"] == "42"
    assert "Retry-After" not in limited.headers
    client = door.client()
    # The client sleeps (recorded, not real); move the clock as if that time had passed.
    sleeps = door.factory.sleeps
    original = list(sleeps)
    with pytest.raises(Exception, match="429"):
        client.get_job(sample.current_job_id)  # the clock never moves: it gives up
    assert len(sleeps) > len(original)
    assert sleeps[len(original)] >= 42
    clock.advance(43)
    assert client.get_job(sample.current_job_id).id == sample.current_job_id


def test_org_rate_limit_429_names_rest(door: Door, sample: SampleBuild) -> None:
    door.fake.set_rate_limits(org=1)
    raw = door.raw()
    url = f"{door.base_url}/organizations/{ORG}/jobs/{sample.current_job_id}"
    assert raw.get(url).status_code == 200
    limited = raw.get(url)
    assert limited.status_code == 429
    assert limited.json()["scope"] == "rest"
    assert limited.headers["RateLimit-Remaining"] == "0"


# -- progress -----------------------------------------------------------------------------------


def test_retried_jobs_finish_on_their_own_after_polls(door: Door, sample: SampleBuild) -> None:
    door.fake.on_retry("passed", after_polls=3)
    client = door.client()
    new = client.retry_job(sample.job_ids["failed"])
    states = [client.get_job(new.id).state for _ in range(4)]
    assert states == [JobState.RUNNING, JobState.RUNNING, JobState.PASSED, JobState.PASSED]
    assert client.get_job(new.id).exit_status == 0


def test_retry_outcome_from_a_callable_and_listing_polls(door: Door, sample: SampleBuild) -> None:
    door.fake.on_retry(lambda job: "passed" if job["retries_count"] > 1 else 2, after_polls=1)
    client = door.client()
    first = client.retry_job(sample.job_ids["failed"])
    (seen,) = client.iter_jobs(
        sample.pipeline, sample.number, step_key="unit-tests", include_retried_jobs=False
    )
    assert seen.id == first.id
    assert seen.state is JobState.FAILED
    assert seen.exit_status == 2
    second = client.retry_job(first.id)
    assert client.get_job(second.id).state is JobState.PASSED


def test_finish_job_by_hand(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    new = client.retry_job(sample.job_ids["parallel_2"])
    door.fake.finish_job(new.id, 0)
    done = client.get_job(new.id)
    assert done.state is JobState.PASSED
    assert done.finished_at is not None
    assert done.parallel_group_index == 1


# -- requests -----------------------------------------------------------------------------------


def test_requests_are_recorded_without_the_token(door: Door, sample: SampleBuild) -> None:
    client = door.client()
    client.reprioritize_job(sample.job_ids["failed"], 3)
    last = door.fake.requests[-1]
    assert last.method == "PUT"
    assert last.path.endswith("/reprioritize")
    assert last.json() == {"priority": 3}
    assert last.status == 200
    assert last.headers["authorization"] == "Bearer ***"
    assert TOKEN not in repr(door.fake.requests)
    assert last.url.startswith(door.base_url)


def test_every_single_job_endpoint_on_the_build_scoped_route(
    door: Door, sample: SampleBuild
) -> None:
    client = door.client()
    where = {"pipeline": sample.pipeline, "build": sample.number}
    failed = sample.job_ids["failed"]
    assert client.get_job(failed, **where).id == failed
    assert client.reprioritize_job(failed, 2, **where).priority == 2
    assert client.get_job_env(failed, **where)["BUILDKITE_JOB_ID"] == failed
    assert "BUILDKITE_JOB_ID=" in client.get_job_env_text(failed, **where)
    raw = door.fake.log(failed)
    assert client.get_job_log(failed, **where).size == len(raw)
    assert client.get_job_log_text(failed, **where, tail=7) == raw[-7:].decode()
    assert "term-container" in client.get_job_log_html(failed, **where)
    assert client.get_job_log_size(failed, **where) == len(raw)
    with client.stream_job_log(failed, **where) as chunks:
        assert b"".join(chunks) == raw
    assert client.unblock_job(sample.job_ids["manual"], **where).state is JobState.UNBLOCKED
    new = client.retry_job(failed, **where)
    assert new.build_url is not None
    assert new.build_url.endswith(f"/pipelines/{sample.pipeline}/builds/{sample.number}")
    client.delete_job_log(failed, **where)
    assert client.get_job_log_size(failed, **where) == 0
    paths = [r.path for r in door.fake.requests]
    scoped = f"/v2/organizations/{ORG}/pipelines/{sample.pipeline}/builds/{sample.number}/jobs/"
    assert all(p.startswith(scoped) for p in paths)


# -- bad input: both doors answer alike ------------------------------------------------------------

# Tests that only send raw requests need each door once, not once per client flavour.


@pytest.fixture(params=["inprocess", "loopback"])
def wire(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Door]:
    """A fake behind one front door, for raw requests (``Door.raw``) only."""
    fake = FakeBuildkite(org=ORG, token=TOKEN, clock=clock)
    no_clients: Any = None
    if request.param == "inprocess":
        found = Door("inprocess", fake, "https://api.buildkite.com/v2", no_clients)
        yield found
        found.close()
        return
    with fake.serve() as url:
        found = Door("loopback", fake, url, no_clients)
        yield found
        found.close()


@pytest.fixture
def wire_sample(wire: Door) -> SampleBuild:
    return wire.fake.sample_build()


@pytest.mark.parametrize("unblocker", [["x"], {}, 5, True, ""])
def test_unblock_with_an_unblocker_that_is_not_a_user_id_is_422(
    wire: Door, wire_sample: SampleBuild, unblocker: object
) -> None:
    manual = wire_sample.job_ids["manual"]
    url = f"{wire.base_url}/organizations/{ORG}/jobs/{manual}/unblock"
    answer = wire.raw().put(url, json={"unblocker": unblocker})
    assert answer.status_code == 422
    assert answer.json() == {"message": "Unblocker is not a valid user id for this organization"}
    assert answer.headers["RateLimit-Scope"] == "rest"
    assert wire.fake.requests[-1].status == 422
    assert wire.fake.job(manual)["state"] == "blocked"


def test_an_error_while_answering_is_500_and_visible(wire: Door) -> None:
    number = wire.fake.add_build("p")
    job_id = wire.fake.add_job("p", number, state="scheduled")
    wire.fake.script_job(job_id, lambda job: 1 // 0, after_polls=1)
    answer = wire.raw().get(f"{wire.base_url}/organizations/{ORG}/jobs/{job_id}")
    assert answer.status_code == 500
    assert answer.json() == {"message": "fake Buildkite error: ZeroDivisionError"}
    assert answer.headers["RateLimit-Scope"] == "rest"
    assert [(r.status, r.outcome) for r in wire.fake.requests] == [(500, "error")]
    assert [type(e) for e in wire.fake.errors] == [ZeroDivisionError]


@pytest.mark.parametrize("method", ["OPTIONS", "BREW", "PATCH", "POST"])
def test_methods_without_a_route_are_json_404(
    wire: Door, wire_sample: SampleBuild, method: str
) -> None:
    url = f"{wire.base_url}/organizations/{ORG}/jobs/{wire_sample.current_job_id}"
    answer = wire.raw().request(method, url)
    assert answer.status_code == 404
    assert answer.json()["message"].startswith(f"No route matches [{method}]")
    assert answer.headers["RateLimit-Scope"] == "rest"


def test_reprioritize_only_script_jobs_within_32_bits(wire: Door, wire_sample: SampleBuild) -> None:
    raw = wire.raw()
    base = f"{wire.base_url}/organizations/{ORG}/jobs"
    manual = raw.put(f"{base}/{wire_sample.job_ids['manual']}/reprioritize", json={"priority": 1})
    assert (manual.status_code, manual.json()) == (
        400,
        {"message": "This job type cannot be reprioritized"},
    )
    failed = f"{base}/{wire_sample.job_ids['failed']}/reprioritize"
    for priority in (2**31, -(2**31) - 1, 99999999999999999999999):
        answer = raw.put(failed, json={"priority": priority})
        assert answer.status_code == 400
        assert "from -2147483648 to 2147483647" in answer.json()["message"]
    assert raw.put(failed, json={"priority": 2**31 - 1}).json()["priority"] == {"number": 2**31 - 1}
    nested = raw.put(failed, content=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert (nested.status_code, nested.json()) == (400, {"message": "Problems parsing JSON"})


@pytest.mark.parametrize(
    ("range_header", "status", "part"),
    [
        ("bytes=-5", 206, slice(-5, None)),
        ("bytes=0-9", 206, slice(0, 10)),
        ("Bytes=3-", 206, slice(3, None)),
        ("bytes=0-99999999", 206, slice(None)),
        ("garbage", 200, slice(None)),
        ("items=0-1", 200, slice(None)),
        ("bytes= -5", 200, slice(None)),
        ("bytes=0-1,5-6", 200, slice(None)),
        ("bytes=9-3", 200, slice(None)),
        ("bytes=-", 200, slice(None)),
        ("bytes=99999999-", 416, slice(0, 0)),
        ("bytes=-0", 416, slice(0, 0)),
    ],
)
def test_log_range_is_ignored_unless_it_is_one_valid_byte_range(
    wire: Door, wire_sample: SampleBuild, range_header: str, status: int, part: slice
) -> None:
    job_id = wire_sample.job_ids["failed"]
    log = wire.fake.log(job_id)
    url = f"{wire.base_url}/organizations/{ORG}/jobs/{job_id}/log.txt"
    answer = wire.raw().get(url, headers={"Range": range_header})
    assert answer.status_code == status
    assert answer.content == log[part]


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("application/json, text/plain", "application/json"),
        ("text/plain, application/json", "text/plain"),
        ("text/plain;q=0, application/json", "application/json"),
        ("text/plain;q=0.5, text/html;q=0.9", "text/html"),
        ("text/*", "text/plain"),
        ("*/*", "application/json"),
        ("*/*;q=0.1, text/html", "text/html"),
        ("image/png", "application/json"),
        ("", "application/json"),
    ],
)
def test_log_format_follows_accept_q_values_and_order(
    wire: Door, wire_sample: SampleBuild, accept: str, kind: str
) -> None:
    job_id = wire_sample.job_ids["passed"]
    url = f"{wire.base_url}/organizations/{ORG}/jobs/{job_id}/log"
    answer = wire.raw().get(url, headers={"Accept": accept})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(kind)


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/jobs/{job}", None),
        ("/jobs/{job}/log.html", None),
        ("/jobs/{job}/log.json", None),
        ("/jobs/{job}/log", "text/html"),
        ("/jobs/{job}/log", "text/plain"),
        ("/jobs/{job}/env", None),
        ("/jobs/{job}/env.txt", None),
        ("/pipelines/{pipeline}/builds/{number}/jobs", None),
        ("/pipelines/{pipeline}/builds/{number}", None),
        ("/jobs/missing", None),
    ],
)
def test_head_describes_the_get_without_a_body(
    wire: Door, wire_sample: SampleBuild, path: str, accept: str | None
) -> None:
    url = (
        wire.base_url
        + f"/organizations/{ORG}"
        + path.format(
            job=wire_sample.job_ids["failed"],
            pipeline=wire_sample.pipeline,
            number=wire_sample.number,
        )
    )
    headers = {"Accept": accept} if accept else {}
    head = wire.raw().head(url, headers=headers)
    got = wire.raw().get(url, headers=headers)
    assert head.status_code == got.status_code
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert int(head.headers["content-length"]) == len(got.content)


def test_a_bare_head_of_a_log_gives_its_raw_size(wire: Door, wire_sample: SampleBuild) -> None:
    job_id = wire_sample.job_ids["failed"]
    head = wire.raw().head(f"{wire.base_url}/organizations/{ORG}/jobs/{job_id}/log")
    assert int(head.headers["content-length"]) == len(wire.fake.log(job_id))


def test_head_does_not_count_as_a_poll(wire: Door) -> None:
    number = wire.fake.add_build("p")
    job_id = wire.fake.add_job("p", number, state="scheduled")
    wire.fake.script_job(job_id, "passed", after_polls=1)
    raw = wire.raw()
    raw.head(f"{wire.base_url}/organizations/{ORG}/jobs/{job_id}")
    raw.head(f"{wire.base_url}/organizations/{ORG}/pipelines/p/builds/{number}/jobs")
    assert wire.fake.job(job_id)["state"] == "scheduled"


@pytest.mark.parametrize(
    ("query", "status"),
    [("per_page=%D9%A3", 400), ("per_page=%205", 400), ("per_page=05", 200)],
)
def test_per_page_takes_ascii_digits_only(
    wire: Door, wire_sample: SampleBuild, query: str, status: int
) -> None:
    path = f"/organizations/{ORG}/pipelines/{wire_sample.pipeline}/builds/{wire_sample.number}/jobs"
    assert wire.raw().get(f"{wire.base_url}{path}?{query}").status_code == status


@pytest.mark.parametrize("suffix", ["/jobs", ""])
def test_a_build_number_in_another_script_is_not_found(
    wire: Door, wire_sample: SampleBuild, suffix: str
) -> None:
    path = f"/organizations/{ORG}/pipelines/{wire_sample.pipeline}/builds/%D9%A1{suffix}"
    answer = wire.raw().get(wire.base_url + path)
    assert (answer.status_code, answer.json()) == (404, {"message": "No build found"})


def test_a_cursor_only_works_in_its_own_build(door: Door, sample: SampleBuild) -> None:
    other = door.fake.add_build(sample.pipeline)
    for _ in range(3):
        door.fake.add_job(sample.pipeline, other)
    client = door.client()
    page = client.list_jobs(sample.pipeline, sample.number, per_page=2)
    assert page.next_url is not None
    cursor = httpx.URL(page.next_url).params["after"]
    with pytest.raises(BadRequestError, match="Invalid cursor"):
        client.list_jobs(sample.pipeline, other, after=cursor)


class _BrokenLog(LogSource):
    """A log whose second chunk fails."""

    size = 200_000

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        yield b"x" * 65536
        raise OSError("disk gone")


def test_an_error_mid_log_cuts_the_answer_and_is_visible(wire: Door) -> None:
    number = wire.fake.add_build("p")
    job_id = wire.fake.add_job("p", number, log=_BrokenLog())
    with pytest.raises(httpx.RemoteProtocolError):
        wire.raw().get(f"{wire.base_url}/organizations/{ORG}/jobs/{job_id}/log.txt")
    assert [type(e) for e in wire.fake.errors] == [OSError]
