"""Shared pieces of the reliability suite: a virtual clock, slow answers, fault set-ups, figures.

Every fault is injected into a ``FakeBuildkite`` served on a loopback port, so the client goes
through real sockets. Rate-limit waits and backoff cost nothing: the client's ``sleep`` moves a
virtual clock that the fake's rate-limit windows read. Only the "slow answer" fault costs real
time (a server thread sleeping past the client's timeout), so it is used sparingly.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_bkjobs.fake import FakeBuildkite

#: The client's timeout in the "slow" fault, and how late a slow answer comes.
CLIENT_TIMEOUT = 0.2
SLOW_LATENCY = 0.45
#: A client that never gives up on a transient fault (the invariant is correctness, not budget).
PATIENT = {"max_retries": 30, "max_wait": 1e9}

FAULTS = ("429-org", "429-user", "502", "503", "reset", "slow", "lost")


class VirtualClock:
    """Time that only moves when someone sleeps: shared by the fake's windows and the client."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept = 0.0

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            self.slept += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


class SlowAnswers:
    """The fake's ``sleep``: a seeded share of requests really waits ``latency`` seconds."""

    def __init__(self, rate: float = 0.0, seed: int = 0) -> None:
        self.rate = rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self.count = 0

    def __call__(self, seconds: float) -> None:
        with self._lock:
            slow = self._rng.random() < self.rate
            if not slow:
                return
            self.count += 1
            self._busy += 1
        try:
            time.sleep(seconds)
        finally:
            with self._lock:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no slow answer is pending (a slow PUT executes after the client gave up)."""
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout)


@dataclass
class Rig:
    """A fake with one fault kind switched on, its clock and its slow-answer switch."""

    fault: str
    fake: FakeBuildkite
    clock: VirtualClock
    slow: SlowAnswers

    def client_kwargs(self) -> dict[str, Any]:
        timeout = CLIENT_TIMEOUT if self.fault == "slow" else 5.0
        return {"timeout": timeout, "sleep": self.clock.sleep, **PATIENT}

    def arm(self, rate: float, seed: int, methods: Iterable[str] | None = None) -> None:
        """Switch the fault on (after seeding, so seeding is not rate limited)."""
        fake = self.fake
        if self.fault == "429-org":
            fake.set_rate_limits(org=max(2, round(1 / rate)), window=60)
        elif self.fault == "429-user":
            fake.set_rate_limits(user=max(2, round(1 / rate)), window=60)
        elif self.fault in ("502", "503"):
            fake.random_faults(
                rate, seed=seed, kinds=("error",), statuses=(int(self.fault),), methods=methods
            )
        elif self.fault == "reset":
            fake.random_faults(rate, seed=seed, kinds=("drop",), methods=methods)
        elif self.fault == "lost":
            fake.random_faults(rate, seed=seed, kinds=("lost",), methods=methods)
        elif self.fault == "slow":
            self.slow.rate = rate
            fake.latency = SLOW_LATENCY
        else:  # pragma: no cover - a typo in a parametrize list
            raise ValueError(self.fault)

    def disarm(self) -> None:
        self.fake.clear_faults()
        self.fake.set_rate_limits(None, None)
        self.slow.rate = 0.0

    def injected(self, method: str | None = None) -> int:
        """How many times the fault hit (requests of ``method`` only, if given)."""
        if self.fault == "slow":
            return self.slow.count
        return self.outcomes(method)[self.signature()]

    def signature(self) -> str:
        return {
            "429-org": "429",
            "429-user": "429",
            "502": "502",
            "503": "503",
            "reset": "dropped",
            "lost": "lost",
        }[self.fault]

    def outcomes(self, method: str | None = None) -> Counter[str]:
        """Requests by answer: a status code, "dropped" or "lost"."""
        counts: Counter[str] = Counter()
        for request in self.fake.requests:
            if method is not None and request.method != method:
                continue
            key = str(request.status) if request.outcome == "answered" else request.outcome
            counts[key] += 1
        return counts


def make_rig(fault: str, seed: int = 0) -> Rig:
    clock = VirtualClock()
    slow = SlowAnswers(seed=seed)
    fake = FakeBuildkite(clock=clock.time, sleep=slow, seed=seed)
    return Rig(fault, fake, clock, slow)


def record_figures(name: str, **figures: Any) -> None:
    """Keep this check's figures for RELIABILITY.md when ``BKJOBS_FIGURES_DIR`` is set."""
    folder = os.environ.get("BKJOBS_FIGURES_DIR")
    if not folder:
        return
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, **figures}, sort_keys=True), encoding="utf-8")


def leftovers(folder: Path, keep: Callable[[Path], bool]) -> list[str]:
    """Files in ``folder`` other than the expected ones (temporary files left behind)."""
    return sorted(p.name for p in folder.iterdir() if not keep(p))
