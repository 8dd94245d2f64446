"""Cassette format, matching, redaction, file names and the VCR converter, unit by unit."""

from __future__ import annotations

import base64
import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_bkjobs import (
    BuildkiteError,
    CassetteError,
    CassetteFormatError,
    ConfigurationError,
    InvalidArgumentError,
)
from pytest_bkjobs._cassette import (
    body_bytes,
    dump_cassette,
    encode_body,
    load_cassette,
    save_cassette,
)
from pytest_bkjobs._cassette_marker import safe_name
from pytest_bkjobs._cassette_match import check_match_on, differences, query_pairs
from pytest_bkjobs._cassette_redact import Redactor, redactor_for
from pytest_bkjobs._vcr_convert import convert_file, convert_vcr_yaml

from .conftest import FIXTURES, TOKEN

URI = "https://api.buildkite.com/v2/organizations/acme/jobs/j-1"


def interaction(**overrides: Any) -> dict[str, Any]:
    request = {"method": "GET", "uri": URI, "headers": {}, "body": None}
    response = {
        "status": 200,
        "reason": "OK",
        "http_version": "HTTP/1.1",
        "headers": {"content-type": ["application/json"]},
        "body": {"json": {"id": "j-1"}},
    }
    request.update(overrides.pop("request", {}))
    response.update(overrides.pop("response", {}))
    return {"request": request, "response": response}


# -- bodies and files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "tagged"),
    [
        (b'{"b": 1, "a": [2]}', "application/json; charset=utf-8", {"json": {"b": 1, "a": [2]}}),
        (b"not json {", "application/json", {"text": "not json {"}),
        ("~~~ log ↳\r\n".encode(), "text/plain", {"text": "~~~ log ↳\r\n"}),
        (b"\xff\xfe\x80", "text/plain", {"base64": base64.b64encode(b"\xff\xfe\x80").decode()}),
        (b"", "application/json", None),
    ],
)
def test_bodies_are_tagged_and_round_trip(
    content: bytes, content_type: str, tagged: dict[str, Any] | None
) -> None:
    assert encode_body(content, content_type) == tagged
    if tagged is None or "json" not in tagged:
        assert body_bytes(tagged) == content
    else:
        assert json.loads(body_bytes(tagged)) == json.loads(content)


def test_big_integers_survive() -> None:
    times = [1563337899921000000, 156333791038291900]
    body = encode_body(json.dumps({"header_times": times}).encode(), "application/json")
    assert json.loads(body_bytes(body))["header_times"] == times


def test_dump_is_deterministic_and_reviewable() -> None:
    data = {"version": 1, "interactions": [interaction()], "base_url": "x"}
    text = dump_cassette(data).decode()
    assert text.endswith("}\n")
    assert text.index('"base_url"') < text.index('"interactions"') < text.index('"version"')
    assert '\n  "version": 1' in text
    assert dump_cassette(json.loads(text)) == text.encode()


def test_save_is_atomic_and_creates_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "cassettes" / "mod" / "test_a.json"
    save_cassette(path, {"version": 1, "interactions": [interaction()]})
    assert load_cassette(path)["interactions"][0]["request"]["uri"] == URI
    with pytest.raises(ValueError, match="unknown cassette version 2"):
        save_cassette(path, {"version": 2, "interactions": []})
    assert load_cassette(path)["version"] == 1  # the good file is still there
    assert [p.name for p in path.parent.iterdir()] == ["test_a.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff", "is not valid JSON"),
        (b"[]", "is not usable: the top level is not a JSON object"),
        (b'{"version": 1}', "'interactions' is missing or not a list"),
        (b'{"version": 1, "interactions": [1]}', r"interactions\[0\] is not an object"),
        (
            b'{"version":1,"interactions":[{"request":{"method":"GET","uri":"u","headers":'
            b'{"a":"b"}},"response":{"status":200}}]}',
            r"interactions\[0\].request.headers must map names to lists of strings",
        ),
        (
            b'{"version":1,"interactions":[{"request":{"method":"GET","uri":"u"},'
            b'"response":{"status":"200"}}]}',
            r"interactions\[0\].response.status must be an integer",
        ),
        (
            b'{"version":1,"interactions":[{"request":{"method":"GET","uri":"u","body":"x"},'
            b'"response":{"status":200}}]}',
            r"interactions\[0\].request.body must be null or one of",
        ),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content)
    with pytest.raises(CassetteFormatError, match=message) as info:
        load_cassette(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, CassetteError)
    assert isinstance(info.value, BuildkiteError)


