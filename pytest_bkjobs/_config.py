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

        try:
            values = dotenv_values(dotenv_path, interpolate=False, encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            raise ConfigurationError(
                f"cannot read {os.fspath(dotenv_path)}: {exc}; it must be a UTF-8 text file"
                " of KEY=value lines"
            ) from None
        merged.update({k: v for k, v in values.items() if v is not None})
    # An empty variable in the environment does not hide a value from .env.
    merged.update({k: v for k, v in (os.environ if environ is None else environ).items() if v})
    return merged


def settings_from_env(
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = ".env",
) -> Settings:
    """Read token, org and base URL; raise ``ConfigurationError`` naming what is missing."""
    environ = masked(environ)
    values = _MaskedValues(merged_environ(environ, dotenv_path))
    where = f"the environment or {os.fspath(dotenv_path)}" if dotenv_path else "the environment"
    org = values.get(ORG_VAR, "").strip()
    if not values.get(TOKEN_VAR, "").strip():
        hint = (
            f" {AGENT_TOKEN_VAR} is set, but it is the agent's token, not a REST API token."
            if values.get(AGENT_TOKEN_VAR)
            else ""
        )
        raise ConfigurationError(
            f"{TOKEN_VAR} is not set.{hint} Create an API access token in Buildkite"
            " (Personal Settings > API Access Tokens) with the scopes you need, and put it in"
            f" {where} as {TOKEN_VAR}=..."
        )
    if not org:
        raise ConfigurationError(
            f"{ORG_VAR} is not set. Set it to your organisation's slug (the part after"
            f" buildkite.com/ in its URL), in {where}"
        )
    base_url = values.get(URL_VAR, "").strip() or DEFAULT_BASE_URL
    return Settings(token=values[TOKEN_VAR].strip(), org=org, base_url=base_url)


def masked(environ: Mapping[str, str] | None) -> _MaskedValues | None:
    """A copy of ``environ`` that tracebacks show without its secrets."""
    return None if environ is None else _MaskedValues(environ)


class _MaskedValues(dict[str, str]):
    """Environment values whose ``repr`` hides secrets (tracebacks show locals)."""

    def __repr__(self) -> str:
        from ._env import is_secret_name

        shown = {k: "***" if is_secret_name(k) else v for k, v in self.items()}
        return f"{shown!r}"
