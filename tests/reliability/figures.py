"""Run the reliability checks and print their figures as the Markdown table of RELIABILITY.md.

    .venv/bin/python -m tests.reliability.figures [-n 2]

Each check writes what it injected and what came out to ``BKJOBS_FIGURES_DIR``; this script
runs them with that set, then prints one row per check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ORDER = ("iter_jobs", "retry", "download", "async", "record", "parallel")


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "BKJOBS_FIGURES_DIR": folder}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "slow", "tests/reliability", *argv],
            env=env,
            check=False,
        )
        rows = [json.loads(p.read_text("utf-8")) for p in sorted(Path(folder).glob("*.json"))]
    rows.sort(key=lambda r: (ORDER.index(r["name"].split("-")[0]), r["name"]))
    print("| check | fault injected | times injected | requests | result |")
    print("| --- | --- | ---: | ---: | --- |")
    for row in rows:
        print(
            f"| {row['check']} | {row['fault']} | {row['injected']} |"
            f" {row.get('requests', '')} | {row['result']} |"
        )
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
