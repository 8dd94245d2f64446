"""Run the pytest-bkjobs benchmarks (B1-B7 of issue 7) and print a Markdown table.

Usage: ``python benchmarks/run.py [--quick | --smoke] [--only B1,B5] [--output FILE]
[--replay-repeats N]``. Every figure but the plugin's import time is a ratio against a
baseline measured in the same run; each side runs ``repeats`` times, interleaved, and the
median is reported. Results also go to ``--output`` or ``benchmarks/results.json``
(``results-quick.json`` for ``--quick``/``--smoke``, ``results-partial.json`` for ``--only``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import ROOT, Row


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is, and how many times each side runs."""

    replay_calls: int
    replay_sizes: tuple[int, ...]
    replay_repeats: int
    collect_tests: int
    collect_repeats: int
    list_jobs: int
    list_repeats: int
    retry_failed: int
    retry_latency: float
    retry_repeats: int
    log_mib: int
    log_repeats: int
    count_instructions: bool = False  # B4 under valgrind: about a minute more


FULL = Sizes(2000, (10, 100, 1000), 3, 200, 15, 4000, 9, 200, 0.020, 3, 256, 9, True)
QUICK = Sizes(200, (10, 100), 2, 200, 3, 1000, 2, 50, 0.020, 1, 32, 1)
TINY = Sizes(20, (5, 10), 1, 20, 1, 100, 1, 5, 0.001, 1, 1, 1)


def benchmarks(s: Sizes) -> dict[str, Callable[[], list[Row]]]:
    """Benchmark groups by the ids they produce (B1-B3 come from one run)."""
    import bench_loopback
    import bench_plugin
    import bench_replay

    return {
        "B1,B2,B3": lambda: bench_replay.rows(
            s.replay_calls, list(s.replay_sizes), s.replay_repeats
        ),
        "B4": lambda: bench_plugin.rows(s.collect_tests, s.collect_repeats, s.count_instructions),
        "B5": lambda: bench_loopback.rows_b5(s.list_jobs, s.list_repeats),
        "B6": lambda: bench_loopback.rows_b6(s.retry_failed, s.retry_latency, s.retry_repeats),
        "B7": lambda: bench_loopback.rows_b7(s.log_mib, s.log_repeats),
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(rows: list[Row]) -> str:
    """The Markdown table."""
    lines = [
        "| id | what | ours | baseline (same run) | ratio | target | met | runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        cells = [r.id, r.what, r.ours, r.baseline, r.ratio_text, r.target, met, str(r.repeats)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def output_path(args: argparse.Namespace) -> Path:
    """Where results go: only a complete full run replaces the committed full results."""
    if args.output is not None:
        return Path(args.output)
    if args.quick or args.smoke:
        return ROOT / "benchmarks" / "results-quick.json"
    if args.only.strip():
        return ROOT / "benchmarks" / "results-partial.json"
    return ROOT / "benchmarks" / "results.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument(
        "--smoke", action="store_true", help="trivial sizes, one run (checks the code runs)"
    )
    parser.add_argument(
        "--replay-repeats",
        type=int,
        default=None,
        help="runs of B1-B3 (default 3, quick 2)",
    )
    parser.add_argument("--only", default="", help="comma-separated ids, e.g. B1,B6")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON file (default benchmarks/results.json; results-quick.json for"
        " --quick/--smoke, results-partial.json for --only)",
    )
    args = parser.parse_args(argv)
    sizes = TINY if args.smoke else QUICK if args.quick else FULL
    if args.replay_repeats is not None:
        sizes = dataclasses.replace(sizes, replay_repeats=max(1, args.replay_repeats))
    wanted = {part.strip().upper() for part in args.only.split(",") if part.strip()}
    rows: list[Row] = []
    started = time.perf_counter()
    for ids, bench in benchmarks(sizes).items():
        if wanted and not wanted & set(ids.split(",")):
            continue
        print(f"running {ids} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        produced = bench()
        rows.extend(r for r in produced if not wanted or r.id in wanted)
        for r in produced:
            if r.met is None and r.ratio is None and r.ratio_text.startswith("skipped"):
                print(f"{r.id} {r.ratio_text}", file=sys.stderr)
        print(f"  {ids} took {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    text = table(rows)
    print(text)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    print(f"\n{mode} run, {time.perf_counter() - started:.0f} s; medians of the runs shown.")
    payload = {
        "mode": mode,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sizes": dataclasses.asdict(sizes),
        "seconds": time.perf_counter() - started,
        "rows": [r.to_dict() for r in rows],
        "table": text,
    }
    output_path(args).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
