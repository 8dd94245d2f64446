"""Redaction applied to every interaction before it is written, and to requests before matching.

One function runs on every write path (recording, conversion), so no path can skip a filter:
credentials headers are dropped, known secret values are replaced wherever they appear, secret
job environment variables are masked, and ``Content-Length`` is recomputed.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from ._cassette import Interaction, body_bytes, map_strings
from ._env import REDACTED, format_env_text, is_secret_name, parse_env_text

__all__ = [
    "DROPPED_HEADERS",
    "VOLATILE_HEADERS",
    "Redactor",
    "bearer_token",
    "tidy_interaction",
]

#: Never written: they carry credentials.
DROPPED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
#: Response headers that change on every request: dropped so a re-record diffs only real changes.
#: ``RateLimit-*`` is kept: the client reads it to wait out a replayed 429.
VOLATILE_HEADERS = frozenset({"date", "server", "via", "x-request-id", "set-cookie"})
#: Prefixes of volatile response headers (CloudFront's ``x-amz-cf-id``, Cloudflare's ``cf-ray``).
VOLATILE_PREFIXES = ("x-amz-cf-", "cf-")
#: The stored body is the decoded whole body, so these would describe the wrong bytes.
_TRANSFER_HEADERS = ("content-encoding", "transfer-encoding")
_MIN_SECRET_LEN = 6
#: Values masked for a secret name are replaced everywhere only from this length on: replacing
#: ``1`` or ``yes`` all over a cassette would mangle it and hide nothing.
_MIN_MASKED_LEN = 4
_ENV_PATH = re.compile(r"/env(\.txt)?/?$")


def bearer_token(headers: dict[str, list[str]]) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    for value in headers.get("authorization", []):
        scheme, _, token = value.partition(" ")
        if scheme.lower() in ("bearer", "token") and token.strip():
            return token.strip()
    return None


def _set_length(message: dict[str, Any], keep: bool) -> None:
    headers = message.setdefault("headers", {})
    if keep:
        return
    size = len(body_bytes(message.get("body")))
    if "content-length" in headers or size:
        headers["content-length"] = [str(size)]


def tidy_interaction(interaction: Interaction) -> Interaction:
    """Drop transfer headers of a decoded body and make every ``Content-Length`` true."""
    request, response = interaction["request"], interaction["response"]
    for name in _TRANSFER_HEADERS:
        response.setdefault("headers", {}).pop(name, None)
        request.setdefault("headers", {}).pop(name, None)
    _set_length(request, keep=False)
    # A HEAD answer's Content-Length is the size of the body it did not send: keep it.
    _set_length(response, keep=str(request.get("method", "")).upper() == "HEAD")
    return interaction


@dataclass
class Redactor:
    """Removes credentials and secrets from interactions."""

    secrets: set[str] = field(default_factory=set)
    env_patterns: tuple[str, ...] = ()
    _pairs: tuple[frozenset[str], list[tuple[str, str]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def add_secret(self, value: str | None, min_len: int = _MIN_SECRET_LEN) -> None:
        """Replace this value (and its URL-quoted form) wherever it appears."""
        if value and len(value.strip()) >= min_len and value.strip() != REDACTED:
            self.secrets.add(value.strip())

    def learn(self, interaction: Interaction) -> None:
        """Remember the values this interaction holds under secret names (and its token).

        Called on every interaction of a cassette before any is written, so a secret masked in
        one answer (a job env) is also replaced where it shows up in clear in another (a log).
        """
        request, response = interaction["request"], interaction["response"]
        self.add_secret(bearer_token(request.get("headers", {})))
        found: list[str] = []
        body = request.get("body")
        if body and "json" in body:
            self._mask_json_secrets(body["json"], found)
        if _ENV_PATH.search(urlsplit(str(request.get("uri", ""))).path):
            self._mask_env_body(response.get("body"), found)
        for value in found:
            self.add_secret(value, _MIN_MASKED_LEN)

    def _replacements(self) -> list[tuple[str, str]]:
        # Every replayed request is scrubbed: build the list again only when a secret is added.
        if self._pairs is not None and self._pairs[0] == self.secrets:
            return self._pairs[1]
        pairs: list[tuple[str, str]] = []
        for secret in sorted(self.secrets, key=len, reverse=True):
            pairs.append((secret, REDACTED))
            quoted = quote(secret, safe="")
            if quoted != secret:
                pairs.append((quoted, quote(REDACTED, safe="")))
        self._pairs = (frozenset(self.secrets), pairs)
        return pairs

    def scrub_text(self, text: str) -> str:
        """Replace every known secret value in ``text``."""
        for secret, replacement in self._replacements():
            text = text.replace(secret, replacement)
        return text

    def _scrub_body(self, body: dict[str, Any] | None) -> dict[str, Any] | None:
        if not body:
            return body
        if "json" in body:
            return {"json": map_strings(body["json"], self.scrub_text)}
        if "text" in body:
            return {"text": self.scrub_text(str(body["text"]))}
        if "base64" in body:
            raw = base64.b64decode(str(body["base64"]))
            for secret, replacement in self._replacements():
                raw = raw.replace(secret.encode(), replacement.encode())
            return {"base64": base64.b64encode(raw).decode("ascii")}
        return body

    def _scrub_headers(self, headers: dict[str, list[str]]) -> dict[str, list[str]]:
        return {
            name: [self.scrub_text(v) for v in values]
            for name, values in headers.items()
            if name.lower() not in DROPPED_HEADERS
        }

    def _mask_json_secrets(self, value: Any, found: list[str] | None = None) -> Any:
        """Mask values stored under secret-looking keys (``DEPLOY_TOKEN``, ``db_password``)."""
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if isinstance(k, str) and is_secret_name(k, self.env_patterns) and v:
                    if found is not None and isinstance(v, str):
                        found.append(v)
                    out[k] = REDACTED
                else:
                    out[k] = self._mask_json_secrets(v, found)
            return out
        if isinstance(value, list):
            return [self._mask_json_secrets(item, found) for item in value]
        return value

    def _mask_env_body(
        self, body: dict[str, Any] | None, found: list[str] | None = None
    ) -> dict[str, Any] | None:
        if not body:
            return body
        if "json" in body:
            return {"json": self._mask_json_secrets(body["json"], found)}
        if "text" in body:
            text = str(body["text"])
            env = parse_env_text(text)
            if found is not None:
                found.extend(
                    v for k, v in env.items() if is_secret_name(k, self.env_patterns) and v
                )
            if any(is_secret_name(k, self.env_patterns) and v for k, v in env.items()):
                masked = {
                    k: REDACTED if is_secret_name(k, self.env_patterns) and v else v
                    for k, v in env.items()
                }
                return {"text": format_env_text(masked)}
        return body

    def request_view(self, request: dict[str, Any]) -> dict[str, Any]:
        """A request as it would be written: used to match live requests against the file."""
        self.add_secret(bearer_token(request.get("headers", {})))
        out = dict(request)
        out["uri"] = self.scrub_text(str(request.get("uri", "")))
        out["headers"] = self._scrub_headers(dict(request.get("headers", {})))
        body = self._scrub_body(request.get("body"))
        if body and "json" in body:
            body = {"json": self._mask_json_secrets(body["json"])}
        out["body"] = body
        return out

    def apply(self, interaction: Interaction) -> Interaction:
        """A redacted deep copy of ``interaction``, with true ``Content-Length`` headers."""
        item = copy.deepcopy(interaction)
        item["request"] = self.request_view(item["request"])
        response = item["response"]
        response["headers"] = {
            name: values
            for name, values in self._scrub_headers(dict(response.get("headers", {}))).items()
            if name.lower() not in VOLATILE_HEADERS
            and not name.lower().startswith(VOLATILE_PREFIXES)
        }
        response["body"] = self._scrub_body(response.get("body"))
        if _ENV_PATH.search(urlsplit(item["request"]["uri"]).path):
            response["body"] = self._mask_env_body(response["body"])
        return tidy_interaction(item)


def redactor_for(token: str | None, env_patterns: Iterable[str] = ()) -> Redactor:
    """A redactor that knows the recording token and the extra secret name patterns."""
    redactor = Redactor(env_patterns=tuple(env_patterns))
    redactor.add_secret(token)
    return redactor
