"""Models parse every real payload, and tolerate the drift of older ones."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import yaml

from pytest_bkjobs import InvalidResponseError, Job, JobLog, JobsPage, JobState
from pytest_bkjobs._models import parse_time
from tests.conftest import FIXTURES, load_json


def all_jobs_in(payload: Any) -> list[dict[str, Any]]:
    """The job objects in a list page, a build, a list of builds, or a bare job."""
    if isinstance(payload, list):
        return [job for build in payload for job in build.get("jobs", [])]
    if "items" in payload:
        return list(payload["items"])
    if "jobs" in payload:
        return list(payload["jobs"])
    return [payload]


JOB_FILES = [
    "docs_list_jobs_cursor_paginated.json",
    "docs_unblock_manual_job_response.json",
    "docs_get_build_with_jobs_retry_source.json",
    "docs_trigger_job_triggered_build.json",
    "go_buildkite_get_job_matrix_signal_retried_by.json",
    "segment_tracing_builds_running_and_assigned.json",
    "buildkite_cli_builds_list_redacted_empty_objects.json",
]


@pytest.mark.parametrize("name", JOB_FILES)
def test_every_real_job_payload_parses(name: str):
    payloads = all_jobs_in(load_json(name))
    for payload in payloads:
        job = Job.from_api(payload)
        assert job.id == payload["id"]
        assert job.raw == payload
        assert job.state is None or job.state is not JobState.UNKNOWN


def test_job_fields_from_the_docs_listing():
    job = Job.from_api(load_json("docs_list_jobs_cursor_paginated.json")["items"][0])
    assert job.type == "script"
    assert job.name == ":package: Build"
    assert job.step_key == "build"
    assert job.priority == 0
    assert job.exit_status == 0
    assert job.soft_failed is False
    assert job.retried is False
    assert job.retries_count is None
    assert job.started_at == datetime(2015, 5, 9, 21, 6, 5, tzinfo=timezone.utc)
    assert job.is_finished


def test_retry_source_and_signature_from_the_build_payload():
    [payload] = load_json("docs_get_build_with_jobs_retry_source.json")["jobs"]
    job = Job.from_api(payload)
    assert job.retries_count == 1
    assert job.retry_source is not None
    assert job.retry_source.retry_type == "manual"
    assert job.retry_type is None
    assert job.group_key == payload.get("group_key")


def test_matrix_signal_and_retried_by():
    job = Job.from_api(load_json("go_buildkite_get_job_matrix_signal_retried_by.json"))
    assert job.matrix == {"os": "linux", "go": "1.25"}
    assert job.state is JobState.PASSED
    assert job.signal == "SIGTERM"
    assert job.signal_reason == "terminated"
    assert job.expired_at is not None
    assert job.retried_by is not None


def test_trigger_job_without_log_url_or_command():
    job = Job.from_api(load_json("docs_trigger_job_triggered_build.json"))
    assert job.type == "trigger"
    assert job.is_async is False
    assert (job.log_url, job.command, job.exit_status) == (None, None, None)
    assert job.triggered_build is not None
    assert job.triggered_build["number"] == 15


def test_running_jobs_have_no_exit_status():
    jobs = [Job.from_api(p) for p in all_jobs_in(load_json(JOB_FILES[5]))]
    running = [j for j in jobs if j.state in (JobState.RUNNING, JobState.ASSIGNED)]
    assert running
    assert all(j.exit_status is None and j.finished_at is None for j in running)


def test_waiter_with_only_an_id():
    job = Job.from_api({"id": "w1", "graphql_id": "g", "type": "waiter"})
    assert (job.type, job.state, job.display_name) == ("waiter", None, "waiter")


@pytest.mark.parametrize(
    ("payload", "field", "expected"),
    [
        ({"retried": "true"}, "retried", True),
        ({"retried": "false"}, "retried", False),
        ({"retried": None}, "retried", False),
        ({"soft_failed": "1"}, "soft_failed", True),
        ({"exit_status": "1"}, "exit_status", 1),
        ({"exit_status": -1}, "exit_status", -1),
        ({"exit_status": True}, "exit_status", None),
        ({"exit_status": "abc"}, "exit_status", None),
        ({"retries_count": "2"}, "retries_count", 2),
        ({"priority": 3}, "priority", 3),
        ({"priority": {"number": "4"}}, "priority", 4),
        ({"state": "some_future_state"}, "state", JobState.UNKNOWN),
        ({"state": "FAILED"}, "state", JobState.FAILED),
        ({"agent_query_rules": "queue=default"}, "agent_query_rules", ()),
        ({"matrix": ["not", "a", "dict"]}, "matrix", None),
        (
            {"created_at": "2015-04-23 16:55:52 UTC"},
            "created_at",
            datetime(2015, 4, 23, 16, 55, 52, tzinfo=timezone.utc),
        ),
        (
            {"created_at": "2023-08-20T19:42:01.123+02:00"},
            "created_at",
            datetime.fromisoformat("2023-08-20T19:42:01.123+02:00"),
        ),
        ({"created_at": "not a date"}, "created_at", None),
        ({"created_at": 12345}, "created_at", None),
    ],
)
def test_tolerant_parsing(payload: dict[str, Any], field: str, expected: Any):
    assert getattr(Job.from_api({"id": "j", **payload}), field) == expected


def test_unknown_state_keeps_the_raw_string():
    job = Job.from_api({"id": "j", "state": "some_future_state", "extra_key": [1]})
    assert job.raw_state == "some_future_state"
    assert job.raw["extra_key"] == [1]


@pytest.mark.parametrize("payload", [None, [], "job", 3, {}, {"id": ""}, {"id": None}])
def test_not_a_job_is_an_invalid_response(payload: Any):
    with pytest.raises(InvalidResponseError):
        Job.from_api(payload)


@pytest.mark.parametrize(
    "name",
    [
        "docs_job_log_response_header_times.json",
        "segment_tracing_job_log_response_no_bk_markers.json",
    ],
)
def test_real_log_payloads_parse_with_size_in_bytes(name: str):
    payload = load_json(name)
    log = JobLog.from_api(payload)
    assert log.size == payload["size"] == len(log.content.encode("utf-8"))
    assert list(log.header_times) == payload["header_times"]
    assert all(isinstance(t, int) for t in log.header_times)


def test_size_is_bytes_not_characters():
    log = JobLog.from_api(load_json("segment_tracing_job_log_response_no_bk_markers.json"))
    assert log.size == 31556
    assert len(log.content) == 31524


def test_header_times_parsed_from_text_stay_exact():
    raw = (FIXTURES / "json" / "segment_tracing_job_log_response_no_bk_markers.json").read_text()
    log = JobLog.from_api(json.loads(raw))
    assert all(t > 2**53 for t in log.header_times)


def recorded_bodies(name: str) -> list[Any]:
    cassette = yaml.safe_load((FIXTURES / "cassettes" / name).read_text())
    bodies = []
    for interaction in cassette["http_interactions"]:
        text = interaction["response"]["body"].get("string") or ""
        if text.strip():
            bodies.append(json.loads(text))
    return bodies


@pytest.mark.parametrize(
    "name",
    [
        "buildkiterb_build_retrieve_2023.yml",
        "buildkiterb_job_retry_retry_source_2023.yml",
        "buildkiterb_job_unblock_manual_2023.yml",
        "shopify_buildkit_unblock_job_2024.yml",
    ],
)
def test_jobs_in_recorded_cassettes_parse(name: str):
    for body in recorded_bodies(name):
        for payload in all_jobs_in(body):
            assert Job.from_api(payload).id == payload["id"]


def test_recorded_retry_is_a_new_job_with_a_retry_source():
    [body] = recorded_bodies("buildkiterb_job_retry_retry_source_2023.yml")
    job = Job.from_api(body)
    assert job.retry_source is not None
    assert job.retry_source.job_id != job.id
    assert job.retries_count == 1
    assert job.retried is False


def test_recorded_log_with_empty_header_times():
    [body] = recorded_bodies("buildkiterb_job_log_bk_timestamps_2023.yml")
    log = JobLog.from_api(body)
    assert log.header_times == ()
    assert "\x1b_bk;t=" in log.content
    assert log.size == len(log.content.encode())


def test_jobs_page_accepts_a_bare_list_and_rejects_other_shapes():
    assert JobsPage.from_api([{"id": "a"}]).items[0].id == "a"
    with pytest.raises(InvalidResponseError, match="expected {'items'"):
        JobsPage.from_api({"jobs": []})


def test_from_api_sets_every_field_and_equals_the_constructor():
    # from_api fills __dict__ directly for speed: it must still set exactly the dataclass fields.
    import dataclasses

    job = Job.from_api({"id": "x"})
    assert set(job.__dict__) == {f.name for f in dataclasses.fields(Job)}
    assert job == Job(id="x")
    assert repr(job) == repr(Job(id="x"))


def test_a_week_date_is_not_a_timestamp_on_any_python() -> None:
    # The fast path reads a trailing "Z" with fromisoformat, which on 3.11+ also takes ISO week
    # dates; the regex (and 3.10) do not, and the result must not depend on the Python.
    assert parse_time("2015-W17-4T16:55:52Z") is None
    # Likewise a basic-format time (no colons), of the fast path's lengths 24 and 27.
    assert parse_time("2015-04-23T165552.12345Z") is None
    assert parse_time("2015-04-23T165552.12345678Z") is None
    assert parse_time("2015-04-23T16:55:52Z") == datetime(
        2015, 4, 23, 16, 55, 52, tzinfo=timezone.utc
    )


def test_from_api_keeps_its_own_copy_of_the_payload() -> None:
    payload = load_json("docs_list_jobs_cursor_paginated.json")
    item = dict(payload["items"][0])
    job = Job.from_api(item)
    page = JobsPage.from_api(payload)
    item["state"] = "changed by the caller"
    payload["items"][0]["state"] = "changed by the caller"
    assert job.raw["state"] == page.items[0].raw["state"] == "passed"
    assert job.state is page.items[0].state is JobState.PASSED


def test_a_listing_parsed_from_json_keeps_every_field_of_each_job(make_client: Any) -> None:
    payload = load_json("docs_list_jobs_cursor_paginated.json")
    page = make_client(lambda request: httpx.Response(200, json=payload)).list_jobs("p", 1)
    assert [job.raw for job in page.items] == payload["items"]
    assert page.items[0] == Job.from_api(payload["items"][0])
