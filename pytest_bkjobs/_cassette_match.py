"""Matching a live request against recorded ones, and explaining why nothing matched."""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ._cassette import body_bytes

__all__ = [
    "DEFAULT_MATCH_ON",
    "KEY_MATCHERS",
    "MATCHERS",
    "ParsedRequest",
    "check_match_on",
    "differences",
    "index_key",
    "matches",
    "parse_request",
]

MATCHERS = ("method", "scheme", "host", "port", "path", "query", "accept", "range", "body")
#: The log and env endpoints answer JSON, text or a byte range of one URL: Accept and Range count.
DEFAULT_MATCH_ON: tuple[str, ...] = ("method", "path", "query", "accept", "range", "body")
_BODY_METHODS = frozenset({"PUT", "POST", "PATCH"})
#: Matchers that compare one value for equality: they make up the replay index's key.
KEY_MATCHERS = ("method", "scheme", "host", "port", "path")


def check_match_on(value: object) -> tuple[str, ...]:
    """Validate a ``match_on`` option: a list of names from ``MATCHERS``."""
    if value is None:
        return DEFAULT_MATCH_ON
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"match_on must be a list of names from {list(MATCHERS)}, got {value!r}")
    names = tuple(value)
    unknown = [n for n in names if n not in MATCHERS]
    if unknown or not names:
        raise ValueError(
            f"match_on has unknown or no names {unknown or names!r}; choose from {list(MATCHERS)}"
        )
    return names


def query_pairs(uri: str) -> Counter[tuple[str, str]]:
    """Query as a multiset of (key, value): order ignored, repeats and blank values kept."""
    return Counter(parse_qsl(urlsplit(uri).query, keep_blank_values=True))


def _values(pairs: Counter[tuple[str, str]], key: str) -> list[str]:
    return sorted(v for (k, v), n in pairs.items() if k == key for _ in range(n))


def _query_differences(recorded: str, actual: str) -> list[str]:
    rec, act = query_pairs(recorded), query_pairs(actual)
    if rec == act:
        return []
    out: list[str] = []
    for key in sorted({k for k, _ in rec} | {k for k, _ in act}):
        rv, av = _values(rec, key), _values(act, key)
        if rv == av:
            continue
        if not rv:
            out.append(f"query key {key!r}: not recorded, the request has {av}")
        elif not av:
            out.append(f"query key {key!r}: recorded {rv}, missing from the request")
        else:
            out.append(f"query key {key!r}: recorded {rv}, the request has {av}")
    return out


def _body_value(body: dict[str, Any] | None) -> Any:
    """JSON bodies compare as values (a text ``{}`` equals a JSON ``{}``), others as bytes.

    No body, ``{}`` and ``null`` all mean "no parameters" to the API, so they compare equal.
    """
    if body and "json" in body:
        value = body["json"]
    else:
        raw = body_bytes(body)
        try:
            value = json.loads(raw) if raw.strip() else None
        except ValueError:
            return raw
    return None if value in ({}, None) else value


def _body_differences(recorded: dict[str, Any] | None, actual: dict[str, Any] | None) -> list[str]:
    rv, av = _body_value(recorded), _body_value(actual)
    if rv == av:
        return []

    def lines(value: Any) -> list[str]:
        if value is None:
            return ["(no body)"]
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace").splitlines() or [""]
        return json.dumps(value, indent=2, sort_keys=True).splitlines()

    diff = difflib.unified_diff(lines(rv), lines(av), "recorded", "request", n=1, lineterm="")
    shown = list(diff)[2:14]
    return ["body differs:", *(f"    {line}" for line in shown)]


def _header(message: dict[str, Any], name: str) -> str | None:
    values = message.get("headers", {}).get(name)
    return ", ".join(values) if values else None


def _media_types(accept: str | None) -> frozenset[str]:
    if not accept:
        return frozenset()
    types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return frozenset(types - {"", "*/*"})


def _header_differences(recorded: dict[str, Any], actual: dict[str, Any], name: str) -> list[str]:
    rv, av = _header(recorded, name), _header(actual, name)
    if name == "accept":
        # A recording without an Accept header (or with */*) accepts any: VCR files often lack it.
        rt, at = _media_types(rv), _media_types(av)
        if not rt or not at or rt == at:
            return []
    elif (rv or "").strip() == (av or "").strip():
        return []
    return [f"{name} header: recorded {rv!r}, the request has {av!r}"]


def differences(
    recorded: dict[str, Any], actual: dict[str, Any], match_on: Sequence[str]
) -> list[str]:
    """What differs between a recorded request and a live one (empty: they match)."""
    out: list[str] = []
    rm, am = str(recorded["method"]).upper(), str(actual["method"]).upper()
    if "method" in match_on and rm != am:
        out.append(f"method: recorded {rm}, the request is {am}")
    ru, au = urlsplit(str(recorded["uri"])), urlsplit(str(actual["uri"]))
    for part in ("scheme", "host", "port"):
        attr = "hostname" if part == "host" else part
        rv, av = getattr(ru, attr), getattr(au, attr)
        if part in match_on and rv != av:
            out.append(f"{part}: recorded {rv!r}, the request has {av!r}")
    if "path" in match_on and ru.path != au.path:
        out.append(f"path: recorded {ru.path}, the request has {au.path}")
    if "query" in match_on:
        out.extend(_query_differences(str(recorded["uri"]), str(actual["uri"])))
    for name in ("accept", "range"):
        if name in match_on:
            out.extend(_header_differences(recorded, actual, name))
    if "body" in match_on and am in _BODY_METHODS:
        out.extend(_body_differences(recorded.get("body"), actual.get("body")))
    return out


@dataclass(frozen=True)
class ParsedRequest:
    """A request message parsed once for matching: what ``differences`` compares, ready."""

    method: str
    scheme: str
    host: str | None
    port: int | None
    path: str
    query: Counter[tuple[str, str]]
    accept: frozenset[str]
    range: str
    body: Any


def parse_request(message: dict[str, Any]) -> ParsedRequest:
    """Parse a request message (recorded or live) once, for any number of ``matches`` calls."""
    uri = str(message["uri"])
    parts = urlsplit(uri)
    return ParsedRequest(
        method=str(message["method"]).upper(),
        scheme=parts.scheme,
        host=parts.hostname,
        port=parts.port,
        path=parts.path,
        query=Counter(parse_qsl(parts.query, keep_blank_values=True)),
        accept=_media_types(_header(message, "accept")),
        range=(_header(message, "range") or "").strip(),
        body=_body_value(message.get("body")),
    )


def index_key(request: ParsedRequest, match_on: Sequence[str]) -> tuple[object, ...]:
    """The values of the equality matchers in ``match_on``: equal keys are needed to match."""
    return tuple(getattr(request, name) for name in KEY_MATCHERS if name in match_on)


def matches(recorded: ParsedRequest, actual: ParsedRequest, match_on: Sequence[str]) -> bool:
    """True when ``differences`` would find nothing; stops at the first difference."""
    for name in KEY_MATCHERS:
        if name in match_on and getattr(recorded, name) != getattr(actual, name):
            return False
    if "query" in match_on and recorded.query != actual.query:
        return False
    # A recording without an Accept header (or with */*) accepts any, as in ``differences``.
    accept = recorded.accept and actual.accept
    if "accept" in match_on and accept and actual.accept != recorded.accept:
        return False
    if "range" in match_on and recorded.range != actual.range:
        return False
    return not (
        "body" in match_on and actual.method in _BODY_METHODS and recorded.body != actual.body
    )
