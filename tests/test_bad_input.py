"""Bad input, in one table: each case gets its documented error, a clear message, the right
exit status, no traceback from our internals, and leaves every file as it was.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_bkjobs import (
    APIStatusError,
    BuildkiteError,
    CassetteFormatError,
    CassetteNotFoundError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidResponseError,
    JobsClient,
    ServerError,
)
from pytest_bkjobs._cassette_session import CassetteSession, SessionOptions
from pytest_bkjobs.ci import BuildContext, NotInBuildkiteError
from pytest_bkjobs.cli import main

TOKEN = "bkua_bad_input_token_0123456789"
JOB = "01890f7a-0000-4000-8000-000000000001"
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def unreachable(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"bad input must be refused before sending: {request.url}")


def client(answer: Callable[[httpx.Request], httpx.Response] = unreachable) -> JobsClient:
    return JobsClient(token=TOKEN, org="acme", transport=httpx.MockTransport(answer), max_retries=0)


def answering(status: int, content: bytes = b"", **headers: str) -> JobsClient:
    return client(lambda request: httpx.Response(status, content=content, headers=headers))


def json_answer(body: str) -> JobsClient:
    return answering(200, body.encode(), **{"Content-Type": "application/json"})


CASSETTE = Path("cassettes") / "test_x.json"


def write_cassette(content: bytes | None, *, directory: bool = False) -> Callable[[Path], None]:
    """Set up a bad cassette file (before the snapshot: the case itself must write nothing)."""

    def setup(tmp: Path) -> None:
        path = tmp / CASSETTE
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)

    return setup


def replay(tmp: Path) -> None:
    CassetteSession(SessionOptions(path=tmp / CASSETTE, test_id="test_x.py::test_x", mode="none"))


def record_mode(mode: str) -> Callable[[Path], None]:
    """A recording mode that reads the existing file first (and must not overwrite a bad one)."""

    def run(tmp: Path) -> None:
        options = SessionOptions(path=tmp / CASSETTE, test_id="test_x.py::test_x", mode=mode)
        CassetteSession(options)

    return run


def replay_request(tmp: Path) -> None:
    """Load the cassette and replay one GET through it, as the plugin does."""
    from pytest_bkjobs._cassette_session import CassetteRouter

    options = SessionOptions(path=tmp / CASSETTE, test_id="test_x.py::test_x", mode="none")
    session = CassetteSession(options)
    router = CassetteRouter(session)
    session.router = router
    router.start()
    try:
        with JobsClient(token=TOKEN, org="acme", max_retries=0) as replayed:
            replayed.get_job(JOB)
    finally:
        router.stop(quiet=True)


def one_interaction(response: dict[str, Any]) -> bytes:
    uri = f"https://api.buildkite.com/v2/organizations/acme/jobs/{JOB}"
    request = {"method": "GET", "uri": uri, "headers": {}, "body": None}
    data = {"version": 1, "interactions": [{"request": request, "response": response}]}
    return json.dumps(data).encode()


def env_file(content: bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / ".env").write_bytes(content)

    return setup


NOT_UTF8_ENV = b"BUILDKITE_API_TOKEN=abc\xff\xfe\nBUILDKITE_ORGANIZATION_SLUG=acme\n"


def bug(case: Case, reason: str) -> Any:
    return pytest.param(case, id=case.id, marks=pytest.mark.xfail(strict=True, reason=reason))


def cli(*argv: str, **env: str) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        saved = {k: v for k, v in os.environ.items() if k.startswith("BUILDKITE")}
        for name in saved:
            del os.environ[name]
        os.environ.update(env)
        try:
            return main(list(argv))
        finally:
            for name in env:
                os.environ.pop(name, None)
            os.environ.update(saved)

    return run


STEP = {
    "BUILDKITE_API_TOKEN": TOKEN,
    "BUILDKITE_ORGANIZATION_SLUG": "acme",
    "BUILDKITE_PIPELINE_SLUG": "app",
    "BUILDKITE_JOB_ID": JOB,
    "BUILDKITE_API_URL": "http://127.0.0.1:9/v2",
}


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Path], Any]
    error: type[BaseException] | None  # None: a CLI run, judged by its exit status
    message: str
    status: int | None = None  # the CLI's exit status
    setup: Callable[[Path], None] | None = None


CASES = [
    # -- client arguments (refused before anything is sent) ---------------------------------
    Case("empty token", lambda t: JobsClient(token=" ", org="acme"), ConfigurationError,
         "token is empty"),
    Case("token with a newline inside", lambda t: JobsClient(token="abc\ndef", org="acme"),
         ConfigurationError, "whitespace or control characters"),
    Case("empty org", lambda t: JobsClient(token=TOKEN, org=""), InvalidArgumentError,
         "org must be a non-empty slug"),
    Case("base_url not http", lambda t: JobsClient(token=TOKEN, org="a", base_url="ftp://x"),
         ConfigurationError, "base_url must be an http(s) URL"),
    Case("negative timeout", lambda t: JobsClient(token=TOKEN, org="a", timeout=-1),
         InvalidArgumentError, "timeout must be a positive number of seconds"),
    Case("negative max_retries", lambda t: JobsClient(token=TOKEN, org="a", max_retries=-1),
         InvalidArgumentError, "max_retries must be an integer >= 0"),
    Case("empty job id", lambda t: client().get_job(""), InvalidArgumentError,
         "job_id must be a non-empty string"),
    Case("dot-dot job id", lambda t: client().get_job(".."), InvalidArgumentError,
         "job_id '..' is not a valid job_id"),
    Case("pipeline without build", lambda t: client().get_job(JOB, pipeline="app"),
         InvalidArgumentError, "give both pipeline and build"),
    Case("build uuid instead of number", lambda t: client().list_jobs("app", JOB),
         InvalidArgumentError, "build must be the build number"),
    Case("state finished", lambda t: client().list_jobs("app", 1, state="finished"),
         InvalidArgumentError, "state 'finished' is not accepted"),
    Case("per_page 101", lambda t: client().list_jobs("app", 1, per_page=101),
         InvalidArgumentError, "per_page must be an integer from 1 to 100"),
    Case("tail 0", lambda t: client().get_job_log_text(JOB, tail=0), InvalidArgumentError,
         "tail must be a positive number of bytes"),
    Case("priority as text", lambda t: client().reprioritize_job(JOB, "high"),  # type: ignore[arg-type]
         InvalidArgumentError, "priority must be an integer"),
    Case("unblock field not a string", lambda t: client().unblock_job(JOB, fields={"a": 1}),  # type: ignore[dict-item]
         InvalidArgumentError, "field 'a' must be a string or a list of strings"),
    Case("download into a directory", lambda t: client().download_job_log(JOB, t / "logs"),
         InvalidArgumentError, "is a directory; give a file path"),
    Case("download into a missing folder",
         lambda t: client().download_job_log(JOB, t / "nope" / "x.log"),
         InvalidArgumentError, "does not exist; create it first"),
    # -- API answers ---------------------------------------------------------------------------
    Case("HTML 502 page", lambda t: answering(502, HTML_502).get_job(JOB), ServerError,
         "502 HTML page: 502 Bad Gateway"),
    Case("empty 200", lambda t: answering(200).get_job(JOB), InvalidResponseError,
         "expected a JSON body, got an empty 200 answer"),
    Case("truncated JSON", lambda t: json_answer('{"id": "j", "sta').get_job(JOB),
         InvalidResponseError, "got a body that is not valid JSON"),
    Case("HTML where JSON belongs", lambda t: answering(200, b"<html>hi</html>",
         **{"Content-Type": "text/html"}).get_job(JOB), InvalidResponseError,
         "expected JSON, got a text/html body"),
    Case("a list where a job belongs", lambda t: json_answer("[1, 2]").get_job(JOB),
         InvalidResponseError, "expected a job object, got list"),
    Case("job without id", lambda t: json_answer('{"state": "passed"}').get_job(JOB),
         InvalidResponseError, "job object has no 'id'"),
    Case("listing without items", lambda t: json_answer("{}").list_jobs("app", 1),
         InvalidResponseError, "expected {'items': [...], 'links': {...}} for a job listing"),
    Case("env without env key", lambda t: json_answer('{"vars": {}}').get_job_env(JOB),
         InvalidResponseError, "expected {'env': {...}} for a job's environment"),
    Case("log content not a string", lambda t: json_answer('{"content": 5}').get_job_log(JOB),
         InvalidResponseError, "log 'content' is not a string"),
    Case("HEAD without Content-Length", lambda t: answering(200).get_job_log_size(JOB),
         InvalidResponseError, "HEAD answer has no Content-Length"),
    Case("links.next to another host", lambda t: list(json_answer(
         '{"items": [], "links": {"next": "https://evil.example/v2/x"}}').iter_jobs("app", 1)),
         InvalidResponseError, "refusing to follow a pagination link to another origin"),
    Case("404 with a message", lambda t: answering(404, b'{"message": "No job found"}')
         .get_job(JOB), APIStatusError, "404 No job found"),
    # -- cassettes (replay never writes) ---------------------------------------------------
    Case("empty cassette", replay, CassetteFormatError, "is not valid JSON",
         setup=write_cassette(b"")),
    Case("truncated cassette", replay, CassetteFormatError, "is not valid JSON",
         setup=write_cassette(b'{"version": 1, "interactions": [{')),
    Case("unknown cassette version", replay, CassetteFormatError, "unknown cassette version 99",
         setup=write_cassette(b'{"version": 99, "interactions": []}')),
    Case("binary garbage cassette", replay, CassetteFormatError, "is not valid JSON",
         setup=write_cassette(bytes(range(256)) * 4)),
    Case("cassette that is a directory", replay, CassetteFormatError, "cannot be read",
         setup=write_cassette(None, directory=True)),
    Case("cassette interactions not a list", replay, CassetteFormatError,
         "'interactions' is missing or not a list",
         setup=write_cassette(b'{"version": 1, "interactions": {}}')),
    Case("missing cassette in replay", replay, CassetteNotFoundError, "nothing to replay",
         setup=write_cassette(None)),
    Case("bad cassette in once mode", record_mode("once"), CassetteFormatError,
         "The file is left as it is", setup=write_cassette(b"not json")),
    Case("bad cassette in new_episodes mode", record_mode("new_episodes"), CassetteFormatError,
         "unknown cassette version", setup=write_cassette(b'{"version": 0}')),
    # -- environment -----------------------------------------------------------------------
    Case("no token", lambda t: JobsClient.from_env({}, dotenv_path=None), ConfigurationError,
         "BUILDKITE_API_TOKEN is not set"),
    Case("agent token only", lambda t: JobsClient.from_env(
         {"BUILDKITE_AGENT_ACCESS_TOKEN": "x"}, dotenv_path=None), ConfigurationError,
         "it is the agent's token, not a REST API token"),
    Case("no organisation", lambda t: JobsClient.from_env(
         {"BUILDKITE_API_TOKEN": TOKEN}, dotenv_path=None), ConfigurationError,
         "BUILDKITE_ORGANIZATION_SLUG is not set"),
    Case("not in a step", lambda t: BuildContext.from_env({}), NotInBuildkiteError,
         "not inside a Buildkite step: BUILDKITE_ORGANIZATION_SLUG, BUILDKITE_PIPELINE_SLUG"),
    Case("non-numeric build number", lambda t: BuildContext.from_env(
         {**STEP, "BUILDKITE_BUILD_NUMBER": "abc"}), ConfigurationError,
         "BUILDKITE_BUILD_NUMBER must be the build number"),
    # -- the CLI (exit status 1: an error, 2: usage) ---------------------------------------
    Case("cli outside a step", cli("list"), None, "token given: not inside a Buildkite step",
         1),
    Case("cli non-numeric build", cli("list", **STEP, BUILDKITE_BUILD_NUMBER="abc"), None,
         "BUILDKITE_BUILD_NUMBER must be the build number", 1),
    Case("cli build number 0", cli("retry-failed", **STEP, BUILDKITE_BUILD_NUMBER="0"), None,
         "BUILDKITE_BUILD_NUMBER must be the build number", 1),
    Case("cli without token", cli("get", JOB, BUILDKITE_ORGANIZATION_SLUG="acme"), None,
         "BUILDKITE_API_TOKEN is not set", 1),
    Case("cli unknown command", cli("nosuch"), None, "invalid choice: 'nosuch'", 2),
    Case("cli priority as text", cli("reprioritize", JOB, "high"), None,
         "argument N: must be an integer, got 'high'", 2),
    Case("cli concurrency 0", cli("retry-failed", "--concurrency", "0"), None,
         "--concurrency: must be an integer >= 1", 2),
    Case("cli timeout nan", cli("retry-failed", "--timeout", "nan"), None,
         "--timeout: must be a finite number of seconds", 2),
    Case("cli state finished", cli("list", "--state", "finished"), None,
         "invalid choice: 'finished'", 2),
    Case("cli delete-log without --yes", cli("delete-log", JOB, **STEP), None,
         "without --yes", 2),
    Case("cli field without =", cli("unblock", JOB, "--field", "novalue", **STEP), None,
         "--field takes KEY=VALUE", 2),
    Case("cli bad fields json", cli("unblock", JOB, "--fields-json", "{bad", **STEP), None,
         "--fields-json is not valid JSON", 2),
    Case("cli log into a directory", cli("log", JOB, "-o", "logs", **STEP), None,
         "is a directory; give a file path", 1),
    Case("cli annotate into a missing folder",
         cli("retry-failed", "--annotate", "nope/r.md", **STEP, BUILDKITE_BUILD_NUMBER="1"),
         None, "does not exist; create it first", 1),
    Case("dotenv not UTF-8", lambda t: JobsClient.from_env({}, dotenv_path=".env"),
         ConfigurationError, ".env", setup=env_file(NOT_UTF8_ENV)),
    Case("cli dotenv not UTF-8", cli("get", JOB, "--org", "acme"), None, ".env", 1,
         setup=env_file(bytes(range(256)))),
    Case("cassette body not base64", replay_request, CassetteFormatError, "base64",
         setup=write_cassette(one_interaction(
             {"status": 200, "headers": {}, "body": {"base64": "abc"}}))),
    Case("cassette header not latin-1", replay_request, CassetteFormatError, "headers",
         setup=write_cassette(one_interaction(
             {"status": 200, "headers": {"x-note": ["\u4e2d"]}, "body": None}))),
]  # fmt: skip


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def test_there_are_enough_cases() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids)


def case_id(case: Any) -> str:
    return str(case.id)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_input(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "old.log").write_bytes(b"previous log\n")
    (tmp_path / "report.md").write_text("previous report\n", encoding="utf-8")
    if case.setup is not None:
        case.setup(tmp_path)
    before = snapshot(tmp_path)
    if case.error is None:
        status = case.run(tmp_path)
        captured = capsys.readouterr()
        assert status == case.status, captured.err
        assert case.message in captured.err
        assert "Traceback" not in captured.err + captured.out
        assert "internal error" not in captured.err
        last = captured.err.strip().splitlines()[-1]
        assert last.startswith("bkjobs"), last  # one line: "bkjobs[ cmd]: error: ..."
    else:
        with pytest.raises(case.error, match=re.escape(case.message)) as info:
            case.run(tmp_path)
        assert isinstance(info.value, BuildkiteError)  # a documented error, not an internal one
        assert TOKEN not in str(info.value)
    assert snapshot(tmp_path) == before  # nothing written, overwritten or left behind
