"""Sans-IO description of every Jobs API endpoint: what to send, and how to read the answer.

The sync and async clients only send what this module builds and hand the answer back to it, so
no endpoint knowledge is written twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from ._errors import InvalidArgumentError, InvalidResponseError, excerpt
from ._models import FILTER_STATES, Job, JobLog, JobsPage, parse_owned_job, parse_owned_page

T = TypeVar("T")

JSON = "application/json"
TEXT = "text/plain"
HTML = "text/html"

FieldValue = str | Sequence[str]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to make and the parser of its successful answer."""

    method: str
    path: str  # relative to the base URL, unless ``absolute``
    parse: Callable[[httpx.Response], T]
    params: tuple[tuple[str, str], ...] = ()
    json_body: Any = None
    has_body: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    # False for PUTs: a timeout or 5xx may hide an executed retry, so never re-send those.
    idempotent: bool = True
    # True for a URL the server gave (links.next): checked to be on the base URL's origin.
    absolute: bool = False
    # Non-2xx statuses that are an answer, not an error (416 for the tail of an empty log).
    ok_statuses: frozenset[int] = frozenset()


# -- validation ---------------------------------------------------------------------------------


def _segment(value: str) -> str:
    return quote(value, safe="")


def _no_dot_segment(name: str, value: str) -> str:
    # "." and ".." would be collapsed by the URL layer and reach another endpoint.
    if value in (".", ".."):
        raise InvalidArgumentError(
            f"{name} {value!r} is not a valid {name}: give the real value"
            " (a job's UUID as `bkjobs list` or the job's URL shows it, or a slug)"
        )
    return value


def check_job_id(job_id: object) -> str:
    """A job id must be a non-empty string."""
    if not isinstance(job_id, str) or not job_id.strip():
        raise InvalidArgumentError(
            f"job_id must be a non-empty string (a job UUID), got {job_id!r}"
        )
    return _no_dot_segment("job_id", job_id.strip())


def check_build(build: object) -> str:
    """A build number is a positive integer (a digit string from the environment is accepted)."""
    if isinstance(build, bool) or not isinstance(build, (int, str)):
        raise InvalidArgumentError(
            f"build must be the build number (an integer such as 42), got {build!r}"
        )
    text = str(build).strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise InvalidArgumentError(
            f"build must be the build number (a positive integer such as 42), got {build!r};"
            " the build UUID is not accepted in routes"
        )
    return str(int(text))


def check_slug(name: str, value: object) -> str:
    """An organisation or pipeline slug must be a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{name} must be a non-empty slug string, got {value!r}")
    return _no_dot_segment(name, value.strip())


def check_states(state: str | Iterable[str] | None) -> list[str]:
    """Normalise ``state`` to a list of accepted ``state[]`` values."""
    if state is None:
        return []
    accepted = ", ".join(FILTER_STATES)
    if isinstance(state, str):
        values: list[object] = [state]
    elif isinstance(state, Iterable) and not isinstance(state, (bytes, Mapping)):
        values = list(state)
    else:
        raise InvalidArgumentError(
            f"state must be a state name or a list of them, got {state!r}; accepted: {accepted}"
        )
    out: list[str] = []
    for value in values:
        text = value.value if isinstance(value, Enum) else value
        if not isinstance(text, str):
            raise InvalidArgumentError(f"state values must be strings, got {value!r}")
        if text == "finished":
            raise InvalidArgumentError(
                "state 'finished' is not accepted by the API; use 'passed' and/or 'failed'"
                f" (accepted: {accepted})"
            )
        if text not in FILTER_STATES:
            raise InvalidArgumentError(f"unknown job state {text!r}; accepted values: {accepted}")
        out.append(text)
    return out


def check_chunk_size(chunk_size: object) -> int | None:
    """A chunk size is a positive int, or None for chunks as they arrive."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidArgumentError(
            f"chunk_size must be a positive number of bytes or None, got {chunk_size!r}"
        )
    return chunk_size


