"""Fixes from the plugin's QA review, each with the input that used to fail (``pytester``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import respx  # noqa: F401 - imported once here, not again in every in-process run

from pytest_bkjobs import _cassette_session  # noqa: F401 - same
from pytest_bkjobs._cassette_redact import Redactor
from pytest_bkjobs.cli import main as bkjobs_main
from pytest_bkjobs.fake import FakeBuildkite

from .conftest import FIXTURES

QUICK = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")
BASE = "https://api.buildkite.com/v2"
JOB_URL = f"{BASE}/organizations/acme/jobs/j-1"
SECRET = "s3cr3t-deploy-value"


def ix(uri: str = JOB_URL, *, status: int = 200, headers: Any = None, body: Any = None) -> Any:
    """One GET interaction answering a job."""
    return {
        "request": {"method": "GET", "uri": uri, "headers": {}, "body": None},
        "response": {
            "status": status,
            "reason": "OK",
            "http_version": "HTTP/1.1",
            "headers": headers or {"content-type": ["application/json"]},
            "body": body or {"json": {"id": "j-1", "type": "script", "state": "passed"}},
        },
    }


def write(pytester: pytest.Pytester, name: str, *interactions: Any, base: str = BASE) -> Path:
    path = pytester.path / "cassettes" / "test_mod" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": 1, "base_url": base, "org": "acme", "interactions": list(interactions)}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBuildkite:
    fake = FakeBuildkite()
    monkeypatch.setenv("BUILDKITE_API_TOKEN", fake.token)
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", fake.org)
    monkeypatch.delenv("BUILDKITE_API_URL", raising=False)
    return fake


# -- 1. a value masked for its secret name is replaced everywhere; 9. volatile headers ----------


def test_secret_masked_by_name_is_replaced_in_every_interaction(
    pytester: pytest.Pytester, fake: FakeBuildkite
) -> None:
    ids = fake.sample_build().job_ids
    env = {"DEPLOY_API_TOKEN": SECRET, "SHORT_TOKEN": "abc", "APP_ENV": "ci"}
    fake.update_job(ids["current"], env=env, log=f"deploying with {SECRET}\nabc stays\n")
    fake.update_job(ids["failed"], log=b"\xff\xfe binary " + SECRET.encode() + b" \x80\n")
    pytester.makepyfile(
        test_mod=f"""
        def test_leak(bk_client):
            # The logs come first: the env that masks the secret is only seen afterwards.
            assert "deploying with" in bk_client.get_job_log_text({ids["current"]!r})
            with bk_client.stream_job_log({ids["failed"]!r}) as chunks:
                assert b"binary" in b"".join(chunks)
            assert bk_client.get_job_env({ids["current"]!r})["APP_ENV"] == "ci"
            assert "APP_ENV" in bk_client.get_job_env_text({ids["current"]!r})
            bk_client.get_job({ids["current"]!r})
        """
    )
    with fake.serve() as url:
        result = pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url)
    result.assert_outcomes(passed=1)
    (path,) = pytester.path.rglob("cassettes/**/*.json")
    text = path.read_text("utf-8")
    assert SECRET not in text
    data = json.loads(text)
    bodies = [i["response"]["body"] for i in data["interactions"]]
    assert bodies[0] == {"text": "deploying with [REDACTED]\nabc stays\n"}  # short: left alone
    assert b"binary [REDACTED] " in __import__("base64").b64decode(bodies[1]["base64"])
    assert bodies[2]["json"]["env"]["SHORT_TOKEN"] == "[REDACTED]"
    for interaction in data["interactions"]:
        headers = interaction["response"]["headers"]
        assert not {"date", "server"} & headers.keys()  # volatile: every re-record would diff
        assert "content-type" in headers
    pytester.runpytest(*QUICK).assert_outcomes(passed=1)  # the redacted file replays


def test_volatile_response_headers_are_dropped_and_useful_ones_kept() -> None:
    volatile = ["date", "server", "via", "x-request-id", "x-amz-cf-id", "x-amz-cf-pop", "cf-ray"]
    kept = ["content-type", "link", "ratelimit-remaining", "ratelimit-reset", "etag"]
    interaction = ix(headers={name: ["v"] for name in [*volatile, *kept, "set-cookie"]})
    headers = Redactor().apply(interaction)["response"]["headers"]
    assert sorted(headers) == sorted([*kept, "content-length"])


# -- 2. nested classes ---------------------------------------------------------------------------


def test_nested_classes_get_their_full_class_path(pytester: pytest.Pytester) -> None:
    write(pytester, "TestK.TestInner.test_m", ix())
    write(pytester, "TestOther.TestInner.test_m", ix())
    pytester.makepyfile(
        test_mod="""
        class TestK:
            class TestInner:
                def test_m(self, bk_client):
                    assert bk_client.get_job("j-1").id == "j-1"

        class TestOther:
            class TestInner:
                def test_m(self, bk_client):
                    assert bk_client.get_job("j-1").id == "j-1"
        """
    )
    result = pytester.runpytest(*QUICK)
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*several tests would use the same cassette*")


# -- 4. replay builds no SSL context per client --------------------------------------------------


def test_replay_clients_share_one_ssl_context(pytester: pytest.Pytester) -> None:
    for i in range(3):
        write(pytester, f"test_sync[{i}]", ix())
        write(pytester, f"test_async[{i}]", ix())
    pytester.makeconftest(
        """
        import ssl
        import pytest

        BUILT = []

        @pytest.fixture(autouse=True)
        def count_ssl_contexts(monkeypatch):
            real = ssl.create_default_context
            monkeypatch.setattr(
                ssl, "create_default_context", lambda *a, **k: BUILT.append(1) or real(*a, **k)
            )

        def pytest_sessionfinish(session):
            print(f"\\nssl contexts built: {len(BUILT)}")
        """
    )
    pytester.makepyfile(
        test_mod="""
        import asyncio
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_sync(bk_client, i):
            assert bk_client.get_job("j-1").id == "j-1"

        @pytest.mark.parametrize("i", range(3))
        def test_async(bk_async_client, i):
            assert asyncio.run(bk_async_client.get_job("j-1")).id == "j-1"
        """
    )
    result = pytester.runpytest(*QUICK, "-s")
    result.assert_outcomes(passed=6)
    line = next(x for x in result.outlines if x.startswith("ssl contexts built:"))
    assert int(line.split(":")[1]) <= 1  # at most the shared one (it may already exist)


# -- 5. cassette validation ----------------------------------------------------------------------


def _with(path: list[str], value: Any) -> Any:
    interaction = ix()
    target = interaction
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return interaction


@pytest.mark.parametrize(
    ("interaction", "problem"),
    [
        (
            _with(["response", "body"], {"base64": "!!!notb64"}),
            "interactions[[]1].response.body.base64 is not valid base64*",
        ),
        (
            _with(["request", "body"], {"base64": "!!!notb64"}),
            "interactions[[]1].request.body.base64 is not valid base64*",
        ),
        (
            _with(["response", "status"], 99999),
            "interactions[[]1].response.status 99999 is not an HTTP status (100-599)",
        ),
        (
            _with(["request", "uri"], "https://api.buildkite.com:99999/v2/organizations/acme"),
            "interactions[[]1].request.uri 'https://api.buildkite.com:99999/*' is not a valid URL*",
        ),
        (
            _with(["request", "uri"], "/v2/organizations/acme/jobs/j-1"),
            "interactions[[]1].request.uri * is not an absolute http(s) URL*",
        ),
        (
            _with(["response", "headers"], {"x-note": ["\u4e2d"]}),
            "interactions[[]1].response.headers[[]'x-note'] value '\u4e2d' is not latin-1 text*",
        ),
    ],
    ids=["response-base64", "request-base64", "status", "port", "relative-uri", "header"],
)
def test_bad_cassette_content_is_a_format_error_at_load(
    pytester: pytest.Pytester, interaction: Any, problem: str
) -> None:
    write(pytester, "test_a", ix(), interaction)
    pytester.makepyfile(
        test_mod="""
        import pytest

        @pytest.mark.bk_cassette(match_on=["method", "host", "port", "path"])
        def test_a(bk_client):
            bk_client.get_job("j-1")
        """
    )
    result = pytester.runpytest(*QUICK)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"bkjobs: cassette cassettes/test_mod/test_a.json *: {problem}"])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*ValueError*")


# -- 6. re-record hints keep the API URL ---------------------------------------------------------


def test_rerecord_hint_repeats_bk_api_url(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mod="def test_a(bk_client):\n    bk_client.get_job('j-1')\n")
    result = pytester.runpytest(*QUICK, "--bk-api-url", "http://127.0.0.1:8080/v2")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "Record it with: pytest --bk-record --bk-api-url http://127.0.0.1:8080/v2"
            " 'test_mod.py::test_a'"
        ]
    )


def test_rerecord_hint_names_the_url_a_cassette_was_recorded_against(
    pytester: pytest.Pytester,
) -> None:
    write(pytester, "test_a", ix("http://127.0.0.1:8080/v2/organizations/acme/jobs/j-1"),
          base="http://127.0.0.1:8080/v2")  # fmt: skip
    pytester.makepyfile(test_mod="def test_a(bk_client):\n    bk_client.get_job('j-2')\n")
    result = pytester.runpytest(*QUICK)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*To re-record this test: pytest --bk-record --bk-api-url http://127.0.0.1:8080/v2"
            " 'test_mod.py::test_a'  (recorded against http://127.0.0.1:8080/v2; drop"
            " --bk-api-url to record the real API)"
        ]
    )


# -- 7. the summary counts setup errors and unplayed interactions as errors ----------------------


def test_summary_counts_cassette_errors(pytester: pytest.Pytester) -> None:
    write(pytester, "test_ok", ix())
    write(pytester, "test_unplayed", ix(), ix())
    write(pytester, "test_corrupt", ix())
    (pytester.path / "cassettes" / "test_mod" / "test_corrupt.json").write_text("{nope")
    pytester.makepyfile(
        test_mod="""
        def test_ok(bk_client):
            bk_client.get_job("j-1")

        def test_unplayed(bk_client):
            bk_client.get_job("j-1")

        def test_missing(bk_client):
            bk_client.get_job("j-1")

        def test_corrupt(bk_client):
            bk_client.get_job("j-1")
        """
    )
    result = pytester.runpytest(*QUICK)
    result.assert_outcomes(passed=2, errors=3)
    result.stdout.fnmatch_lines(
        ["bkjobs: cassettes 1 replayed, 3 with errors; 1 interaction(s) unused"]
    )


# -- 8. cassette convert never overwrites by accident --------------------------------------------


def test_convert_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = FIXTURES / "cassettes" / "buildkiterb_job_retry_retry_source_2023.yml"
    existing = tmp_path / "existing.yml"
    existing.write_text("keep: me\n")
    assert bkjobs_main(["cassette", "convert", str(src), "-o", str(existing), "--force"]) != 0
    assert "ends in .yml but a converted cassette is JSON" in capsys.readouterr().err
    assert existing.read_text() == "keep: me\n"
    dest = tmp_path / "out.json"
    dest.write_text("{}")
    assert bkjobs_main(["cassette", "convert", str(src), "-o", str(dest)]) != 0
    assert f"the destination {dest} already exists" in capsys.readouterr().err
    assert dest.read_text() == "{}"
    assert bkjobs_main(["cassette", "convert", str(src), "-o", str(dest), "--force"]) == 0
    assert json.loads(dest.read_text())["version"] == 1


# -- 9. Windows device names ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CON", "nul.json", "com1", "LPT9"])
def test_windows_device_names_are_not_used_as_file_names(
    pytester: pytest.Pytester, name: str
) -> None:
    pytester.makepyfile(
        test_mod=f"""
        import pytest

        @pytest.mark.bk_cassette({name!r})
        def test_a(bk_client):
            pass
        """
    )
    result = pytester.runpytest(*QUICK)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"*no cassette for test_mod.py::test_a at cassettes/test_mod/_{name}-*.json*"]
    )
