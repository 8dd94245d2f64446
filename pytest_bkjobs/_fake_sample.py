"""A realistic sample build for the fake: every kind and state of job a helper meets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._fake_state import FakeState

_T0 = 1_764_000_000_000  # milliseconds; the sample's logs are stamped from here

_SECRETS = {
    "DEPLOY_API_TOKEN": "dat_fake_9f8e7d6c5b4a39281706",
    "AWS_SECRET_ACCESS_KEY": "fakeAWSsecret/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "DATABASE_PASSWORD": "hunter2-but-fake",
    "SSH_PRIVATE_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\nZmFrZSBrZXk=\n"
    "-----END OPENSSH PRIVATE KEY-----",
}
_PLAIN = {
    "PYTEST_ADDOPTS": '-k "not slow" --maxfail=1',
    "DATABASE_URL": "postgres://app@db:5432/app?sslmode=disable&pool=5",
    "APP_ENV": "ci",
}


@dataclass(frozen=True)
class SampleBuild:
    """What ``FakeBuildkite.sample_build`` seeded: the build, its jobs by role, the current job."""

    pipeline: str
    number: int
    current_job_id: str
    job_ids: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # the current job's env


def _log(lines: list[str], start: int = 0) -> bytes:
    """Agent-style log bytes: a ``_bk;t=`` marker on every line and CRLF endings."""
    out = []
    for index, line in enumerate(lines):
        out.append(f"\x1b_bk;t={_T0 + (start + index) * 137}\x07{line}\r\n")
    return "".join(out).encode("utf-8")


def _prelude(command: str) -> list[str]:
    return [
        "~~~ Running global environment hook",
        "\x1b[90m$\x1b[0m /buildkite/agent/hooks/environment",
        "~~~ Preparing working directory",
        "\x1b[90m$\x1b[0m cd /buildkite/builds/fake-agent-1/acme/sample-app",
        "\x1b[90m$\x1b[0m git fetch -v --prune -- origin main",
        "HEAD is now at a655725 Add retry helper to CI",
        "~~~ Running commands",
        f"\x1b[90m$\x1b[0m {command}",
    ]


def _pytest_lines(passed: int, failed: int, name: str) -> list[str]:
    lines = ["+++ :pytest: Running tests", "============ test session starts ============"]
    lines.append(f"collected {passed + failed} items")
    lines.append("tests/" + name + " " + "." * min(passed, 40) + "F" * failed)
    if failed:
        lines += [
            "================= FAILURES ==================",
            "_____________ test_checkout_total _____________",
            "    def test_checkout_total():",
            ">       assert total([3, 4]) == 8",
            "E       assert 7 == 8",
            f"\x1b[31m{failed} failed\x1b[0m, \x1b[32m{passed} passed\x1b[0m in 3.21s",
            "^^^ +++",
            "\x1b[31m🚨 Error: The command exited with status 1\x1b[0m",
        ]
    else:
        lines.append(f"\x1b[32m{passed} passed\x1b[0m in 2.05s")
    return lines


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**_PLAIN, **_SECRETS, **(extra or {})}


def seed_sample(state: FakeState, pipeline: str) -> SampleBuild:
    """Seed the sample build into ``state``."""
    number = state.add_build(
        pipeline,
        state="running",
        fields={
            "message": "Add retry helper to CI",
            "branch": "main",
            "commit": "a65572555600c07c7ee79a2bd909220e1ca5485b",
            "creator": state.user(None),
        },
    )
    ids: dict[str, str] = {}

    def add(role: str, **fields: Any) -> None:
        ids[role] = state.add_job(pipeline, number, **fields)

    add(
        "passed",
        name=":package: Build",
        step_key="build",
        command="make build",
        state="passed",
        exit_status=0,
        log=_log([*_prelude("make build"), "--- :package: Building wheel", "Built sample_app"]),
        env=_env(),
    )
    add(
        "failed",
        name=":pytest: Unit tests",
        step_key="unit-tests",
        command="pytest tests/unit",
        state="failed",
        exit_status=1,
        log=_log([*_prelude("pytest tests/unit"), *_pytest_lines(41, 1, "unit/test_cart.py")]),
        env=_env(),
    )
    add(
        "timed_out",
        name=":hourglass: Integration tests",
        step_key="integration",
        command="pytest tests/integration",
        state="timed_out",
        exit_status=-1,
        signal="SIGTERM",
        signal_reason="cancel",
        log=_log(
            [
                *_prelude("pytest tests/integration"),
                "+++ :pytest: Running tests",
                "tests/integration/test_db.py ....",
                "\x1b[33mJob timed out after 10 minutes\x1b[0m",
            ]
        ),
        env=_env(),
    )
    add(
        "soft_failed",
        name=":lint-roller: Lint",
        step_key="lint",
        command="ruff check .",
        state="failed",
        exit_status=1,
        soft_failed=True,
        log=_log([*_prelude("ruff check ."), "src/app.py:3:1: F401 `os` imported but unused"]),
        env=_env(),
    )
    for index in range(3):
        failed = index == 1
        add(
            f"parallel_{index + 1}",
            name=f":playwright: E2E {index + 1}/3",
            step_key="e2e",
            command="npx playwright test --shard=$((BUILDKITE_PARALLEL_JOB + 1))/3",
            state="failed" if failed else "passed",
            exit_status=1 if failed else 0,
            parallel_group_index=index,
            parallel_group_total=3,
            log=_log(
                [
                    *_prelude("npx playwright test"),
                    "+++ :playwright: Running 12 tests using 2 workers",
                    "  ✓ checkout.spec.ts › pays with a card (1.2s)",
                    *(["  ✘ cart.spec.ts › applies a coupon (5.0s)"] if failed else []),
                ]
            ),
            env=_env(),
        )
    add(
        "trigger",
        type="trigger",
        name=":books: Build docs",
        step_key="docs",
        state="passed",
        triggered_build={
            "id": state.new_id(),
            "number": 77,
            "url": f"https://api.buildkite.com/v2/organizations/{state.org}/pipelines/docs/builds/77",
            "web_url": f"https://buildkite.com/{state.org}/docs/builds/77",
        },
    )
    add("waiter", type="waiter")
    add(
        "current",
        name=":buildkite: Retry failed jobs",
        step_key="bkjobs",
        command="bkjobs retry-failed --wait",
        state="running",
        log=_log([*_prelude("bkjobs retry-failed --wait"), "--- Looking for failed jobs"]),
        env=_env(),
    )
    add(
        "manual",
        type="manual",
        label=":rocket: Deploy to production?",
        step_key="deploy-gate",
        state="blocked",
    )
    current = ids["current"]
    return SampleBuild(pipeline, number, current, dict(ids), dict(state.jobs[current].env))