# -- matching -----------------------------------------------------------------------------------


def req(uri: str, method: str = "GET", body: Any = None) -> dict[str, Any]:
    return {"method": method, "uri": uri, "headers": {}, "body": body}


def test_query_is_a_multiset_with_blank_values() -> None:
    a = "https://x/v2/jobs?state%5B%5D=running&state%5B%5D=failed&b=&c=1"
    b = "https://x/v2/jobs?c=1&state[]=failed&b=&state[]=running"
    assert query_pairs(a) == query_pairs(b)
    assert differences(req(a), req(b), ("method", "path", "query")) == []
    fewer = "https://x/v2/jobs?c=1&state[]=running&b="
    assert differences(req(a), req(fewer), ("query",)) == [
        "query key 'state[]': recorded ['failed', 'running'], the request has ['running']"
    ]
    twice = "https://x/v2/jobs?c=1&state[]=running&state[]=running&b=&state[]=failed"
    assert differences(req(a), req(twice), ("query",)) == [
        "query key 'state[]': recorded ['failed', 'running'], the request has"
        " ['failed', 'running', 'running']"
    ]
    no_blank = "https://x/v2/jobs?c=1&state[]=running&state[]=failed"
    assert differences(req(a), req(no_blank), ("query",)) == [
        "query key 'b': recorded [''], missing from the request"
    ]


def test_put_bodies_compare_as_json() -> None:
    url = "https://x/v2/jobs/1/unblock"
    recorded = req(url, "PUT", {"text": '{"fields": {"a": "1"}}'})
    same = req(url, "PUT", {"json": {"fields": {"a": "1"}}})
    other = req(url, "PUT", {"json": {"fields": {"a": "2"}}})
    assert differences(recorded, same, ("body",)) == []
    diff = differences(recorded, other, ("body",))
    assert diff[0] == "body differs:"
    assert '    -    "a": "1"' in diff
    assert '    +    "a": "2"' in diff
    # No body, {} and null all mean "no parameters".
    assert differences(req(url, "PUT", {"text": "{}"}), req(url, "PUT"), ("body",)) == []
    # GET bodies are not compared.
    assert differences(req(url, "GET", {"text": "x"}), req(url), ("body",)) == []


def test_method_host_and_path_differences() -> None:
    recorded = req("https://api.buildkite.com/v2/a")
    live = req("http://127.0.0.1:8080/v2/b", "DELETE")
    assert differences(recorded, live, ("method", "scheme", "host", "port", "path")) == [
        "method: recorded GET, the request is DELETE",
        "scheme: recorded 'https', the request has 'http'",
        "host: recorded 'api.buildkite.com', the request has '127.0.0.1'",
        "port: recorded None, the request has 8080",
        "path: recorded /v2/a, the request has /v2/b",
    ]
    assert differences(recorded, live, ("query",)) == []


@pytest.mark.parametrize("value", ["method", [], ["method", "verb"], 3])
def test_match_on_is_validated(value: Any) -> None:
    with pytest.raises(ValueError, match="match_on"):
        check_match_on(value)
    assert check_match_on(None) == ("method", "path", "query", "accept", "range", "body")


