"""Job environments: dotenv text in and out, and which variable names hold secrets."""

from __future__ import annotations

import fnmatch
import io
from collections.abc import Iterable, Mapping

REDACTED = "[REDACTED]"

#: buildkite-agent's redaction patterns, the ecosystem's convention for "this is a secret".
SECRET_NAME_PATTERNS: tuple[str, ...] = (
    "*_PASSWORD",
    "*_SECRET",
    "*_TOKEN",
    "*_PRIVATE_KEY",
    "*_ACCESS_KEY",
    "*_SECRET_KEY",
    "*_CONNECTION_STRING",
    "*_API_KEY",
)


def parse_env_text(text: str) -> dict[str, str]:
    """Parse a job's dotenv ``text/plain`` environment into a dict (no interpolation)."""
    from dotenv import dotenv_values

    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {key: value if value is not None else "" for key, value in values.items()}


def _quote(value: str) -> str:
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def format_env_text(env: Mapping[str, str]) -> str:
    """Render ``KEY="value"`` lines that ``parse_env_text`` reads back to the same dict."""
    return "".join(f"{key}={_quote(value)}\n" for key, value in env.items())


def is_secret_name(name: str, extra_patterns: Iterable[str] = ()) -> bool:
    """True if ``name`` matches a secret pattern (case-insensitive glob)."""
    upper = name.upper()
    return any(
        fnmatch.fnmatchcase(upper, pattern.upper())
        for pattern in (*SECRET_NAME_PATTERNS, *extra_patterns)
    )


def redact_env(env: Mapping[str, str], extra_patterns: Iterable[str] = ()) -> dict[str, str]:
    """Replace the values of secret-looking variables by ``[REDACTED]``."""
    extra = tuple(extra_patterns)
    return {k: REDACTED if is_secret_name(k, extra) and v else v for k, v in env.items()}
