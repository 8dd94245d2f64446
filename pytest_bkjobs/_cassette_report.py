"""Reporting for the plugin: short tracebacks for cassette errors, the terminal summary.

Standard library and pytest only at import time, like the plugin itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pytest

__all__ = ["Counts", "Reporter", "shorten_traceback"]


class Counts(Protocol):
    """Where the run's cassette outcomes are counted (the plugin's settings)."""

    summary: dict[str, int]
    unused: int


def shorten_traceback(
    item: pytest.Item,
    excinfo: pytest.ExceptionInfo[BaseException],
    report: pytest.TestReport,
    *,
    also_settings: bool = False,
) -> None:
    """Show a cassette (or missing-settings) error from the user's frames, not httpx's inside."""
    from ._cassette import CassetteError

    config = item.config
    style = config.getoption("tbstyle", "auto")
    ours = isinstance(excinfo.value, CassetteError) or also_settings
    if not ours or config.getoption("fulltrace", False):
        return
    if style not in ("auto", "long", "short"):
        return
    import httpcore
    import httpx
    import respx

    inside = tuple(str(Path(m.__file__ or "").parent) for m in (httpx, httpcore, respx))
    inside += (str(Path(__file__).parent),)  # this package, the client included

    def tbfilter(info: pytest.ExceptionInfo[BaseException]) -> Any:
        frames = info.traceback.cut(path=item.path)  # from the test's own file on
        return frames.filter(lambda e: not str(e.path).startswith(inside)).filter(info)

    try:
        longrepr = excinfo.getrepr(
            funcargs=True,
            showlocals=bool(config.getoption("showlocals", False)),
            style="short" if style == "short" else "long",
            tbfilter=tbfilter,
        )
    except Exception:  # an older pytest without callable filters: keep its own report
        return
    report.longrepr = longrepr


class Reporter:
    """Counts cassette outcomes from reports (xdist workers' reports included)."""

    def __init__(self, settings: Counts) -> None:
        self.settings = settings

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        summary = getattr(report, "bkjobs_cassette", None)
        if not isinstance(summary, dict):
            return
        counts = self.settings.summary
        outcome = str(summary.get("outcome", "failed"))
        counts[outcome] = counts.get(outcome, 0) + 1
        self.settings.unused += int(summary.get("unused", 0))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        _terminal_summary(terminalreporter, self.settings)


def _terminal_summary(terminalreporter: Any, settings: Counts) -> None:
    counts = settings.summary
    if not counts:
        return
    order = ("replayed", "recorded", "not written", "failed")
    labels = {
        "replayed": "replayed",
        "recorded": "recorded",
        "not written": "not written (the test did not pass)",
        "failed": "with errors",
    }
    parts = [f"{counts[k]} {labels[k]}" for k in order if counts.get(k)]
    terminalreporter.write_sep("-", "bkjobs cassettes")
    terminalreporter.write_line(
        f"bkjobs: cassettes {', '.join(parts)}; {settings.unused} interaction(s) unused"
    )