def test_accept_and_range_headers_tell_log_and_env_formats_apart() -> None:
    def get(**headers: str) -> dict[str, Any]:
        return {"method": "GET", "uri": URI, "headers": {k: [v] for k, v in headers.items()}}

    match_on = check_match_on(None)
    text, json_ = get(accept="text/plain"), get(accept="application/json")
    assert differences(text, json_, match_on) == [
        "accept header: recorded 'text/plain', the request has 'application/json'"
    ]
    assert differences(get(), json_, match_on) == []  # a VCR recording without Accept
    assert differences(get(accept="application/json; charset=utf-8"), json_, match_on) == []
    tail = get(accept="text/plain", range="bytes=-100")
    assert differences(text, tail, match_on) == [
        "range header: recorded None, the request has 'bytes=-100'"
    ]
    assert differences(text, tail, ("method", "path")) == []


# -- redaction ----------------------------------------------------------------------------------


def test_redaction_covers_every_part_of_an_interaction() -> None:
    item = interaction(
        request={
            "method": "PUT",
            "uri": f"{URI}/unblock?access_token={TOKEN}",
            "headers": {
                "authorization": [f"Bearer {TOKEN}"],
                "cookie": ["s=1"],
                "x-echo": [TOKEN],
                "content-length": ["999"],
            },
            "body": {"json": {"fields": {"DEPLOY_TOKEN": "hunter2", "note": f"t={TOKEN}"}}},
        },
        response={
            "headers": {"set-cookie": ["s=2"], "content-length": ["5"], "x-token": [TOKEN]},
            "body": {"base64": base64.b64encode(b"\xff" + TOKEN.encode()).decode()},
        },
    )
    clean = redactor_for(None).apply(item)  # the token is learnt from the Authorization header
    text = json.dumps(clean)
    assert TOKEN not in text
    assert "hunter2" not in text
    assert base64.b64encode(TOKEN.encode()).decode()[:20] not in text
    request, response = clean["request"], clean["response"]
    assert set(request["headers"]) == {"x-echo", "content-length"}
    assert request["uri"] == f"{URI}/unblock?access_token=[REDACTED]"
    assert request["body"]["json"]["fields"] == {
        "DEPLOY_TOKEN": "[REDACTED]",
        "note": "t=[REDACTED]",
    }
    assert request["headers"]["content-length"] == [str(len(body_bytes(request["body"])))]
    assert "set-cookie" not in response["headers"]
    assert body_bytes(response["body"]) == b"\xff[REDACTED]"
    assert response["headers"]["content-length"] == ["11"]
    assert item["request"]["headers"]["authorization"]  # the original is left alone


def test_env_responses_are_masked_in_json_and_text() -> None:
    env = {"APP_ENV": "ci", "DATABASE_PASSWORD": "hunter2", "MY_CUSTOM": "x1", "EMPTY_TOKEN": ""}
    redactor = Redactor(env_patterns=("MY_*",))
    as_json = redactor.apply(
        interaction(request={"uri": f"{URI}/env"}, response={"body": {"json": {"env": env}}})
    )
    assert as_json["response"]["body"]["json"]["env"] == {
        "APP_ENV": "ci",
        "DATABASE_PASSWORD": "[REDACTED]",
        "MY_CUSTOM": "[REDACTED]",
        "EMPTY_TOKEN": "",
    }
    text = (
        'APP_ENV="ci"\nDATABASE_PASSWORD="hunter2"\nSSH_PRIVATE_KEY="-----BEGIN\nabc\n-----END"\n'
    )
    as_text = redactor.apply(
        interaction(
            request={"uri": f"{URI}/env.txt"},
            response={"headers": {"content-type": ["text/plain"]}, "body": {"text": text}},
        )
    )
    masked = as_text["response"]["body"]["text"]
    assert "hunter2" not in masked
    assert "abc" not in masked
    assert 'APP_ENV="ci"' in masked
    assert as_text["response"]["headers"]["content-length"] == [str(len(masked.encode()))]


