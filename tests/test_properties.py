"""Properties checked with hypothesis (derandomized: the same examples on every run)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pytest_bkjobs import InvalidResponseError, parse_env_text
from pytest_bkjobs._cassette import (
    body_bytes,
    encode_body,
    load_cassette,
    save_cassette,
)
from pytest_bkjobs._cassette_match import DEFAULT_MATCH_ON, differences
from pytest_bkjobs._models import Job, JobLog, JobsPage
from pytest_bkjobs.fake import FakeBuildkite

MODEST = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: For the costlier properties (each example writes and fsyncs a file, or parses many jobs).
FEWER = settings(MODEST, max_examples=50)

# -- Job.from_api -------------------------------------------------------------------------------

JOB_KEYS = [
    "id",
    "type",
    "state",
    "name",
    "label",
    "graphql_id",
    "step_key",
    "group_key",
    "step",
    "priority",
    "agent_query_rules",
    "command",
    "soft_failed",
    "exit_status",
    "signal",
    "signal_reason",
    "artifact_paths",
    "build_url",
    "web_url",
    "log_url",
    "raw_log_url",
    "artifacts_url",
    "created_at",
    "scheduled_at",
    "runnable_at",
    "started_at",
    "finished_at",
    "expired_at",
    "retried",
    "retried_in_job_id",
    "retries_count",
    "retry_type",
    "retry_source",
    "retried_by",
    "parallel_group_index",
    "parallel_group_total",
    "matrix",
    "agent",
    "cluster_id",
    "cluster_url",
    "cluster_queue_id",
    "cluster_queue_url",
    "unblocked_by",
    "unblocked_at",
    "unblockable",
    "unblock_url",
    "triggered_build",
    "async",
]

#: Timestamps as Buildkite writes them, and broken ones: bad dates, offsets, fractions.
timestamps = st.builds(
    lambda y, mo, d, h, mi, s, frac, sep, zone: (
        f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"
    ),
    st.integers(0, 9999),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.sampled_from(["", ".123", ".123456789", ",5"]),
    st.sampled_from(["T", " ", "t"]),
    st.one_of(
        st.sampled_from(["Z", " UTC", "", "z"]),
        st.builds(
            lambda sign, hh, mm: f"{sign}{hh:02d}:{mm:02d}",
            st.sampled_from("+-"),
            st.integers(0, 99),  # a day or more is not a valid offset: parsed as None
            st.integers(0, 99),
        ),
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),  # json.loads accepts NaN and Infinity
    st.text(max_size=20),
    timestamps,
    st.sampled_from(["passed", "FAILED", "weird_state", "true", "no", "0", " 42 ", "1e3"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=6,
)
job_payloads = st.one_of(
    st.fixed_dictionaries(
        {"id": st.one_of(st.text(min_size=1, max_size=12), st.integers())},
        optional={key: json_values for key in JOB_KEYS if key != "id"},
    ),
    st.dictionaries(st.sampled_from(JOB_KEYS), json_values, max_size=12),
    json_values,
)


@MODEST
@given(job_payloads)
@example({"id": "j", "created_at": "2024-01-01T00:00:00+23:59", "state": "PASSED"})
def test_job_from_api_raises_only_invalid_response_error(payload: Any) -> None:
    try:
        job = Job.from_api(payload)
    except InvalidResponseError:
        return
    assert isinstance(job.id, str)
    assert job.raw == payload
    assert job.display_name is None or isinstance(job.display_name, str)


@pytest.mark.parametrize("stamp", ["2024-01-01T00:00:00+24:00", "2024-01-01 00:00:00 -99:30"])
def test_job_from_api_with_an_impossible_utc_offset(stamp: str) -> None:
    job = Job.from_api({"id": "j", "created_at": stamp, "finished_at": stamp})
    assert job.created_at is None


@FEWER
@given(st.one_of(st.lists(job_payloads, max_size=3), st.dictionaries(st.text(), json_values)))
def test_page_and_log_parsers_raise_only_invalid_response_error(payload: Any) -> None:
    for parse in (JobsPage.from_api, JobLog.from_api):
        with contextlib.suppress(InvalidResponseError):
            parse(payload)


# -- env values through the fake's dotenv text ---------------------------------------------------

TRICKY_VALUES = [
    'say "hi"',
    "a=b=c",
    "# not a comment",
    "x #y",
    "${HOME}",
    "é漢字🙂",
    "\\n",
    "ends \\",
    "\x0b\x0c\x1c\x85\u2028",
    "a\r\nb",
    " lead",
    "trail ",
    "'single'",
    "\\'",
    '\\"',
]
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
env_values = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="\"'\\=#$ \n\r\t`{}", max_size=20),
    st.sampled_from(TRICKY_VALUES),
)


@pytest.fixture(scope="module")
def env_fake() -> tuple[FakeBuildkite, str]:
    fake = FakeBuildkite()
    build = fake.add_build("app")
    return fake, fake.add_job("app", build, name="env")


@MODEST
@given(st.dictionaries(env_names, env_values, max_size=8))
def test_env_values_round_trip_through_the_fakes_dotenv_text(
    env_fake: tuple[FakeBuildkite, str], values: dict[str, str]
) -> None:
    fake, job = env_fake
    fake.update_job(job, env=values)
    with fake.client() as client:
        text = client.get_job_env_text(job)
        as_json = client.get_job_env(job)
    assert parse_env_text(text) == fake.env(job) == as_json


# -- cassette query matching --------------------------------------------------------------------

pairs = st.lists(
    st.tuples(
        st.sampled_from(["state[]", "per_page", "step_key", "after", "q"]),
        st.sampled_from(["", "failed", "passed", "a b", "x&y=z", "é", "100"]),
    ),
    max_size=6,
)


def request(query: list[tuple[str, str]]) -> dict[str, Any]:
    uri = "https://api.buildkite.com/v2/organizations/acme/pipelines/app/builds/1/jobs"
    if query:
        uri += "?" + urlencode(query)
    return {"method": "GET", "uri": uri, "headers": {"accept": ["application/json"]}}


@MODEST
@given(pairs.flatmap(lambda ps: st.tuples(st.just(ps), st.permutations(ps))))
def test_query_matching_ignores_key_order(case: tuple[list[Any], list[Any]]) -> None:
    recorded, live = case
    assert differences(request(recorded), request(list(live)), DEFAULT_MATCH_ON) == []


@MODEST
@given(pairs, pairs)
def test_query_matching_compares_a_multiset(first: list[Any], second: list[Any]) -> None:
    same = sorted(first) == sorted(second)
    assert (differences(request(first), request(second), DEFAULT_MATCH_ON) == []) == same


def test_repeated_values_count() -> None:
    once = request([("state[]", "failed")])
    twice = request([("state[]", "failed"), ("state[]", "failed")])
    assert differences(once, twice, DEFAULT_MATCH_ON)


# -- cassette write then read -------------------------------------------------------------------

finite_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.one_of(
    st.none(),
    st.builds(lambda v: {"json": v}, finite_json),
    st.builds(lambda t: {"text": t}, st.text(max_size=40)),
    st.builds(lambda b: encode_body(b, None) or None, st.binary(max_size=64)),
)
headers = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
    st.lists(st.text(st.characters(max_codepoint=255), max_size=20), max_size=2),  # latin-1
)
interactions = st.fixed_dictionaries(
    {
        "request": st.fixed_dictionaries(
            {
                "method": st.sampled_from(["GET", "PUT", "HEAD", "DELETE"]),
                "uri": st.text(max_size=40).map(lambda t: f"https://api.buildkite.com/v2/{t}"),
                "headers": headers,
                "body": bodies,
            }
        ),
        "response": st.fixed_dictionaries(
            {
                "status": st.integers(100, 599),
                "reason": st.text(max_size=10),
                "http_version": st.just("HTTP/1.1"),
                "headers": headers,
                "body": bodies,
            }
        ),
    }
)
cassettes = st.fixed_dictionaries(
    {"version": st.just(1), "interactions": st.lists(interactions, max_size=4)},
    optional={"base_url": st.text(max_size=30), "org": st.text(max_size=10)},
)


@FEWER
@given(cassettes)
def test_cassette_write_then_read_is_the_identity(tmp_path: Path, data: dict[str, Any]) -> None:
    path = tmp_path / "cassettes" / "test.json"
    save_cassette(path, data)
    assert load_cassette(path) == data
    assert sorted(p.name for p in path.parent.iterdir()) == ["test.json"]


@MODEST
@given(st.binary(max_size=256), st.sampled_from([None, "text/plain", "application/json"]))
def test_body_encoding_keeps_the_bytes(content: bytes, content_type: str | None) -> None:
    body = encode_body(content, content_type)
    if body is not None and "json" in body:
        assert json.loads(body_bytes(body)) == json.loads(content)
    else:
        assert body_bytes(body) == content
