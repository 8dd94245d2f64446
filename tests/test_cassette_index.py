"""Replay lookup: the per-session index answers exactly as a scan with ``differences`` would."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_bkjobs import CassetteExhaustedError, CassetteMissError
from pytest_bkjobs._cassette import save_cassette
from pytest_bkjobs._cassette_match import (
    DEFAULT_MATCH_ON,
    MATCHERS,
    differences,
    matches,
    parse_request,
)
from pytest_bkjobs._cassette_session import CassetteSession, SessionOptions

BASE = "https://api.buildkite.com/v2/organizations/acme"


def message(
    method: str = "GET",
    uri: str = f"{BASE}/jobs/j-1",
    headers: dict[str, list[str]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"method": method, "uri": uri, "headers": headers or {}, "body": body}


VARIANTS = [
    message(),
    message("get"),
    message("HEAD"),
    message(uri=f"{BASE}/jobs/j-2"),
    message(uri="http://api.buildkite.com/v2/organizations/acme/jobs/j-1"),
    message(uri="https://127.0.0.1:8080/v2/organizations/acme/jobs/j-1"),
    message(uri=f"{BASE}/jobs?state=failed&state=passed&per_page=5"),
    message(uri=f"{BASE}/jobs?per_page=5&state=passed&state=failed"),
    message(uri=f"{BASE}/jobs?state=failed&per_page=5"),
    message(uri=f"{BASE}/jobs?state=failed&state=failed&per_page=5"),
    message(uri=f"{BASE}/jobs?blank=&per_page=5"),
    message(headers={"accept": ["application/json"]}),
    message(headers={"accept": ["text/plain"]}),
    message(headers={"accept": ["*/*"]}),
    message(headers={"accept": ["text/plain", "application/json;q=0.5"]}),
    message(headers={"range": ["bytes=-100"]}),
    message(headers={"range": [" bytes=-100 "]}),
    message("PUT", body={"json": {"priority": 1}}),
    message("PUT", body={"text": '{"priority": 1}'}),
    message("PUT", body={"json": {"priority": 2}}),
    message("PUT", body={"json": {}}),
    message("PUT", body=None),
    message("PUT", body={"text": "null"}),
    message("PUT", body={"text": "not json"}),
    message("POST", body={"base64": "bm90IGpzb24="}),
]

MATCH_ONS = [
    DEFAULT_MATCH_ON,
    MATCHERS,
    ("query",),
    ("body",),
    ("method", "host"),
    ("path", "accept"),
    ("scheme", "port", "range"),
]


@pytest.mark.parametrize("match_on", MATCH_ONS, ids="-".join)
def test_matches_agrees_with_differences(match_on: tuple[str, ...]) -> None:
    parsed = [parse_request(m) for m in VARIANTS]
    pairs = list(itertools.product(range(len(VARIANTS)), repeat=2))
    verdicts = [matches(parsed[r], parsed[a], match_on) for r, a in pairs]
    assert verdicts == [not differences(VARIANTS[r], VARIANTS[a], match_on) for r, a in pairs]
    assert any(verdicts)
    assert not all(verdicts)


def session_for(
    tmp_path: Path, requests: list[dict[str, Any]], **options: Any
) -> tuple[CassetteSession, list[dict[str, Any]]]:
    """A replaying session over a cassette whose n-th answer is ``{"n": n}``."""
    interactions = [
        {
            "request": request,
            "response": {
                "status": 200,
                "headers": {"content-type": ["application/json"]},
                "body": {"json": {"n": n}},
            },
        }
        for n, request in enumerate(requests)
    ]
    path = tmp_path / "cassette.json"
    save_cassette(
        path,
        {
            "version": 1,
            "base_url": "https://api.buildkite.com/v2",
            "org": "acme",
            "interactions": interactions,
        },
    )
    return CassetteSession(SessionOptions(path=path, test_id="t", **options)), interactions


def answer(session: CassetteSession, method: str, url: str, **kwargs: Any) -> Any:
    return json.loads(session.handle(httpx.Request(method, url, **kwargs)).content)


def test_identical_requests_play_in_recorded_order_each_once(tmp_path: Path) -> None:
    poll = message(uri=f"{BASE}/jobs/j-1")
    other = message(uri=f"{BASE}/jobs/j-2")
    session, _ = session_for(tmp_path, [poll, other, poll, poll, other])
    url = poll["uri"]
    assert [answer(session, "GET", url)["n"] for _ in range(2)] == [0, 2]
    assert answer(session, "GET", other["uri"])["n"] == 1
    assert answer(session, "GET", url)["n"] == 3
    assert session.played == [True, True, True, True, False]
    with pytest.raises(CassetteExhaustedError, match="matches 3 recorded interaction"):
        session.handle(httpx.Request("GET", url))
    assert answer(session, "GET", other["uri"])["n"] == 4
    assert session.unplayed == []


def test_a_query_mismatch_skips_to_the_next_recorded_page(tmp_path: Path) -> None:
    pages = [message(uri=f"{BASE}/jobs?page={n}&per_page=5") for n in (1, 2, 3)]
    session, _ = session_for(tmp_path, pages)
    assert answer(session, "GET", f"{BASE}/jobs?per_page=5&page=3")["n"] == 2
    assert answer(session, "GET", f"{BASE}/jobs?per_page=5&page=1")["n"] == 0
    assert answer(session, "GET", f"{BASE}/jobs?per_page=5&page=2")["n"] == 1


def test_repeats_replay_the_last_match_when_allowed(tmp_path: Path) -> None:
    poll = message()
    session, _ = session_for(tmp_path, [poll, poll], allow_playback_repeats=True)
    assert [answer(session, "GET", poll["uri"])["n"] for _ in range(4)] == [0, 1, 1, 1]
    assert session.repeats == 2


def test_a_miss_names_the_closest_recorded_requests(tmp_path: Path) -> None:
    session, _ = session_for(tmp_path, [message(uri=f"{BASE}/jobs/j-{n}") for n in range(50)])
    with pytest.raises(CassetteMissError) as info:
        session.handle(httpx.Request("DELETE", f"{BASE}/jobs/j-7/log"))
    text = str(info.value)
    assert "no recorded interaction matches DELETE" in text
    assert "closest recorded requests:" in text
    assert "method: recorded GET, the request is DELETE" in text
    assert session.errors
    assert session.errors[-1] is info.value


def test_match_on_without_method_and_path_scans_everything(tmp_path: Path) -> None:
    recorded = [message(uri=f"{BASE}/jobs/j-{n}?step=a") for n in range(3)]
    session, _ = session_for(tmp_path, recorded, match_on=("query",))
    assert answer(session, "GET", f"{BASE}/anything?step=a")["n"] == 0
    assert answer(session, "HEAD", f"{BASE}/else?step=a") == {"n": 1}
    with pytest.raises(CassetteMissError, match="query key 'step'"):
        session.handle(httpx.Request("GET", f"{BASE}/jobs/j-2?step=b"))


def test_put_bodies_match_as_json_through_the_index(tmp_path: Path) -> None:
    put = f"{BASE}/jobs/j-1/reprioritize"
    recorded = [message("PUT", put, body={"json": {"priority": n}}) for n in (1, 2)]
    session, _ = session_for(tmp_path, recorded)
    assert answer(session, "PUT", put, content=b'{ "priority" : 2 }')["n"] == 1
    assert answer(session, "PUT", put, json={"priority": 1})["n"] == 0


def test_each_replayed_response_is_a_fresh_object(tmp_path: Path) -> None:
    poll = message()
    session, _ = session_for(tmp_path, [poll], allow_playback_repeats=True)
    first = session.handle(httpx.Request("GET", poll["uri"]))
    first.headers["x-changed"] = "1"
    first.extensions["changed"] = True
    second = session.handle(httpx.Request("GET", poll["uri"]))
    assert second is not first
    assert "x-changed" not in second.headers
    assert "changed" not in second.extensions
    assert second.content == first.content == b'{"n":0}'
    assert second.headers["content-length"] == str(len(second.content))


def test_recording_forwards_the_client_timeout(tmp_path: Path) -> None:
    options = SessionOptions(path=tmp_path / "new.json", test_id="t", mode="all")
    session = CassetteSession(options)
    timeout = httpx.Timeout(0.2).as_dict()
    request = httpx.Request("GET", f"{BASE}/jobs/j-1", extensions={"timeout": timeout})
    forward = session._forward_request(request)
    assert forward.extensions["timeout"] == timeout
    assert str(forward.url) == f"{BASE}/jobs/j-1"