def test_head_keeps_its_content_length() -> None:
    item = interaction(
        request={"method": "HEAD", "uri": f"{URI}/log"},
        response={"headers": {"content-length": ["1403"]}, "body": None},
    )
    assert Redactor().apply(item)["response"]["headers"]["content-length"] == ["1403"]


def test_short_values_are_not_treated_as_secrets() -> None:
    redactor = redactor_for("abc")
    assert redactor.scrub_text("abc abcdef") == "abc abcdef"


# -- file names ---------------------------------------------------------------------------------


def test_file_names_are_safe_stable_and_unique() -> None:
    assert safe_name("test_a") == "test_a"
    long = "x" * 300
    assert safe_name(long) == safe_name(long)
    assert len(safe_name(long)) == 51
    assert safe_name("a/b") != safe_name("a:b")
    assert "/" not in safe_name("a/b")
    assert safe_name("..") not in (".", "..")


# -- the VCR converter --------------------------------------------------------------------------


@pytest.mark.parametrize("source", sorted((FIXTURES / "cassettes").glob("*.yml")), ids=str)
def test_every_real_cassette_converts(source: Path, tmp_path: Path) -> None:
    dest = convert_file(source, tmp_path / "out.json")
    data = load_cassette(dest)
    assert data["interactions"]
    for item in data["interactions"]:
        headers = {**item["request"]["headers"], **item["response"]["headers"]}
        assert "authorization" not in headers
        assert "content-encoding" not in headers
        assert "transfer-encoding" not in headers
        assert item["request"]["method"].isupper()
    assert "<AUTHORIZATION>" not in dest.read_text()


def test_converter_decodes_vcrpy_binary_gzip_bodies() -> None:
    payload = {"id": "j-1", "state": "passed"}
    packed = base64.b64encode(gzip.compress(json.dumps(payload).encode())).decode()
    text = f"""
interactions:
- request:
    body: null
    headers:
      Authorization: [Bearer {TOKEN}]
    method: GET
    uri: {URI}
  response:
    body: {{string: !!binary "{packed}"}}
    headers:
      Content-Encoding: [gzip]
      Content-Type: [application/json]
    status: {{code: 200, message: OK}}
version: 1
"""
    data = convert_vcr_yaml(text)
    (item,) = data["interactions"]
    assert item["response"]["body"] == {"json": payload}
    assert data["org"] == "acme"
    assert data["base_url"] == "https://api.buildkite.com/v2"
    assert TOKEN not in json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "not valid YAML"),
        ("- 1\n- 2\n", "the top level is not a mapping"),
        ("recorded_with: VCR\n", "expected a list under 'http_interactions'"),
        ("interactions:\n- {request: {method: GET}}\n", "interaction 0 has no response mapping"),
        (
            "interactions:\n- {request: {method: GET, uri: u}, response: {status: {code: x}}}\n",
            "interaction 0.response.status has no integer code",
        ),
    ],
)
def test_converter_rejects_bad_input_clearly(text: str, message: str) -> None:
    with pytest.raises(CassetteFormatError, match=message):
        convert_vcr_yaml(text)


def test_convert_file_errors_and_default_destination(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a file"):
        convert_file(tmp_path / "missing.yml")
    source = tmp_path / "c.yml"
    source.write_bytes((FIXTURES / "cassettes" / "shopify_buildkit_404_error.yml").read_bytes())
    with pytest.raises(InvalidArgumentError, match="is the source itself"):
        convert_file(source, source)
    with pytest.raises(InvalidArgumentError, match="does not exist; create it first"):
        convert_file(source, tmp_path / "nope" / "c.json")
    assert convert_file(source) == tmp_path / "c.json"
    bad = tmp_path / "bad.yml"
    bad.write_text("recorded_with: VCR\n")
    with pytest.raises(CassetteFormatError, match=r"bad.yml: not a VCR cassette"):
        convert_file(bad)
    assert not (tmp_path / "bad.json").exists()


def test_converter_without_pyyaml_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'pytest-bkjobs\[yaml\]'"):
        convert_vcr_yaml("interactions: []")