def check_priority(priority: object) -> int:
    """A priority is an int (a bool is not)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidArgumentError(f"priority must be an integer, got {priority!r}")
    return priority


def job_path(
    org: str, job_id: str, pipeline: str | None, build: int | str | None, suffix: str = ""
) -> str:
    """Path of a job on the build-scoped route (both given) or the org-scoped one (neither)."""
    job_id = check_job_id(job_id)
    if (pipeline is None) != (build is None):
        raise InvalidArgumentError(
            "give both pipeline and build (build-scoped route) or neither (org-scoped route);"
            f" got pipeline={pipeline!r}, build={build!r}"
        )
    org_part = f"/organizations/{_segment(org)}"
    if pipeline is not None and build is not None:
        scope = f"{org_part}/pipelines/{_segment(check_slug('pipeline', pipeline))}"
        scope += f"/builds/{check_build(build)}"
    else:
        scope = org_part
    return f"{scope}/jobs/{_segment(job_id)}{suffix}"


# -- parsing ------------------------------------------------------------------------------------


def _where(response: httpx.Response) -> dict[str, str]:
    return {"method": response.request.method, "url": str(response.request.url)}


def read_json(response: httpx.Response) -> Any:
    """Decode a JSON body or raise ``InvalidResponseError`` with an excerpt."""
    content = response.content
    if not content.strip():
        raise InvalidResponseError(
            f"expected a JSON body, got an empty {response.status_code} answer",
            **_where(response),
        )
    try:
        return json.loads(content)
    except RecursionError:
        raise InvalidResponseError(
            "the JSON body is nested too deeply to be a Buildkite answer", **_where(response)
        ) from None
    except ValueError:
        shown = excerpt(content[:4096].decode("utf-8", "replace"))
        ctype = response.headers.get("content-type", "no content-type")
        what = "a body that is not valid JSON" if "json" in ctype else f"a {ctype} body"
        raise InvalidResponseError(
            f"expected JSON, got {what}: {shown!r}", body=shown, **_where(response)
        ) from None


def _with_context(parse: Callable[[Any], T]) -> Callable[[httpx.Response], T]:
    def parse_response(response: httpx.Response) -> T:
        data = read_json(response)
        try:
            return parse(data)
        except InvalidResponseError as exc:
            raise InvalidResponseError(exc.message, body=data, **_where(response)) from None

    return parse_response


def _join(base: httpx.URL, link: str) -> str:
    if link.startswith(("https://", "http://")):
        return link  # absolute, as Buildkite sends them: nothing to resolve, kept as given
    try:
        return str(base.join(link))
    except (httpx.InvalidURL, ValueError):
        return link  # refused with a clear message if it is ever followed


_parse_page_body = _with_context(parse_owned_page)


def parse_page(response: httpx.Response) -> JobsPage:
    """Parse a listing, resolving relative links against the page they came in (as a browser)."""
    page = _parse_page_body(response)
    links = {k: _join(response.request.url, v) for k, v in page.links.items()}
    return JobsPage(items=page.items, links=links)


parse_job = _with_context(parse_owned_job)
parse_log = _with_context(JobLog.from_api)


def _env_dict(data: Any) -> dict[str, str]:
    env = data.get("env") if isinstance(data, Mapping) else None
    if not isinstance(env, Mapping):
        raise InvalidResponseError("expected {'env': {...}} for a job's environment")
    return {str(k): _env_value(v) for k, v in env.items()}


def _env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


parse_env = _with_context(_env_dict)


def parse_text(response: httpx.Response) -> str:
    """Decode a text body as UTF-8, replacing bytes that are not (logs may hold any byte)."""
    return response.content.decode("utf-8", errors="replace")


def parse_tail(response: httpx.Response) -> str:
    """Decode a ``Range`` answer; 416 means the log is empty."""
    return "" if response.status_code == 416 else parse_text(response)


def parse_none(response: httpx.Response) -> None:
    """Accept an empty answer (204)."""
    return None


def parse_size(response: httpx.Response) -> int:
    """Read the log size from a HEAD answer's Content-Length."""
    size = response.headers.get("content-length")
    if size is None or not size.isdigit():
        raise InvalidResponseError("HEAD answer has no Content-Length", **_where(response))
    return int(size)


