"""The fake's wire-neutral request and answer, and its traffic rules: tokens, windows, faults."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

_JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class FakeRequest:
    """A request as a front door received it."""

    method: str
    origin: str  # scheme://host[:port], used to build absolute links back to this front door
    target: str  # path and query, as sent
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class Reply:
    """What to answer: a status and headers with a body or a stream, or a dropped connection."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: Iterable[bytes] | None = None
    length: int | None = None  # of the stream, when known
    drop: bool = False  # close the connection without answering
    executed: bool = True  # False when the request was not acted on (fault before execution)


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake received; the token never appears in ``headers``."""

    method: str
    url: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: bytes
    status: int | None  # None when the connection was dropped
    # "answered", "dropped" (not executed), "lost" (executed, answer dropped) or "error"
    # (an exception while answering: a 500, the exception is in FakeBuildkite.errors)
    outcome: str

    def json(self) -> Any:
        """The body decoded as JSON (``None`` when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass
class Fault:
    """A scripted fault: ``kind`` is "error" (a 5xx), "drop" (no answer, not executed) or
    "lost" (executed, then the connection drops)."""

    kind: str
    status: int = 502
    times: int | None = 1  # None: forever
    method: str | None = None
    path: str | None = None  # a regular expression searched in the request path
    body: str | None = None  # "html", "json" or "empty"; default html for 502-504, else json
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass
class RandomFaults:
    """Seeded random faults: each request fails with probability ``rate``."""

    rate: float
    rng: random.Random
    kinds: tuple[str, ...] = ("error",)
    statuses: tuple[int, ...] = (502, 503, 504)
    methods: frozenset[str] | None = None

    def pick(self, method: str) -> Fault | None:
        if self.methods is not None and method not in self.methods:
            return None
        if self.rng.random() >= self.rate:
            return None
        return Fault(self.rng.choice(self.kinds), status=self.rng.choice(self.statuses))


@dataclass
class TokenInfo:
    """An API token's scopes and owner."""

    scopes: frozenset[str]
    user_id: str


class Window:
    """A fixed rate-limit window: a start time and a request count."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.count = 0

    def hit(self, now: float, window: float) -> None:
        if self.start is None or now >= self.start + window:
            self.start, self.count = now, 0
        self.count += 1

    def reset_in(self, now: float, window: float) -> int:
        if self.start is None or now >= self.start + window:
            return math.ceil(window)
        return max(0, math.ceil(self.start + window - now))


def json_reply(status: int, data: Any) -> Reply:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return Reply(status, [("Content-Type", _JSON)], body)


def error_page(status: int, style: str | None) -> Reply:
    """A 5xx answer as a proxy or the app would give it."""
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(
        status, "Gateway Timeout" if status == 504 else "Server Error"
    )
    style = style or ("html" if status in (502, 503, 504) else "json")
    if style == "empty":
        return Reply(status, [], b"")
    if style == "html":
        page = (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
        )
        return Reply(status, [("Content-Type", "text/html")], page.encode())
    return json_reply(status, {"message": reason})


def chunked(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Skip empty chunks (an empty chunk ends a chunked HTTP body)."""
    for chunk in chunks:
        if chunk:
            yield chunk
