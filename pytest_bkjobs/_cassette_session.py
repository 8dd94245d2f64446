"""One test's cassette at work: replay through respx, record through a forwarding transport.

While a session is active, a respx router (using respx's ``httpx`` mocker, so clients that code
under test builds itself are reached too) answers every request for the Buildkite API base URL:
from the file when replaying, or by forwarding it to the real API (or ``--bk-api-url``) and
keeping a copy when recording. Other hosts pass through untouched, and routes added by hand to
the router win over the cassette.
"""

from __future__ import annotations

import functools
import re
import shlex
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import respx
from respx.models import PassThrough

from ._cassette import (
    CASSETTE_VERSION,
    MODES,
    CassetteError,
    CassetteExhaustedError,
    CassetteFormatError,
    CassetteMissError,
    CassetteNotFoundError,
    DropInteraction,
    Interaction,
    body_bytes,
    encode_body,
    headers_dict,
    load_cassette,
)
from ._cassette_match import (
    DEFAULT_MATCH_ON,
    KEY_MATCHERS,
    ParsedRequest,
    differences,
    index_key,
    matches,
    parse_request,
)
from ._cassette_redact import Redactor, tidy_interaction
from ._config import DEFAULT_BASE_URL

__all__ = ["MODES", "CassetteRouter", "CassetteSession", "SessionOptions", "shared_ssl_context"]

_ORG_RE = re.compile(r"/organizations/([^/?#]+)")
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_CLOSEST = 3


@dataclass
class SessionOptions:
    """Everything a session needs to know about its test and its file."""

    path: Path
    test_id: str
    mode: str = "none"
    api_url: str = DEFAULT_BASE_URL
    allow_playback_repeats: bool = False
    assert_all_played: bool = True
    match_on: tuple[str, ...] = DEFAULT_MATCH_ON
    redactor: Redactor = field(default_factory=Redactor)
    display_path: str = ""
    rerecord: str = "pytest --bk-record"


def _message_from_request(request: httpx.Request, uri: str | None = None) -> dict[str, Any]:
    pairs = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _HOP_HEADERS]
    return {
        "method": request.method.upper(),
        "uri": uri or str(request.url),
        "headers": headers_dict(pairs),
        "body": encode_body(request.content, request.headers.get("content-type")),
    }


def _strip_path(url: str) -> str:
    return url.rstrip("/")


def _org_of(interactions: list[Interaction]) -> str | None:
    """The organisation slug in the first recorded URL that has one."""
    for item in interactions:
        match = _ORG_RE.search(urlsplit(str(item["request"]["uri"])).path)
        if match:
            return match.group(1)
    return None


def is_loopback(url: str) -> bool:
    """True for a URL on this machine (``localhost``, 127.x, ``::1``): a fake, not Buildkite."""
    import ipaddress

    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _under(url: str, base: str) -> bool:
    return url == base or url.startswith((base + "/", base + "?"))