# -- endpoints ----------------------------------------------------------------------------------


def list_jobs(
    org: str,
    pipeline: str,
    build: int | str,
    *,
    state: str | Iterable[str] | None = None,
    include_retried_jobs: bool | None = None,
    per_page: int | None = None,
    after: str | None = None,
    before: str | None = None,
    step_key: str | None = None,
) -> Call[JobsPage]:
    """``GET .../builds/{n}/jobs`` with filters (listing exists only build-scoped)."""
    if pipeline is None or build is None:
        raise InvalidArgumentError(
            "listing jobs needs both pipeline and build: the API lists jobs per build only"
        )
    path = f"/organizations/{_segment(org)}/pipelines/{_segment(check_slug('pipeline', pipeline))}"
    path += f"/builds/{check_build(build)}/jobs"
    params: list[tuple[str, str]] = [("state[]", s) for s in check_states(state)]
    if include_retried_jobs is not None:
        if not isinstance(include_retried_jobs, bool):
            raise InvalidArgumentError(
                f"include_retried_jobs must be True, False or None, got {include_retried_jobs!r}"
            )
        params.append(("include_retried_jobs", "true" if include_retried_jobs else "false"))
    if per_page is not None:
        if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= 100:
            raise InvalidArgumentError(
                f"per_page must be an integer from 1 to 100, got {per_page!r}"
            )
        params.append(("per_page", str(per_page)))
    if after is not None and before is not None:
        raise InvalidArgumentError("after and before are mutually exclusive: give one cursor")
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None:
            if not isinstance(cursor, str) or not cursor:
                raise InvalidArgumentError(f"{name} must be a non-empty cursor string")
            params.append((name, cursor))
    if step_key is not None:
        params.append(("step_key", check_slug("step_key", step_key)))
    return Call("GET", path, parse_page, params=tuple(params), headers={"Accept": JSON})


def next_page(url: str) -> Call[JobsPage]:
    """``GET`` of a ``links.next`` URL exactly as the server gave it."""
    return Call("GET", url, parse_page, headers={"Accept": JSON}, absolute=True)


def get_job(org: str, job_id: str, pipeline: str | None, build: int | str | None) -> Call[Job]:
    """``GET .../jobs/{id}``."""
    return Call("GET", job_path(org, job_id, pipeline, build), parse_job, headers={"Accept": JSON})


def retry_job(org: str, job_id: str, pipeline: str | None, build: int | str | None) -> Call[Job]:
    """``PUT .../jobs/{id}/retry``: answers with the NEW job."""
    return Call(
        "PUT",
        job_path(org, job_id, pipeline, build, "/retry"),
        parse_job,
        headers={"Accept": JSON},
        idempotent=False,
    )


def reprioritize_job(
    org: str, job_id: str, priority: int, pipeline: str | None, build: int | str | None
) -> Call[Job]:
    """``PUT .../jobs/{id}/reprioritize`` with ``{"priority": n}``."""
    body = {"priority": check_priority(priority)}
    return Call(
        "PUT",
        job_path(org, job_id, pipeline, build, "/reprioritize"),
        parse_job,
        json_body=body,
        has_body=True,
        headers={"Accept": JSON},
        idempotent=False,
    )


