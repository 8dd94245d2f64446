"""The benchmarks still run: one group at a trivial size (the figures are not checked)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def run_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    import run

    yield run
    for name in ("run", "bench_util", "bench_replay", "bench_plugin", "bench_loopback"):
        sys.modules.pop(name, None)


def test_retry_benchmark_runs_at_a_trivial_size(
    run_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    assert run_module.main(["--smoke", "--only", "B6", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["id"] == "B6"
    assert row["details"]["exactly_once"] is True  # 5 failed jobs, 5 retries executed
    assert row["ratio"] > 0
    printed = capsys.readouterr().out
    assert printed.startswith("| id | what |")
    assert "| B6 |" in printed


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        ([], "results.json"),
        (["--quick"], "results-quick.json"),
        (["--smoke"], "results-quick.json"),
        (["--only", "B5"], "results-partial.json"),
        (["--quick", "--only", "B5"], "results-quick.json"),
    ],
)
def test_only_a_complete_full_run_overwrites_the_committed_results(
    run_module: ModuleType, argv: list[str], name: str
) -> None:
    only = argv[argv.index("--only") + 1] if "--only" in argv else ""
    fields = {"output": None, "quick": "--quick" in argv, "smoke": "--smoke" in argv}
    args = type("Args", (), {**fields, "only": only})
    assert run_module.output_path(args) == BENCH / name
    explicit = type("Args", (), {"output": "x.json", "quick": True, "smoke": False, "only": ""})
    assert run_module.output_path(explicit) == Path("x.json")


def test_loopback_benchmarks_run_against_a_fake_in_a_child_process(
    run_module: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    assert run_module.main(["--smoke", "--only", "B5,B7", "--output", str(out)]) == 0
    rows = {row["id"]: row for row in json.loads(out.read_text())["rows"]}
    b5 = rows["B5"]
    assert len(b5["details"]["ours_s"]) == len(b5["details"]["httpx_s"]) == b5["repeats"]
    assert b5["details"]["tracemalloc_peak_mib"] > 0
    b7 = rows["B7"]
    if b7["met"] is not None:  # None: curl is not installed here
        assert b7["details"]["rss_growth_mib"][0] < 64
        assert b7["ratio"] > 0