def local_server_url(url: str) -> str:
    """``url`` with its port written ``<port>``: the same for every run of a local fake."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = ":<port>" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, as written in it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class CassetteSession:
    """Holds one cassette's interactions and answers requests from it (or records them)."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.mode = options.mode
        self.recorded: list[Interaction] = []
        self.base_url: str | None = None
        self.recorded_against: str | None = None  # a local server's URL, its port left out
        self.org: str | None = None
        self.errors: list[CassetteError] = []
        self.new: list[Interaction] = []
        exists = options.path.exists()
        self.replaying = self.mode == "none" or (self.mode == "once" and exists)
        if self.mode != "all" and (exists or self.mode == "none"):
            try:
                data = load_cassette(options.path, self.where)
            except CassetteNotFoundError:
                raise CassetteNotFoundError(
                    f"no cassette for {options.test_id} at {self.where}: nothing to replay.\n"
                    f"Record it with: {options.rerecord}"
                ) from None
            except CassetteFormatError as exc:
                raise CassetteFormatError(
                    f"{exc}\n  test: {options.test_id}\nThe file is left as it is: fix or delete"
                    f" it, or record it again with: {options.rerecord}"
                ) from None
            self.recorded = list(data["interactions"])
            self.base_url = data.get("base_url")
            against = data.get("recorded_against")
            self.recorded_against = against if isinstance(against, str) else None
            self.org = data.get("org") or _org_of(self.recorded)
            self._hint_recorded_url()
        self.played = [False] * len(self.recorded)
        self.repeats = 0
        # Built on the first lookup: recorded requests parsed once, grouped by index key.
        self._parsed: list[ParsedRequest] = []
        self._buckets: dict[tuple[object, ...], list[int]] | None = None
        self._first: dict[tuple[object, ...], int] = {}  # bucket position of the first unplayed
        self._responses: dict[tuple[int, bool], _Answer] = {}
        self._origins: tuple[tuple[str, str | None], list[str], frozenset[str]] | None = None
        self.router: Any = None  # the CassetteRouter, set by whoever starts it
        self._transports: dict[str | None, httpx.HTTPTransport] = {}
        self._lock = threading.Lock()

    def _hint_recorded_url(self) -> None:
        """Re-record against the server the file came from (a fake), unless told otherwise."""
        recorded = _strip_path(str(self.base_url or ""))
        hint = self.options.rerecord
        local = self.recorded_against
        if local and "--bk-api-url" not in hint and hint.startswith("pytest --bk-record"):
            self.options.rerecord = hint.replace(
                "--bk-record", "--bk-record --bk-api-url URL", 1
            ) + (
                f"  (recorded against a local server, {local}: start it again, e.g."
                " `bkjobs fake-server --sample`, and pass the URL it prints)"
            )
            return
        if (
            recorded.startswith(("http://", "https://"))
            and recorded not in (DEFAULT_BASE_URL, _strip_path(self.options.api_url))
            and "--bk-api-url" not in hint
            and hint.startswith("pytest --bk-record")
        ):
            flag = f" --bk-api-url {shlex.quote(recorded)}"
            self.options.rerecord = hint.replace("--bk-record", "--bk-record" + flag, 1) + (
                f"  (recorded against {recorded}; drop --bk-api-url to record the real API)"
            )

    def close(self) -> None:
        """Close the connections opened to record."""
        while self._transports:
            _, transport = self._transports.popitem()
            transport.close()

    @property
    def path(self) -> Path:
        """The cassette file."""
        return self.options.path

    @property
    def interactions(self) -> list[Interaction]:
        """The interactions of this cassette: loaded from the file, then any recorded now."""
        return [*self.recorded, *self.new]

    @property
    def where(self) -> str:
        """The cassette path as shown to the user."""
        return self.options.display_path or str(self.options.path)

    @property
    def recording(self) -> bool:
        """True when requests the file cannot answer are sent to the API and kept."""
        return not self.replaying

    @property
    def unplayed(self) -> list[Interaction]:
        """Recorded interactions no request has used yet."""
        return [item for item, done in zip(self.recorded, self.played, strict=True) if not done]

    # -- which requests are ours ----------------------------------------------------------------

    def _known(self) -> tuple[list[str], frozenset[str]]:
        """Base URL prefixes (longest first) and their origins, computed once per setting."""
        settings = (self.options.api_url, self.base_url)
        if self._origins is None or self._origins[0] != settings:
            found = {_strip_path(self.options.api_url), DEFAULT_BASE_URL}
            if self.base_url:
                found.add(_strip_path(self.base_url))
            prefixes = sorted(found, key=len, reverse=True)
            self._origins = (settings, prefixes, frozenset(_origin(p) for p in prefixes))
        return self._origins[1], self._origins[2]

    def _prefixes(self) -> list[str]:
        return self._known()[0]

    def owns(self, request: httpx.Request) -> bool:
        """True for requests to the API's origin (configured, default, or recorded base URL)."""
        return _origin(str(request.url)) in self._known()[1]

    def _bases(self, url: str) -> tuple[str, str]:
        """The request's own base URL, and the one it is sent to when recording."""
        api = _strip_path(self.options.api_url)
        for prefix in self._prefixes():
            if url == prefix or url.startswith((prefix + "/", prefix + "?")):
                return prefix, api
        return _origin(url), _origin(api)

    def _target(self, request: httpx.Request) -> str:
        """Where a recorded request goes: the same path under the API URL we record against."""
        url = str(request.url)
        own, api = self._bases(url)
        return api + url[len(own) :]

    # -- answering ------------------------------------------------------------------------------

    def _fail(self, error: CassetteError) -> CassetteError:
        self.errors.append(error)
        return error

    def _index(self) -> dict[tuple[object, ...], list[int]]:
        """Recorded requests by the values of the equality matchers, each list in file order."""
        if self._buckets is None:
            match_on = self.options.match_on
            self._parsed = [parse_request(item["request"]) for item in self.recorded]
            buckets: dict[tuple[object, ...], list[int]] = {}
            for i, parsed in enumerate(self._parsed):
                buckets.setdefault(index_key(parsed, match_on), []).append(i)
            self._buckets = buckets
        return self._buckets

    def _lookup(self, live: dict[str, Any]) -> int | None:
        """The index of the next unplayed match; None if the request should be recorded."""
        __tracebackhide__ = True
        match_on = self.options.match_on
        rest = tuple(name for name in match_on if name not in KEY_MATCHERS)
        request = parse_request(live)
        key = index_key(request, match_on)
        bucket = self._index().get(key, [])
        played, parsed = self.played, self._parsed
        first = self._first.get(key, 0)
        while first < len(bucket) and played[bucket[first]]:
            first += 1  # played ones never come back: skip them for good
        self._first[key] = first
        for i in bucket[first:]:
            if not played[i] and matches(parsed[i], request, rest):
                played[i] = True
                return i
        if self.recording:
            return None
        found = [i for i in bucket if matches(parsed[i], request, rest)]
        if found and self.options.allow_playback_repeats:
            self.repeats += 1
            return found[-1]
        if found:
            raise self._fail(CassetteExhaustedError(self._exhausted_message(live, len(found))))
        raise self._fail(CassetteMissError(self._miss_message(live)))

    def _describe(self, message: dict[str, Any]) -> str:
        text = f"{message['method']} {message['uri']}"
        if message["method"] in ("PUT", "POST", "PATCH") and message.get("body"):
            body = body_bytes(message["body"]).decode("utf-8", errors="replace")
            text += f"  body: {body[:200]}"
        return text

    def _header_lines(self) -> list[str]:
        return [f"  test:     {self.options.test_id}", f"  cassette: {self.where}"]

    def _miss_message(self, live: dict[str, Any]) -> str:
        lines = [
            f"no recorded interaction matches {self._describe(live)}",
            *self._header_lines(),
        ]
        other_org = self._other_org(live)
        if other_org is not None:
            lines.append(
                f"recorded for organisation {self.org!r}, the request is for {other_org!r}:"
                f" set BUILDKITE_ORGANIZATION_SLUG={self.org} (or re-record)"
            )
        scored = sorted(
            (
                (len(differences(item["request"], live, self.options.match_on)), i)
                for i, item in enumerate(self.recorded)
            ),
        )[:_CLOSEST]
        if scored:
            lines.append("closest recorded requests:")
            for _, i in scored:
                recorded = self.recorded[i]["request"]
                lines.append(f"  #{i} {recorded['method']} {recorded['uri']}")
                diffs = differences(recorded, live, self.options.match_on)
                lines.extend(f"     - {d}" if not d.startswith("    ") else d for d in diffs)
        else:
            lines.append("the cassette has no recorded interactions")
        lines.append(f"To re-record this test: {self.options.rerecord}")
        lines.append("(or keep the old ones and add this request: --bk-record-mode=new_episodes)")
        return "\n".join(lines)

    def _other_org(self, live: dict[str, Any]) -> str | None:
        """The request's organisation, when only it keeps the request from a recorded one."""
        path = urlsplit(str(live["uri"])).path
        match = _ORG_RE.search(path)
        if not self.org or match is None or match.group(1) == self.org:
            return None
        moved = f"{path[: match.start(1)]}{self.org}{path[match.end(1) :]}"
        paths = {urlsplit(str(item["request"]["uri"])).path for item in self.recorded}
        return match.group(1) if moved in paths else None

    def _exhausted_message(self, live: dict[str, Any], count: int) -> str:
        return "\n".join(
            [
                f"{self._describe(live)} matches {count} recorded interaction(s), but all of"
                " them were already played (each recorded answer plays once)",
                *self._header_lines(),
                "If the test now makes this request more often, re-record:"
                f" {self.options.rerecord}",
                "or allow repeats: @pytest.mark.bk_cassette(allow_playback_repeats=True)",
            ]
        )

    def _replay(self, request: httpx.Request) -> tuple[httpx.Response | None, dict[str, Any]]:
        __tracebackhide__ = True
        request.read()
        with self._lock:  # code under test may send from several threads
            live = self.options.redactor.request_view(_message_from_request(request))
            index = self._lookup(live)
            if index is None:
                return None, live
            head = request.method.upper() == "HEAD"
            answer = self._responses.get((index, head))
            if answer is None:
                answer = _answer_from(self.recorded[index]["response"], head)
                self._responses[index, head] = answer
        return answer.response(), live

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer a request from a sync client."""
        __tracebackhide__ = True
        response, _ = self._replay(request)
        if response is not None:
            return response
        forward = self._forward_request(request)
        proxy = _proxy_for(str(forward.url))
        with self._lock:
            transport = self._transports.get(proxy)
            if transport is None:
                transport = httpx.HTTPTransport(verify=_ssl_context(), proxy=proxy)
                self._transports[proxy] = transport
        answer = transport.handle_request(forward)
        try:
            answer.read()
        finally:
            answer.close()
        return self._keep(request, forward, answer)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        """Answer a request from an async client."""
        __tracebackhide__ = True
        response, _ = self._replay(request)
        if response is not None:
            return response
        forward = self._forward_request(request)
        # One transport per request: an async pool is bound to the loop that opened it.
        proxy = _proxy_for(str(forward.url))
        async with httpx.AsyncHTTPTransport(verify=_ssl_context(), proxy=proxy) as transport:
            answer = await transport.handle_async_request(forward)
            try:
                await answer.aread()
            finally:
                await answer.aclose()
        return self._keep(request, forward, answer)

    # -- recording ------------------------------------------------------------------------------

    def _forward_request(self, request: httpx.Request) -> httpx.Request:
        headers = [
            (k, v) for k, v in request.headers.multi_items() if k.lower() not in _HOP_HEADERS
        ]
        # The client's timeout travels in the extensions: without it the API could hang the test.
        extensions = {k: v for k, v in request.extensions.items() if k == "timeout"}
        return httpx.Request(
            request.method,
            self._target(request),
            headers=headers,
            content=request.content,
            extensions=extensions,
        )

    def _keep(
        self, original: httpx.Request, forward: httpx.Request, answer: httpx.Response
    ) -> httpx.Response:
        content = answer.content  # decoded: gzip is undone, and the whole stream was read
        headers = [
            (k, v)
            for k, v in answer.headers.multi_items()
            if k.lower() not in ("content-encoding", "transfer-encoding", "content-length")
        ]
        own, api = self._bases(str(original.url))
        if own != api:
            # Recorded through another server (a fake): its absolute links (``links.next``,
            # ``Link``) must point back at the base URL the client asked for, or a client that
            # refuses links to other origins stops at the first page, now and on replay.
            content = content.replace(api.encode(), own.encode())
            headers = [(k, v.replace(api, own)) for k, v in headers]
        if original.method.upper() == "HEAD" and "content-length" in answer.headers:
            headers.append(("content-length", answer.headers["content-length"]))
        # The file keeps the URL the client asked for, not where it was sent: with the
        # plugin's clients, never a local fake's random port.
        request_message = _message_from_request(original, uri=str(original.url))
        with self._lock:
            self.options.redactor.request_view(request_message)  # learns the bearer token
            self.new.append(
                {
                    "request": request_message,
                    "response": {
                        "status": answer.status_code,
                        "reason": answer.reason_phrase,
                        "http_version": answer.http_version,
                        "headers": headers_dict(headers),
                        "body": encode_body(content, answer.headers.get("content-type")),
                    },
                }
            )
        if self.org is None:
            self.org = _org_of(self.new)
        return httpx.Response(
            answer.status_code,
            headers=headers,
            content=content,
            extensions={
                "http_version": answer.http_version.encode(),
                "reason_phrase": answer.reason_phrase.encode(),
            },
        )

    def to_file(self, scrub: Callable[[Interaction], object] | None = None) -> dict[str, Any]:
        """The cassette to write: redacted, scrubbed by the hook, with true lengths."""
        redactor = self.options.redactor
        kept = self.recorded if self.mode == "new_episodes" else []
        out: list[Interaction] = []
        items = [*kept, *self.new]
        for item in items:  # every secret of the cassette is known before anything is written
            redactor.learn(item)
        for item in items:
            clean = redactor.apply(item)
            if scrub is not None:
                try:
                    scrub(clean)
                except DropInteraction:
                    continue
            out.append(tidy_interaction(redactor.apply(clean)))
        data: dict[str, Any] = {"version": CASSETTE_VERSION, "interactions": out}
        base = self.base_url if self.mode == "new_episodes" and self.base_url else None
        api = _strip_path(self.options.api_url)
        uris = [str(item["request"]["uri"]) for item in out]
        if base is None and is_loopback(api) and all(_under(u, DEFAULT_BASE_URL) for u in uris):
            # Interactions are stored under the default URL; the port changes every run.
            base = DEFAULT_BASE_URL
            data["recorded_against"] = local_server_url(api)
        data["base_url"] = redactor.scrub_text(base or api)
        if self.org:
            data["org"] = self.org
        return data


def _proxy_for(url: str) -> str | None:
    """The ``HTTPS_PROXY``/``HTTP_PROXY`` to record through (honouring ``NO_PROXY``)."""
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(parts.hostname or ""):
        return proxy
    return None


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """Building one costs tens of milliseconds: share it between transports (httpx's default)."""
    return httpx.create_ssl_context()


_ssl_context = shared_ssl_context


@dataclass(frozen=True)
class _Answer:
    """A recorded response ready to replay: its body is encoded once, not on every request."""

    status: int
    headers: list[tuple[str, str]]
    content: bytes
    extensions: dict[str, Any]

    def response(self) -> httpx.Response:
        return httpx.Response(
            self.status,
            headers=self.headers,
            content=self.content,
            extensions=dict(self.extensions),
        )


def _answer_from(message: dict[str, Any], head: bool) -> _Answer:
    """The replayed answer; its ``Content-Length`` matches the bytes (HEAD keeps its own)."""
    headers = [
        (name, value)
        for name, values in message.get("headers", {}).items()
        for value in values
        if name not in ("content-length", "content-encoding", "transfer-encoding")
        or (name == "content-length" and head)
    ]
    extensions: dict[str, Any] = {}
    if message.get("http_version"):
        extensions["http_version"] = str(message["http_version"]).encode()
    if message.get("reason"):
        extensions["reason_phrase"] = str(message["reason"]).encode()
    return _Answer(int(message["status"]), headers, body_bytes(message.get("body")), extensions)


class CassetteRouter(respx.MockRouter):
    """A respx router whose fallback for Buildkite API requests is the cassette."""

    def __init__(self, session: CassetteSession) -> None:
        super().__init__(assert_all_called=False, assert_all_mocked=False, using="httpx")
        self.session = session

    def _has_route(self, request: httpx.Request) -> bool:
        return any(
            route.pattern is None or bool(route.pattern.match(request)) for route in self.routes
        )

    def _pass(self, request: httpx.Request) -> PassThrough:
        return PassThrough(
            f"not a Buildkite API request: {request.method} {request.url}",
            request=request,
            origin=None,  # type: ignore[arg-type]
        )

    def handler(self, request: httpx.Request) -> httpx.Response:
        __tracebackhide__ = True
        if self._has_route(request):
            return super().handler(request)
        if not self.session.owns(request):
            raise self._pass(request)
        response = self.session.handle(request)
        self.record(request, response=response)
        return response

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        __tracebackhide__ = True
        if self._has_route(request):
            return await super().async_handler(request)
        if not self.session.owns(request):
            raise self._pass(request)
        response = await self.session.ahandle(request)
        self.record(request, response=response)
        return response
