"""Client settings from arguments, then the environment, then a ``.env`` file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ._errors import ConfigurationError

DEFAULT_BASE_URL = "https://api.buildkite.com/v2"
TOKEN_VAR = "BUILDKITE_API_TOKEN"
ORG_VAR = "BUILDKITE_ORGANIZATION_SLUG"
URL_VAR = "BUILDKITE_API_URL"
AGENT_TOKEN_VAR = "BUILDKITE_AGENT_ACCESS_TOKEN"


@dataclass(frozen=True)
class Settings:
    """Resolved settings; ``repr`` never shows the token."""

    token: str
    org: str
    base_url: str

    def __repr__(self) -> str:
        return f"Settings(token='***', org={self.org!r}, base_url={self.base_url!r})"


def merged_environ(
    environ: Mapping[str, str] | None, dotenv_path: str | os.PathLike[str] | None
) -> dict[str, str]:
    """The environment over the ``.env`` file's values; ``os.environ`` is only read."""
    merged: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def settings_from_env(
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = ".env",
) -> Settings:
    """Read token, org and base URL; raise ``ConfigurationError`` naming what is missing."""
    values = merged_environ(environ, dotenv_path)
    token = values.get(TOKEN_VAR, "").strip()
    org = values.get(ORG_VAR, "").strip()
    if not token:
        hint = (
            f" {AGENT_TOKEN_VAR} is set, but it is the agent's token, not a REST API token."
            if values.get(AGENT_TOKEN_VAR)
            else ""
        )
        raise ConfigurationError(
            f"{TOKEN_VAR} is not set.{hint} Create an API access token in Buildkite"
            " (Personal Settings > API Access Tokens) with the scopes you need, and put it in"
            f" the environment or in {dotenv_path or '.env'} as {TOKEN_VAR}=..."
        )
    if not org:
        raise ConfigurationError(
            f"{ORG_VAR} is not set. Set it to your organisation's slug (the part after"
            f" buildkite.com/ in its URL), in the environment or in {dotenv_path or '.env'}"
        )
    base_url = values.get(URL_VAR, "").strip() or DEFAULT_BASE_URL
    return Settings(token=token, org=org, base_url=base_url)
