"""No secret leaks: a unique token through recording, failing tests, the CLI and the fake.

Every byte of output and every file each path writes is scanned for the token (and its
URL-quoted and base64 forms); secret-looking job environment values must not appear where they
are redacted (cassettes, ``bkjobs env``).
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import respx  # noqa: F401 - imported once here, not again in every in-process run

from pytest_bkjobs import _cassette_session  # noqa: F401 - same
from pytest_bkjobs.cli import main
from pytest_bkjobs.fake import FakeBuildkite, SampleBuild

QUICK = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")

#: Secret job environment values, each unique, under names that match the secret patterns.
ENV_SECRETS = {
    "DEPLOY_API_TOKEN": f"dat-{uuid.uuid4().hex}",
    "DB_PASSWORD": f"pw-{uuid.uuid4().hex}",
    "STRIPE_SECRET_KEY": f"sk-{uuid.uuid4().hex}",
    "NPM_ACCESS_KEY": f"ak-{uuid.uuid4().hex}",
    "REDIS_CONNECTION_STRING": f"redis://:{uuid.uuid4().hex}@cache:6379",
    "app_private_key": f"pk-{uuid.uuid4().hex}",  # the patterns ignore case
}
PLAIN = {"APP_ENV": "ci", "GREETING": "hello world"}


def forms(secret: str) -> list[str]:
    """The token as text, URL-quoted and base64 (a Basic header or a binary body)."""
    raw = secret.encode()
    return [secret, quote(secret, safe=""), base64.b64encode(raw).decode(), raw.hex()]


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in text]


def scan_tree(root: Path, secrets: list[str]) -> dict[str, list[str]]:
    """Every file under ``root`` that holds a secret (bytes, so binary files count too)."""
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes().decode("utf-8", errors="replace")
            hits = leaks(data, secrets)
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


@pytest.fixture
def token() -> str:
    return f"bkua_{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fake(token: str) -> FakeBuildkite:
    return FakeBuildkite(token=token)


@pytest.fixture
def sample(fake: FakeBuildkite) -> SampleBuild:
    build = fake.sample_build()
    fake.update_job(build.current_job_id, env={**build.env, **ENV_SECRETS, **PLAIN})
    fake.on_retry("failed", after_polls=1)
    return build


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("BUILDKITE"):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def served(
    fake: FakeBuildkite, sample: SampleBuild, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    with fake.serve() as url:
        monkeypatch.setenv("BUILDKITE_API_URL", url)
        monkeypatch.setenv("BUILDKITE_API_TOKEN", fake.token)
        monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", fake.org)
        yield url


RECORDED = """
import pytest
from pytest_bkjobs import JobsClient

IDS = {ids!r}


def test_everything(bk_client):
    jobs = list(bk_client.iter_jobs("sample-app", 1, per_page=3))
    assert jobs
    env = bk_client.get_job_env(IDS["current"])
    text = bk_client.get_job_env_text(IDS["current"])
    assert env["APP_ENV"] == "ci" and "GREETING" in text
    bk_client.get_job_log_text(IDS["failed"])
    bk_client.retry_job(IDS["failed"])
    bk_client.unblock_job(IDS["manual"], fields={{"note": "go"}})


@pytest.mark.bk_cassette
def test_own_client():
    with JobsClient.from_env(dotenv_path=None) as client:
        assert client.get_job(IDS["passed"]).id == IDS["passed"]
"""

FAILING = """
import pytest
from pytest_bkjobs import JobsClient
from pytest_bkjobs.ci import BuildContext, retry_failed_siblings

IDS = {ids!r}


def test_not_found():
    settings = {{"dotenv_path": None}}
    with JobsClient.from_env(**settings) as client:
        client.get_job("no-such-job")


def test_lost_put():
    with JobsClient.from_env(dotenv_path=None) as client:
        client.retry_job(IDS["timed_out"])


def test_assertion_with_client_in_locals():
    client = JobsClient.from_env(dotenv_path=None)
    env = client.get_job_env(IDS["current"])
    ctx = BuildContext.from_env({{"BUILDKITE_ORGANIZATION_SLUG": "acme",
        "BUILDKITE_PIPELINE_SLUG": "sample-app", "BUILDKITE_BUILD_NUMBER": "1",
        "BUILDKITE_JOB_ID": IDS["current"]}})
    report = retry_failed_siblings(client, ctx, dry_run=True)
    assert env["APP_ENV"] == "production", (client, report)


@pytest.mark.bk_cassette
def test_recording_then_failing(bk_client):
    bk_client.get_job(IDS["passed"])
    bk_client.get_job("missing-job")
