"""The cassette file format: errors, body encodings, loading and deterministic writing.

A cassette is a JSON object::

    {"version": 1, "base_url": "...", "org": "...", "interactions": [
        {"request": {"method", "uri", "headers", "body"},
         "response": {"status", "reason", "http_version", "headers", "body"}}]}

Headers map a lower-case name to a list of values. A body is tagged: ``{"json": value}``,
``{"text": "..."}`` or ``{"base64": "..."}``. This module imports no HTTP library, so the
plugin can use its errors without loading httpx.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._errors import BuildkiteError

__all__ = [
    "CASSETTE_VERSION",
    "MODES",
    "CassetteError",
    "CassetteExhaustedError",
    "CassetteFormatError",
    "CassetteMissError",
    "CassetteNotFoundError",
    "DropInteraction",
    "body_bytes",
    "dump_cassette",
    "encode_body",
    "load_cassette",
    "save_cassette",
]

CASSETTE_VERSION = 1
#: Record modes: replay only; record a missing cassette; add unmatched requests; record all.
MODES = ("none", "once", "new_episodes", "all")

Interaction = dict[str, Any]
Headers = dict[str, list[str]]


class CassetteError(BuildkiteError):
    """A cassette could not be used: missing, unreadable, or without an answer for a request."""


class CassetteNotFoundError(CassetteError):
    """Replay mode, and the test's cassette file does not exist."""


class CassetteFormatError(CassetteError):
    """The cassette file is not valid JSON or not a cassette of a version we read."""


class CassetteMissError(CassetteError):
    """No recorded interaction matches the request."""


class CassetteExhaustedError(CassetteError):
    """Recorded interactions match the request, but each has already been played."""


class DropInteraction(Exception):
    """Raise from ``pytest_bkjobs_scrub_interaction`` to leave an interaction out of the file."""


for _public in (
    CassetteError,
    CassetteNotFoundError,
    CassetteFormatError,
    CassetteMissError,
    CassetteExhaustedError,
    DropInteraction,
):
    _public.__module__ = "pytest_bkjobs"  # tracebacks show the name users import


# -- bodies -------------------------------------------------------------------------------------


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def encode_body(content: bytes, content_type: str | None) -> dict[str, Any] | None:
    """Tag a body: JSON as JSON, UTF-8 text as text, anything else as base64; empty is None."""
    if not content:
        return None
    if content and content_type and _is_json_type(content_type):
        try:
            return {"json": json.loads(content.decode("utf-8"))}
        except (UnicodeDecodeError, ValueError):
            pass
    try:
        return {"text": content.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(content).decode("ascii")}


def body_bytes(body: Mapping[str, Any] | None) -> bytes:
    """The bytes a tagged body stands for (JSON is written compactly)."""
    if not body:
        return b""
    if "json" in body:
        return json.dumps(body["json"], ensure_ascii=False, separators=(",", ":")).encode()
    if "text" in body:
        return str(body["text"]).encode("utf-8")
    if "base64" in body:
        return base64.b64decode(str(body["base64"]))
    return b""


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply ``fn`` to every string inside a JSON value (keys included)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [map_strings(item, fn) for item in value]
    if isinstance(value, dict):
        return {fn(k): map_strings(v, fn) for k, v in value.items()}
    return value


# -- headers ------------------------------------------------------------------------------------


def headers_dict(pairs: Iterable[tuple[str, str]]) -> Headers:
    """Lower-case names to lists of values, in arrival order."""
    out: Headers = {}
    for name, value in pairs:
        out.setdefault(name.lower(), []).append(value)
    return out


def header(headers: Mapping[str, list[str]], name: str) -> str | None:
    """The first value of a header, or None."""
    values = headers.get(name.lower())
    return values[0] if values else None


# -- files --------------------------------------------------------------------------------------


def _check_message(message: object, where: str) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise ValueError(f"{where} is not an object")
    headers = message.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in headers.values()
    ):
        raise ValueError(f"{where}.headers must map names to lists of strings")
    for name, values in headers.items():
        for value in values:
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(
                    f"{where}.headers[{name!r}] value {value!r} is not latin-1 text (HTTP"
                    " header values must be); percent-encode it or remove it"
                ) from None
    body = message.get("body")
    if body is not None and (
        not isinstance(body, dict) or not ({"json", "text", "base64"} & body.keys())
    ):
        raise ValueError(f"{where}.body must be null or one of {{json|text|base64: ...}}")
    if body is not None and "base64" in body:
        try:
            base64.b64decode(str(body["base64"]), validate=True)
        except ValueError:  # binascii.Error is a ValueError
            raise ValueError(
                f"{where}.body.base64 is not valid base64 (standard alphabet, padded)"
            ) from None
    return message


def _check_uri(uri: str, where: str) -> None:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"{where}.uri {uri!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{where}.uri {uri!r} is not an absolute http(s) URL such as"
            " https://api.buildkite.com/v2/..."
        )


def validate_cassette(data: object) -> dict[str, Any]:
    """Check the structure; raise ``ValueError`` saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("the top level is not a JSON object")
    version = data.get("version")
    if version != CASSETTE_VERSION:
        raise ValueError(
            f"unknown cassette version {version!r} (this pytest-bkjobs reads version"
            f" {CASSETTE_VERSION})"
        )
    interactions = data.get("interactions")
    if not isinstance(interactions, list):
        raise ValueError("'interactions' is missing or not a list")
    for i, item in enumerate(interactions):
        if not isinstance(item, dict):
            raise ValueError(f"interactions[{i}] is not an object")
        request = _check_message(item.get("request"), f"interactions[{i}].request")
        response = _check_message(item.get("response"), f"interactions[{i}].response")
        if not isinstance(request.get("method"), str) or not isinstance(request.get("uri"), str):
            raise ValueError(f"interactions[{i}].request needs a string method and uri")
        status = response.get("status")
        if isinstance(status, bool) or not isinstance(status, int):
            raise ValueError(f"interactions[{i}].response.status must be an integer")
        if not 100 <= status <= 599:
            raise ValueError(
                f"interactions[{i}].response.status {status} is not an HTTP status (100-599)"
            )
        _check_uri(request["uri"], f"interactions[{i}].request")
    return data


def load_cassette(path: str | os.PathLike[str], display: str | None = None) -> dict[str, Any]:
    """Read and validate a cassette; ``CassetteFormatError`` names the file and the problem."""
    file = Path(path)
    shown = display or str(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise CassetteNotFoundError(f"cassette {shown} does not exist") from None
    except OSError as exc:
        raise CassetteFormatError(f"cassette {shown} cannot be read: {exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CassetteFormatError(f"cassette {shown} is not valid JSON: {exc}") from None
    try:
        return validate_cassette(data)
    except ValueError as exc:
        raise CassetteFormatError(f"cassette {shown} is not usable: {exc}") from None


def dump_cassette(data: Mapping[str, Any]) -> bytes:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline."""
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def save_cassette(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write atomically, creating the folder; a failure leaves the old file in place."""
    from ._files import write_atomic

    file = Path(path)
    validate_cassette(dict(data))
    file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(file, dump_cassette(data))
    return file
