"""The ``bkjobs`` command, in-process (``main(argv)``) against the fake on a loopback port.

Every request here is real HTTP to ``FakeBuildkite.serve()``; test_cli_e2e.py runs a
representative set through a subprocess.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_bkjobs import parse_env_text
from pytest_bkjobs._errors import APIConnectionError
from pytest_bkjobs.cli import describe_error, main
from pytest_bkjobs.fake import FakeBuildkite, SampleBuild
from tests.conftest import FIXTURES, load_json


@dataclass
class Result:
    code: int
    out: str
    err: str


Runner = Callable[..., Result]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No BUILDKITE_* variables and no .env file: outside any step."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("BUILDKITE"):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def fake() -> FakeBuildkite:
    return FakeBuildkite()


@pytest.fixture
def served(fake: FakeBuildkite, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with fake.serve() as url:
        monkeypatch.setenv("BUILDKITE_API_URL", url)
        monkeypatch.setenv("BUILDKITE_API_TOKEN", fake.token)
        yield url


@pytest.fixture
def sample(fake: FakeBuildkite, served: str, monkeypatch: pytest.MonkeyPatch) -> SampleBuild:
    """The fake's sample build, with the environment of its running job."""
    build = fake.sample_build()
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", fake.org)
    monkeypatch.setenv("BUILDKITE_PIPELINE_SLUG", build.pipeline)
    monkeypatch.setenv("BUILDKITE_BUILD_NUMBER", str(build.number))
    monkeypatch.setenv("BUILDKITE_JOB_ID", build.current_job_id)
    return build


@pytest.fixture
def bk(capsys: pytest.CaptureFixture[str]) -> Runner:
    def run(*argv: str) -> Result:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


# -- reading ------------------------------------------------------------------------------------


