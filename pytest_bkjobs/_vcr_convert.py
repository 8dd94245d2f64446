"""Convert Ruby VCR (``http_interactions``) and vcrpy (``interactions``) YAML cassettes to ours.

Used by ``bkjobs cassette convert SRC [-o DEST]``. Needs PyYAML (``pip install
'pytest-bkjobs[yaml]'``). The result goes through the same redaction as a recording.
"""

from __future__ import annotations

import base64
import gzip
import http
import os
import re
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._cassette import (
    CASSETTE_VERSION,
    CassetteFormatError,
    encode_body,
    headers_dict,
    save_cassette,
    validate_cassette,
)
from ._cassette_redact import Redactor
from ._config import DEFAULT_BASE_URL
from ._errors import ConfigurationError, InvalidArgumentError

__all__ = ["convert_file", "convert_vcr_yaml"]

_ORG_RE = re.compile(r"/organizations/([^/?#]+)")


def _load_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigurationError(
            "converting a YAML cassette needs PyYAML: pip install 'pytest-bkjobs[yaml]'"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CassetteFormatError(f"not valid YAML: {exc}") from None


def _headers(raw: Any, where: str) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CassetteFormatError(f"{where}.headers is not a mapping")
    pairs: list[tuple[str, str]] = []
    for name, values in raw.items():
        items = values if isinstance(values, list) else [values]
        pairs.extend((str(name), "" if v is None else str(v)) for v in items)
    return headers_dict(pairs)


def _body(raw: Any, where: str) -> bytes:
    """Ruby: ``{encoding, string | base64_string}``; vcrpy: a str, bytes or ``{string: ...}``."""
    if raw is None:
        return b""
    if isinstance(raw, dict):
        if raw.get("base64_string") is not None:
            return base64.b64decode(str(raw["base64_string"]))
        raw = raw.get("string")
        if raw is None:
            return b""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8")
    raise CassetteFormatError(f"{where}.body has an unexpected type {type(raw).__name__}")


def _decompress(content: bytes, headers: dict[str, list[str]]) -> bytes:
    """vcrpy may keep the wire bytes; Ruby VCR keeps them decoded. Decode only what is encoded."""
    encoding = ",".join(headers.get("content-encoding", [])).lower()
    try:
        if "gzip" in encoding and content[:2] == b"\x1f\x8b":
            return gzip.decompress(content)
        if "deflate" in encoding:
            return zlib.decompress(content)
    except (OSError, zlib.error):
        pass
    return content


def _status(raw: Any, where: str) -> tuple[int, str]:
    code, message = (raw.get("code"), raw.get("message")) if isinstance(raw, dict) else (raw, "")
    try:
        status = int(str(code))
    except (TypeError, ValueError):
        raise CassetteFormatError(f"{where}.status has no integer code: {raw!r}") from None
    if not message:
        try:
            message = http.HTTPStatus(status).phrase
        except ValueError:
            message = ""
    return status, str(message).strip()


def _interaction(raw: Any, index: int) -> dict[str, Any]:
    where = f"interaction {index}"
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise CassetteFormatError(f"{where} has no request mapping")
    if not isinstance(raw.get("response"), dict):
        raise CassetteFormatError(f"{where} has no response mapping")
    req, resp = raw["request"], raw["response"]
    if not req.get("method") or not req.get("uri"):
        raise CassetteFormatError(f"{where}.request needs a method and a uri")
    req_headers = _headers(req.get("headers"), f"{where}.request")
    resp_headers = _headers(resp.get("headers"), f"{where}.response")
    req_body = _body(req.get("body"), f"{where}.request")
    resp_body = _decompress(_body(resp.get("body"), f"{where}.response"), resp_headers)
    status, reason = _status(resp.get("status"), f"{where}.response")
    version = resp.get("http_version")
    req_type = next(iter(req_headers.get("content-type", [])), None)
    resp_type = next(iter(resp_headers.get("content-type", [])), None)
    return {
        "request": {
            "method": str(req["method"]).upper(),
            "uri": str(req["uri"]),
            "headers": req_headers,
            "body": encode_body(req_body, req_type),
        },
        "response": {
            "status": status,
            "reason": reason,
            "http_version": f"HTTP/{version}"
            if version and "/" not in str(version)
            else str(version or "HTTP/1.1"),
            "headers": resp_headers,
            "body": encode_body(resp_body, resp_type),
        },
    }


def convert_vcr_yaml(text: str) -> dict[str, Any]:
    """Our cassette dict from the text of a Ruby VCR or vcrpy YAML cassette (redacted)."""
    data = _load_yaml(text)
    if not isinstance(data, dict):
        raise CassetteFormatError("not a VCR cassette: the top level is not a mapping")
    raw = data.get("http_interactions", data.get("interactions"))
    if not isinstance(raw, list):
        raise CassetteFormatError(
            "not a VCR cassette: expected a list under 'http_interactions' (Ruby VCR) or"
            " 'interactions' (vcrpy)"
        )
    redactor = Redactor()
    parsed = [_interaction(item, i) for i, item in enumerate(raw)]
    for item in parsed:  # every secret of the cassette is known before anything is written
        redactor.learn(item)
    interactions = [redactor.apply(item) for item in parsed]
    out: dict[str, Any] = {"version": CASSETTE_VERSION, "interactions": interactions}
    if interactions:
        first = urlsplit(interactions[0]["request"]["uri"])
        if first.path.startswith("/v2/") or first.path == "/v2":
            out["base_url"] = f"{first.scheme}://{first.netloc}/v2"
        else:
            out["base_url"] = DEFAULT_BASE_URL
        match = _ORG_RE.search(first.path)
        if match:
            out["org"] = match.group(1)
    validate_cassette(out)
    return out


def convert_file(
    src: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None, *, force: bool = False
) -> Path:
    """Convert ``src`` into ``dest`` (default: ``src`` with ``.json``), atomically; return it.

    An existing ``dest`` is replaced only with ``force``; a ``.yml``/``.yaml`` ``dest`` is refused.
    """
    source = Path(src)
    if not source.is_file():
        raise InvalidArgumentError(f"{source} is not a file; give the path of a YAML cassette")
    target = Path(dest) if dest is not None else source.with_suffix(".json")
    if target.resolve() == source.resolve():
        raise InvalidArgumentError(
            f"the destination {target} is the source itself; give another path with -o"
        )
    if target.suffix.lower() in (".yml", ".yaml"):
        raise InvalidArgumentError(
            f"the destination {target} ends in {target.suffix} but a converted cassette is JSON;"
            " give a path ending in .json with -o"
        )
    if target.exists() and not force:
        raise InvalidArgumentError(
            f"the destination {target} already exists; give another path with -o, or --force"
            " to replace it"
        )
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CassetteFormatError(f"{source} is not UTF-8 text: {exc}") from None
    try:
        data = convert_vcr_yaml(text)
    except CassetteFormatError as exc:
        raise CassetteFormatError(f"{source}: {exc}") from None
    if not target.parent.is_dir():
        raise InvalidArgumentError(
            f"destination folder {target.parent} does not exist; create it first"
        )
    return save_cassette(target, data)
