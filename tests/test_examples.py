"""The examples run, so they never rot: replayed cassettes, the recording script, the step
script against a loopback fake, and the pipeline's commands (parsed, then run with shims).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_bkjobs import is_secret_name
from pytest_bkjobs._cli_parser import build_parser
from pytest_bkjobs._demo import demo_outcome
from pytest_bkjobs.fake import FakeBuildkite

from ._doc_commands import invocations

EXAMPLES = Path(__file__).parent.parent / "examples"
CASSETTES = EXAMPLES / "cassettes" / "test_jobs_with_cassettes"
SCOPES = ("read_builds", "write_builds", "read_build_logs", "read_job_env")


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without any Buildkite setting of the developer's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "PYTEST_"))}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def examples_copy(tmp_path: Path) -> Path:
    """A copy of examples/ (no .env of the repository's nearby, nothing written in the repo)."""
    dest = tmp_path / "examples"
    shutil.copytree(EXAMPLES, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return dest


def _interactions(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """Each cassette's requests as (method, path and query), the host left out."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        found[path.name] = [
            (i["request"]["method"], i["request"]["uri"].split("/v2/", 1)[1])
            for i in data["interactions"]
        ]
    return found


# -- pytest examples/ ------------------------------------------------------------------------


def test_pytest_examples_passes_offline_replaying_the_committed_cassettes(
    examples_copy: Path,
) -> None:
    before = {
        p.name: p.read_bytes() for p in (examples_copy / CASSETTES.relative_to(EXAMPLES)).iterdir()
    }
    result = _run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        examples_copy,
        _clean_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed" in result.stdout
    assert "bkjobs: cassettes 6 replayed; 0 interaction(s) unused" in result.stdout
    assert "record mode none" not in result.stderr
    after = {
        p.name: p.read_bytes() for p in (examples_copy / CASSETTES.relative_to(EXAMPLES)).iterdir()
    }
    assert after == before  # replay never writes


def test_committed_cassettes_show_every_endpoint_and_hold_no_secret() -> None:
    texts = {p.name: p.read_text(encoding="utf-8") for p in CASSETTES.glob("*.json")}
    assert sorted(texts) == [
        f"test_{name}.json" for name in ("env", "get", "list_and_filter", "log", "retry", "unblock")
    ]
    everything = "\n".join(texts.values())
    for route in ("/jobs?", "/retry", "/unblock", "/log", "/env"):
        assert route in everything
    fake = FakeBuildkite()
    env = fake.sample_build().env
    secrets = [fake.token, *(value for name, value in env.items() if is_secret_name(name))]
    for secret in secrets:
        assert json.dumps(secret)[1:-1] not in everything
    assert "authorization" not in everything.lower()
    # The custom scrub hook of examples/conftest.py ran on every recorded e-mail address.
    emails = {
        line.split(":", 1)[1].strip().strip(",")
        for line in everything.splitlines()
        if '"email":' in line
    }
    assert emails == {'"someone@example.com"'}
    assert '"DATABASE_URL": "[REDACTED]"' in texts["test_env.json"]  # bk_redact_env in pytest.ini


def test_record_script_records_the_same_requests_again(examples_copy: Path) -> None:
    folder = examples_copy / CASSETTES.relative_to(EXAMPLES)
    shutil.rmtree(folder)
    result = _run(["bash", "record_cassettes.sh"], examples_copy, _clean_env(PYTHON=sys.executable))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bkjobs: cassettes 6 recorded" in result.stdout
    assert _interactions(folder) == _interactions(CASSETTES)
    for path in folder.glob("*.json"):
        assert FakeBuildkite().token not in path.read_text(encoding="utf-8")


# -- the step script ----------------------------------------------------------------------------


@pytest.fixture
def served_sample() -> Iterator[tuple[FakeBuildkite, dict[str, str]]]:
    """A loopback fake with the sample build, and the environment of its running step."""
    fake = FakeBuildkite()
    sample = fake.sample_build()
    with fake.serve() as base_url:
        step_env = {k: v for k, v in sample.env.items() if k.startswith("BUILDKITE")}
        step_env.update(BUILDKITE_API_URL=base_url, BUILDKITE_API_TOKEN=fake.token)
        yield fake, step_env


@pytest.mark.parametrize(
    ("outcome", "exit_code"), [("passed", 0), (demo_outcome, 3)], ids=["all-pass", "e2e-fails"]
)
def test_retry_failed_script_as_a_step(
    served_sample: tuple[FakeBuildkite, dict[str, str]],
    tmp_path: Path,
    outcome: Any,
    exit_code: int,
) -> None:
    fake, step_env = served_sample
    fake.on_retry(outcome, after_polls=1)
    result = _run(
        [
            sys.executable,
            str(EXAMPLES / "retry_failed.py"),
            "--report",
            "report.md",
            "--poll-interval",
            "0.01",
        ],
        tmp_path,
        _clean_env(**step_env),
    )
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "3 retried" in result.stdout
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert report.startswith("### Retry of failed jobs: sample-app #1")
    assert "| `unit-tests` |" in report
    retried = [r for r in fake.requests if r.method == "PUT" and r.path.endswith("/retry")]
    assert len(retried) == 3
    assert all(fake.retry_calls(r.path.split("/")[-2]) == 1 for r in retried)
    assert fake.token not in result.stdout + result.stderr + report


def test_retry_failed_script_outside_a_step_says_what_is_missing(tmp_path: Path) -> None:
    result = _run([sys.executable, str(EXAMPLES / "retry_failed.py")], tmp_path, _clean_env())
    assert result.returncode == 1
    assert result.stderr.startswith("retry_failed.py: error: not inside a Buildkite step")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize("script", ["client_offline.py", "retry_failed_offline.py"])
def test_offline_scripts_run(script: str, tmp_path: Path) -> None:
    result = _run([sys.executable, str(EXAMPLES / script)], tmp_path, _clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" in result.stdout


# -- pipeline.yml -------------------------------------------------------------------------------


def _pipeline() -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLES / "pipeline.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _commands(step: dict[str, Any]) -> str:
    command = step.get("command", step.get("commands", ""))
    return "\n".join(command) if isinstance(command, list) else str(command)


def _bkjobs_calls() -> list[list[str]]:
    return [
        args for step in _pipeline()["steps"] for args in invocations(_commands(step), "bkjobs")
    ]


def test_pipeline_bkjobs_commands_parse_with_the_real_parser() -> None:
    calls = _bkjobs_calls()
    assert {args[0] for args in calls} == {"retry-failed", "list", "log", "env"}
    parser = build_parser()
    for args in calls:
        parsed = parser.parse_args(args)  # a usage error raises SystemExit and fails the test
        assert parsed.command == args[0]
        assert not getattr(parsed, "reveal", False), "never print secrets in a build log"
    retry = next(parser.parse_args(a) for a in calls if a[0] == "retry-failed")
    assert retry.wait
    assert retry.annotate == "report.md"
    log = next(parser.parse_args(a) for a in calls if a[0] == "log")
    assert log.strip


def test_pipeline_waits_first_annotates_and_keeps_the_token_out() -> None:
    steps = _pipeline()["steps"]
    keys = [step.get("key") or ("wait" if "wait" in step else None) for step in steps]
    assert keys.index("wait") < keys.index("bkjobs")
    assert steps[keys.index("wait")].get("continue_on_failure") is True
    assert "buildkite-agent annotate" in _commands(steps[keys.index("bkjobs")])
    assert "< report.md" in _commands(steps[keys.index("bkjobs")])
    for step in steps:
        assert "BUILDKITE_API_TOKEN" not in (step.get("env") or {})
    text = (EXAMPLES / "pipeline.yml").read_text(encoding="utf-8")
    for scope in SCOPES:
        assert scope in text
    assert "environment` hook" in text


def _shims(folder: Path) -> Path:
    """``pip`` (does nothing), ``buildkite-agent`` (keeps its input), ``bkjobs``, ``python``."""
    folder.mkdir()
    scripts = {
        "pip": "exit 0",
        "buildkite-agent": 'echo "$@" > agent-args.txt; cat > annotation.md',
        "bkjobs": f'exec "{sys.executable}" -m pytest_bkjobs "$@"',
        "python": f'exec "{sys.executable}" "$@"',
    }
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        path.chmod(0o755)
    return folder


@pytest.mark.skipif(sys.platform == "win32", reason="the steps are bash scripts")
def test_pipeline_steps_run_against_a_loopback_fake(
    served_sample: tuple[FakeBuildkite, dict[str, str]], tmp_path: Path
) -> None:
    fake, step_env = served_sample
    fake.on_retry(demo_outcome, after_polls=0)  # finished when first polled: no 5 s poll wait
    bin_dir = _shims(tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    env = _clean_env(**step_env)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    steps = {step.get("key"): step for step in _pipeline()["steps"]}

    retry = _run(["bash", "-e", "-c", _commands(steps["bkjobs"])], work, env)
    assert retry.returncode == 3, retry.stdout + retry.stderr  # the E2E shard failed again
    assert (work / "annotation.md").read_text().startswith("### Retry of failed jobs")
    assert "annotate --style warning --context bkjobs" in (work / "agent-args.txt").read_text()

    logs = _run(["bash", "-e", "-c", _commands(steps["logs"])], work, env)
    assert logs.returncode == 0, logs.stdout + logs.stderr
    saved = sorted((work / "logs").glob("*.log"))
    assert len(saved) == 2  # the E2E retry that failed again, and the soft-failed lint job
    assert all("\x1b" not in p.read_text(encoding="utf-8") for p in saved)  # --strip
    assert 'APP_ENV="ci"' in logs.stdout or "APP_ENV=ci" in logs.stdout
    assert "[REDACTED]" in logs.stdout
    for name, value in fake.env(step_env["BUILDKITE_JOB_ID"]).items():
        if name.endswith(("_TOKEN", "_PASSWORD")):
            assert value not in logs.stdout + logs.stderr
