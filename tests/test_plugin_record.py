"""Record against the fake on a loopback port with ``--bk-api-url``, then replay with no server."""

from __future__ import annotations

import gzip
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import respx  # noqa: F401 - imported once here, not again in every in-process run

from pytest_bkjobs import _cassette_session  # noqa: F401 - same
from pytest_bkjobs.fake import FakeBuildkite

#: Hypothesis' plugin imports hypothesis (a second) in every in-process run: leave it out.
QUICK = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")

SECRET_FIELD = "s3cr3t-unblock-value"
BINARY_LOG = b"\xff\xfe not utf-8 \x80\x81 log\r\n" * 50


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBuildkite:
    """A fake whose token and org the recording run reads from the environment."""
    fake = FakeBuildkite()
    monkeypatch.setenv("BUILDKITE_API_TOKEN", fake.token)
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", fake.org)
    monkeypatch.delenv("BUILDKITE_API_URL", raising=False)
    return fake


def cassettes(pytester: pytest.Pytester) -> dict[str, str]:
    """Every cassette written under the pytester dir, by file name."""
    return {
        p.name: p.read_text("utf-8") for p in sorted(pytester.path.rglob("cassettes/**/*.json"))
    }


SCENARIO = """
import hashlib
import pytest
from pytest_bkjobs import JobsClient

IDS = {ids!r}
PIPE, BUILD = "sample-app", 1
LOG_SHA = {log_sha!r}
BIN_SHA = {bin_sha!r}


def test_state_filters(bk_client):
    running = {{j.id for j in bk_client.iter_jobs(PIPE, BUILD, state=["running"])}}
    both = {{j.id for j in bk_client.iter_jobs(PIPE, BUILD, state=["running", "failed"])}}
    assert IDS["current"] in running
    assert IDS["failed"] in both - running


def test_poll_identical_gets(bk_client):
    states = [bk_client.get_job(IDS["timed_out"]).state.value]
    new = bk_client.retry_job(IDS["timed_out"])
    for _ in range(4):
        states.append(bk_client.get_job(new.id).state.value)
    assert states == ["timed_out", "running", "passed", "passed", "passed"]


def test_unblock_with_secret(bk_client):
    job = bk_client.unblock_job(IDS["manual"], fields={{"DEPLOY_TOKEN": {secret!r}, "note": "go"}})
    assert job.state.value == "unblocked"


def test_env_redacted(bk_client, bk_cassette):
    env = bk_client.get_job_env(IDS["current"])
    text = bk_client.get_job_env_text(IDS["current"])
    assert env["APP_ENV"] == "ci"
    assert "APP_ENV" in text
    if bk_cassette.replaying:
        assert env["DATABASE_PASSWORD"] == "[REDACTED]"
        assert "hunter2" not in text


def test_streamed_log(bk_client):
    with bk_client.stream_job_log(IDS["passed"], pipeline=PIPE, build=BUILD, chunk_size=64) as c:
        data = b"".join(c)
    assert hashlib.sha256(data).hexdigest() == LOG_SHA
    assert bk_client.get_job_log_size(IDS["passed"]) == len(data)  # HEAD keeps Content-Length


def test_binary_log(bk_client):
    with bk_client.stream_job_log(IDS["failed"]) as chunks:
        data = b"".join(chunks)
    assert hashlib.sha256(data).hexdigest() == BIN_SHA


def test_own_client_from_env(bk_cassette, monkeypatch):
    # Code under test building its own client for the default API URL is recorded/replayed too.
    monkeypatch.setenv("BUILDKITE_API_TOKEN", "fake-token")
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", "acme")
    with JobsClient.from_env(dotenv_path=None) as client:
        assert client.get_job(IDS["passed"]).state.value == "passed"


@pytest.mark.parametrize("label", ["x" * 300])
def test_long_id(bk_client, label):
    assert bk_client.get_job(IDS["waiter"]).type == "waiter"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_sync_client_in_async_test(bk_client, bk_async_client):
    first = await bk_async_client.get_job(IDS["passed"])
    second = bk_client.get_job(IDS["passed"])
    assert first.id == second.id == IDS["passed"]
"""


