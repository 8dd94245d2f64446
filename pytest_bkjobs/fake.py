"""A stateful fake Buildkite Jobs API: one backend, two front doors.

``FakeBuildkite.handler`` answers ``httpx.Request`` objects in-process (``httpx.MockTransport``,
respx side effects); ``FakeBuildkite.serve()`` runs the same backend as a real HTTP server on a
loopback port. Seed it with ``add_build``/``add_job``/``load_build``/``sample_build``, drive
it with ``finish_job``/``on_retry``, and inspect it with ``job``/``requests``/``retry_calls``.
"""

from __future__ import annotations

import copy
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import httpx

from ._client import AsyncJobsClient, JobsClient
from ._config import DEFAULT_BASE_URL
from ._fake_backend import ALL_SCOPES, Backend
from ._fake_checks import (
    FAULT_BODIES,
    FAULT_KINDS,
    check_build_state,
    check_choice,
    check_fault_status,
    check_int,
    check_method,
    check_methods,
    check_number,
    check_path_pattern,
    check_port,
    check_rate,
    check_scopes,
    check_slug,
    check_token,
)
from ._fake_http import FakeRequest, Fault, RandomFaults, RecordedRequest, TokenInfo, chunked
from ._fake_logs import BytesLog, LogSource, SyntheticLog
from ._fake_sample import SampleBuild, seed_sample
from ._fake_server import serve as _serve
from ._fake_state import CONFIG_KEYS, OUTCOMES, FakeState, JobRecord, Outcome, Script

__all__ = [
    "ALL_SCOPES",
    "BytesLog",
    "FakeBuildkite",
    "Fault",
    "LogSource",
    "RecordedRequest",
    "SampleBuild",
    "SteppingClock",
    "SyntheticLog",
    "run_fake_server",
]


class _Stream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body usable by both the sync and the async client, produced lazily."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from chunked(self._chunks)
        except Exception as exc:  # recorded in FakeBuildkite.errors by the backend
            # What the loopback server's client sees: the connection ends mid-body.
            raise httpx.RemoteProtocolError(
                f"fake Buildkite: error while sending the body ({type(exc).__name__})"
            ) from exc

    async def __aiter__(self) -> Any:
        for chunk in self:
            yield chunk


def _check_polls(after_polls: object) -> int:
    if isinstance(after_polls, bool) or not isinstance(after_polls, int) or after_polls < 0:
        raise ValueError(f"after_polls must be an integer >= 0, got {after_polls!r}")
    return after_polls


def _check_outcome(outcome: Outcome) -> None:
    if callable(outcome) or (isinstance(outcome, int) and not isinstance(outcome, bool)):
        return
    if outcome not in OUTCOMES:
        raise ValueError(
            f"outcome must be one of {', '.join(OUTCOMES)}, an exit status or a callable,"
            f" got {outcome!r}"
        )


def _check_scopes(scopes: Iterable[str] | None) -> frozenset[str]:
    return check_scopes(scopes, ALL_SCOPES)


#: 2026-01-01T00:00:00Z: where ``SteppingClock`` starts, so sample timestamps never change.
FIXED_START = 1767225600.0


class SteppingClock:
    """A deterministic clock: ``start``, then ``step`` seconds later at each reading."""

    def __init__(self, start: float = FIXED_START, step: float = 1.0) -> None:
        self._now = float(start)
        self._step = float(step)
        self._lock = threading.Lock()  # a served fake reads it from several threads

    def __call__(self) -> float:
        with self._lock:
            now = self._now
            self._now += self._step
            return now


