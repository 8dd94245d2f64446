"""Shared helpers: medians, result rows, subprocess runs and temporary folders."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Row:
    """One line of the table: our figure, the baseline's, and how the ratio compares."""

    id: str
    what: str
    ours: str
    baseline: str
    ratio: float | None
    ratio_text: str
    target: str
    met: bool | None
    repeats: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def skipped(bench_id: str, what: str, target: str, reason: str) -> Row:
    """A row for a benchmark that could not run here."""
    return Row(bench_id, what, "-", "-", None, f"skipped: {reason}", target, None, 0)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt_s(seconds: float) -> str:
    """Seconds in a readable unit."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def bench_env() -> dict[str, str]:
    """The environment for child processes: no proxies, no user pytest options, no .env."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["NO_PROXY"] = "127.0.0.1"
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "BUILDKITE_API_TOKEN", "BUILDKITE_API_URL"):
        env.pop(name, None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> str:
    """Run a child process; its stdout, or an error with its output when it fails."""
    done = subprocess.run(
        list(args),
        cwd=cwd,
        env=bench_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])} ... exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def last_json(text: str) -> Any:
    """The JSON object on the last non-empty line of a child's output."""
    lines = [line for line in text.splitlines() if line.strip()]
    return json.loads(lines[-1])
