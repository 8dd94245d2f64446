"""Argument checks for the fake's seeding and configuration: clear errors at the call."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping

from ._models import JobState

#: Job states the fake accepts when seeding (every state the REST API reports).
JOB_STATES: tuple[str, ...] = tuple(s.value for s in JobState if s is not JobState.UNKNOWN)
#: Build states of the REST API.
BUILD_STATES: tuple[str, ...] = (
    "creating",
    "scheduled",
    "running",
    "passed",
    "failing",
    "failed",
    "blocked",
    "canceling",
    "canceled",
    "skipped",
    "not_run",
    "finished",
)
JOB_TYPES = ("script", "waiter", "manual", "trigger")
#: Every scope an API access token can have (the Jobs API needs the first five).
KNOWN_SCOPES: frozenset[str] = frozenset(
    {
        "read_builds",
        "write_builds",
        "read_build_logs",
        "write_build_logs",
        "read_job_env",
        "read_agents",
        "write_agents",
        "read_teams",
        "write_teams",
        "read_artifacts",
        "write_artifacts",
        "read_organizations",
        "read_pipelines",
        "write_pipelines",
        "read_pipeline_templates",
        "write_pipeline_templates",
        "read_rules",
        "write_rules",
        "read_clusters",
        "write_clusters",
        "read_notification_services",
        "write_notification_services",
        "read_suites",
        "write_suites",
        "read_test_plan",
        "write_test_plan",
        "read_registries",
        "write_registries",
        "delete_registries",
        "read_packages",
        "write_packages",
        "delete_packages",
        "read_user",
        "graphql",
    }
)
FAULT_KINDS = ("error", "drop", "lost")
FAULT_BODIES = ("html", "json", "empty")
# Job ids travel in URL paths: keep them to characters that need no escaping.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]+")
# Shell-style names: what python-dotenv and every shell read back unchanged.
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_METHOD = re.compile(r"[A-Z]+")


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int within ``[low, high]``; TypeError or ValueError naming ``name``."""
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    assert isinstance(value, int)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"from {low} to {high}"
            if low is not None and high is not None
            else f">= {low}"
            if low is not None
            else f"<= {high}"
        )
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return value


def check_number(name: str, value: object, *, positive: bool) -> float:
    """A finite real number, > 0 (``positive``) or >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        which = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {which} number of seconds, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """One of ``choices`` (a near miss is suggested)."""
    options = tuple(choices)
    if isinstance(value, str) and value in options:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, options, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}{hint}")


def check_slug(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "/" in value:
        raise ValueError(f"{name} must be a non-empty slug without '/', got {value!r}")
    return value


def check_job_id(value: object) -> str:
    if not isinstance(value, str) or not _JOB_ID.fullmatch(value):
        raise ValueError(
            f"job id must be a non-empty string of letters, digits, '-' and '_' (it goes into"
            f" URL paths), got {value!r}"
        )
    return value


def check_job_state(value: object) -> str:
    return check_choice("job state", value, JOB_STATES)


def check_build_state(value: object) -> str:
    return check_choice("build state", value, BUILD_STATES)


def check_exit_status(value: object) -> int | None:
    if value is not None and not is_int(value):
        raise TypeError(f"exit_status must be an integer or None, got {value!r}")
    return value  # type: ignore[return-value]


def check_env(env: object) -> dict[str, str]:
    """A job environment: shell-style names to string values."""
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a dict of str to str, got {type(env).__name__}")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise ValueError(
                f"env name {key!r} is not a valid variable name: use letters, digits and '_',"
                " not starting with a digit (e.g. MY_VAR)"
            )
        if not isinstance(value, str):
            raise TypeError(
                f"env value of {key} must be a string, got {type(value).__name__}"
                " (convert it with str() first; None is not the empty string)"
            )
        out[key] = value
    return out


def check_scopes(scopes: Iterable[str] | None, all_scopes: frozenset[str]) -> frozenset[str]:
    """Known scope names (``None``: every Jobs API scope)."""
    if scopes is None:
        return all_scopes
    if isinstance(scopes, str):
        raise TypeError(f"scopes must be a list of scope names, not the string {scopes!r}")
    chosen = frozenset(scopes)
    for scope in sorted(chosen, key=repr):
        if not isinstance(scope, str) or scope not in KNOWN_SCOPES:
            close = (
                difflib.get_close_matches(scope, sorted(KNOWN_SCOPES), n=1)
                if isinstance(scope, str)
                else []
            )
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown scope {scope!r}: {hint}the Jobs API uses {', '.join(sorted(all_scopes))}"
            )
    return chosen


def check_token(token: object) -> str:
    if not isinstance(token, str) or not token or token != token.strip() or " " in token:
        raise ValueError("token must be a non-empty string without spaces")
    return token


def check_method(method: object) -> str | None:
    if method is None:
        return None
    if not isinstance(method, str) or not _METHOD.fullmatch(method.upper()):
        raise ValueError(f"method must be an HTTP method name such as 'PUT', got {method!r}")
    return method.upper()


def check_methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    if isinstance(methods, str):
        raise TypeError(f"methods must be a list of method names, not the string {methods!r}")
    checked = frozenset(check_method(m) or "" for m in methods)
    if not checked:
        raise ValueError("methods must name at least one HTTP method (or be None for all)")
    return checked


def check_path_pattern(path: object) -> str | None:
    if path is None:
        return None
    if not isinstance(path, str):
        raise TypeError(f"path must be a regular expression string, got {path!r}")
    try:
        re.compile(path)
    except re.error as exc:
        raise ValueError(f"path {path!r} is not a valid regular expression: {exc}") from None
    return path


def check_fault_status(status: object) -> int:
    return check_int("fault status", status, 500, 599)


def check_rate(rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise TypeError(f"rate must be a probability from 0 to 1, got {rate!r}")
    if not 0 <= rate <= 1:  # also refuses NaN
        raise ValueError(f"rate must be a probability from 0 to 1, got {rate!r}")
    return float(rate)


def check_port(host: object, port: object) -> tuple[str, int]:
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be a non-empty string such as '127.0.0.1', got {host!r}")
    return host, check_int("port", port, 0, 65535)


def near_config_key(key: str, config_keys: Iterable[str]) -> str | None:
    """A configuration keyword that ``key`` looks like a typo of, if any."""
    close = difflib.get_close_matches(key, sorted(config_keys), n=1, cutoff=0.8)
    return close[0] if close and close[0] != key else None
