"""Typed, frozen models of Jobs API payloads, parsed tolerantly (old payloads drift)."""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from ._errors import InvalidResponseError

__all__ = [
    "FILTER_STATES",
    "FINAL_STATES",
    "Job",
    "JobLog",
    "JobState",
    "JobsPage",
    "RetrySource",
    "User",
]


_STR_FIELDS = (
    "type",
    "name",
    "label",
    "graphql_id",
    "step_key",
    "group_key",
    "command",
    "signal",
    "signal_reason",
    "artifact_paths",
    "build_url",
    "web_url",
    "log_url",
    "raw_log_url",
    "artifacts_url",
    "retried_in_job_id",
    "retry_type",
    "cluster_id",
    "cluster_url",
    "cluster_queue_id",
    "cluster_queue_url",
    "unblock_url",
)
_TIME_FIELDS = (
    "created_at",
    "scheduled_at",
    "runnable_at",
    "started_at",
    "finished_at",
    "expired_at",
    "unblocked_at",
)
_INT_FIELDS = ("exit_status", "retries_count", "parallel_group_index", "parallel_group_total")
_DICT_FIELDS = ("matrix", "agent", "triggered_build")


class JobState(str, enum.Enum):
    """A job's state as the REST API reports it; ``UNKNOWN`` stands for any newer value."""

    PENDING = "pending"
    WAITING = "waiting"
    WAITING_FAILED = "waiting_failed"
    BLOCKED = "blocked"
    BLOCKED_FAILED = "blocked_failed"
    UNBLOCKED = "unblocked"
    UNBLOCKED_FAILED = "unblocked_failed"
    LIMITING = "limiting"
    LIMITED = "limited"
    SCHEDULED = "scheduled"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    TIMING_OUT = "timing_out"
    TIMED_OUT = "timed_out"
    CANCELING = "canceling"
    CANCELED = "canceled"
    SKIPPED = "skipped"
    BROKEN = "broken"
    EXPIRED = "expired"
    FINISHED = "finished"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


#: The values ``state[]`` accepts when listing jobs (``finished`` is not one of them).
FILTER_STATES: tuple[str, ...] = (
    "pending",
    "waiting",
    "waiting_failed",
    "blocked",
    "blocked_failed",
    "unblocked",
    "unblocked_failed",
    "scheduled",
    "assigned",
    "accepted",
    "running",
    "passed",
    "failed",
    "timed_out",
    "timing_out",
    "canceled",
    "canceling",
    "skipped",
    "broken",
    "expired",
    "limited",
)

#: States a job does not leave on its own.
FINAL_STATES: frozenset[JobState] = frozenset(
    {
        JobState.PASSED,
        JobState.FAILED,
        JobState.TIMED_OUT,
        JobState.CANCELED,
        JobState.SKIPPED,
        JobState.BROKEN,
        JobState.EXPIRED,
        JobState.FINISHED,
        JobState.WAITING_FAILED,
        JobState.BLOCKED_FAILED,
        JobState.UNBLOCKED_FAILED,
    }
)

_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$"
)
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n", ""}

_STATES: dict[str, JobState] = {state.value: state for state in JobState}


def _from_iso_z_py310(value: str) -> datetime:
    return datetime.fromisoformat(value[:-1] + "+00:00")


# Python 3.11 reads the trailing "Z" itself, twice as fast as rewriting it to "+00:00".
_from_iso_z = datetime.fromisoformat if sys.version_info >= (3, 11) else _from_iso_z_py310


def parse_time(value: Any) -> datetime | None:
    """Parse ISO-8601 or the legacy ``2015-04-23 16:55:52 UTC`` form to an aware datetime."""
    if not isinstance(value, str):
        return None
    # Fast path for what Buildkite sends today ("2015-05-09T21:05:59.874Z"): a listing parses
    # seven timestamps a job, and the regex below costs three times as much. These three
    # shapes parse the same on every supported Python.
    if (
        len(value) in (20, 24, 27)
        and value[-1] == "Z"
        and value[10] == "T"
        and value[7] == "-"
        and value[13] == value[16] == ":"  # 3.11+ also reads basic times (T165552), 3.10 not
    ):
        try:
            return _from_iso_z(value)
        except ValueError:
            pass
    match = _TIME.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz = timezone.utc
    try:
        if zone and zone[0] in "+-":
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            tz = timezone(offset if zone[0] == "+" else -offset)  # |offset| >= 24h: ValueError
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:  # month 13, an offset of a day or more
        return None