def test_record_then_replay_offline(pytester: pytest.Pytester, fake: FakeBuildkite) -> None:
    import hashlib

    sample = fake.sample_build()
    ids = dict(sample.job_ids)
    fake.on_retry("passed", after_polls=2)
    fake.update_job(ids["failed"], log=BINARY_LOG)
    pytester.makepyfile(
        test_scenario=SCENARIO.format(
            ids=ids,
            log_sha=hashlib.sha256(fake.log(ids["passed"])).hexdigest(),
            bin_sha=hashlib.sha256(BINARY_LOG).hexdigest(),
            secret=SECRET_FIELD,
        )
    )
    with fake.serve() as url:
        recorded = pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url)
    recorded.assert_outcomes(passed=9)
    recorded.stdout.fnmatch_lines(
        [
            "bkjobs: record mode all (re-record every cassette used), cassettes in *",
            "bkjobs: cassettes 9 recorded; 0 interaction(s) unused",
        ]
    )
    files = cassettes(pytester)
    assert len(files) == 9
    everything = "\n".join(files.values())
    # Redaction: no token, no Authorization header, no secret value, on any path.
    for secret in (fake.token, SECRET_FIELD, "hunter2-but-fake", "dat_fake_9f8e7d6c5b4a39281706"):
        assert secret not in everything
    assert '"authorization"' not in everything
    long_name = next(name for name in files if name.startswith("test_long_id["))
    assert len(long_name) < 80
    binary = json.loads(files["test_binary_log.json"])["interactions"][0]["response"]["body"]
    assert set(binary) == {"base64"}
    unblock = json.loads(files["test_unblock_with_secret.json"])["interactions"][0]["request"]
    assert unblock["body"] == {"json": {"fields": {"DEPLOY_TOKEN": "[REDACTED]", "note": "go"}}}

    # The server is gone: everything replays offline, identical GETs in recorded order.
    replayed = pytester.runpytest(*QUICK)
    replayed.assert_outcomes(passed=9)
    replayed.stdout.fnmatch_lines(["bkjobs: cassettes 9 replayed; 0 interaction(s) unused"])
    assert cassettes(pytester) == files  # replay never rewrites


@contextmanager
def gzip_server(payloads: dict[str, Any]) -> Iterator[str]:
    """A loopback API that answers gzip-compressed JSON, as api.buildkite.com does."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            raw = json.dumps(payloads.get(self.path.split("?")[0], {"message": "No job found"}))
            body = gzip.compress(raw.encode())
            self.send_response(200 if self.path.split("?")[0] in payloads else 404)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Set-Cookie", "session=abc123secret")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_gzip_response_is_stored_decoded(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILDKITE_API_TOKEN", "bkua_gzip_token_123456")
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", "acme")
    job = {"id": "j-1", "type": "script", "state": "passed", "name": "gz"}
    pytester.makepyfile(
        """
        def test_gz(bk_client):
            assert bk_client.get_job("j-1").name == "gz"
        """
    )
    with gzip_server({"/v2/organizations/acme/jobs/j-1": job}) as url:
        pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url).assert_outcomes(passed=1)
    (text,) = cassettes(pytester).values()
    response = json.loads(text)["interactions"][0]["response"]
    assert response["body"] == {"json": job}
    assert "content-encoding" not in response["headers"]
    assert "set-cookie" not in response["headers"]
    size = len(json.dumps(job, separators=(",", ":")).encode())
    assert response["headers"]["content-length"] == [str(size)]
    pytester.runpytest(*QUICK).assert_outcomes(passed=1)


FLAKY = """
import os

def test_job(bk_client):
    job = bk_client.get_job({job_id!r})
    assert os.environ.get("FAIL_IT") != "1", "failing on purpose"
"""


def test_failing_test_keeps_previous_cassette(
    pytester: pytest.Pytester, fake: FakeBuildkite, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = fake.sample_build().job_ids["passed"]
    pytester.makepyfile(test_flaky=FLAKY.format(job_id=job_id))
    with fake.serve() as url:
        pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url).assert_outcomes(passed=1)
        (path,) = pytester.path.rglob("*.json")
        before = path.read_bytes()
        fake.update_job(job_id, name="renamed")
        monkeypatch.setenv("FAIL_IT", "1")
        result = pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["bkjobs: cassettes 1 not written (the test did not pass); *"])
    assert path.read_bytes() == before
    assert not list(path.parent.glob("*.part"))


def test_scrub_hook_mutates_and_drops(pytester: pytest.Pytester, fake: FakeBuildkite) -> None:
    ids = fake.sample_build().job_ids
    pytester.makeconftest(
        """
        from pytest_bkjobs import DropInteraction

        def pytest_bkjobs_scrub_interaction(interaction, config):
            if interaction["request"]["uri"].endswith("/env"):
                raise DropInteraction()
            interaction["response"]["headers"].pop("date", None)
            interaction["response"]["headers"]["x-scrubbed"] = ["yes"]
            return None  # returning None never drops anything
        """
    )
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.bk_cassette(assert_all_played=False)
        def test_two(bk_client):
            bk_client.get_job({ids["passed"]!r})
            bk_client.get_job_env({ids["passed"]!r})
        """
    )
    with fake.serve() as url:
        pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url).assert_outcomes(passed=1)
    (text,) = cassettes(pytester).values()
    (only,) = json.loads(text)["interactions"]
    assert only["request"]["uri"].endswith(ids["passed"])
    assert only["response"]["headers"]["x-scrubbed"] == ["yes"]
    assert "date" not in only["response"]["headers"]


