"""Settings from the environment and ``.env``; dotenv text; secrets never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_bkjobs
from pytest_bkjobs import AsyncJobsClient, ConfigurationError, JobsClient, parse_env_text
from pytest_bkjobs._env import format_env_text, is_secret_name, redact_env
from tests.conftest import TOKEN


@pytest.mark.parametrize("cls", [JobsClient, AsyncJobsClient])
def test_from_env_reads_the_three_variables(cls: type[JobsClient], tmp_path: Path):
    environ = {
        "BUILDKITE_API_TOKEN": TOKEN,
        "BUILDKITE_ORGANIZATION_SLUG": "acme",
        "BUILDKITE_API_URL": "http://127.0.0.1:8080/v2",
    }
    client = cls.from_env(environ, dotenv_path=tmp_path / "missing.env")
    assert client.org == "acme"
    assert client.base_url == "http://127.0.0.1:8080/v2"


def test_environment_wins_over_dotenv(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("BUILDKITE_API_TOKEN=from-file\nBUILDKITE_ORGANIZATION_SLUG=file-org\n")
    before = dict(os.environ)
    client = JobsClient.from_env({"BUILDKITE_ORGANIZATION_SLUG": "env-org"}, dotenv_path=dotenv)
    assert client.org == "env-org"
    assert client._token.reveal() == "from-file"
    assert client.base_url == "https://api.buildkite.com/v2"
    assert dict(os.environ) == before  # never written


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BUILDKITE_ORGANIZATION_SLUG": "acme"}, "BUILDKITE_API_TOKEN is not set"),
        ({"BUILDKITE_API_TOKEN": "t"}, "BUILDKITE_ORGANIZATION_SLUG is not set"),
        (
            {"BUILDKITE_AGENT_ACCESS_TOKEN": "agent", "BUILDKITE_ORGANIZATION_SLUG": "acme"},
            "BUILDKITE_AGENT_ACCESS_TOKEN is set, but it is the agent's token, not a REST API",
        ),
    ],
)
def test_missing_settings_name_the_variable(environ: dict[str, str], message: str, tmp_path: Path):
    with pytest.raises(ConfigurationError, match=message):
        JobsClient.from_env(environ, dotenv_path=tmp_path / "none")


def test_agent_token_is_never_shown(tmp_path: Path):
    environ = {
        "BUILDKITE_AGENT_ACCESS_TOKEN": "agent-secret-value",
        "BUILDKITE_ORGANIZATION_SLUG": "a",
    }
    with pytest.raises(ConfigurationError) as info:
        JobsClient.from_env(environ, dotenv_path=None)
    assert "agent-secret-value" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"token": "", "org": "acme"}, "token is empty"),
        ({"token": "t", "org": ""}, "org must be a non-empty slug"),
        ({"token": "t", "org": "a", "base_url": "api.buildkite.com"}, "base_url must be an http"),
        ({"token": "t", "org": "a", "max_retries": -1}, "max_retries must be an integer >= 0"),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], message: str):
    with pytest.raises(pytest_bkjobs.BuildkiteError, match=message):
        JobsClient(**kwargs)  # type: ignore[arg-type]


def test_repr_of_a_half_built_client():
    client = JobsClient.__new__(JobsClient)
    assert repr(client) == "JobsClient(org=None, base_url=None)"


def test_constructor_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        JobsClient(TOKEN, "acme")  # type: ignore[misc]


def test_token_not_in_repr():
    client = JobsClient(token=TOKEN, org="acme")
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(vars(client))
    assert TOKEN not in repr(vars(client._http))
    assert repr(client) == "JobsClient(org='acme', base_url='https://api.buildkite.com/v2')"
    client.close()


def test_importing_the_package_does_not_import_httpx():
    code = (
        "import sys, pytest_bkjobs; "
        "heavy = [m for m in ('httpx', 'respx', 'dotenv') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_is_importable():
    for name in pytest_bkjobs.__all__:
        assert getattr(pytest_bkjobs, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pytest_bkjobs.nope  # noqa: B018


def test_parse_env_text_with_quotes_newlines_and_equals():
    text = 'A="1"\nB="x=y # not a comment"\nC="line1\\nline2"\nD=plain\nE="$HOME"\nF=\n'
    assert parse_env_text(text) == {
        "A": "1",
        "B": "x=y # not a comment",
        "C": "line1\nline2",
        "D": "plain",
        "E": "$HOME",  # no interpolation: the value as the job had it
        "F": "",
    }


@pytest.mark.parametrize(
    "value",
    ["", "simple", 'quote " inside', "back\\slash", "multi\nline\r\n", "a=b#c", "ünï ✓", "'"],
)
def test_format_env_text_round_trips(value: str):
    env = {"KEY": value, "OTHER": "x"}
    assert parse_env_text(format_env_text(env)) == env


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DEPLOY_API_TOKEN", True),
        ("db_password", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("AWS_SECRET_KEY", True),
        ("GITHUB_PRIVATE_KEY", True),
        ("DB_CONNECTION_STRING", True),
        ("STRIPE_API_KEY", True),
        ("BUILDKITE_BRANCH", False),
        ("TOKEN", False),
    ],
)
def test_secret_names_follow_the_agent_patterns(name: str, secret: bool):
    assert is_secret_name(name) is secret


def test_redact_env_with_extra_patterns():
    env = {"MY_TOKEN": "abc", "CUSTOM_CRED": "x", "EMPTY_TOKEN": "", "PLAIN": "p"}
    assert redact_env(env, ["*_CRED"]) == {
        "MY_TOKEN": "[REDACTED]",
        "CUSTOM_CRED": "[REDACTED]",
        "EMPTY_TOKEN": "",
        "PLAIN": "p",
    }