def unblock_job(
    org: str,
    job_id: str,
    fields: Mapping[str, FieldValue] | None,
    unblocker: str | None,
    pipeline: str | None,
    build: int | str | None,
) -> Call[Job]:
    """``PUT .../jobs/{id}/unblock`` with optional ``fields`` and ``unblocker``."""
    body: dict[str, Any] = {}
    if fields is not None:
        if not isinstance(fields, Mapping):
            raise InvalidArgumentError(
                f"fields must map each field key to a string or a list of strings, got {fields!r}"
            )
        clean: dict[str, Any] = {}
        for key, value in fields.items():
            if isinstance(value, str):
                clean[str(key)] = value
            elif (
                isinstance(value, Sequence)
                and not isinstance(value, (bytes, bytearray))
                and all(isinstance(v, str) for v in value)
            ):
                clean[str(key)] = list(value)
            else:
                raise InvalidArgumentError(
                    f"field {key!r} must be a string or a list of strings, got {value!r}"
                )
        body["fields"] = clean
    if unblocker is not None:
        body["unblocker"] = check_slug("unblocker", unblocker)
    return Call(
        "PUT",
        job_path(org, job_id, pipeline, build, "/unblock"),
        parse_job,
        json_body=body,
        has_body=True,
        headers={"Accept": JSON},
        idempotent=False,
    )


def get_job_log(
    org: str, job_id: str, pipeline: str | None, build: int | str | None
) -> Call[JobLog]:
    """``GET .../log`` as JSON."""
    path = job_path(org, job_id, pipeline, build, "/log")
    return Call("GET", path, parse_log, headers={"Accept": JSON})


def get_job_log_text(
    org: str, job_id: str, pipeline: str | None, build: int | str | None, tail: int | None = None
) -> Call[str]:
    """``GET .../log`` as ``text/plain``, optionally only the last ``tail`` bytes."""
    path = job_path(org, job_id, pipeline, build, "/log")
    if tail is None:
        return Call("GET", path, parse_text, headers={"Accept": TEXT})
    if isinstance(tail, bool) or not isinstance(tail, int) or tail < 1:
        raise InvalidArgumentError(f"tail must be a positive number of bytes, got {tail!r}")
    headers = {"Accept": TEXT, "Range": f"bytes=-{tail}"}
    return Call("GET", path, parse_tail, headers=headers, ok_statuses=frozenset({416}))


def get_job_log_html(
    org: str, job_id: str, pipeline: str | None, build: int | str | None
) -> Call[str]:
    """``GET .../log`` as ``text/html``."""
    path = job_path(org, job_id, pipeline, build, "/log")
    return Call("GET", path, parse_text, headers={"Accept": HTML})


def stream_job_log(
    org: str, job_id: str, pipeline: str | None, build: int | str | None
) -> Call[None]:
    """``GET .../log`` as raw bytes, for streaming (the parser is unused)."""
    path = job_path(org, job_id, pipeline, build, "/log")
    return Call("GET", path, parse_none, headers={"Accept": TEXT})


def get_job_log_size(
    org: str, job_id: str, pipeline: str | None, build: int | str | None
) -> Call[int]:
    """``HEAD .../log``: the log's size in bytes."""
    path = job_path(org, job_id, pipeline, build, "/log")
    return Call("HEAD", path, parse_size, headers={"Accept": TEXT})


def delete_job_log(
    org: str, job_id: str, pipeline: str | None, build: int | str | None
) -> Call[None]:
    """``DELETE .../log``: answers 204."""
    path = job_path(org, job_id, pipeline, build, "/log")
    return Call("DELETE", path, parse_none, headers={"Accept": JSON})


def get_job_env(
    org: str, job_id: str, pipeline: str | None, build: int | str | None
) -> Call[dict[str, str]]:
    """``GET .../env`` as JSON."""
    path = job_path(org, job_id, pipeline, build, "/env")
    return Call("GET", path, parse_env, headers={"Accept": JSON})


def get_job_env_text(
    org: str, job_id: str, pipeline: str | None, build: int | str | None
) -> Call[str]:
    """``GET .../env`` as dotenv ``text/plain``."""
    path = job_path(org, job_id, pipeline, build, "/env")
    return Call("GET", path, parse_text, headers={"Accept": TEXT})