def parse_bool(value: Any) -> bool | None:
    """Read a boolean that may arrive as a bool, a number or a string."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def parse_int(value: Any) -> int | None:
    """Read an integer that may arrive as a string; a bool is not an integer."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _str(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    return dict(value) if isinstance(value, Mapping) else None


def parse_state(value: Any) -> JobState | None:
    """Map a state string to ``JobState``; unknown strings become ``JobState.UNKNOWN``."""
    if not isinstance(value, str) or not value:
        return None
    # A dict lookup, not JobState(value): the Enum call costs a microsecond a job in listings.
    state = _STATES.get(value)
    return state if state is not None else _STATES.get(value.lower(), JobState.UNKNOWN)


def _bool(value: Any) -> bool | None:
    return value if value is None or type(value) is bool else parse_bool(value)


@dataclass(frozen=True)
class User:
    """A Buildkite user as embedded in a job (``unblocked_by``, ``retried_by``)."""

    id: str | None
    name: str | None = None
    email: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Any) -> User | None:
        """Build from a user object; ``None`` or an empty object gives ``None``."""
        if not isinstance(data, Mapping) or not data:
            return None
        return cls(
            _str(data.get("id")), _str(data.get("name")), _str(data.get("email")), dict(data)
        )


@dataclass(frozen=True)
class RetrySource:
    """Where a retried job came from: the original job and how it was retried."""

    job_id: str | None
    retry_type: str | None = None
    retried_by: User | None = None

    @classmethod
    def from_api(cls, data: Any) -> RetrySource | None:
        """Build from the ``retry_source`` object, or ``None``."""
        if not isinstance(data, Mapping) or not data:
            return None
        return cls(
            _str(data.get("job_id")),
            _str(data.get("retry_type")),
            User.from_api(data.get("retried_by")),
        )


@dataclass(frozen=True)
class Job:
    """A job of a build; every documented field, and ``raw`` with the payload as received."""

    id: str
    type: str | None = None
    state: JobState | None = None
    name: str | None = None
    label: str | None = None
    graphql_id: str | None = None
    step_key: str | None = None
    group_key: str | None = None
    step_id: str | None = None
    priority: int | None = None
    agent_query_rules: tuple[str, ...] = ()
    command: str | None = None
    soft_failed: bool | None = None
    exit_status: int | None = None
    signal: str | None = None
    signal_reason: str | None = None
    artifact_paths: str | None = None
    build_url: str | None = None
    web_url: str | None = None
    log_url: str | None = None
    raw_log_url: str | None = None
    artifacts_url: str | None = None
    created_at: datetime | None = None
    scheduled_at: datetime | None = None
    runnable_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expired_at: datetime | None = None
    retried: bool = False
    retried_in_job_id: str | None = None
    retries_count: int | None = None
    retry_type: str | None = None
    retry_source: RetrySource | None = None
    retried_by: User | None = None
    parallel_group_index: int | None = None
    parallel_group_total: int | None = None
    # Mappings do not take part in == and hash(), so that a Job stays hashable.
    matrix: Mapping[str, Any] | None = field(default=None, compare=False)
    agent: Mapping[str, Any] | None = field(default=None, compare=False)
    cluster_id: str | None = None
    cluster_url: str | None = None
    cluster_queue_id: str | None = None
    cluster_queue_url: str | None = None
    step_signature: Mapping[str, Any] | None = field(default=None, compare=False)
    unblocked_by: User | None = None
    unblocked_at: datetime | None = None
    unblockable: bool | None = None
    unblock_url: str | None = None
    triggered_build: Mapping[str, Any] | None = field(default=None, compare=False)
    is_async: bool | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def display_name(self) -> str:
        """The name shown in the UI: ``name``, else ``label`` (manual jobs), else the type."""
        return self.name or self.label or self.step_key or (self.type or "job")

    @property
    def is_finished(self) -> bool:
        """True when the job is in a state it will not leave on its own."""
        return self.state in FINAL_STATES

    @property
    def raw_state(self) -> str | None:
        """The state string exactly as the API sent it (useful when ``state`` is UNKNOWN)."""
        return _str(self.raw.get("state"))

    @classmethod
    def from_api(cls, data: Any) -> Job:
        """Parse a job object; raises ``InvalidResponseError`` if it is not one."""
        if not isinstance(data, Mapping):
            raise InvalidResponseError(
                f"expected a job object, got {type(data).__name__}", body=data
            )
        return _parse_job(cls, dict(data))  # a copy: the caller may change theirs later