def test_bk_redact_env_patterns(pytester: pytest.Pytester, fake: FakeBuildkite) -> None:
    current = fake.sample_build().job_ids["current"]
    pytester.makeini("[pytest]\nbk_redact_env =\n    APP_*\n    ci\n")
    pytester.makepyfile(f"def test_env(bk_client):\n    bk_client.get_job_env({current!r})\n")
    with fake.serve() as url:
        pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url).assert_outcomes(passed=1)
    (text,) = cassettes(pytester).values()
    env = json.loads(text)["interactions"][0]["response"]["body"]["json"]["env"]
    assert env["APP_ENV"] == env["CI"] == env["DATABASE_PASSWORD"] == "[REDACTED]"
    assert env["BUILDKITE_PIPELINE_SLUG"] == "sample-app"


def test_new_episodes_and_once(pytester: pytest.Pytester, fake: FakeBuildkite) -> None:
    ids = fake.sample_build().job_ids
    pytester.makepyfile(
        f"""
        import os

        def test_jobs(bk_client):
            bk_client.get_job({ids["passed"]!r})
            if os.environ.get("MORE"):
                bk_client.get_job({ids["failed"]!r})
        """
    )
    with fake.serve() as url:
        once = pytester.runpytest(*QUICK, "--bk-record-mode=once", "--bk-api-url", url)
        once.assert_outcomes(passed=1)
        once.stdout.fnmatch_lines(["bkjobs: cassettes 1 recorded; *"])
        pytester.runpytest(*QUICK, "--bk-record-mode=once").stdout.fnmatch_lines(
            ["bkjobs: cassettes 1 replayed; *"]
        )
        os_env = {"MORE": "1"}
        with pytest.MonkeyPatch.context() as mp:
            for key, value in os_env.items():
                mp.setenv(key, value)
            grown = pytester.runpytest(*QUICK, "--bk-record-mode=new_episodes", "--bk-api-url", url)
    grown.assert_outcomes(passed=1)
    (text,) = cassettes(pytester).values()
    uris = [i["request"]["uri"] for i in json.loads(text)["interactions"]]
    assert [u.rsplit("/", 1)[1] for u in uris] == [ids["passed"], ids["failed"]]


def test_xdist_records_and_replays(pytester: pytest.Pytester, fake: FakeBuildkite) -> None:
    ids = list(fake.sample_build().job_ids.values())[:8]
    names = [f"job{i}" for i in range(8)]
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.parametrize("job_id", {ids!r}, ids={names!r})
        def test_job(bk_client, job_id):
            assert bk_client.get_job(job_id).id == job_id
        """
    )
    with fake.serve() as url:
        # Half the cassettes exist already: one -n 4 run both replays and records.
        first = pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url, "-k", "job0 or job1")
        first.assert_outcomes(passed=2)
        both = pytester.runpytest_subprocess(
            *QUICK, "-n", "4", "--bk-record-mode=once", "--bk-api-url", url
        )
    both.assert_outcomes(passed=8)
    both.stdout.fnmatch_lines(["bkjobs: cassettes 2 replayed, 6 recorded; 0 interaction(s) unused"])
    assert len(cassettes(pytester)) == 8


def test_recording_needs_a_token(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUILDKITE_API_TOKEN", raising=False)
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", "acme")
    pytester.makepyfile("def test_x(bk_client):\n    pass\n")
    result = pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", "http://127.0.0.1:9/v2")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*bkjobs: recording test_*::test_x needs BUILDKITE_API_TOKEN in the environment or .env*"]
    )
    assert not list(Path(pytester.path).rglob("*.json"))


def test_unwritable_cassette_folder_fails_clearly(
    pytester: pytest.Pytester, fake: FakeBuildkite
) -> None:
    job_id = fake.sample_build().job_ids["passed"]
    pytester.makepyfile(test_mod=f"def test_a(bk_client):\n    bk_client.get_job({job_id!r})\n")
    (pytester.path / "cassettes").write_text("a file where the folder should be")
    with fake.serve() as url:
        result = pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "bkjobs: could not write the cassette cassettes/test_mod/test_a.json of"
            " test_mod.py::test_a: *Error: * (the previous file, if any, is unchanged)",
        ]
    )


def test_plugin_import_is_cheap(pytester: pytest.Pytester) -> None:
    # asyncio costs ~20 ms and Python's own startup does not import it (checked with -X importtime).
    heavy = ("httpx", "respx", "pytest_bkjobs._client", "asyncio", "ssl")
    code = (
        f"import sys; before = [m for m in {heavy!r} if m in sys.modules];"
        "import pytest_bkjobs.plugin;"
        f"print(before, sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    result = pytester.run(sys.executable, "-c", code)
    assert result.outlines[-1] == "[] []"


def test_recording_reads_the_token_from_dotenv(
    pytester: pytest.Pytester, fake: FakeBuildkite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUILDKITE_API_TOKEN")
    monkeypatch.delenv("BUILDKITE_ORGANIZATION_SLUG")
    job_id = fake.sample_build().job_ids["passed"]
    pytester.path.joinpath(".env").write_text(
        f"BUILDKITE_API_TOKEN={fake.token}\nBUILDKITE_ORGANIZATION_SLUG={fake.org}\n"
    )
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.bk_cassette("named", record_mode="once")
        def test_a(bk_client):
            assert bk_client.get_job({job_id!r}).id == {job_id!r}
        """
    )
    with fake.serve() as url:
        result = pytester.runpytest(*QUICK, "--bk-api-url", url)  # the marker's mode records
    result.assert_outcomes(passed=1)
    (name,) = cassettes(pytester)
    assert name == "named.json"
    assert fake.token not in cassettes(pytester)["named.json"]