def test_list_defaults_to_the_current_build(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    result = bk("list")
    assert result.code == 0
    lines = result.out.splitlines()
    assert len(lines) == len(sample.job_ids)
    assert any(line.startswith(sample.job_ids["failed"]) and "failed" in line for line in lines)
    assert f"{len(lines)} job(s) in sample-app #{sample.number}" in result.err
    listing = fake.requests[-1]
    assert (
        listing.path == f"/v2/organizations/acme/pipelines/sample-app/builds/{sample.number}/jobs"
    )
    assert ("include_retried_jobs", "false") in listing.query


def test_list_json_and_state_filter(bk: Runner, sample: SampleBuild) -> None:
    result = bk("list", "--state", "failed", "--state", "timed_out", "--json")
    jobs = json.loads(result.out)
    assert {job["id"] for job in jobs} == {
        sample.job_ids[role] for role in ("failed", "timed_out", "soft_failed", "parallel_2")
    }
    assert all(job["state"] in ("failed", "timed_out") for job in jobs)


def test_list_include_retried(bk: Runner, sample: SampleBuild) -> None:
    assert bk("retry", sample.job_ids["failed"]).code == 0
    latest = json.loads(bk("list", "--json").out)
    everything = json.loads(bk("--json", "list", "--include-retried").out)
    assert len(everything) == len(latest) + 1
    assert sample.job_ids["failed"] not in {job["id"] for job in latest}


def test_options_override_the_step(bk: Runner, sample: SampleBuild, fake: FakeBuildkite) -> None:
    other = fake.add_build("other-app")
    fake.add_job("other-app", other, state="failed", name="elsewhere")
    result = bk("list", "--pipeline", "other-app", "--build", str(other), "--json")
    assert [job["name"] for job in json.loads(result.out)] == ["elsewhere"]


def test_get_current_job_uses_the_build_scoped_route(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    result = bk("get")
    assert result.code == 0
    assert f"id:                {sample.current_job_id}" in result.out
    assert "state:             running" in result.out
    assert fake.requests[-1].path == (
        f"/v2/organizations/acme/pipelines/sample-app/builds/{sample.number}/jobs/"
        f"{sample.current_job_id}"
    )


def test_get_a_given_job_uses_the_org_scoped_route(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    job_id = sample.job_ids["timed_out"]
    result = bk("get", job_id, "--json")
    assert json.loads(result.out)["state"] == "timed_out"
    assert fake.requests[-1].path == f"/v2/organizations/acme/jobs/{job_id}"


def test_a_given_job_with_pipeline_and_build_uses_the_build_scoped_route(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    job_id = sample.job_ids["passed"]
    argv = ["get", job_id, "--pipeline", "sample-app", "--build", str(sample.number)]
    assert bk(*argv).code == 0
    assert fake.requests[-1].path.endswith(
        f"/pipelines/sample-app/builds/{sample.number}/jobs/{job_id}"
    )


def test_log_of_the_current_job(bk: Runner, sample: SampleBuild) -> None:
    result = bk("log", "--strip")
    assert result.code == 0
    assert result.out.splitlines()[-1] == "--- Looking for failed jobs"


def test_env_redacts_secrets_unless_revealed(bk: Runner, sample: SampleBuild) -> None:
    result = bk("env")
    env = parse_env_text(result.out)
    assert env["DEPLOY_API_TOKEN"] == "[REDACTED]"
    assert env["DATABASE_PASSWORD"] == "[REDACTED]"
    assert env["PYTEST_ADDOPTS"] == '-k "not slow" --maxfail=1'
    assert "dat_fake_" not in result.out
    assert "secret value(s) redacted; --reveal shows them" in result.err
    revealed = bk("env", "--reveal", "--format", "json")
    assert json.loads(revealed.out) == dict(sample.env)
    assert revealed.err == ""
    assert json.loads(bk("env", "--json").out)["AWS_SECRET_ACCESS_KEY"] == "[REDACTED]"


# -- logs ---------------------------------------------------------------------------------------


def test_log_streams_the_raw_bytes(
    sample: SampleBuild, fake: FakeBuildkite, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    job_id = sample.job_ids["failed"]
    assert main(["log", job_id]) == 0
    assert capsysbinary.readouterr().out == fake.log(job_id)


def test_log_to_a_file_strip_tail_json_html(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite, tmp_path: Path
) -> None:
    job_id = sample.job_ids["failed"]
    raw = fake.log(job_id)
    result = bk("log", job_id, "-o", str(tmp_path / "job.log"))
    assert (tmp_path / "job.log").read_bytes() == raw
    assert f"wrote {len(raw)} bytes to" in result.err
    stripped = bk("log", job_id, "--strip").out
    assert "\x1b" not in stripped
    assert "+++ :pytest: Running tests" in stripped.splitlines()
    assert bk("log", job_id, "--tail", "30").out == raw[-30:].decode()
    as_json = json.loads(bk("log", job_id, "--format", "json").out)
    assert as_json["size"] == len(raw)
    assert as_json["content"] == raw.decode()
    assert "<" in bk("log", job_id, "--format", "html").out
    saved = bk("log", job_id, "--json", "--strip", "-o", str(tmp_path / "s.txt"))
    assert json.loads(saved.out)["path"] == str(tmp_path / "s.txt")
    assert (tmp_path / "s.txt").read_text() == stripped


def test_log_to_a_missing_folder_fails_before_any_request(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite, tmp_path: Path
) -> None:
    fake.clear_requests()
    result = bk("log", "-o", str(tmp_path / "nope" / "job.log"))
    assert result.code == 1
    assert "does not exist; create it first" in result.err
    assert fake.requests == []


# -- actions ------------------------------------------------------------------------------------


def test_retry_one_job(bk: Runner, sample: SampleBuild, fake: FakeBuildkite) -> None:
    job_id = sample.job_ids["failed"]
    result = bk("retry", job_id, "--json")
    new = json.loads(result.out)
    assert new["retry_source"]["job_id"] == job_id
    assert fake.retry_calls(job_id) == 1
    again = bk("retry", job_id)
    assert again.code == 1
    assert "Jobs can only be retried once: job" in again.err
    assert f"was already retried, as job {new['id']}" in again.err


def test_retry_with_a_lost_answer_reads_back(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    job_id = sample.job_ids["failed"]
    fake.inject_fault("lost", method="PUT", path="/retry")
    result = bk("retry", job_id)
    assert result.code == 0
    assert "the answer was lost, but job" in result.err
    assert result.out.startswith(f"retried {job_id}: new job ")
    assert fake.retry_calls(job_id) == 1


def test_retry_with_a_dropped_request_is_not_sent_again(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    job_id = sample.job_ids["failed"]
    fake.inject_fault("drop", method="PUT", path="/retry")
    result = bk("retry", job_id)
    assert result.code == 1
    assert "outcome is unknown" in result.err
    assert "it was not sent again" in result.err
    assert f"running bkjobs retry {job_id} again is safe" in result.err
    assert fake.retry_calls(job_id) == 0
    assert not fake.job(job_id).get("retried")
    assert bk("retry", job_id).code == 0  # and it is: the job is retried once


def test_retry_with_a_lost_answer_then_again_shows_the_retry(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    job_id = sample.job_ids["failed"]
    fake.inject_fault("lost", method="PUT", path="/retry")
    fake.inject_fault("error", method="GET", times=4)  # the read-back fails too (and its re-sends)
    first = bk("retry", job_id)
    assert first.code == 1
    assert "reading job" in first.err
    assert f"running bkjobs retry {job_id} again is safe" in first.err
    again = bk("retry", job_id)
    assert again.code == 1
    assert "was already retried, as job" in again.err
    assert fake.retry_calls(job_id) == 2  # the second PUT was refused: retried once
    assert fake.job(job_id)["retried"] is True


def test_unblock_with_fields(bk: Runner, sample: SampleBuild, fake: FakeBuildkite) -> None:
    job_id = sample.job_ids["manual"]
    result = bk(
        "unblock", job_id, "--field", "release=v1.2", "--field", "region=eu", "--field", "region=us"
    )
    assert result.code == 0, result.err
    assert "unblocked" in result.out
    assert fake.unblock_fields(job_id) == {"release": "v1.2", "region": ["eu", "us"]}


def test_unblock_fields_json_and_stdin(
    bk: Runner, fake: FakeBuildkite, sample: SampleBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    job_id = sample.job_ids["manual"]
    monkeypatch.setattr("sys.stdin", io.StringIO('{"release": "v2"}'))
    assert bk("unblock", job_id, "--fields-json", "-").code == 0
    assert fake.unblock_fields(job_id) == {"release": "v2"}


def test_unblock_never_reads_stdin_unless_asked(
    bk: Runner, fake: FakeBuildkite, sample: SampleBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoStdin:
        def read(self, *args: object) -> str:
            raise AssertionError("stdin was read")

    monkeypatch.setattr("sys.stdin", NoStdin())
    job_id = sample.job_ids["manual"]
    result = bk("unblock", job_id, "--fields-json", '{"release": "v3"}', "--json")
    assert result.code == 0
    assert json.loads(result.out)["id"] == job_id


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--field", "novalue"], "--field takes KEY=VALUE, got 'novalue'"),
        (["--fields-json", "{"], "--fields-json is not valid JSON"),
        (["--fields-json", '{"a": 1}'], "must be a JSON object of strings or lists of strings"),
    ],
)
def test_unblock_bad_fields_are_usage_errors(
    bk: Runner, sample: SampleBuild, argv: list[str], message: str
) -> None:
    result = bk("unblock", sample.job_ids["manual"], *argv)
    assert result.code == 2
    assert message in result.err


def test_reprioritize(bk: Runner, sample: SampleBuild, fake: FakeBuildkite) -> None:
    job_id = sample.job_ids["failed"]
    result = bk("reprioritize", job_id, "5")
    assert result.code == 0, result.err
    assert result.out == f"job {job_id} now has priority 5\n"
    assert bk("reprioritize", job_id, "high").code == 2


def test_delete_log_needs_yes(bk: Runner, sample: SampleBuild, fake: FakeBuildkite) -> None:
    job_id = sample.job_ids["passed"]
    refused = bk("delete-log", job_id)
    assert refused.code == 2
    assert "refusing to delete the log" in refused.err
    assert fake.log(job_id)
    done = bk("delete-log", job_id, "--yes", "--json")
    assert json.loads(done.out) == {"deleted": job_id}
    assert fake.log(job_id) == b""


# -- retry-failed -------------------------------------------------------------------------------


def test_retry_failed_dry_run(bk: Runner, sample: SampleBuild, fake: FakeBuildkite) -> None:
    result = bk("retry-failed", "--dry-run")
    assert result.code == 0
    assert result.out.splitlines()[0] == (
        f"build sample-app #{sample.number}: 3 would be retried, 0 failed, 1 skipped"
    )
    assert all(fake.retry_calls(job_id) == 0 for job_id in sample.job_ids.values())


def test_retry_failed_wait_pass_and_fail(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite, tmp_path: Path
) -> None:
    fake.on_retry(lambda job: "failed" if job.get("step_key") == "e2e" else "passed")
    result = bk(
        "retry-failed", "--wait", "--poll-interval", "0.01", "--annotate", str(tmp_path / "r.md")
    )
    assert result.code == 3
    assert result.out.splitlines()[0] == (
        f"build sample-app #{sample.number}: 3 retried, 0 failed, 1 skipped, 2 of 3 retries passed"
    )
    for role in ("failed", "timed_out", "parallel_2"):
        assert fake.retry_calls(sample.job_ids[role]) == 1
    for role in ("soft_failed", "current", "passed", "manual"):
        assert fake.retry_calls(sample.job_ids[role]) == 0
    assert "waiting for retried jobs" in result.err
    markdown = (tmp_path / "r.md").read_text()
    assert markdown.startswith(f"### Retry of failed jobs: sample-app #{sample.number}")
    assert "| Retry ended |" in markdown


def test_retry_failed_json_all_passed(bk: Runner, sample: SampleBuild, fake: FakeBuildkite) -> None:
    fake.on_retry("passed", after_polls=1)
    result = bk("retry-failed", "--wait", "--poll-interval", "0", "--json", "--step-key", "unit-*")
    report = json.loads(result.out)
    assert result.code == 0
    assert report["exit_code"] == 0
    assert [(j["job_id"], j["final_state"]) for j in report["jobs"] if j["new_job_id"]] == [
        (sample.job_ids["failed"], "passed")
    ]


@pytest.mark.parametrize("fault", ["lost", "error"])
def test_retry_failed_exactly_once_under_faults(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite, fault: str
) -> None:
    fake.inject_fault(fault, method="PUT", path="/retry", times=None, status=502)
    result = bk("retry-failed", "--json")
    report = json.loads(result.out)
    chosen = [sample.job_ids[role] for role in ("failed", "timed_out", "parallel_2")]
    if fault == "lost":  # executed, answers lost: every retry is read back from its job
        assert result.code == 0
        assert [j["recovered"] for j in report["jobs"] if j["outcome"] == "retried"] == [True] * 3
        assert [fake.retry_calls(job_id) for job_id in chosen] == [1, 1, 1]
    else:  # not executed: outcome unknown, recorded as failures, never re-sent
        assert result.code == 1
        assert report["counts"]["failed"] == 3
        assert [fake.retry_calls(job_id) for job_id in chosen] == [0, 0, 0]
        puts = [r for r in fake.requests if r.method == "PUT"]
        assert len(puts) == 3


def test_retry_failed_canceled_build(bk: Runner, sample: SampleBuild, fake: FakeBuildkite) -> None:
    fake.set_build_state("sample-app", sample.number, "canceled")
    result = bk("retry-failed", "--concurrency", "1")
    assert result.code == 1
    assert "bkjobs: error: Buildkite refused to retry jobs of sample-app" in result.err
    assert "rebuild it instead of retrying" in result.err
    assert "ABORTED" in result.out


def write_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"agent_lost_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from pytest_bkjobs.hookspecs import bkjobs_hookimpl\n\n"
        "@bkjobs_hookimpl\n"
        "def bkjobs_select_job(job, ctx):\n"
        "    return None if job.exit_status == -1 else False\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_retry_failed_plugin_module(
    bk: Runner,
    sample: SampleBuild,
    fake: FakeBuildkite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = write_plugin(tmp_path, monkeypatch)
    result = bk("retry-failed", "--plugin", module, "--json")
    report = json.loads(result.out)
    assert [j["job_id"] for j in report["jobs"] if j["outcome"] == "retried"] == [
        sample.job_ids["timed_out"]  # the exit status -1 job
    ]
    declined = [j for j in report["jobs"] if j["reason"] == "declined by a bkjobs_select_job hook"]
    assert len(declined) == 3  # a False from the hook also overrides the soft-failure default


def test_retry_failed_plugin_entry_point(
    bk: Runner, sample: SampleBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_plugin(tmp_path, monkeypatch)
    dist = tmp_path / "bkjobs_agent_lost-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bkjobs-agent-lost\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[bkjobs]\nagent_lost = {module}\n")
    report = json.loads(bk("retry-failed", "--dry-run", "--json").out)
    assert [j["job_id"] for j in report["jobs"] if j["outcome"] == "would_retry"] == [
        sample.job_ids["timed_out"]
    ]


def test_retry_failed_bad_plugin(bk: Runner, sample: SampleBuild) -> None:
    result = bk("retry-failed", "--plugin", "no_such_module_xyz")
    assert result.code == 1
    assert "cannot import the plugin module 'no_such_module_xyz'" in result.err


def test_retry_failed_on_a_build_loaded_from_a_real_payload(
    bk: Runner, fake: FakeBuildkite, served: str
) -> None:
    payload = load_json("docs_get_build_with_jobs_retry_source.json")
    pipeline = payload["pipeline"]["slug"]
    number = fake.load_build(payload)
    job = payload["jobs"][0]
    fake.update_job(job["id"], state="failed", exit_status=1, retried=False)
    result = bk(
        "--org", "acme", "retry-failed", "--pipeline", pipeline, "--build", str(number), "--json"
    )
    report = json.loads(result.out)
    assert result.code == 0, result.err
    assert report["current_job_id"] is None
    assert [(j["job_id"], j["outcome"]) for j in report["jobs"]] == [(job["id"], "retried")]
    assert fake.retry_calls(job["id"]) == 1


# -- errors -------------------------------------------------------------------------------------


def test_missing_token(bk: Runner, sample: SampleBuild, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDKITE_API_TOKEN")
    result = bk("get")
    assert result.code == 1
    assert result.err.startswith("bkjobs: error: BUILDKITE_API_TOKEN is not set.")
    assert len(result.err.splitlines()) == 1


def test_token_from_dotenv(
    bk: Runner, sample: SampleBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUILDKITE_API_TOKEN")
    Path(".env").write_text("BUILDKITE_API_TOKEN=fake-token\n")
    assert bk("get").code == 0


def test_not_inside_buildkite(
    bk: Runner, served: str, monkeypatch: pytest.MonkeyPatch, fake: FakeBuildkite
) -> None:
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", fake.org)
    result = bk("list")
    assert result.code == 1
    assert result.err == (
        "bkjobs: error: no build given: not inside a Buildkite step (BUILDKITE_PIPELINE_SLUG,"
        " BUILDKITE_BUILD_NUMBER are not set); pass --pipeline SLUG, --build NUMBER\n"
    )
    job = bk("get")
    assert "BUILDKITE_JOB_ID is not set" in job.err
    monkeypatch.delenv("BUILDKITE_ORGANIZATION_SLUG")
    assert "bkjobs get JOB" in job.err
    org = bk("get", "some-job")
    assert "no organisation given: BUILDKITE_ORGANIZATION_SLUG is not set" in org.err
    assert "--org SLUG" in org.err


def test_every_missing_setting_is_named_at_once(bk: Runner, clean_env: Path) -> None:
    result = bk("list")
    assert result.code == 1
    assert result.err == (
        "bkjobs: error: no build, organisation or API token given: not inside a Buildkite step"
        " (BUILDKITE_PIPELINE_SLUG, BUILDKITE_BUILD_NUMBER, BUILDKITE_ORGANIZATION_SLUG,"
        " BUILDKITE_API_TOKEN are not set); pass --pipeline SLUG, --build NUMBER, --org SLUG and"
        " set BUILDKITE_API_TOKEN (in the environment or .env) to a REST API access token"
        " (Buildkite > Personal Settings > API Access Tokens)\n"
    )
    job = bk("get")
    assert job.code == 1
    assert len(job.err.splitlines()) == 1
    assert "no job, organisation or API token given" in job.err
    assert "pass a job id (bkjobs get JOB), --org SLUG and set BUILDKITE_API_TOKEN" in job.err
    org = bk("get", "some-job")
    assert "no organisation or API token given" in org.err


def test_a_bad_build_number_variable_matters_only_where_the_build_is_needed(
    bk: Runner, sample: SampleBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILDKITE_BUILD_NUMBER", "not-a-number")
    assert bk("get").code == 0  # falls back to the organisation's route
    result = bk("list")
    assert result.code == 1
    assert "BUILDKITE_BUILD_NUMBER must be the build number" in result.err
    assert "'not-a-number'; pass --build NUMBER" in result.err


def test_401_bad_token(bk: Runner, sample: SampleBuild, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDKITE_API_TOKEN", "wrong-secret-value")
    result = bk("get")
    assert result.code == 1
    assert "Buildkite rejected the API token (401:" in result.err
    assert "wrong-secret-value" not in result.err + result.out


def test_403_names_the_scope(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_token("limited-token", scopes=["read_builds"])
    assert bk("env").code == 0  # the default token has every scope
    monkeypatch.setenv("BUILDKITE_API_TOKEN", "limited-token")
    denied = bk("env")
    assert denied.code == 1
    assert "give the token the read_job_env scope" in denied.err
    assert "limited-token" not in denied.err


def test_404(bk: Runner, sample: SampleBuild) -> None:
    result = bk("get", "00000000-0000-0000-0000-000000000000")
    assert result.code == 1
    assert "bkjobs: error: not found (404: No job found;" in result.err
    assert "check the job id" in result.err


def test_404_on_a_listing_names_the_build_not_a_job(bk: Runner, sample: SampleBuild) -> None:
    result = bk("list", "--pipeline", "no-such-pipeline", "--build", "1")
    assert result.code == 1
    assert "bkjobs: error: not found (404:" in result.err
    assert "check the organisation, pipeline and build number" in result.err
    assert "job id" not in result.err


def test_429_after_waiting(bk: Runner, sample: SampleBuild, fake: FakeBuildkite) -> None:
    fake.set_rate_limits(user=1, window=3600)
    assert bk("get").code == 0
    result = bk("get")
    assert result.code == 1
    assert "Buildkite rate limit reached (429, scope rest_user" in result.err
    # The window (3600s) is longer than the client's wait budget: it did not wait it out.
    assert "longer than bkjobs waits for a rate limit (120s; gave up after 0s)" in result.err
    assert "still limited after waiting" not in result.err
    assert "--concurrency" not in result.err  # get has no --concurrency


def test_429_in_retry_failed_suggests_less_concurrency(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    fake.set_rate_limits(user=1, window=3600)
    result = bk("retry-failed")
    assert result.code == 1
    assert "lower --concurrency" in result.err


def test_a_5xx_html_page_shows_its_title_only(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    fake.inject_fault("error", status=502, body="html", times=None)
    result = bk("get")
    assert result.code == 1
    assert "Buildkite failed (502:" in result.err
    assert "<html>" not in result.err
    assert "<title>" not in result.err
    assert len(result.err.splitlines()) == 1


def test_retry_failed_without_write_builds_names_the_scope_once(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_token("read-only-token", scopes=["read_builds"])
    monkeypatch.setenv("BUILDKITE_API_TOKEN", "read-only-token")
    result = bk("retry-failed")
    assert result.code == 1
    assert result.out.splitlines()[0].endswith("0 retried, 3 failed, 1 skipped")
    assert result.err.count("give the API token the write_builds scope") == 1
    assert "bkjobs: error: 3 retries were refused (403): give the API token the write_builds" in (
        result.err
    )


def test_debug_shows_a_traceback_without_the_token(
    bk: Runner, sample: SampleBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILDKITE_API_TOKEN", "bkua_debug_secret_123")
    quiet = bk("get")
    assert "Traceback" not in quiet.err
    loud = bk("--debug", "get")
    assert loud.code == 1
    assert "Traceback (most recent call last)" in loud.err
    assert "AuthenticationError" in loud.err
    assert "bkua_debug_secret_123" not in loud.err + loud.out


def test_connection_error_message() -> None:
    exc = APIConnectionError("GET http://127.0.0.1:9/v2/x failed: ConnectError: refused")
    assert describe_error(exc, "get", "http://127.0.0.1:9/v2") == (
        "GET http://127.0.0.1:9/v2/x failed: ConnectError: refused; check the network and"
        " --api-url/BUILDKITE_API_URL (http://127.0.0.1:9/v2)"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["nope"],
        ["list", "--build", "abc"],
        ["list", "--state", "finished"],
        ["retry"],
        ["retry-failed", "--concurrency", "0"],
        ["log", "--tail", "-5"],
        ["retry-failed", "--wait", "--timeout", "nan"],
        ["retry-failed", "--wait", "--timeout", "inf"],
        ["retry-failed", "--wait", "--poll-interval", "nan"],
        ["retry-failed", "--poll-interval", "-inf"],
        ["retry-failed", "--step-key", ""],
        ["fake-server", "--port", "99999"],
        ["fake-server", "--port", "-1"],
    ],
)
def test_usage_errors_exit_2(bk: Runner, clean_env: Path, argv: list[str]) -> None:
    result = bk(*argv)
    assert result.code == 2
    assert "usage: bkjobs" in result.err
    assert "Traceback" not in result.err


def test_no_command_prints_help(bk: Runner, clean_env: Path) -> None:
    result = bk()
    assert result.code == 2
    assert "usage: bkjobs" in result.err


COMMANDS = [
    "list",
    "get",
    "env",
    "log",
    "retry",
    "retry-failed",
    "unblock",
    "reprioritize",
    "delete-log",
    "fake-server",
    "demo",
    "cassette",
]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS), ["cassette", "convert"]])
def test_help_everywhere(bk: Runner, clean_env: Path, command: list[str]) -> None:
    result = bk(*command, "--help")
    assert result.code == 0
    assert result.out.startswith("usage: bkjobs")
    if command:
        assert f"bkjobs {' '.join(command)}" in result.out.splitlines()[0]


def test_json_before_or_after_the_command(bk: Runner, sample: SampleBuild) -> None:
    before = json.loads(bk("--json", "get").out)
    after = json.loads(bk("get", "--json").out)
    assert before == after


# -- demo and cassettes -------------------------------------------------------------------------


def test_demo_in_process(bk: Runner, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_network(*args: object) -> None:
        raise AssertionError("the demo opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "bind", no_network)
    result = bk("demo")
    assert result.code == 0
    assert "3 retried, 0 failed, 1 skipped, 2 of 3 retries passed" in result.out
    assert "would exit with status 3" in result.err
    assert "BUILDKITE_API_TOKEN" not in result.err


def test_demo_json(bk: Runner, clean_env: Path) -> None:
    report = json.loads(bk("demo", "--json").out)
    assert report["exit_code"] == 3
    assert report["counts"]["retried"] == 3


def test_cassette_convert(bk: Runner, clean_env: Path) -> None:
    src = FIXTURES / "cassettes" / "buildkiterb_job_retry_retry_source_2023.yml"
    dest = clean_env / "retry.json"
    result = bk("cassette", "convert", str(src), "-o", str(dest))
    assert result.code == 0, result.err
    assert result.out == f"converted {src} -> {dest}\n"
    assert json.loads(dest.read_text())
    missing = bk("cassette", "convert", str(clean_env / "nope.yml"))
    assert missing.code == 1
    assert "is not a file" in missing.err


# -- review fixes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["delete-log", "", "--yes"],
        ["delete-log", " ", "--yes"],
        ["reprioritize", "", "7"],
        ["retry", ""],
        ["unblock", ""],
        ["get", ""],
        ["env", ""],
        ["log", ""],
        ["get", ".."],
        ["log", "."],
        ["get", "--job", ""],
        ["list", "--pipeline", " "],
    ],
)
def test_an_empty_job_is_a_usage_error_not_the_current_job(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite, argv: list[str]
) -> None:
    log_before = fake.log(sample.current_job_id)
    requests_before = len(fake.requests)
    result = bk(*argv)
    assert result.code == 2
    assert "JOB must be a job id (a UUID; `bkjobs list` shows them)" in result.err or (
        "must not be empty; leave it out to use BUILDKITE_" in result.err
    )
    assert result.out == ""
    assert len(fake.requests) == requests_before  # nothing was sent
    assert fake.log(sample.current_job_id) == log_before


def test_annotate_to_an_unwritable_folder_fails_before_any_retry(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode; /proc refuses even root
            locked = Path("/proc")
        result = bk("retry-failed", "--annotate", str(locked / "r.md"))
    finally:
        (tmp_path / "locked").chmod(0o700)
    assert result.code == 1
    assert f"bkjobs: error: cannot write {locked / 'r.md'}:" in result.err
    assert ".part" not in result.err
    assert all(fake.retry_calls(job_id) == 0 for job_id in sample.job_ids.values())


def test_annotate_write_failure_still_prints_the_report(
    bk: Runner,
    sample: SampleBuild,
    fake: FakeBuildkite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_bkjobs import _files

    def disk_full(dest: object, data: bytes) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / ".r.md.abc.part"))

    monkeypatch.setattr(_files, "write_atomic", disk_full)
    result = bk("retry-failed", "--annotate", str(tmp_path / "r.md"))
    assert result.code == 1
    assert result.out.startswith(f"build sample-app #{sample.number}: 3 retried")
    assert f"cannot write the report to {tmp_path / 'r.md'}: No space left on device" in result.err
    assert ".part" not in result.err


def test_ctrl_c_during_wait_prints_the_report_and_writes_the_annotation(
    bk: Runner,
    sample: SampleBuild,
    fake: FakeBuildkite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_bkjobs import ci

    real = ci.retry_failed_siblings

    def interrupt(delay: float) -> None:
        raise KeyboardInterrupt

    def with_ctrl_c(*args: object, **kwargs: object) -> object:
        return real(*args, **kwargs, sleep=interrupt)  # type: ignore[arg-type]

    monkeypatch.setattr(ci, "retry_failed_siblings", with_ctrl_c)
    result = bk("retry-failed", "--wait", "--annotate", str(tmp_path / "r.md"))
    assert result.code == 130
    assert "3 retried, 0 failed, 1 skipped" in result.out
    assert "INTERRUPTED (Ctrl-C)" in result.out
    assert "INTERRUPTED (Ctrl-C)" in (tmp_path / "r.md").read_text()
    assert "bkjobs: error: interrupted" in result.err


def test_retry_failed_outcome_unknown_says_running_again_is_safe(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    fake.inject_fault("error", method="PUT", path="/retry", times=None, status=502)
    result = bk("retry-failed")
    assert result.code == 1
    assert "3 retries have an unknown outcome" in result.err
    assert "running bkjobs retry-failed again is safe" in result.err
    again = bk("retry-failed", "--dry-run", "--json")  # nothing was executed: picked up again
    assert json.loads(again.out)["counts"]["would_retry"] == 3


def test_plugin_from_the_working_directory(
    bk: Runner, sample: SampleBuild, clean_env: Path
) -> None:
    import sys

    name = f"agent_lost_{uuid.uuid4().hex[:8]}"
    (clean_env / f"{name}.py").write_text(
        "from pytest_bkjobs.hookspecs import bkjobs_hookimpl\n\n"
        "@bkjobs_hookimpl\n"
        "def bkjobs_select_job(job, ctx):\n"
        "    return None if job.exit_status == -1 else False\n"
    )
    path_before = list(sys.path)
    report = json.loads(bk("retry-failed", "--dry-run", "--plugin", name, "--json").out)
    assert [j["job_id"] for j in report["jobs"] if j["outcome"] == "would_retry"] == [
        sample.job_ids["timed_out"]
    ]
    assert sys.path == path_before  # the working directory was only added for the import
    sys.modules.pop(name, None)


def test_log_tail_strip_drops_the_partial_first_line(
    bk: Runner, sample: SampleBuild, fake: FakeBuildkite
) -> None:
    job_id = sample.job_ids["failed"]
    fake.update_job(job_id, log="\x1b_bk;t=1745322209921\x07$ make\r\n\x1b_bk;t=2\x07boom\r\n")
    tail = len("09921\a$ make\r\n\x1b_bk;t=2\x07boom\r\n")  # starts inside the marker
    result = bk("log", job_id, "--tail", str(tail), "--strip")
    assert result.code == 0, result.err
    assert result.out == "$ make\nboom\n"  # the leftover "...0959\a" of the marker is dropped
    cut = len("ke\r\n\x1b_bk;t=2\x07boom\r\n")  # starts inside "$ make"
    cut_line = bk("log", job_id, "--tail", str(cut), "--strip")
    assert cut_line.out == "boom\n"
    whole = bk("log", job_id, "--tail", "1000", "--strip")  # the whole log: nothing dropped
    assert whole.out == "$ make\nboom\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--tail", "10", "--format", "json"],
        ["--tail", "10", "--format", "html"],
        ["--tail", "10", "--json"],
    ],
)
def test_log_tail_with_json_or_html_is_a_usage_error(
    bk: Runner, sample: SampleBuild, argv: list[str]
) -> None:
    result = bk("log", *argv)
    assert result.code == 2
    assert "--tail works with the text log only" in result.err


def test_progress_lines_from_threads_never_interleave(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import threading

    from pytest_bkjobs._cli_output import progress

    def spam(n: int) -> None:
        for i in range(200):
            progress(f"worker {n} line {i}")

    threads = [threading.Thread(target=spam, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 800
    assert all(line.startswith("bkjobs: worker ") and line.count("bkjobs") == 1 for line in lines)


def test_demo_progress_ends_with_a_final_wait_line(bk: Runner, clean_env: Path) -> None:
    result = bk("demo")
    lines = result.err.splitlines()
    assert all(line.count("bkjobs") <= 2 for line in lines)
    assert sum(1 for line in lines if line.startswith("bkjobs: retried ")) == 3
    assert "bkjobs: done waiting after 0s: 3 finished (2 passed)" in lines