def parse_owned_job(data: Any) -> Job:
    """``Job.from_api`` for a dict fresh from JSON that nobody else holds: it becomes ``raw``.

    Its fields are parsed from ``raw`` on first read: a listing of thousands of jobs whose
    caller reads only ``id`` and ``state`` does not pay to parse ~50 fields a job.
    """
    return _new_job(Job, data) if type(data) is dict else Job.from_api(data)


def _parse_job(cls: type[Job], data: dict[str, Any]) -> Job:
    """Parse a job dict, which becomes the job's ``raw``, reading every field now."""
    job = _new_job(Job, data)
    # One call per field, straight into __dict__: going through the descriptors doubles this.
    job.__dict__.update({name: parse(data) for name, parse in _FIELD_PARSERS.items()})
    if cls is Job:
        return job
    # A subclass may add fields with defaults or a __post_init__: build it the normal way.
    return cls(**{f.name: job.__dict__[f.name] for f in fields(Job) if f.init})


def _new_job(cls: type[Job], data: dict[str, Any]) -> Job:
    """A job holding only ``id`` and ``raw``; its other fields parse themselves when read."""
    job_id = data.get("id")
    if type(job_id) is not str:
        job_id = _str(job_id)
    if not job_id:
        raise InvalidResponseError("job object has no 'id'", body=data)
    # A frozen dataclass's __init__ sets ~50 fields one object.__setattr__ at a time; the
    # lazy fields below fill this __dict__ from `raw` as they are read.
    job = object.__new__(cls)
    object.__setattr__(job, "__dict__", {"id": job_id, "raw": data})
    return job


class _LazyField:
    """A ``Job`` field parsed from ``raw`` on first read, then kept in the instance."""

    __slots__ = ("default", "name", "parse")

    def __init__(self, name: str, parse: Callable[[Mapping[str, Any]], Any], default: Any) -> None:
        self.name = name
        self.parse = parse
        self.default = default

    def __get__(self, job: Job | None, owner: type[Job] | None = None) -> Any:
        if job is None:  # Job.type, as on a plain dataclass: the field's default
            return self.default
        # Not a data descriptor: once stored, the instance's __dict__ answers without a call.
        # Two threads racing here store equal values; either is correct.
        value = job.__dict__[self.name] = self.parse(job.raw)
        return value


# The field parsers test the common case (null, or already the right type) inline: a
# listing of thousands of jobs that reads every field makes ~50 of these calls a job.
def _str_field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda raw: v if (v := raw.get(name)) is None or type(v) is str else _str(v)


def _time_field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda raw: None if (v := raw.get(name)) is None else parse_time(v)


def _int_field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda raw: v if (v := raw.get(name)) is None or type(v) is int else parse_int(v)


def _dict_field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda raw: None if (v := raw.get(name)) is None else _dict(v)


def _bool_field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda raw: _bool(raw.get(name))


def _object_field(name: str, from_api: Callable[[Any], Any]) -> Callable[[Mapping[str, Any]], Any]:
    return lambda raw: None if (v := raw.get(name)) is None else from_api(v)


