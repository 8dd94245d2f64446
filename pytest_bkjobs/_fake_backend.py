"""The fake's one backend: auth, rate limits, faults, routing and rendering of every answer.

Both front doors (the in-process httpx handler and the loopback HTTP server) turn a request
into a ``FakeRequest``, call ``Backend.dispatch`` and write the ``Reply`` it returns.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from ._env import format_env_text
from ._fake_http import (
    FakeRequest,
    Fault,
    RandomFaults,
    RecordedRequest,
    Reply,
    TokenInfo,
    Window,
    error_page,
    json_reply,
)
from ._fake_logs import EMPTY_LOG, INLINE_LIMIT, html_log_chunks, json_log_chunks
from ._fake_state import (
    ApiError,
    FakeState,
    JobRecord,
    ascii_int,
    decode_cursor,
    encode_cursor,
)
from ._models import FILTER_STATES

logger = logging.getLogger("pytest_bkjobs.fake")

API_PREFIX = "/v2"
CONTROL_PREFIX = "/__fake__/"
ALL_SCOPES = frozenset(
    {"read_builds", "write_builds", "read_build_logs", "write_build_logs", "read_job_env"}
)
AUTH_MESSAGE = (
    "Authentication required. Please supply a valid API Access Token:"
    " https://buildkite.com/docs/apis/rest-api#authentication"
)
DEFAULT_ORG_LIMIT = 200
DEFAULT_USER_LIMIT = 50
MAX_RECORDED = 100_000
_JSON = "application/json; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"

_SCOPE_OF = {
    ("GET", ""): "read_builds",
    ("PUT", "retry"): "write_builds",
    ("PUT", "unblock"): "write_builds",
    ("PUT", "reprioritize"): "write_builds",
    ("GET", "log"): "read_build_logs",
    ("DELETE", "log"): "write_build_logs",
    ("GET", "env"): "read_job_env",
}
_SEG = r"([^/]+)"
_ACTION = r"(?:/(retry|unblock|reprioritize|log|env))?(\.txt|\.html|\.json)?"
_LIST_ROUTE = re.compile(rf"^/organizations/{_SEG}/pipelines/{_SEG}/builds/{_SEG}/jobs/?$")
_BUILD_ROUTE = re.compile(rf"^/organizations/{_SEG}/pipelines/{_SEG}/builds/{_SEG}/?$")
_BUILD_JOB_ROUTE = re.compile(
    rf"^/organizations/{_SEG}/pipelines/{_SEG}/builds/{_SEG}/jobs/([^/.]+){_ACTION}$"
)
_ORG_JOB_ROUTE = re.compile(rf"^/organizations/{_SEG}/jobs/([^/.]+){_ACTION}$")
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
# scheme://host[:port] with a host made of name or IPv6 characters only (no spaces, paths...).
_ORIGIN = re.compile(r"https?://(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")
_MEDIA = {"json": "application/json", "text": "text/plain", "html": "text/html"}


class Backend:
    """Shared by both front doors; every public method is thread-safe."""

    def __init__(
        self,
        state: FakeState,
        clock: Callable[[], float],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.state = state
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.RLock()
        self.tokens: dict[str, TokenInfo] = {}
        self.latency = 0.0
        self.org_limit: int | None = None
        self.user_limit: int | None = None
        self.window = 60.0
        self.faults: list[Fault] = []
        self.random_faults: RandomFaults | None = None
        self.on_control_reset: Callable[[], None] | None = None
        self.reset_traffic()

    def reset_traffic(self) -> None:
        """Forget recorded requests, counters, windows and faults."""
        # Bounded, so that a long-running `bkjobs fake-server` does not grow without end.
        self.requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED)
        self.errors: deque[BaseException] = deque(maxlen=1000)
        self.retry_counts: dict[str, int] = {}
        self.faults = []
        self.random_faults = None
        self._org_window = Window()
        self._user_windows: dict[str, Window] = {}

    # -- entry point ----------------------------------------------------------------------------

    def dispatch(self, request: FakeRequest) -> Reply:
        """Answer one request; never raises (bad input, and our own errors, are answers too)."""
        path, _, query_string = request.target.partition("?")
        query = tuple(parse_qsl(query_string, keep_blank_values=True))
        slept: Exception | None = None
        if self.latency > 0:
            try:
                self.sleep(self.latency)  # outside the lock: slow requests still overlap
            except Exception as exc:  # an injected sleep that raised
                slept = exc
        with self.lock:
            failed = False
            try:
                if slept is not None:
                    raise slept
                reply = self._dispatch(request, path, query)
            except Exception as exc:  # a bug, or a callable of yours (outcome, sleep) that raised
                logger.error(
                    "fake Buildkite: error while answering %s %s",
                    request.method,
                    path,
                    exc_info=True,
                )
                self.errors.append(exc)
                reply = json_reply(500, {"message": f"fake Buildkite error: {type(exc).__name__}"})
                token = self._token(request.headers.get("authorization", ""))
                reply.headers += self._rate_headers(token.user_id if token else None)
                failed = True
            if not path.startswith(CONTROL_PREFIX):  # test conveniences are not traffic
                self._record(request, path, query, reply, failed)
        if reply.stream is not None:
            reply.stream = self._guarded(reply.stream, request.method, path)
        return reply

    def _guarded(self, chunks: Iterable[bytes], method: str, path: str) -> Iterator[bytes]:
        """The body, with an error while producing it kept in ``errors`` (then re-raised)."""
        try:
            yield from chunks
        except Exception as exc:  # e.g. a LogSource of yours that raised mid-log
            logger.error("fake Buildkite: error while sending %s %s", method, path, exc_info=True)
            with self.lock:
                self.errors.append(exc)
            raise

    def protocol_error(self, status: int, message: str) -> Reply:
        """A JSON answer to a request the loopback server could not read (not recorded)."""
        with self.lock:
            reply = json_reply(status, {"message": message})
            reply.headers += self._rate_headers(None)
            return reply

    def _record(
        self,
        request: FakeRequest,
        path: str,
        query: tuple[tuple[str, str], ...],
        reply: Reply,
        failed: bool,
    ) -> None:
        headers = {
            k: ("Bearer ***" if k == "authorization" else v) for k, v in request.headers.items()
        }
        outcome = "answered" if not reply.drop else ("lost" if reply.executed else "dropped")
        if failed:
            outcome = "error"
        self.requests.append(
            RecordedRequest(
                method=request.method,
                url=request.origin + request.target,
                path=path,
                query=query,
                headers=headers,
                body=request.body,
                status=None if reply.drop else reply.status,
                outcome=outcome,
            )
        )

    def _pick_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.hits += 1
                return fault
        return self.random_faults.pick(method) if self.random_faults else None

    def _dispatch(
        self, request: FakeRequest, path: str, query: tuple[tuple[str, str], ...]
    ) -> Reply:
        method = request.method  # case-sensitive, as HTTP says: "get" is not GET
        if path.startswith(CONTROL_PREFIX):
            return self._control(method, path)
        if not _ORIGIN.fullmatch(request.origin):
            reply = json_reply(400, {"message": "Invalid Host header"})
            reply.headers += self._rate_headers(None)
            return _not_executed(reply)
        fault = self._pick_fault(method, path)
        if fault is not None and fault.kind == "error":
            return _not_executed(error_page(fault.status, fault.body))
        if fault is not None and fault.kind == "drop":
            return Reply(drop=True, executed=False)
        token = self._token(request.headers.get("authorization", ""))
        if token is None:
            reply = json_reply(401, {"message": AUTH_MESSAGE})
            reply.headers += self._rate_headers(None)
            return _not_executed(reply)
        limited = self._count(token.user_id)
        if limited is not None:
            return _not_executed(limited)
        try:
            reply = self._route(request, method, path, query, token)
        except ApiError as exc:
            reply = json_reply(exc.status, exc.body())
        reply.headers += self._rate_headers(token.user_id)
        if fault is not None and fault.kind == "lost":
            return Reply(drop=True, executed=True)
        return reply

    def _control(self, method: str, path: str) -> Reply:
        if method == "POST" and path == CONTROL_PREFIX + "reset":
            if self.on_control_reset is not None:
                self.on_control_reset()
            return json_reply(200, {"message": "reset"})
        if method == "GET" and path == CONTROL_PREFIX + "health":
            return json_reply(200, {"ok": True, "org": self.state.org})
        return json_reply(404, {"message": f"No control route {method} {path}"})

    def _token(self, authorization: str) -> TokenInfo | None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.tokens.get(value.strip())

    # -- rate limits ----------------------------------------------------------------------------

    def _count(self, user_id: str) -> Reply | None:
        now = self.clock()
        self._org_window.hit(now, self.window)
        user = self._user_windows.setdefault(user_id, Window())
        user.hit(now, self.window)
        for scope, window, limit in (
            ("rest", self._org_window, self.org_limit),
            ("rest_user", user, self.user_limit),
        ):
            if limit is not None and window.count > limit:
                reset = window.reset_in(now, self.window)
                reply = json_reply(
                    429,
                    {
                        "message": "You have exceeded your API rate limit. Please wait"
                        f" {reset} seconds before making further requests.",
                        "scope": scope,
                        "limit": limit,
                        "current": window.count,
                        "reset": reset,
                    },
                )
                reply.headers += self._rate_headers(user_id)
                return reply
        return None

    def _rate_headers(self, user_id: str | None) -> list[tuple[str, str]]:
        now = self.clock()
        user = self._user_windows.get(user_id or "", Window())
        headers: list[tuple[str, str]] = [("RateLimit-Scope", "rest")]
        for prefix, window, limit, default in (
            ("RateLimit", self._org_window, self.org_limit, DEFAULT_ORG_LIMIT),
            ("RateLimit-User", user, self.user_limit, DEFAULT_USER_LIMIT),
        ):
            # With no limit configured nothing is enforced: show the default as untouched.
            remaining = default if limit is None else max(0, limit - window.count)
            headers += [
                (f"{prefix}-Remaining", str(remaining)),
                (f"{prefix}-Limit", str(default if limit is None else limit)),
                (f"{prefix}-Reset", str(window.reset_in(now, self.window))),
            ]
        return headers

    # -- routing --------------------------------------------------------------------------------

    def _route(
        self,
        request: FakeRequest,
        method: str,
        path: str,
        query: tuple[tuple[str, str], ...],
        token: TokenInfo,
    ) -> Reply:
        if not path.startswith(API_PREFIX + "/"):
            raise ApiError(404, f"No route matches [{method}] {path!r}; the API lives under /v2")
        api = request.origin + API_PREFIX
        rest = path[len(API_PREFIX) :]
        # HEAD is GET without the body (the front doors drop it); it does not count as a poll.
        verb = "GET" if method == "HEAD" else method
        listing = _LIST_ROUTE.match(rest)
        if listing:
            if verb != "GET":
                raise ApiError(404, f"No route matches [{method}] {path!r}")
            org, pipeline, build = (unquote(g) for g in listing.groups())
            self._check(token, "read_builds", org)
            return self._list(api, rest, pipeline, build, query, polls=method == "GET")
        whole = _BUILD_ROUTE.match(rest)
        if whole and verb == "GET":
            # Not a Jobs API endpoint, but helpers read the build around the current job.
            org, pipeline, build = (unquote(g) for g in whole.groups())
            self._check(token, "read_builds", org)
            found = self._build(pipeline, build)
            if method == "GET":
                for job_id in found.job_ids:
                    self.state.poll(self.state.jobs[job_id])
            return json_reply(200, self.state.render_build(found, api))
        match = _BUILD_JOB_ROUTE.match(rest)
        scoped: tuple[str, str] | None = None
        if match:
            org, pipeline, build, job_id, action, suffix = match.groups()
            scoped = (unquote(pipeline), unquote(build))
        else:
            match = _ORG_JOB_ROUTE.match(rest)
            if not match:
                raise ApiError(404, f"No route matches [{method}] {path!r}")
            org, job_id, action, suffix = match.groups()
        action = action or ""
        if (suffix and action not in ("log", "env")) or (suffix == ".html" and action != "log"):
            raise ApiError(404, f"No route matches [{method}] {path!r}")
        scope = _SCOPE_OF.get((verb, action))
        if scope is None:
            raise ApiError(404, f"No route matches [{method}] {path!r}")
        self._check(token, scope, unquote(org))
        job = self.state.job(unquote(job_id))
        if scoped is not None and scoped != (job.pipeline, str(job.build)):
            raise ApiError(404, "No job found")
        return self._act(request, method, action, suffix, job, api, token)

    def _build(self, pipeline: str, number: str) -> Any:
        digits = ascii_int(number)
        found = self.state.builds.get((pipeline, digits)) if digits is not None else None
        if found is None:
            raise ApiError(404, "No build found")
        return found

    def _check(self, token: TokenInfo, scope: str, org: str) -> None:
        if scope not in token.scopes:
            raise ApiError(403, f"Your access token doesn't have the {scope} scope")
        if org != self.state.org:
            raise ApiError(404, "No organization found")

    def _act(
        self,
        request: FakeRequest,
        method: str,
        action: str,
        suffix: str | None,
        job: JobRecord,
        api: str,
        token: TokenInfo,
    ) -> Reply:
        state = self.state
        if action == "":
            if method == "GET":
                state.poll(job)
            return json_reply(200, state.render(job, api))
        if action == "retry":
            self.retry_counts[job.id] = self.retry_counts.get(job.id, 0) + 1
            new = state.retry(job, token.user_id)
            reply = json_reply(200, state.render(new, api))
            if new.script is not None and new.script.after_polls <= 0:
                state.poll(new)
            return reply
        if action == "reprioritize":
            state.reprioritize(job, _json_body(request.body))
            return json_reply(200, state.render(job, api))
        if action == "unblock":
            state.unblock(job, _json_body(request.body), token.user_id)
            return json_reply(200, state.render(job, api))
        if action == "env":
            if _wants(request, suffix, ("json", "text")) == "text":
                return Reply(200, [("Content-Type", _TEXT)], format_env_text(job.env).encode())
            return json_reply(200, {"env": dict(job.env)})
        return self._log(request, method, suffix, job, api)

    # -- listing --------------------------------------------------------------------------------

    def _list(
        self,
        api: str,
        rest: str,
        pipeline: str,
        build: str,
        query: tuple[tuple[str, str], ...],
        polls: bool,
    ) -> Reply:
        record = self._build(pipeline, build)
        params = _multi(query)
        states = params.get("state[]", []) + params.get("state", [])
        for value in states:
            if value == "finished":
                raise ApiError(
                    400, "Invalid state: 'finished' is not accepted; use 'passed' or 'failed'"
                )
            if value not in FILTER_STATES:
                raise ApiError(
                    400, f"Invalid state: {value!r}; accepted: {', '.join(FILTER_STATES)}"
                )
        include_retried = _flag(params.get("include_retried_jobs", ["true"])[-1])
        per_page = _per_page(params.get("per_page", ["30"])[-1])
        after, before = params.get("after"), params.get("before")
        if after and before:
            raise ApiError(400, "after and before are mutually exclusive; give one cursor")
        jobs = [self.state.jobs[i] for i in record.job_ids]
        for job in jobs if polls else ():
            self.state.poll(job)
        step_keys = set(params.get("step_key", []))
        group_keys = set(params.get("group_key", []))
        jobs = [
            j
            for j in jobs
            if (include_retried or j.data.get("retried") not in (True, "true"))
            and (not states or _matches_state(j, states))
            and (not step_keys or j.data.get("step_key") in step_keys)
            and (not group_keys or j.data.get("group_key") in group_keys)
        ]
        if after:
            position = decode_cursor(after[-1], record)
            page = [j for j in jobs if j.seq > position][:per_page]
        elif before:
            position = decode_cursor(before[-1], record)
            page = [j for j in jobs if j.seq < position][-per_page:]
        else:
            page = jobs[:per_page]
        filters = [(k, v) for k, v in query if k not in {"after", "before", "per_page", "page"}] + [
            ("per_page", str(per_page))
        ]
        url = api + rest.rstrip("/")
        links = {"self": _link(url, [(k, v) for k, v in query if k != "per_page"], per_page)}
        if page and any(j.seq > page[-1].seq for j in jobs):
            links["next"] = _link(
                url, [*filters[:-1], ("after", encode_cursor(record, page[-1].seq))], per_page
            )
        if page and any(j.seq < page[0].seq for j in jobs):
            links["prev"] = _link(
                url, [*filters[:-1], ("before", encode_cursor(record, page[0].seq))], per_page
            )
        items = [self.state.render(j, api) for j in page]
        return json_reply(200, {"items": items, "links": links})

    # -- logs -----------------------------------------------------------------------------------

    def _log(
        self, request: FakeRequest, method: str, suffix: str | None, job: JobRecord, api: str
    ) -> Reply:
        log = job.log
        if method == "DELETE":
            job.log = EMPTY_LOG
            return Reply(204, [])
        # A bare HEAD .../log gives the raw size (what the facts page documents); asked for
        # JSON or HTML (Accept or suffix) it describes that GET, like every other HEAD.
        kind = _wants(request, suffix, ("text", "json", "html") if method == "HEAD" else None)
        if method == "HEAD" and kind == "text":
            headers = [("Content-Type", _TEXT), ("Accept-Ranges", "bytes")]
            return Reply(200, headers, length=log.size, stream=())
        url = self.state.all_urls(job, api)["log_url"]
        if kind == "json":
            if log.size <= INLINE_LIMIT:
                return Reply(200, [("Content-Type", _JSON)], b"".join(json_log_chunks(log, url)))
            return Reply(200, [("Content-Type", _JSON)], stream=json_log_chunks(log, url))
        if kind == "html":
            if log.size <= INLINE_LIMIT:
                return Reply(200, [("Content-Type", _HTML)], b"".join(html_log_chunks(log)))
            return Reply(200, [("Content-Type", _HTML)], stream=html_log_chunks(log))
        headers = [("Content-Type", _TEXT), ("Accept-Ranges", "bytes")]
        wanted = _parse_range(request.headers.get("range", ""))
        if wanted is not None:
            span = _satisfiable(wanted, log.size)
            if span is None:
                return Reply(416, [*headers, ("Content-Range", f"bytes */{log.size}")])
            start, end = span
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{log.size}"))
            return Reply(206, headers, stream=log.iter_bytes(start, end), length=end - start)
        return Reply(200, headers, stream=log.iter_bytes(), length=log.size)


def _not_executed(reply: Reply) -> Reply:
    reply.executed = False
    return reply


def _json_body(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "Problems parsing JSON") from None


def _wants(request: FakeRequest, suffix: str | None, offered: Sequence[str] | None = None) -> str:
    """ "json", "text" or "html": by suffix, else by ``Accept`` (q-values, then order)."""
    if suffix is not None:
        return {".txt": "text", ".html": "html"}.get(suffix, "json")
    return negotiate(request.headers.get("accept", ""), offered or ("json", "text", "html"))


def negotiate(accept: str, offered: Sequence[str]) -> str:
    """The best of ``offered`` for an ``Accept`` value; ties go to the earlier one offered.

    Each kind takes the q-value of the most specific media range that matches it; the
    highest q wins, then the more specific range, then the range listed first. When nothing
    offered is acceptable the first kind offered is the answer (lenient, like most APIs).
    """
    ranges: list[tuple[str, str, float]] = []
    for part in accept.split(",") if accept.strip() else ["*/*"]:
        media, *params = (p.strip() for p in part.split(";"))
        kind, _, sub = media.lower().partition("/")
        if not kind or not sub:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
                if not 0.0 <= quality <= 1.0:  # also NaN
                    quality = 0.0
        ranges.append((kind, sub, quality))
    best: tuple[tuple[float, int, int, int], str] | None = None
    for rank, name in enumerate(offered):
        kind, sub = _MEDIA[name].split("/")
        specific = {(kind, sub): 2, (kind, "*"): 1, ("*", "*"): 0}
        matches = [
            (specific[(r_kind, r_sub)], -index, quality)
            for index, (r_kind, r_sub, quality) in enumerate(ranges)
            if (r_kind, r_sub) in specific
        ]
        if not matches:
            continue
        specificity, position, quality = max(matches)  # the most specific range decides
        if quality <= 0:
            continue
        key = (quality, specificity, position, -rank)
        if best is None or key > best[0]:
            best = (key, name)
    return best[1] if best is not None else offered[0]


def _multi(query: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in query:
        out.setdefault(key, []).append(value)
    return out


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise ApiError(400, f"include_retried_jobs must be true or false, got {value!r}")


def _per_page(value: str) -> int:
    number = ascii_int(value)
    if number is None or not 1 <= number <= 100:
        raise ApiError(400, f"per_page must be an integer from 1 to 100, got {value!r}")
    return int(value)


def _matches_state(job: JobRecord, states: list[str]) -> bool:
    state = job.state
    exit_status = job.data.get("exit_status")
    for wanted in states:
        if wanted in {"passed", "failed"}:
            # passed/failed are derived from the exit status of finished jobs.
            if state in {"passed", "failed"} and exit_status is not None:
                if (exit_status == 0) == (wanted == "passed"):
                    return True
            elif state == wanted:
                return True
            if wanted == "failed" and job.declared_failing:
                return True
        elif state == wanted:
            return True
    return False


def _link(url: str, params: list[tuple[str, str]], per_page: int) -> str:
    pairs = [*params, ("per_page", str(per_page))]
    return url + "?" + "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs)


def _parse_range(header: str) -> tuple[int | None, int | None] | None:
    """``(first, last)`` of one ``bytes=`` range; ``None`` means ignore the header.

    RFC 9110: a Range that does not parse, has another unit, or (here) asks for several
    ranges is ignored and the whole representation is sent with 200.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = (int(g) if g else None for g in match.groups())
    if first is None and last is None:
        return None
    if first is not None and last is not None and first > last:
        return None
    return first, last


def _satisfiable(wanted: tuple[int | None, int | None], size: int) -> tuple[int, int] | None:
    """``[start, end)`` within ``size`` bytes, or ``None`` when unsatisfiable (416)."""
    first, last = wanted
    if first is None:
        assert last is not None
        if last == 0 or size == 0:
            return None
        return max(0, size - last), size
    if first >= size:
        return None
    return first, size if last is None else min(size, last + 1)