def test_cassette_requested_at_run_time_is_written(
    pytester: pytest.Pytester, fake: FakeBuildkite
) -> None:
    job_id = fake.sample_build().job_ids["passed"]
    pytester.makepyfile(
        f"""
        def test_a(request):
            client = request.getfixturevalue("bk_client")
            assert client.get_job({job_id!r}).id == {job_id!r}
        """
    )
    with fake.serve() as url:
        pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url).assert_outcomes(passed=1)
    assert list(cassettes(pytester)) == ["test_a.json"]
    pytester.runpytest(*QUICK).assert_outcomes(passed=1)


CROSS_HOST = """
from pytest_bkjobs import JobsClient


def test_pages(bk_cassette):
    # Code under test builds its own client for the real API while --bk-api-url is the fake.
    with JobsClient.from_env(dotenv_path=None) as client:
        page = client.list_jobs("app", {build!r}, per_page=2)
        assert page.next_url.startswith("https://api.buildkite.com/v2/")
        assert len(list(client.iter_jobs("app", {build!r}, per_page=2))) == 5
"""


def test_links_recorded_through_another_server_point_at_the_client_base_url(
    pytester: pytest.Pytester, fake: FakeBuildkite
) -> None:
    build = fake.add_build("app")
    for i in range(5):
        fake.add_job("app", build, name=f"job {i}")
    pytester.makepyfile(test_cross=CROSS_HOST.format(build=build))
    with fake.serve() as url:
        recorded = pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url)
    recorded.assert_outcomes(passed=1)
    (text,) = cassettes(pytester).values()
    responses = [i["response"] for i in json.loads(text)["interactions"]]
    assert len(responses) == 4
    served = url.split("/v2")[0]
    assert all(served not in json.dumps(r) for r in responses)
    assert "https://api.buildkite.com/v2/organizations/" in json.dumps(responses[0])
    pytester.runpytest(*QUICK).assert_outcomes(passed=1)


def test_recording_through_a_local_fake_keeps_its_port_out_of_the_cassette(
    pytester: pytest.Pytester, fake: FakeBuildkite
) -> None:
    job_id = fake.sample_build().job_ids["passed"]
    pytester.makepyfile(
        test_port=f"""
        def test_get(bk_client):
            assert bk_client.get_job({job_id!r}).id == {job_id!r}
        """
    )
    with fake.serve() as url:
        result = pytester.runpytest(*QUICK, "--bk-record", "--bk-api-url", url)
    result.assert_outcomes(passed=1)
    (text,) = cassettes(pytester).values()
    port = url.split(":")[2].split("/")[0]
    assert port not in text
    data = json.loads(text)
    assert data["base_url"] == "https://api.buildkite.com/v2"
    assert data["recorded_against"] == "http://127.0.0.1:<port>/v2"
    (ix,) = data["interactions"]
    assert ix["request"]["uri"].startswith("https://api.buildkite.com/v2/organizations/acme/")
    pytester.runpytest(*QUICK).assert_outcomes(passed=1)  # replays with no server
    pytester.makepyfile(test_port="def test_get(bk_client):\n    bk_client.get_job('other')\n")
    miss = pytester.runpytest(*QUICK)
    miss.assert_outcomes(failed=1)
    miss.stdout.fnmatch_lines(
        [
            "E *To re-record this test: pytest --bk-record --bk-api-url URL"
            " 'test_port.py::test_get'  (recorded against a local server,"
            " http://127.0.0.1:<port>/v2: start it again, e.g."
            " `bkjobs fake-server --sample`, and pass the URL it prints)"
        ]
    )