class FakeBuildkite:
    """One fake Buildkite organisation; thread-safe, so a loopback server can share it."""

    def __init__(
        self,
        org: str = "acme",
        token: str = "fake-token",
        scopes: Iterable[str] | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int = 0,
        base_url: str = DEFAULT_BASE_URL,
    ) -> None:
        check_slug("org", org)
        check_token(token)
        for name, function in (("clock", clock or time.time), ("sleep", sleep)):
            if not callable(function):
                raise TypeError(f"{name} must be a callable, got {function!r}")
        check_int("seed", seed)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.org = org
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._scopes = _check_scopes(scopes)
        self._clock = clock or time.time
        self._state = FakeState(org, self._clock, seed)
        self._backend = Backend(self._state, self._clock, sleep)
        self._backend.on_control_reset = self.reset
        self._last_sample: SampleBuild | None = None
        self._bind_token()

    def __repr__(self) -> str:
        return f"FakeBuildkite(org={self.org!r}, builds={len(self._state.builds)})"

    def _bind_token(self) -> None:
        self._backend.tokens = {self._token: TokenInfo(self._scopes, self._state.default_user_id)}

    @property
    def token(self) -> str:
        """The API token the fake accepts (a fake secret; fine to print)."""
        return self._token

    @property
    def user_id(self) -> str:
        """The id of the user who owns the token (the default retrier and unblocker)."""
        return self._state.default_user_id

    def reset(self) -> None:
        """Back to the state right after construction: no builds, requests, faults or limits."""
        with self._backend.lock:
            self._state.reset()
            self._backend.reset_traffic()
            self._backend.latency = 0.0
            self._backend.org_limit = self._backend.user_limit = None
            self._last_sample = None
            self._bind_token()

    # -- users and tokens -----------------------------------------------------------------------

    def add_user(self, name: str, email: str | None = None) -> str:
        """Add a user of the organisation (a valid ``unblocker``); returns its id."""
        with self._backend.lock:
            return self._state.add_user(name, email)

    def add_token(self, token: str, scopes: Iterable[str] | None = None, *, name: str = "") -> str:
        """Accept another token, owned by a new user (own rate-limit window); returns its id.

        ``scopes=None`` gives every Jobs API scope. The main token's scopes are fixed by
        ``FakeBuildkite(scopes=...)``: adding it (or any token twice) is a ``ValueError``.
        """
        check_token(token)
        chosen = _check_scopes(scopes)
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        with self._backend.lock:
            if token in self._backend.tokens:
                which = "the fake's main token" if token == self._token else "already added"
                raise ValueError(
                    f"that token is {which}; its scopes cannot change (the main token's come"
                    " from FakeBuildkite(scopes=...)); add a different token"
                )
            user_id = self._state.add_user(name or f"Token user {len(self._backend.tokens) + 1}")
            self._backend.tokens[token] = TokenInfo(chosen, user_id)
            return user_id

    # -- seeding --------------------------------------------------------------------------------

    def add_build(
        self, pipeline: str, *, number: int | None = None, state: str = "running", **fields: Any
    ) -> int:
        """Add a build; returns its number (the next free one unless given)."""
        with self._backend.lock:
            return self._state.add_build(pipeline, number, state, fields)

    def set_build_state(self, pipeline: str, number: int, state: str) -> None:
        """Change a build's state (``canceled`` makes its jobs refuse retry and unblock)."""
        check_build_state(state)
        with self._backend.lock:
            self._state.get_build(pipeline, number).data["state"] = state

    def build(self, pipeline: str, number: int) -> dict[str, Any]:
        """The build's JSON (without its jobs)."""
        with self._backend.lock:
            return copy.deepcopy(self._state.get_build(pipeline, number).data)

    def job_ids(self, pipeline: str, number: int) -> list[str]:
        """Ids of the build's jobs in creation order (retries included)."""
        with self._backend.lock:
            return list(self._state.get_build(pipeline, number).job_ids)

    def add_job(self, pipeline: str, build: int, **job_fields: Any) -> str:
        """Add a job to a build; returns its id.

        Any JSON field may be given (defaults follow the spec, ``type="script"``,
        ``state="passed"``); ``state``, ``exit_status`` and ``id`` are checked. Besides:
        ``log=`` (str, bytes or a ``LogSource`` such as ``SyntheticLog``), ``env=`` (names like
        ``MY_VAR`` to strings; for script jobs merged over the ``BUILDKITE_*`` defaults),
        ``permit_on_passed=`` (allow retrying when passed) and ``declared_failing=`` (an
        "early failure declaration": ``state[]=failed`` lists it while its state is running).
        A near miss of these keywords (``permit_on_pass=``) is a ``TypeError``.
        """
        with self._backend.lock:
            return self._state.add_job(pipeline, build, **job_fields)

    def load_build(self, build_json: Mapping[str, Any], *, pipeline: str | None = None) -> int:
        """Seed a build and its jobs from a real build payload; returns the build number."""
        with self._backend.lock:
            return self._state.load_build(build_json, pipeline)

    def load_builds(
        self, builds_json: Iterable[Mapping[str, Any]], *, pipeline: str | None = None
    ) -> list[int]:
        """Seed every build of a list payload (``GET .../builds``); returns their numbers."""
        return [self.load_build(build, pipeline=pipeline) for build in builds_json]

    def sample_build(self, pipeline: str = "sample-app") -> SampleBuild:
        """Seed a realistic build with every kind of job; see ``SampleBuild.job_ids``."""
        with self._backend.lock:
            self._last_sample = seed_sample(self._state, pipeline)
            return self._last_sample

    @property
    def last_sample(self) -> SampleBuild | None:
        """The build the latest ``sample_build()`` seeded (``bk_build_context`` seeds one)."""
        return self._last_sample

    def update_job(self, job_id: str, **job_fields: Any) -> None:
        """Overwrite JSON fields of a job (``log``, ``env`` and the other keywords too).

        ``id`` and ``type`` cannot change (they place the job in the fake's indexes and
        routes); ``env`` replaces the whole environment.
        """
        for key in ("id", "type"):
            if key in job_fields:
                raise ValueError(f"update_job cannot change a job's {key}; add a new job instead")
        config = {k: job_fields.pop(k) for k in list(job_fields) if k in CONFIG_KEYS}
        with self._backend.lock:
            job = self._job(job_id)
            self._state.check_fields(job_fields, str(job.data.get("type", "script")))
            checked = self._state.check_config(config)
            for key in ("permit_on_passed", "declared_failing"):
                if key in checked:
                    setattr(job, key, checked[key])
            if "log" in checked:
                job.log = checked["log"]
            if "env" in config:
                job.env = checked.get("env") or {}
            job.data.update(job_fields)

    def append_log(self, job_id: str, data: bytes | str) -> None:
        """Append to an in-memory log (a running job's log grows as it uploads chunks)."""
        chunk = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        with self._backend.lock:
            job = self._job(job_id)
            job.log = BytesLog(job.log.read_all() + chunk)

    # -- inspection -----------------------------------------------------------------------------

    def _job(self, job_id: str) -> JobRecord:
        job = self._state.jobs.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r} in the fake")
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's current JSON, as ``GET`` would answer (links under ``base_url``)."""
        with self._backend.lock:
            return self._state.render(self._job(job_id), self.base_url)

    def log(self, job_id: str) -> bytes:
        """The job's whole log (do not call on a huge synthetic log)."""
        with self._backend.lock:
            return self._job(job_id).log.read_all()

    def env(self, job_id: str) -> dict[str, str]:
        """The job's environment."""
        with self._backend.lock:
            return dict(self._job(job_id).env)

    def unblock_fields(self, job_id: str) -> dict[str, Any] | None:
        """The ``fields`` a manual job was unblocked with (``None`` while still blocked)."""
        with self._backend.lock:
            fields = self._job(job_id).unblock_fields
            return copy.deepcopy(fields)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first (the Authorization header shows ``***``)."""
        with self._backend.lock:
            return list(self._backend.requests)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised while answering (each answered 500), oldest first.

        A bug in the fake, or code of yours that raised (an ``outcome`` of
        ``script_job``/``on_retry``, a ``LogSource``). Before the answer started, the request
        shows outcome "error"; in the middle of a streamed log the connection is cut
        (in-process: ``httpx.RemoteProtocolError``).
        """
        with self._backend.lock:
            return list(self._backend.errors)

    def clear_requests(self) -> None:
        """Forget the recorded requests, retry counts and errors."""
        with self._backend.lock:
            self._backend.requests.clear()
            self._backend.retry_counts.clear()
            self._backend.errors.clear()

    def retry_calls(self, job_id: str) -> int:
        """How many retry PUTs for ``job_id`` the server executed, successful or not.

        Counted: every ``PUT .../jobs/{job_id}/retry`` (either route family) that passed
        authentication, the rate limits and the scope check and found the job, whatever it
        then answered (200, or a 400/422 refusal such as "Jobs can only be retried once"),
        including "lost" faults (executed, answer dropped). Not counted: 401/403/404/429
        answers and "error"/"drop" faults (not executed).
        """
        with self._backend.lock:
            return self._backend.retry_counts.get(job_id, 0)

    # -- progress -------------------------------------------------------------------------------

    def start_job(self, job_id: str) -> None:
        """Move a job to ``running``."""
        with self._backend.lock:
            self._state.start_job(self._job(job_id))

    def finish_job(
        self,
        job_id: str,
        exit_status: int | None,
        *,
        state: str | None = None,
        soft_failed: bool | None = None,
    ) -> None:
        """Finish a script job: ``passed`` on exit status 0, else ``failed`` (or ``state``).

        ``exit_status`` is an integer or ``None``; ``state`` a job state such as "timed_out".
        """
        with self._backend.lock:
            self._state.finish_job(self._job(job_id), exit_status, state, soft_failed)

    def on_retry(self, outcome: Outcome | None = "passed", *, after_polls: int = 2) -> None:
        """Make every job created by a retry finish on its own.

        After ``after_polls`` GETs that show the job (``GET`` of it, or a listing of its build)
        it finishes with ``outcome``: "passed", "failed", "timed_out", "canceled", an exit
        status, or a callable given the job's JSON and returning one of those. Before that,
        the first poll moves it to ``running``. ``on_retry(None)`` turns this off.
        """
        with self._backend.lock:
            if outcome is None:
                self._state.retry_script = None
                return
            _check_outcome(outcome)
            self._state.retry_script = Script(outcome, _check_polls(after_polls))

    def script_job(self, job_id: str, outcome: Outcome, *, after_polls: int = 2) -> None:
        """Make one job finish on its own after ``after_polls`` GETs (see ``on_retry``)."""
        _check_outcome(outcome)
        script = Script(outcome, _check_polls(after_polls))
        with self._backend.lock:
            job = self._job(job_id)
            self._state.check_runs(job)
            job.script = script

    # -- rate limits, latency and faults --------------------------------------------------------

    def set_rate_limits(
        self, org: int | None = None, user: int | None = None, *, window: float = 60.0
    ) -> None:
        """Enforce per-organisation and per-user request limits per ``window`` seconds.

        ``None`` (the default for both) enforces nothing; the headers then show Buildkite's
        usual 200 and 50 as untouched.
        """
        for name, limit in (("org", org), ("user", user)):
            if limit is not None:
                check_int(f"{name} limit", limit, 1)
        window = check_number("window", window, positive=True)
        with self._backend.lock:
            self._backend.org_limit, self._backend.user_limit = org, user
            self._backend.window = window

    @property
    def latency(self) -> float:
        """Seconds every request waits before being handled (uses the injected ``sleep``)."""
        return self._backend.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._backend.latency = check_number("latency", seconds, positive=False)

    def inject_fault(
        self,
        kind: str = "error",
        *,
        status: int = 502,
        times: int | None = 1,
        method: str | None = None,
        path: str | None = None,
        body: str | None = None,
    ) -> Fault:
        """Fail the next ``times`` matching requests (``None``: all of them).

        ``kind``: "error" answers ``status`` without executing (an HTML page for 502-504, as a
        proxy does; ``body="json"|"html"|"empty"`` to choose); "drop" closes the connection
        without executing; "lost" executes the request, then closes the connection without
        the answer. In-process a drop raises ``httpx.RemoteProtocolError`` (what the loopback
        server's closed socket gives) and a lost answer ``httpx.ReadTimeout``; over the
        loopback server both close the socket. ``path`` is a
        regular expression searched in the request path, ``method`` e.g. "PUT". ``status``
        is 500-599; ``times`` a positive integer or ``None``. Every argument is checked here.
        """
        check_choice("fault kind", kind, FAULT_KINDS)
        check_fault_status(status)
        if times is not None:
            check_int("times", times, 1)
        if body is not None:
            check_choice("fault body", body, FAULT_BODIES)
        fault = Fault(kind, status, times, check_method(method), check_path_pattern(path), body)
        with self._backend.lock:
            self._backend.faults.append(fault)
        return fault

    def random_faults(
        self,
        rate: float,
        *,
        seed: int = 0,
        kinds: Iterable[str] = ("error",),
        statuses: Iterable[int] = (502, 503, 504),
        methods: Iterable[str] | None = None,
    ) -> None:
        """Fail each request with probability ``rate`` (0 to 1), reproducibly from ``seed``.

        ``kinds`` and ``statuses`` (500-599) are picked at random for each fault; ``methods``
        (e.g. ``["GET"]``) limits the faults to those methods.
        """
        rate = check_rate(rate)
        check_int("seed", seed)
        chosen: list[tuple[Any, ...]] = []
        values: Iterable[Any]
        for name, values in (("kinds", kinds), ("statuses", statuses)):
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise TypeError(f"{name} must be a list, got {values!r}")
            chosen.append(tuple(values))
            if not chosen[-1]:
                raise ValueError(f"{name} must not be empty")
        for kind in chosen[0]:
            check_choice("fault kind", kind, FAULT_KINDS)
        for status in chosen[1]:
            check_fault_status(status)
        wanted = check_methods(methods)
        with self._backend.lock:
            self._backend.random_faults = RandomFaults(
                rate,
                random.Random(seed),
                chosen[0],
                tuple(int(s) for s in chosen[1]),
                wanted,
            )

    def clear_faults(self) -> None:
        """Remove scripted and random faults and latency."""
        with self._backend.lock:
            self._backend.faults = []
            self._backend.random_faults = None
            self._backend.latency = 0.0

    # -- front doors ----------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        """Answer an ``httpx.Request`` in-process (for ``httpx.MockTransport`` or respx)."""
        body = request.read()
        url = request.url
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        reply = self._backend.dispatch(
            FakeRequest(
                method=request.method,
                origin=origin,
                target=url.raw_path.decode("ascii"),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        if reply.drop:
            if reply.executed:
                raise httpx.ReadTimeout(
                    "fake Buildkite: executed the request, then lost the answer", request=request
                )
            # Like the loopback server closing the socket: the request was sent, no answer came.
            raise httpx.RemoteProtocolError(
                "fake Buildkite: server disconnected without sending a response", request=request
            )
        headers = list(reply.headers)
        head = request.method == "HEAD"
        if reply.stream is None:
            if not head:
                return httpx.Response(reply.status, headers=headers, content=reply.body)
            # What the GET would say, without its body (like the loopback server).
            headers.append(("Content-Length", str(len(reply.body))))
            return httpx.Response(reply.status, headers=headers, content=b"")
        if reply.length is not None:
            headers.append(("Content-Length", str(reply.length)))
        if head:
            return httpx.Response(reply.status, headers=headers, content=b"")
        return httpx.Response(reply.status, headers=headers, stream=_Stream(reply.stream))

    def transport(self) -> httpx.MockTransport:
        """An httpx transport (sync and async) wired to ``handler``."""
        return httpx.MockTransport(self.handler)

    def client(self, **kwargs: Any) -> JobsClient:
        """A ``JobsClient`` talking to this fake in-process (kwargs pass through)."""
        kwargs.setdefault("token", self._token)
        kwargs.setdefault("org", self.org)
        kwargs.setdefault("base_url", self.base_url)
        return JobsClient(transport=self.transport(), **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncJobsClient:
        """An ``AsyncJobsClient`` talking to this fake in-process (kwargs pass through)."""
        kwargs.setdefault("token", self._token)
        kwargs.setdefault("org", self.org)
        kwargs.setdefault("base_url", self.base_url)
        return AsyncJobsClient(transport=self.transport(), **kwargs)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> AbstractContextManager[str]:
        """Run a real HTTP server on ``host:port`` (0: any free port) in a thread.

        A context manager yielding the base URL ``http://HOST:PORT/v2``; on exit the server
        stops, every connection is closed and every thread joined. A port that cannot be
        bound raises ``ConfigurationError``. ``POST /__fake__/reset``
        calls ``reset()``; ``GET /__fake__/health`` answers ``{"ok": true}``.
        """
        host, port = check_port(host, port)
        return _serve(self._backend, host, port)

    def env_lines(self, base_url: str) -> list[str]:
        """``KEY=value`` lines pointing a client (``from_env``) at this fake."""
        return [
            f"BUILDKITE_API_URL={base_url}",
            f"BUILDKITE_API_TOKEN={self._token}",
            f"BUILDKITE_ORGANIZATION_SLUG={self.org}",
        ]


def run_fake_server(
    port: int = 0,
    sample: bool = False,
    org: str = "acme",
    token: str = "fake-token",
    print_fn: Callable[[str], None] = print,
    *,
    host: str = "127.0.0.1",
    stop: threading.Event | None = None,
    configure: Callable[[FakeBuildkite], str | None] | None = None,
    env_file: str | os.PathLike[str] | None = None,
    clock: Callable[[], float] | None = None,
) -> int:
    """Serve a fake until Ctrl-C (or ``stop`` is set), printing the settings to use; returns 0.

    ``configure(fake)`` runs after seeding (e.g. to make retried jobs finish on their own);
    the line it returns, if any, is printed with the settings. ``env_file`` receives the
    settings as ``KEY=value`` lines (written atomically), for ``source`` or as a ``.env``.
    ``clock`` defaults to a ``SteppingClock`` with ``sample``: recordings then never differ.
    """
    if clock is None and sample:
        clock = SteppingClock()
    fake = FakeBuildkite(org=org, token=token, clock=clock)
    seeded = fake.sample_build() if sample else None
    note = configure(fake) if configure is not None else None
    stop = stop or threading.Event()
    with fake.serve(host, port) as base_url:
        print_fn(f"Fake Buildkite Jobs API listening on {base_url} (organisation {org!r})")
        lines = fake.env_lines(base_url)
        if seeded is not None:
            print_fn(
                f"Sample build: {seeded.pipeline} #{seeded.number}; the settings below act as"
                " its running job."
            )
            keys = ("BUILDKITE_PIPELINE_SLUG", "BUILDKITE_BUILD_NUMBER", "BUILDKITE_JOB_ID")
            lines += [f"{key}={seeded.env[key]}" for key in keys]
        print_fn("Point a client at it with these settings (environment or .env):")
        print_fn("")
        for line in lines:  # unindented KEY=value: copy them as they are into a .env
            print_fn(line)
        print_fn("")
        if env_file is not None:
            from ._files import write_atomic

            write_atomic(env_file, "".join(f"{line}\n" for line in lines).encode())
            print_fn(f"Settings written to {os.fspath(env_file)} (source it, or use it as .env).")
        if note:
            print_fn(note)
        print_fn("Press Ctrl-C to stop.")
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            print_fn("Stopped.")
    return 0
