"""``python -m pytest_bkjobs`` as a real process against the fake over loopback HTTP.

A representative set only (each process costs ~0.3 s); test_cli.py covers every command and
error path in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_bkjobs import parse_env_text
from pytest_bkjobs.fake import FakeBuildkite, SampleBuild

TIMEOUT = 60


def clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDKITE")}
    env.update(extra)
    return env


def bkjobs(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_bkjobs", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_environ(**env),
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture
def fake() -> FakeBuildkite:
    return FakeBuildkite()


@pytest.fixture
def url(fake: FakeBuildkite) -> Iterator[str]:
    with fake.serve() as base_url:
        yield base_url


def step_env(fake: FakeBuildkite, url: str, sample: SampleBuild) -> dict[str, str]:
    return {
        "BUILDKITE_API_URL": url,
        "BUILDKITE_API_TOKEN": fake.token,
        "BUILDKITE_ORGANIZATION_SLUG": fake.org,
        "BUILDKITE_PIPELINE_SLUG": sample.pipeline,
        "BUILDKITE_BUILD_NUMBER": str(sample.number),
        "BUILDKITE_JOB_ID": sample.current_job_id,
    }


def test_demo(tmp_path: Path) -> None:
    result = bkjobs("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 retried, 0 failed, 1 skipped, 2 of 3 retries passed" in result.stdout
    assert "in-process: no token, no network" in result.stderr
    assert "would exit with status 3" in result.stderr


def test_retry_failed_wait_exactly_once_under_lost_answers(
    fake: FakeBuildkite, url: str, tmp_path: Path
) -> None:
    sample = fake.sample_build()
    fake.on_retry(lambda job: "failed" if job.get("step_key") == "e2e" else "passed")
    fake.inject_fault("lost", method="PUT", path="/retry", times=2)
    result = bkjobs(
        "retry-failed",
        "--wait",
        "--poll-interval",
        "0.02",
        "--json",
        "--annotate",
        "report.md",
        cwd=tmp_path,
        **step_env(fake, url, sample),
    )
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    retried = [j for j in report["jobs"] if j["outcome"] == "retried"]
    assert sorted(j["recovered"] for j in retried) == [False, True, True]
    assert sorted(j["final_state"] for j in retried) == ["failed", "passed", "passed"]
    for role in ("failed", "timed_out", "parallel_2"):
        assert fake.retry_calls(sample.job_ids[role]) == 1
    assert (tmp_path / "report.md").read_text().startswith("### Retry of failed jobs")
    assert "waiting for retried jobs" in result.stderr


def test_reading_commands(fake: FakeBuildkite, url: str, tmp_path: Path) -> None:
    sample = fake.sample_build()
    env = step_env(fake, url, sample)
    got = bkjobs("get", "--json", cwd=tmp_path, **env)
    assert json.loads(got.stdout)["id"] == sample.current_job_id
    secrets = bkjobs("env", cwd=tmp_path, **env)
    assert 'DEPLOY_API_TOKEN="[REDACTED]"' in secrets.stdout
    assert "dat_fake_" not in secrets.stdout
    log = bkjobs("log", sample.job_ids["failed"], "--strip", cwd=tmp_path, **env)
    assert "E       assert 7 == 8" in log.stdout.splitlines()


def test_errors_are_one_line_without_traceback(
    fake: FakeBuildkite, url: str, tmp_path: Path
) -> None:
    sample = fake.sample_build()
    env = step_env(fake, url, sample)
    no_token = bkjobs("get", cwd=tmp_path, **{k: v for k, v in env.items() if "TOKEN" not in k})
    assert no_token.returncode == 1
    assert no_token.stderr.startswith("bkjobs: error: BUILDKITE_API_TOKEN is not set.")
    assert len(no_token.stderr.splitlines()) == 1
    outside = bkjobs("list", cwd=tmp_path, BUILDKITE_API_TOKEN="x")
    assert outside.returncode == 1
    assert "not inside a Buildkite step" in outside.stderr
    usage = bkjobs("list", "--build", "x", cwd=tmp_path)
    assert usage.returncode == 2
    assert "Traceback" not in no_token.stderr + outside.stderr + usage.stderr


def test_debug_never_prints_the_token(fake: FakeBuildkite, url: str, tmp_path: Path) -> None:
    sample = fake.sample_build()
    env = step_env(fake, url, sample) | {"BUILDKITE_API_TOKEN": "bkua_e2e_secret_42"}
    result = bkjobs("--debug", "retry-failed", cwd=tmp_path, **env)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "401" in result.stderr
    assert "bkua_e2e_secret_42" not in result.stdout + result.stderr


def test_fake_server_command(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_bkjobs",
            "fake-server",
            "--port",
            "0",
            "--sample",
            "--env-file",
            "fake.env",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=clean_environ(),
    )
    try:
        assert server.stdout is not None
        settings: dict[str, str] = {}
        for line in server.stdout:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep and key.startswith("BUILDKITE_"):  # unindented: a .env as printed
                settings[key] = value
            if line.startswith("Press Ctrl-C"):
                break
        assert settings["BUILDKITE_API_URL"].startswith("http://127.0.0.1:")
        assert len(settings) == 6  # URL, token, org, and the sample's running job
        assert parse_env_text((tmp_path / "fake.env").read_text()) == settings
        listing = bkjobs("list", "--json", cwd=tmp_path, **settings)
        assert listing.returncode == 0, listing.stderr
        assert len(json.loads(listing.stdout)) == 11
        # The sample's retried jobs finish on their own, as in the demo (e2e fails again).
        waited = bkjobs(
            "retry-failed", "--wait", "--poll-interval", "0.05", "--timeout", "30", "--json",
            cwd=tmp_path, **settings,
        )  # fmt: skip
        assert waited.returncode == 3, waited.stderr
        assert json.loads(waited.stdout)["summary"].endswith("2 of 3 retries passed")
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=TIMEOUT) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "bkjobs"
    if not script.exists():
        pytest.skip("the bkjobs console script is not installed in this environment")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("bkjobs ")


def test_console_script_finds_a_plugin_in_the_working_directory(
    fake: FakeBuildkite, url: str, tmp_path: Path
) -> None:
    script = Path(sys.executable).parent / "bkjobs"
    if not script.exists():
        pytest.skip("the bkjobs console script is not installed in this environment")
    (tmp_path / "agent_lost.py").write_text(
        "from pytest_bkjobs.hookspecs import bkjobs_hookimpl\n\n"
        "@bkjobs_hookimpl\n"
        "def bkjobs_select_job(job, ctx):\n"
        "    return None if job.exit_status == -1 else False\n"
    )
    sample = fake.sample_build()
    result = subprocess.run(
        [str(script), "retry-failed", "--plugin", "agent_lost", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_environ(**step_env(fake, url, sample)),
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [j["job_id"] for j in report["jobs"] if j["outcome"] == "retried"] == [
        sample.job_ids["timed_out"]
    ]
