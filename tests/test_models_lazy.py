"""Jobs fetched by the client parse their fields on first read, and equal eagerly parsed ones."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import threading
from typing import Any

import httpx
import pytest
from hypothesis import given

from pytest_bkjobs import InvalidResponseError, Job, JobState
from pytest_bkjobs._models import parse_owned_job, parse_owned_page
from tests.conftest import FIXTURES
from tests.test_models import JOB_FILES, all_jobs_in
from tests.test_properties import MODEST, job_payloads

FIELD_NAMES = [f.name for f in dataclasses.fields(Job)]


def every_field(job: Job) -> dict[str, Any]:
    """All fields, the mappings that == ignores included."""
    return {name: getattr(job, name) for name in FIELD_NAMES}


def real_job_payloads() -> list[dict[str, Any]]:
    """Every job object in the real fixtures."""
    return [
        payload
        for name in JOB_FILES
        for payload in all_jobs_in(json.loads((FIXTURES / "json" / name).read_text()))
    ]


def test_a_lazy_job_holds_only_its_id_and_payload_until_a_field_is_read() -> None:
    payload = real_job_payloads()[0]
    job = parse_owned_job(payload)
    assert set(vars(job)) == {"id", "raw"}
    assert job.raw is payload  # owned: no copy
    assert job.state is JobState.PASSED
    assert set(vars(job)) == {"id", "raw", "state"}


@pytest.mark.parametrize("payload", real_job_payloads(), ids=lambda p: str(p["id"]))
def test_lazy_and_eager_parses_of_real_jobs_agree_on_every_field(payload: dict[str, Any]) -> None:
    eager = Job.from_api(payload)
    lazy = parse_owned_job(copy.deepcopy(payload))
    # Read in reverse, so that no field relies on another having been read first.
    for name in reversed(FIELD_NAMES):
        assert getattr(lazy, name) == getattr(eager, name), name
    assert lazy == eager
    assert hash(lazy) == hash(eager)
    assert repr(lazy) == repr(eager)


@MODEST
@given(job_payloads)
def test_lazy_and_eager_parses_agree_on_any_payload(payload: Any) -> None:
    try:
        eager = Job.from_api(payload)
    except Exception as error:
        with pytest.raises(type(error)):
            parse_owned_job(copy.deepcopy(payload))
        return
    lazy = parse_owned_job(copy.deepcopy(payload))
    assert every_field(lazy) == every_field(eager)


def test_a_fresh_lazy_job_equals_repr_hashes_and_compares_like_one_built_by_hand() -> None:
    lazy = parse_owned_job({"id": "j", "state": "failed", "priority": {"number": "2"}})
    built = Job(id="j", state=JobState.FAILED, priority=2)
    assert lazy == built
    assert built == lazy
    assert hash(lazy) == hash(built)
    assert repr(lazy) == repr(built)
    assert lazy != parse_owned_job({"id": "j", "state": "passed"})


@pytest.mark.parametrize("read_first", [[], ["state", "created_at"]], ids=["unread", "half-read"])
def test_a_lazy_job_survives_pickle_copy_replace_and_asdict(read_first: list[str]) -> None:
    payload = real_job_payloads()[0]
    eager = Job.from_api(payload)
    lazy = parse_owned_job(copy.deepcopy(payload))
    for name in read_first:
        getattr(lazy, name)
    for twin in (pickle.loads(pickle.dumps(lazy)), copy.copy(lazy), copy.deepcopy(lazy)):
        assert every_field(twin) == every_field(eager)
    assert dataclasses.asdict(lazy) == dataclasses.asdict(eager)
    replaced = dataclasses.replace(lazy, state=JobState.CANCELED)
    assert replaced.state is JobState.CANCELED
    assert every_field(replaced) == {**every_field(eager), "state": JobState.CANCELED}


def test_a_lazy_job_stays_frozen() -> None:
    job = parse_owned_job({"id": "j", "state": "passed"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = JobState.FAILED  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.name = "unread so far"  # type: ignore[misc]
    assert job.state is JobState.PASSED
    assert job.name is None


def test_class_attributes_are_still_the_field_defaults() -> None:
    # Code that reads Job.retried or Job.agent_query_rules as a default keeps working.
    assert Job.type is None
    assert Job.retried is False
    assert Job.agent_query_rules == ()
    assert {f.name: f.default for f in dataclasses.fields(Job)}["state"] is None


def test_threads_reading_one_lazy_job_all_see_the_same_values() -> None:
    payloads = real_job_payloads()
    jobs = [parse_owned_job(copy.deepcopy(p)) for p in payloads]
    expected = [every_field(Job.from_api(p)) for p in payloads]
    seen: list[list[dict[str, Any]]] = []
    start = threading.Barrier(8)

    def read_all() -> None:
        start.wait()
        seen.append([every_field(job) for job in jobs])

    threads = [threading.Thread(target=read_all) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [expected] * 8


def test_a_listing_from_the_client_is_parsed_lazily(make_client: Any) -> None:
    payload = json.loads((FIXTURES / "json" / JOB_FILES[0]).read_text())
    page = make_client(lambda request: httpx.Response(200, json=payload)).list_jobs("p", 1)
    assert all(set(vars(job)) == {"id", "raw"} for job in page.items)
    assert [every_field(job) for job in page.items] == [
        every_field(Job.from_api(item)) for item in payload["items"]
    ]


def test_a_bad_job_in_a_listing_still_fails_the_parse_at_once() -> None:
    # Only the id is checked up front; every other field parses tolerantly, so reading later
    # cannot raise where parsing at once would not have.
    with pytest.raises(InvalidResponseError, match="no 'id'"):
        parse_owned_page({"items": [{"id": "a"}, {"state": "passed"}], "links": {}})


@dataclasses.dataclass(frozen=True)
class TaggedJob(Job):
    """A user's subclass: a field with a default factory, and a __post_init__."""

    tags: list[str] = dataclasses.field(default_factory=list)
    checked: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "checked", True)


def test_a_subclass_from_api_runs_its_init_and_parses_every_field() -> None:
    for payload in real_job_payloads():
        job = TaggedJob.from_api(payload)
        assert type(job) is TaggedJob
        assert job.tags == []
        assert job.checked
        assert every_field(job) == every_field(Job.from_api(payload))
