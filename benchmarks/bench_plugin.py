"""B4: what having the plugin installed costs a project that does not use it."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench_util import PYTHON, Row, bench_env, fmt_s, median, run

_TEST = "\n\ndef test_{i}():\n    assert {i} + 1 == {j}\n"


def write_project(folder: Path, tests: int) -> None:
    """``tests`` plain tests in 10 modules (no fixture or marker of ours)."""
    per_module = max(1, tests // 10)
    for module in range(0, tests, per_module):
        body = "".join(
            _TEST.format(i=i, j=i + 1) for i in range(module, min(module + per_module, tests))
        )
        (folder / f"test_mod{module // per_module}.py").write_text(body.lstrip())
    (folder / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")


def cached_bytecode_env(prefix: Path) -> dict[str, str]:
    """``bench_env()`` with bytecode cached under ``prefix``, as a normal install has it.

    ``bench_env()`` turns bytecode writing off; an editable install then compiles our modules
    from source on every import, which a user with an installed wheel never pays. The prefix
    keeps the cache out of the source tree, and both sides of B4 read from it.
    """
    env = bench_env()
    env.pop("PYTHONDONTWRITEBYTECODE")
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    return env


def pytest_args(disable: bool, *, run_tests: bool) -> list[str]:
    """The pytest command of one side: collect only or run, with the plugin or without."""
    # pytest-recording is only installed for B2; a normal install does not load it.
    args = [PYTHON, "-m", "pytest", "-q", "-p", "no:recording"]
    args += [] if run_tests else ["--collect-only"]
    return args + (["-p", "no:bkjobs"] if disable else [])


def collect_time(
    folder: Path, disable: bool, env: dict[str, str], *, run_tests: bool = False
) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one ``pytest --collect-only``.

    CPU time is what the plugin adds; wall time also counts whatever else runs on the machine.
    With ``run_tests`` the tests run too: what the plugin's hooks cost each test.
    """
    args = pytest_args(disable, run_tests=run_tests)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = run(args, cwd=folder, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if "tests collected" not in out and "test_" not in out and " passed" not in out:
        raise RuntimeError(f"collection went wrong:\n{out[-1000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def plugin_import_ms(env: dict[str, str]) -> tuple[float, list[tuple[str, float]]]:
    """Milliseconds to import the plugin once pytest is loaded, and the top modules it pulls."""
    # -X importtime writes to stderr.
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import pytest; import pytest_bkjobs.plugin"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    lines = [m.groups() for m in map(_LINE.match, done.stderr.splitlines()) if m]
    # Top-level entries after pytest's own are what ``import pytest_bkjobs.plugin`` added.
    after = 0
    for index, (_, _, indent, name) in enumerate(lines):
        if not indent.strip(" ") and len(indent) <= 1 and name == "pytest":
            after = index + 1
    total_us = 0
    own: list[tuple[str, float]] = []
    for _self_us, cumulative, indent, name in lines[after:]:
        if len(indent) <= 1:
            total_us += int(cumulative)
            own.append((name, int(cumulative) / 1000))
    return total_us / 1000, sorted(own, key=lambda item: -item[1])[:5]


_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(folder: Path, disable: bool, env: dict[str, str], *, run_tests: bool) -> int:
    """Instructions one pytest run executes, counted by valgrind: the same in every run."""
    args = pytest_args(disable, run_tests=run_tests)
    tool = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    done = subprocess.run(
        [*tool, *args],
        cwd=folder,
        env={**env, "PYTHONHASHSEED": "0"},  # same hashes, same set orders, same work
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    match = _REFS.search(done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def instruction_ratios(folder: Path, env: dict[str, str]) -> dict[str, float] | None:
    """With/without instruction ratios of collecting and of running, if valgrind is here."""
    if shutil.which("valgrind") is None:
        return None
    counts = {
        (run_tests, disable): instructions(folder, disable, env, run_tests=run_tests)
        for run_tests in (False, True)
        for disable in (False, True)
    }
    return {
        "collect": counts[False, False] / counts[False, True],
        "run": counts[True, False] / counts[True, True],
        **{
            f"{'run' if r else 'collect'}_{'off' if d else 'on'}": n for (r, d), n in counts.items()
        },
    }


def millions(counted: dict[str, float] | None, key: str) -> str:
    """ ", N M instructions" when they were counted, else nothing."""
    return "" if counted is None else f", {counted[key] / 1e6:,.0f} M instructions"


def paired_ratio(
    with_plugin: list[tuple[float, float]], without: list[tuple[float, float]], *, cpu: bool
) -> float:
    """The median over runs of with/without, of CPU or wall seconds."""
    which = 1 if cpu else 0
    return median([a[which] / b[which] for a, b in zip(with_plugin, without, strict=True)])


def rows(tests: int, repeats: int, count_instructions: bool = False) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bkjobs-bench-collect-") as tmp:
        folder = Path(tmp) / "project"
        folder.mkdir()
        write_project(folder, tests)
        env = cached_bytecode_env(Path(tmp) / "pycache")
        collect_time(folder, False, env)  # fill the file and bytecode caches, unmeasured
        on: list[tuple[float, float]] = []
        off: list[tuple[float, float]] = []
        ran_on: list[tuple[float, float]] = []
        ran_off: list[tuple[float, float]] = []
        for index in range(repeats):
            # Which side goes first alternates, so whatever the previous run leaves behind
            # (caches, CPU frequency) favours neither.
            for disable in (False, True) if index % 2 == 0 else (True, False):
                (off if disable else on).append(collect_time(folder, disable, env))
                (ran_off if disable else ran_on).append(
                    collect_time(folder, disable, env, run_tests=True)
                )
        plugin_import_ms(env)  # pytest caches its own (rewritten) copies: fill the plain cache
        imports = [plugin_import_ms(env) for _ in range(repeats)]
        # For context: the same import compiling from source every time (an empty prefix
        # hides any __pycache__ beside the source; bench_env() writes no bytecode).
        uncached = bench_env()
        uncached["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "empty")
        uncached_ms = median([plugin_import_ms(uncached)[0] for _ in range(repeats)])
        counted = instruction_ratios(folder, env) if count_instructions else None
    import_ms = median([ms for ms, _ in imports])
    with_plugin, without = median([cpu for _, cpu in on]), median([cpu for _, cpu in off])
    # The median of each pair's ratio: the machine's speed drifts over a run (the same
    # command's CPU time moved by a third here), and the two runs of a pair are adjacent.
    ratio = paired_ratio(on, off, cpu=True)
    wall = paired_ratio(on, off, cpu=False)
    ran = paired_ratio(ran_on, ran_off, cpu=True)
    timed = f"CPU time {ratio:.3f}x (wall {wall:.3f}x), running the tests too: {ran:.3f}x"
    if counted is None:
        figure, text = ratio, timed
    else:
        # CPU times of identical runs differ by up to a fifth on a shared machine; the count
        # of instructions does not change from run to run, so it decides.
        figure = counted["collect"]
        text = (
            f"{figure:.3f}x instructions (valgrind), running the tests too:"
            f" {counted['run']:.3f}x; {timed}"
        )
    return [
        Row(
            "B4",
            f"`pytest --collect-only` of a {tests}-test project that does not use the plugin",
            f"{fmt_s(with_plugin)} CPU{millions(counted, 'collect_on')}",
            f"{fmt_s(without)} CPU{millions(counted, 'collect_off')} (`-p no:bkjobs`)",
            figure,
            text,
            "<= 1.05x",
            figure <= 1.05,
            repeats,
            {
                "cpu_ratio": ratio,
                "instructions": counted,
                "with_wall_cpu_s": on,
                "without_wall_cpu_s": off,
                "wall_ratio": wall,
                "run_with_wall_cpu_s": ran_on,
                "run_without_wall_cpu_s": ran_off,
                "run_ratio": ran,
            },
        ),
        Row(
            "B4",
            "`python -X importtime`: `import pytest_bkjobs.plugin` after pytest, bytecode cached",
            f"{import_ms:.1f} ms",
            "-",
            None,
            f"- (compiling our modules from source, no bytecode cache: {uncached_ms:.1f} ms)",
            "< 20 ms",
            import_ms < 20,
            repeats,
            {
                "import_ms": [ms for ms, _ in imports],
                "uncached_import_ms": uncached_ms,
                "top_modules_ms": imports[-1][1],
            },
        ),
    ]