def _step(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    step = raw.get("step")
    return step if isinstance(step, Mapping) else {}


def _priority(raw: Mapping[str, Any]) -> int | None:
    priority = raw.get("priority")
    return parse_int(priority.get("number") if isinstance(priority, Mapping) else priority)


def _agent_query_rules(raw: Mapping[str, Any]) -> tuple[str, ...]:
    rules = raw.get("agent_query_rules")
    if not rules or not isinstance(rules, Sequence) or isinstance(rules, str):
        return ()
    return tuple(str(rule) for rule in rules)


_FIELD_PARSERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    **{name: _str_field(name) for name in _STR_FIELDS},
    **{name: _time_field(name) for name in _TIME_FIELDS},
    **{name: _int_field(name) for name in _INT_FIELDS},
    **{name: _dict_field(name) for name in _DICT_FIELDS},
    "state": lambda raw: parse_state(raw.get("state")),
    "step_id": lambda raw: _str(_step(raw).get("id")),
    "step_signature": lambda raw: _dict(_step(raw).get("signature")),
    "priority": _priority,
    "agent_query_rules": _agent_query_rules,
    "soft_failed": _bool_field("soft_failed"),
    "retried": lambda raw: bool(_bool(raw.get("retried"))),
    "retry_source": _object_field("retry_source", RetrySource.from_api),
    "retried_by": _object_field("retried_by", User.from_api),
    "unblocked_by": _object_field("unblocked_by", User.from_api),
    "unblockable": _bool_field("unblockable"),
    "is_async": _bool_field("async"),
}

_LAZY_FIELDS = tuple(f.name for f in fields(Job) if f.name not in ("id", "raw"))
if set(_LAZY_FIELDS) != set(_FIELD_PARSERS):  # a field added to Job needs its parser here
    raise AssertionError(f"Job fields without a parser: {set(_LAZY_FIELDS) ^ set(_FIELD_PARSERS)}")
for _name in _LAZY_FIELDS:
    setattr(Job, _name, _LazyField(_name, _FIELD_PARSERS[_name], getattr(Job, _name)))
del _name


@dataclass(frozen=True)
class JobLog:
    """A job's log in the JSON form: content, size in bytes, and nanosecond header times."""

    url: str | None
    content: str
    size: int
    header_times: tuple[int, ...] = ()

    @classmethod
    def from_api(cls, data: Any) -> JobLog:
        """Parse ``{url, content, size, header_times}``; ``size`` defaults to the UTF-8 length."""
        if not isinstance(data, Mapping):
            raise InvalidResponseError(
                f"expected a log object, got {type(data).__name__}", body=data
            )
        content = data.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise InvalidResponseError("log 'content' is not a string", body=dict(data))
        size = parse_int(data.get("size"))
        times = data.get("header_times")
        header_times: tuple[int, ...] = ()
        if isinstance(times, Sequence) and not isinstance(times, str):
            # Nanosecond integers above 2**53: keep them exact, never through float.
            header_times = tuple(t for t in (parse_int(x) for x in times) if t is not None)
        return cls(
            url=_str(data.get("url")),
            content=content,
            size=size if size is not None else len(content.encode("utf-8")),
            header_times=header_times,
        )


@dataclass(frozen=True)
class JobsPage:
    """One page of a job listing and its cursor links."""

    items: tuple[Job, ...]
    links: Mapping[str, str] = field(compare=False)

    @property
    def next_url(self) -> str | None:
        """The URL of the next page exactly as the server gave it, or ``None`` on the last."""
        return self.links.get("next") or None

    @classmethod
    def from_api(cls, data: Any) -> JobsPage:
        """Parse ``{"items": [...], "links": {...}}`` (a bare array is accepted too)."""
        return _parse_page(cls, data, Job.from_api)


def parse_owned_page(data: Any) -> JobsPage:
    """``JobsPage.from_api`` for a body fresh from JSON: its job dicts become the jobs' ``raw``."""
    return _parse_page(JobsPage, data, parse_owned_job)


def _parse_page(cls: type[JobsPage], data: Any, parse_job: Callable[[Any], Job]) -> JobsPage:
    """Parse a listing body, each of its jobs with ``parse_job``."""
    if isinstance(data, list):
        items: Any = data
        links: Any = {}
    elif isinstance(data, Mapping) and isinstance(data.get("items"), list):
        items = data["items"]
        links = data.get("links") or {}
    else:
        raise InvalidResponseError(
            "expected {'items': [...], 'links': {...}} for a job listing", body=data
        )
    if not isinstance(links, Mapping):
        links = {}
    return cls(
        items=tuple(parse_job(item) for item in items),
        links={str(k): v for k, v in links.items() if isinstance(v, str)},
    )
