"""The fake's state: builds, jobs, logs, envs, users, and the Jobs API operations on them."""

from __future__ import annotations

import base64
import copy
import random
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from ._fake_checks import (
    JOB_TYPES,
    check_build_state,
    check_choice,
    check_env,
    check_exit_status,
    check_job_id,
    check_job_state,
    check_slug,
    is_int,
    near_config_key,
)
from ._fake_logs import EMPTY_LOG, LogSource, as_log_source

WEB = "https://buildkite.com"
MAX_JOBS_PER_BUILD = 4000
# Buildkite stores priorities as 32-bit integers.
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1
FINISHED = frozenset({"passed", "failed"})
RETRIABLE = frozenset({"failed", "timed_out", "canceled"})
OUTCOMES = ("passed", "failed", "timed_out", "canceled")

#: Job fields that are not part of the JSON but configure the fake.
CONFIG_KEYS = frozenset({"log", "env", "permit_on_passed", "declared_failing"})
_SCRIPT_URL_KEYS = ("build_url", "log_url", "raw_log_url", "artifacts_url")

Outcome = str | int | Callable[[dict[str, Any]], "str | int"]


class ApiError(Exception):
    """An API error answer: status and the ``message`` of its JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"message": self.message, **self.extra}


@dataclass
class Script:
    """How a job finishes on its own: after ``after_polls`` GETs, with ``outcome``."""

    outcome: Outcome
    after_polls: int
    polls: int = 0


@dataclass
class JobRecord:
    """One job: its JSON (without URLs) and what the fake needs besides."""

    data: dict[str, Any]
    pipeline: str
    build: int
    seq: int
    url_keys: tuple[str, ...]
    log: LogSource = EMPTY_LOG
    env: dict[str, str] = field(default_factory=dict)
    permit_on_passed: bool = False
    declared_failing: bool = False
    script: Script | None = None
    unblock_fields: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> str | None:
        state = self.data.get("state")
        return state if isinstance(state, str) else None


@dataclass
class BuildRecord:
    """One build and the ids of its jobs in creation order."""

    pipeline: str
    number: int
    data: dict[str, Any]
    job_ids: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return str(self.data.get("state") or "")


def encode_cursor(build: BuildRecord, seq: int) -> str:
    """An opaque cursor for a position in one build's job list."""
    text = f"job:{build.pipeline}/{build.number}:{seq}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, build: BuildRecord) -> int:
    """The position in a cursor made for ``build``, or ``ApiError`` 400."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        where, _, number = text.rpartition(":")
        if where == f"job:{build.pipeline}/{build.number}" and ascii_int(number) is not None:
            return int(number)
    except (ValueError, UnicodeDecodeError):
        pass
    raise ApiError(400, f"Invalid cursor: {cursor!r}")


def ascii_int(text: str) -> int | None:
    """The value of a string of ASCII digits (``str.isdigit`` also takes other scripts)."""
    return int(text) if re.fullmatch(r"[0-9]+", text) else None


class FakeState:
    """Everything the fake knows; not thread-safe by itself (the backend holds a lock)."""

    def __init__(self, org: str, clock: Callable[[], float], seed: int = 0) -> None:
        self.org = org
        self.clock = clock
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        """Forget all builds, jobs and users except the token owner."""
        self._rng = random.Random(self._seed)
        self.builds: dict[tuple[str, int], BuildRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.retry_script: Script | None = None
        self._seq = 0
        self.default_user_id = self.add_user("Fake User", "fake-user@example.com")

    # -- helpers --------------------------------------------------------------------------------

    def new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def now(self) -> str:
        moment = datetime.fromtimestamp(self.clock(), tz=timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @staticmethod
    def graphql_id(kind: str, ident: str) -> str:
        return base64.b64encode(f"{kind}---{ident}".encode()).decode()

    def add_user(self, name: str, email: str | None = None) -> str:
        """Add a user of the organisation (an unblocker must be one); returns its id."""
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"user name must be a non-empty string, got {name!r}")
        if email is not None and (not isinstance(email, str) or "@" not in email):
            raise ValueError(f"email must be an address like rm@example.com or None, got {email!r}")
        user_id = self.new_id()
        slug = re.sub(r"[^a-z0-9]+", ".", name.lower()).strip(".") or "user"
        self.users[user_id] = {
            "id": user_id,
            "graphql_id": self.graphql_id("User", user_id),
            "name": name,
            "email": email or f"{slug}@example.com",
            "avatar_url": "https://www.gravatar.com/avatar/00000000000000000000000000000000",
            "created_at": self.now(),
        }
        return user_id

    def user(self, user_id: str | None) -> dict[str, Any]:
        return copy.deepcopy(self.users[user_id or self.default_user_id])

    # -- builds ---------------------------------------------------------------------------------

    def add_build(
        self,
        pipeline: str,
        number: int | None = None,
        state: str = "running",
        fields: Mapping[str, Any] | None = None,
    ) -> int:
        number = self.check_new_build(pipeline, number, state)
        if fields is not None and not isinstance(fields, Mapping):
            raise TypeError(f"build fields must be a dict, got {type(fields).__name__}")
        build_id = self.new_id()
        now = self.now()
        data: dict[str, Any] = {
            "id": build_id,
            "graphql_id": self.graphql_id("Build", build_id),
            "number": number,
            "state": state,
            "web_url": f"{WEB}/{self.org}/{pipeline}/builds/{number}",
            "message": "Fake build",
            "commit": "a65572555600c07c7ee79a2bd909220e1ca5485b",
            "branch": "main",
            "created_at": now,
            "scheduled_at": now,
            "started_at": now,
            "finished_at": None,
        }
        data.update(fields or {})
        self.builds[(pipeline, number)] = BuildRecord(pipeline, number, data)
        return number

    def check_new_build(self, pipeline: str, number: int | None, state: str) -> int:
        """The number a new build would get; raises if the arguments are wrong."""
        check_slug("pipeline", pipeline)
        check_build_state(state)
        if number is None:
            number = 1 + max((n for p, n in self.builds if p == pipeline), default=0)
        if not is_int(number) or number < 1:
            raise ValueError(f"build number must be a positive integer, got {number!r}")
        if (pipeline, number) in self.builds:
            raise ValueError(f"build {pipeline}#{number} already exists; pick another number")
        return number

    def get_build(self, pipeline: str, number: int) -> BuildRecord:
        build = self.builds.get((pipeline, number))
        if build is None:
            known = ", ".join(f"{p}#{n}" for p, n in self.builds) or "none"
            raise LookupError(
                f"no build {pipeline}#{number} in the fake (known: {known}); call add_build first"
            )
        return build

    # -- jobs -----------------------------------------------------------------------------------

    def _defaults(self, kind: str, job_id: str, state: str | None, build: BuildRecord) -> Any:
        now = self.now()
        common: dict[str, Any] = {"id": job_id, "graphql_id": self.graphql_id("Job", job_id)}
        web_url = f"{WEB}/{self.org}/{build.pipeline}/builds/{build.number}#{job_id}"
        if kind == "waiter":
            # Real waiters often arrive as just {id, graphql_id, type}.
            return {**common, "type": "waiter", **({"state": state} if state else {})}, ()
        if kind == "manual":
            state = state or "blocked"
            return {
                **common,
                "type": "manual",
                "label": "Block",
                "step_key": None,
                "state": state,
                "web_url": None,
                "unblocked_by": None,
                "unblocked_at": None,
                "unblockable": state == "blocked",
                "unblock_url": None,
            }, ("unblock_url",)
        if kind == "trigger":
            state = state or "passed"
            return {
                **common,
                "type": "trigger",
                "name": "Trigger",
                "step_key": None,
                "state": state,
                "async": False,
                "web_url": web_url,
                "created_at": now,
                "scheduled_at": now,
                "runnable_at": now,
                "started_at": now,
                "finished_at": now if state in FINISHED else None,
                "triggered_build": None,
            }, ()
        state = state or "passed"
        finished = state in FINISHED or state in RETRIABLE or state in {"expired", "broken"}
        started = finished or state in {"running", "timing_out", "canceling"}
        exit_status = {"passed": 0, "failed": 1}.get(state, -1 if state in RETRIABLE else None)
        return {
            **common,
            "type": kind,
            "name": "Job",
            "step_key": None,
            "group_key": None,
            "step": {"id": self.new_id(), "signature": None},
            "priority": {"number": 0},
            "agent_query_rules": [],
            "state": state,
            "web_url": web_url,
            "command": "",
            "soft_failed": False,
            "exit_status": exit_status,
            "signal": None,
            "signal_reason": None,
            "broken_reason": None,
            "artifact_paths": None,
            "created_at": now,
            "scheduled_at": now,
            "runnable_at": now if started else None,
            "concurrency_wait_time_ms": None,
            "started_at": now if started else None,
            "finished_at": now if finished else None,
            "expired_at": None,
            "retried": False,
            "retried_in_job_id": None,
            "retries_count": None,
            "retry_source": None,
            "retry_type": None,
            "parallel_group_index": None,
            "parallel_group_total": None,
            "matrix": None,
            "agent": None,
            "retried_by": None,
            "cluster_id": None,
            "cluster_url": None,
            "cluster_queue_id": None,
            "cluster_queue_url": None,
        }, _SCRIPT_URL_KEYS

    def default_env(self, job: JobRecord, build: BuildRecord) -> dict[str, str]:
        data = job.data
        env = {
            "CI": "true",
            "BUILDKITE": "true",
            "BUILDKITE_ORGANIZATION_SLUG": self.org,
            "BUILDKITE_PIPELINE_SLUG": build.pipeline,
            "BUILDKITE_BUILD_NUMBER": str(build.number),
            "BUILDKITE_BUILD_ID": str(build.data.get("id", "")),
            "BUILDKITE_BUILD_URL": f"{WEB}/{self.org}/{build.pipeline}/builds/{build.number}",
            "BUILDKITE_BRANCH": str(build.data.get("branch") or "main"),
            "BUILDKITE_COMMIT": str(build.data.get("commit") or ""),
            "BUILDKITE_JOB_ID": job.id,
            "BUILDKITE_STEP_KEY": str(data.get("step_key") or ""),
            "BUILDKITE_LABEL": str(data.get("name") or data.get("label") or ""),
            "BUILDKITE_COMMAND": str(data.get("command") or ""),
            "BUILDKITE_RETRY_COUNT": str(data.get("retries_count") or 0),
            "BUILDKITE_AGENT_NAME": "fake-agent-1",
        }
        index, total = data.get("parallel_group_index"), data.get("parallel_group_total")
        if index is not None and total is not None:
            env["BUILDKITE_PARALLEL_JOB"] = str(index)
            env["BUILDKITE_PARALLEL_JOB_COUNT"] = str(total)
        return env

    @staticmethod
    def check_fields(fields: dict[str, Any], kind: str) -> None:
        """Refuse wrong states, exit statuses and typos of configuration keywords."""
        for key in fields:
            near = near_config_key(key, CONFIG_KEYS)
            if near is not None:
                raise TypeError(
                    f"unknown keyword {key!r}: did you mean {near!r}? (other keywords are"
                    " stored as JSON fields of the job)"
                )
        if fields.get("state") is not None:
            check_job_state(fields["state"])
        if "exit_status" in fields:
            if kind != "script":
                raise ValueError(f"a {kind} job has no exit_status; only script jobs run")
            check_exit_status(fields["exit_status"])

    @staticmethod
    def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
        """The fake-only keywords, checked: log, env, permit_on_passed, declared_failing."""
        checked = dict(config)
        if "log" in config:
            checked["log"] = as_log_source(config["log"])
        if config.get("env") is not None:
            checked["env"] = check_env(config["env"])
        for key in ("permit_on_passed", "declared_failing"):
            if key in config and not isinstance(config[key], bool):
                raise TypeError(f"{key} must be True or False, got {config[key]!r}")
        return checked

    def add_job(self, pipeline: str, build_number: int, **fields: Any) -> str:
        build = self.get_build(pipeline, build_number)
        if len(build.job_ids) >= MAX_JOBS_PER_BUILD:
            raise ValueError(f"build {pipeline}#{build_number} already has 4000 jobs (the limit)")
        config = self.check_config({k: fields.pop(k) for k in list(fields) if k in CONFIG_KEYS})
        kind = check_choice("job type", fields.get("type", "script"), JOB_TYPES)
        if "state" in fields and fields["state"] is None:
            del fields["state"]  # None: the type's default state
        self.check_fields(fields, kind)
        job_id = check_job_id(fields["id"]) if "id" in fields else self.new_id()
        if job_id in self.jobs:
            raise ValueError(f"a job with id {job_id} already exists in the fake")
        data, url_keys = self._defaults(kind, job_id, fields.get("state"), build)
        if "exit_status" in fields and kind == "script" and "state" not in fields:
            data["state"] = "passed" if fields["exit_status"] == 0 else "failed"
        data.update(fields)
        if kind == "manual" and "unblock_url" in url_keys:
            data.pop("unblock_url", None)
        return self._insert(build, data, url_keys, config)

    def _insert(
        self,
        build: BuildRecord,
        data: dict[str, Any],
        url_keys: tuple[str, ...],
        config: Mapping[str, Any],
    ) -> str:
        self._seq += 1
        job = JobRecord(data, build.pipeline, build.number, self._seq, url_keys)
        job.log = as_log_source(config.get("log"))
        job.permit_on_passed = bool(config.get("permit_on_passed", False))
        job.declared_failing = bool(config.get("declared_failing", False))
        if data.get("type", "script") == "script":
            job.env = self.default_env(job, build)
        job.env.update(config.get("env") or {})
        self.jobs[job.id] = job
        build.job_ids.append(job.id)
        return job.id

    def load_build(self, build_json: Mapping[str, Any], pipeline: str | None = None) -> int:
        if not isinstance(build_json, Mapping):
            raise TypeError(
                f"load_build takes one build object (a dict), got {type(build_json).__name__};"
                " for a list of builds use load_builds"
            )
        # Everything is checked before anything changes: a bad payload leaves no trace.
        slug = _pipeline_slug(build_json) if pipeline is None else pipeline
        number = build_json.get("number")
        if isinstance(number, str) and ascii_int(number) is not None:
            number = int(number)
        if not is_int(number):
            raise ValueError(f"the build payload has no integer 'number' (got {number!r})")
        state = build_json.get("state") or "running"
        number = self.check_new_build(slug, number, state)
        jobs = self._loadable_jobs(build_json.get("jobs"))
        extra = {k: v for k, v in build_json.items() if k not in {"jobs", "number", "state"}}
        self.add_build(slug, number, state, copy.deepcopy(extra))
        build = self.builds[(slug, number)]
        for data, keys in jobs:
            self._insert(build, data, keys, {})
        return number

    def _loadable_jobs(self, raw_jobs: Any) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
        """The payload's jobs, checked, each with the API links the fake will rewrite."""
        if raw_jobs is None:
            return []
        if isinstance(raw_jobs, (str, bytes, Mapping)) or not isinstance(raw_jobs, list):
            raise TypeError(f"the build payload's 'jobs' must be a list, got {raw_jobs!r:.60}")
        if len(raw_jobs) > MAX_JOBS_PER_BUILD:
            raise ValueError(f"the build payload has {len(raw_jobs)} jobs; the limit is 4000")
        seen: set[str] = set()
        out = []
        for index, raw in enumerate(raw_jobs):
            where = f"jobs[{index}]"
            if not isinstance(raw, Mapping):
                raise TypeError(f"{where} must be a job object, got {type(raw).__name__}")
            try:
                job_id = check_job_id(raw.get("id"))
                check_choice("job type", raw.get("type", "script"), JOB_TYPES)
                if raw.get("state") is not None:
                    check_job_state(raw["state"])
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if job_id in seen:
                raise ValueError(f"{where}: job id {job_id} appears twice in the payload")
            if job_id in self.jobs:
                raise ValueError(f"{where}: job {job_id} is already in the fake (loaded twice?)")
            seen.add(job_id)
            data = copy.deepcopy(dict(raw))
            # Rewrite the API links that exist so they point at the fake; a web link stays.
            keys = [k for k in (*_SCRIPT_URL_KEYS, "unblock_url") if data.get(k)]
            unblock = data.get("unblock_url")
            if isinstance(unblock, str) and unblock.startswith(WEB):
                keys.remove("unblock_url")
            for key in keys:
                data.pop(key)
            out.append((data, tuple(keys)))
        return out

    def job(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "No job found")
        return job

    def build_url(self, pipeline: str, number: int, api: str) -> str:
        org, slug = quote(self.org, safe=""), quote(pipeline, safe="")
        return f"{api}/organizations/{org}/pipelines/{slug}/builds/{number}"

    def all_urls(self, job: JobRecord, api: str) -> dict[str, str]:
        base = self.build_url(job.pipeline, job.build, api)
        job_url = f"{base}/jobs/{job.id}"
        return {
            "build_url": base,
            "log_url": f"{job_url}/log",
            "raw_log_url": f"{job_url}/log.txt",
            "artifacts_url": f"{job_url}/artifacts",
            "unblock_url": f"{job_url}/unblock",
        }

    def urls(self, job: JobRecord, api: str) -> dict[str, str]:
        """The API links this job's JSON carries (loaded payloads keep their own set)."""
        every = self.all_urls(job, api)
        return {k: every[k] for k in job.url_keys}

    def render_build(self, build: BuildRecord, api: str) -> dict[str, Any]:
        """The build's JSON with its jobs, as ``GET .../builds/{number}`` gives it."""
        data = copy.deepcopy(build.data)
        data["url"] = self.build_url(build.pipeline, build.number, api)
        data["jobs"] = [self.render(self.jobs[i], api) for i in build.job_ids]
        return data

    def render(self, job: JobRecord, api: str) -> dict[str, Any]:
        """The job's JSON with API links under ``api`` (the base URL the request came to)."""
        data = copy.deepcopy(job.data)
        data.update(self.urls(job, api))
        return data

    # -- progress -------------------------------------------------------------------------------

    def poll(self, job: JobRecord) -> None:
        """Count a GET that shows this job; a scripted job moves on."""
        script = job.script
        if script is None:
            return
        script.polls += 1
        if script.polls >= script.after_polls:
            self._finish_scripted(job)
        elif job.state in {"scheduled", "assigned", "accepted"}:
            self.start_job(job)

    def _finish_scripted(self, job: JobRecord) -> None:
        script = job.script
        assert script is not None
        job.script = None
        outcome = script.outcome
        if callable(outcome):
            outcome = outcome(copy.deepcopy(job.data))
        if not is_int(outcome) and outcome not in OUTCOMES:
            raise ValueError(
                f"the outcome callable of job {job.id} returned {outcome!r}; expected one of"
                f" {', '.join(OUTCOMES)} or an integer exit status"
            )
        if isinstance(outcome, int):
            self.finish_job(job, outcome)
        elif outcome == "passed":
            self.finish_job(job, 0)
        elif outcome == "failed":
            self.finish_job(job, 1)
        else:
            self.finish_job(job, -1, state=outcome)

    @staticmethod
    def check_runs(job: JobRecord) -> None:
        kind = job.data.get("type", "script")
        if kind != "script":
            raise ValueError(
                f"job {job.id} is a {kind} job; only script jobs run and finish"
                " (use update_job(job_id, state=...) to change its state)"
            )

    def start_job(self, job: JobRecord) -> None:
        self.check_runs(job)
        now = self.now()
        job.data["state"] = "running"
        job.data["runnable_at"] = job.data.get("runnable_at") or now
        job.data["started_at"] = job.data.get("started_at") or now

    def finish_job(
        self,
        job: JobRecord,
        exit_status: int | None,
        state: str | None = None,
        soft_failed: bool | None = None,
    ) -> None:
        self.check_runs(job)
        check_exit_status(exit_status)
        if state is not None:
            check_job_state(state)
        if soft_failed is not None and not isinstance(soft_failed, bool):
            raise TypeError(f"soft_failed must be True, False or None, got {soft_failed!r}")
        if state is None:
            state = "passed" if exit_status == 0 else "failed"
        if job.state not in {"running", "timing_out", "canceling"}:
            self.start_job(job)
        job.data.update(state=state, exit_status=exit_status, finished_at=self.now())
        if soft_failed is not None:
            job.data["soft_failed"] = soft_failed
        job.declared_failing = False
        job.script = None

    # -- operations -----------------------------------------------------------------------------

    def retry(self, job: JobRecord, user_id: str) -> JobRecord:
        build = self.builds[(job.pipeline, job.build)]
        if build.state in {"canceled", "canceling"}:
            raise ApiError(422, "Jobs from canceled builds cannot be retried")
        if job.data.get("retried") in (True, "true"):
            raise ApiError(400, "Jobs can only be retried once")
        retriable = job.state in RETRIABLE or (job.state == "passed" and job.permit_on_passed)
        if job.data.get("type", "script") != "script" or not retriable:
            raise ApiError(400, "Only failed, timed out or canceled jobs can be retried")
        if len(build.job_ids) >= MAX_JOBS_PER_BUILD:
            raise ApiError(422, "A build can't have more than 4000 jobs, including retries")
        new_id = self.new_id()
        now = self.now()
        user = self.user(user_id)
        data = copy.deepcopy(job.data)
        data.update(
            id=new_id,
            graphql_id=self.graphql_id("Job", new_id),
            state="scheduled",
            web_url=f"{WEB}/{self.org}/{job.pipeline}/builds/{job.build}#{new_id}",
            exit_status=None,
            signal=None,
            signal_reason=None,
            soft_failed=False,
            created_at=now,
            scheduled_at=now,
            runnable_at=None,
            started_at=None,
            finished_at=None,
            expired_at=None,
            agent=None,
            retried=False,
            retried_in_job_id=None,
            retries_count=(_int(job.data.get("retries_count")) or 0) + 1,
            retry_source={"job_id": job.id, "retry_type": "manual", "retried_by": user},
            retried_by=user,
        )
        env = dict(job.env)
        if env:
            env.update(BUILDKITE_JOB_ID=new_id, BUILDKITE_RETRY_COUNT=str(data["retries_count"]))
        new_id = self._insert(
            build, data, job.url_keys, {"env": env, "permit_on_passed": job.permit_on_passed}
        )
        job.data["retried"] = True
        job.data["retried_in_job_id"] = new_id
        new = self.jobs[new_id]
        if self.retry_script is not None:
            new.script = Script(self.retry_script.outcome, self.retry_script.after_polls)
        return new

    def reprioritize(self, job: JobRecord, body: Any) -> None:
        # Only command jobs wait for an agent, so only they have a priority.
        if job.data.get("type", "script") != "script":
            raise ApiError(400, "This job type cannot be reprioritized")
        priority = body.get("priority") if isinstance(body, Mapping) else None
        if not is_int(priority):
            raise ApiError(400, "Priority must be an integer")
        assert isinstance(priority, int)
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ApiError(
                400, f"Priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}"
            )
        job.data["priority"] = {"number": priority}

    def unblock(self, job: JobRecord, body: Any, user_id: str) -> None:
        if job.data.get("type") != "manual":
            raise ApiError(400, "This job type cannot be unblocked")
        build = self.builds[(job.pipeline, job.build)]
        if build.state in {"canceled", "canceling"}:
            raise ApiError(422, "Jobs from canceled builds cannot be unblocked")
        if job.state != "blocked":
            raise ApiError(422, "The job's state must be blocked")
        body = body if isinstance(body, Mapping) else {}
        unblocker = body.get("unblocker")
        # Any JSON value can arrive here: only a string naming a known user is one.
        if unblocker is not None and not (isinstance(unblocker, str) and unblocker in self.users):
            raise ApiError(422, "Unblocker is not a valid user id for this organization")
        fields = body.get("fields")
        if fields is not None and not isinstance(fields, Mapping):
            raise ApiError(400, "Fields must be an object of field keys to values")
        job.unblock_fields = dict(fields or {})
        job.data.update(
            state="unblocked",
            unblocked_by=self.user(unblocker or user_id),
            unblocked_at=self.now(),
            unblockable=False,
        )


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _pipeline_slug(build_json: Mapping[str, Any]) -> str:
    pipeline = build_json.get("pipeline")
    if isinstance(pipeline, Mapping) and isinstance(pipeline.get("slug"), str):
        return check_slug("pipeline slug", pipeline["slug"])
    match = re.search(r"/pipelines/([^/]+)/builds/", str(build_json.get("url") or ""))
    if match:
        return match.group(1)
    raise ValueError("cannot tell the pipeline of this build payload; pass pipeline=...")