"""


def test_recording_and_failing_tests_never_show_the_token(
    pytester: pytest.Pytester,
    fake: FakeBuildkite,
    sample: SampleBuild,
    served: str,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(pytester.path)  # ``served`` moved to an empty folder
    ids = dict(sample.job_ids)
    pytester.makepyfile(test_recorded=RECORDED.format(ids=ids))
    recorded = pytester.runpytest_inprocess(*QUICK, "-vv", "--bk-record")
    recorded.assert_outcomes(passed=2)
    pytester.makepyfile(test_failing=FAILING.format(ids=ids))
    fake.inject_fault("drop", method="PUT", times=1)
    failing = pytester.runpytest_inprocess(
        *QUICK, "-vv", "--showlocals", "--tb=long", "--bk-record", "test_failing.py"
    )
    failing.assert_outcomes(failed=4)
    shown = failing.stdout.str()
    assert "APIConnectionError" in shown  # the lost PUT's traceback was shown
    assert "client     = JobsClient(org='acme'" in shown  # with the locals of every frame
    assert len(list(pytester.path.rglob("cassettes/**/*.json"))) == 2
    output = "\n".join(
        [*recorded.outlines, *recorded.errlines, *failing.outlines, *failing.errlines]
    )
    secrets = forms(token)
    assert leaks(output, secrets) == []
    assert scan_tree(pytester.path, secrets) == {}
    cassette = (pytester.path / "cassettes" / "test_recorded" / "test_everything.json").read_text(
        "utf-8"
    )
    for name, value in ENV_SECRETS.items():
        assert value not in cassette, name
    assert "[REDACTED]" in cassette
    assert "hello world" in cassette


def test_cli_with_debug_never_shows_the_token(
    fake: FakeBuildkite,
    sample: SampleBuild,
    served: str,
    token: str,
    capsys: pytest.CaptureFixture[str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUILDKITE_PIPELINE_SLUG", sample.pipeline)
    monkeypatch.setenv("BUILDKITE_BUILD_NUMBER", str(sample.number))
    monkeypatch.setenv("BUILDKITE_JOB_ID", sample.current_job_id)
    ids = sample.job_ids
    fake.random_faults(0.3, seed=7, methods=["GET"])  # retry log lines under --debug
    runs = [
        ("list",),
        ("list", "--json", "--include-retried"),
        ("get",),
        ("get", ids["failed"], "--json"),
        ("env",),
        ("env", "--format", "json"),
        ("env", "--reveal"),
        ("log", ids["failed"], "-o", "failed.log"),
        ("log", ids["failed"], "--format", "json", "-o", "failed.json"),
        ("retry", ids["timed_out"]),
        ("retry-failed", "--annotate", "retry.md", "--json"),
        ("get", "no-such-job"),  # 404
        ("unblock", ids["passed"]),  # 4xx: not a block step
        ("get", "--api-url", "http://127.0.0.1:9/v2"),  # connection refused
        ("get", "--org", "other-org"),  # 404 organisation
    ]
    fake.inject_fault("lost", method="PUT", times=1)  # the retry reads back
    output: list[str] = []
    codes = []
    for argv in runs:
        codes.append(main(["--debug", *argv]))
        captured = capsys.readouterr()
        output += [captured.out, captured.err]
    text = "\n".join(output)
    assert codes[:11] == [0] * 10 + [codes[10]]
    assert codes[11:] == [1, 1, 1, 1]
    assert "Traceback" in text  # --debug printed tracebacks: they were scanned too
    assert "sending again" in text  # and the retry log
    assert leaks(text, forms(token)) == []
    assert scan_tree(clean_env, forms(token)) == {}
    # bkjobs env: secret names redacted unless --reveal.
    revealed = output[2 * runs.index(("env", "--reveal"))]
    hidden = output[2 * runs.index(("env",))] + output[2 * runs.index(("env", "--format", "json"))]
    for name, value in ENV_SECRETS.items():
        assert value not in hidden, name
        assert value in revealed, name
    assert "hello world" in hidden


def test_the_fake_never_shows_the_token(
    fake: FakeBuildkite,
    sample: SampleBuild,
    token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import httpx

    caplog.set_level(logging.DEBUG)
    fake.inject_fault("error", status=502, times=1)
    with fake.serve() as url, httpx.Client(base_url=url) as http:
        auth = {"Authorization": f"Bearer {token}"}
        answers = [
            http.get(f"/organizations/acme/jobs/{sample.current_job_id}/env", headers=auth),
            http.get(f"/organizations/acme/jobs/{sample.current_job_id}", headers=auth),
            http.get("/organizations/acme/jobs/missing", headers=auth),
            http.get("/organizations/other/jobs/missing", headers=auth),
            http.get("/organizations/acme/jobs/x", headers={"Authorization": f"Bearer {token}x"}),
            http.get("/organizations/acme/jobs/x", headers={"Authorization": f"Basic {token}"}),
        ]
    bodies = "\n".join(a.text + str(a.headers) for a in answers[1:])
    recorded = "\n".join(repr(r) for r in fake.requests)
    logs = "\n".join(record.getMessage() for record in caplog.records)
    for where, text in (("answers", bodies), ("fake.requests", recorded), ("logs", logs)):
        assert leaks(text, [token, token + "x"]) == [], where
    assert all(r.headers.get("authorization") in ("Bearer ***", None) for r in fake.requests)


@pytest.mark.parametrize("fixture", ["bk_client", "bk_async_client"])
def test_a_client_fixture_that_fails_never_shows_the_token(
    pytester: pytest.Pytester, token: str, monkeypatch: pytest.MonkeyPatch, fixture: str
) -> None:
    monkeypatch.setenv("BUILDKITE_API_TOKEN", token)
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", "acme")
    monkeypatch.delenv("BUILDKITE_API_URL", raising=False)
    pytester.makepyfile(f"def test_x({fixture}):\n    pass\n")
    # A typo in the API URL: the client refuses it, the fixture errors, locals are shown.
    result = pytester.runpytest_inprocess(
        *QUICK, "--showlocals", "--bk-record", "--bk-api-url", "http://"
    )
    result.assert_outcomes(errors=1)
    assert "base_url must be an http(s) URL" in result.stdout.str()
    output = "\n".join([*result.outlines, *result.errlines])
    assert leaks(output, forms(token)) == []
