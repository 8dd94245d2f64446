"""Error mapping, rate-limit waits per scope, and which requests may be sent again."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from pytest_bkjobs import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    UnprocessableEntityError,
)
from tests.conftest import TOKEN, ClientFactory

JOB = {"id": "j1", "type": "script", "state": "failed"}


class Script:
    """Answers from a list in order (the last one repeats); exceptions are raised."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok() -> httpx.Response:
    return httpx.Response(200, json=JOB)


def msg(status: int, message: str, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, json={"message": message}, **kwargs)


@pytest.mark.parametrize(
    ("status", "message", "cls"),
    [
        (400, "Jobs can only be retried once", BadRequestError),
        (400, "Only failed, timed out or canceled jobs can be retried", BadRequestError),
        (400, "This job type cannot be unblocked", BadRequestError),
        (400, "Priority must be an integer", BadRequestError),
        (
            401,
            "Authentication required. Please supply a valid API Access Token: https://...",
            AuthenticationError,
        ),
        (403, "Your access token doesn't have the read_builds scope", PermissionDeniedError),
        (404, "No job found", NotFoundError),
        (422, "Jobs from canceled builds cannot be retried", UnprocessableEntityError),
        (422, "Unblocker is not a valid user id for this organization", UnprocessableEntityError),
        (422, "Jobs from canceled builds cannot be unblocked", UnprocessableEntityError),
        (
            422,
            "This job can't be retried because this build was triggered by a synchronous"
            " trigger step in a canceled build",
            UnprocessableEntityError,
        ),
        (422, "The job's state must be blocked", UnprocessableEntityError),
        (500, "Internal error", ServerError),
        (418, "I'm a teapot", APIStatusError),
    ],
)
def test_spec_error_messages_map_to_typed_errors(
    make_client: ClientFactory, status: int, message: str, cls: type[APIStatusError]
):
    client = make_client(Script(msg(status, message)), max_retries=0)
    with pytest.raises(cls) as info:
        client.retry_job("j1")
    error = info.value
    assert type(error) is cls
    assert error.status_code == status
    assert error.message == message
    assert error.method == "PUT"
    assert error.url.endswith("/organizations/acme/jobs/j1/retry")
    assert error.body == {"message": message}
    assert message in str(error)
    assert TOKEN not in str(error)


def test_403_names_the_missing_scope(make_client: ClientFactory):
    client = make_client(Script(msg(403, "Your access token doesn't have the read_job_env scope")))
    with pytest.raises(PermissionDeniedError) as info:
        client.get_job_env("j1")
    assert info.value.required_scope == "read_job_env"
    assert "Add the read_job_env scope to the API token" in str(info.value)


def test_401_hints_at_the_agent_token(make_client: ClientFactory):
    with pytest.raises(AuthenticationError, match="BUILDKITE_AGENT_ACCESS_TOKEN is not one"):
        make_client(Script(msg(401, "Authentication required."))).get_job("j1")


def test_validation_failed_errors_are_included(make_client: ClientFactory):
    body = {"message": "Validation Failed", "errors": [{"field": "priority"}]}
    client = make_client(Script(httpx.Response(422, json=body)))
    with pytest.raises(UnprocessableEntityError, match='Validation Failed: \\[{"field"'):
        client.reprioritize_job("j1", 3)


def test_html_error_page_gives_a_short_excerpt(make_client: ClientFactory):
    page = "<html><head><title>502 Bad Gateway</title></head>" + "x" * 5000 + "</html>"
    client = make_client(Script(httpx.Response(502, text=page)), max_retries=0)
    with pytest.raises(ServerError) as info:
        client.get_job("j1")
    assert info.value.message == "HTML page: 502 Bad Gateway"


def test_html_without_a_title_is_stripped_to_text(make_client: ClientFactory):
    page = "<html><body><h1>Service Unavailable</h1>" + "<p>x</p>" * 500 + "</body></html>"
    client = make_client(Script(httpx.Response(503, text=page)), max_retries=0)
    with pytest.raises(ServerError) as info:
        client.get_job("j1")
    assert info.value.message.startswith("Service Unavailable x x")
    assert "<" not in info.value.message
    assert len(info.value.message) <= 201


def test_429_longer_than_the_wait_budget_says_so(make_client: ClientFactory):
    limited = httpx.Response(429, json={"message": "Too many", "scope": "rest", "reset": 300})
    with pytest.raises(RateLimitError) as info:
        make_client(Script(limited), max_wait=120).get_job("j1")
    assert make_client.sleeps == []
    assert "gave up after waiting 0s: the reset is longer than the 120s wait budget" in str(
        info.value
    )


def test_already_retried_is_recognised(make_client: ClientFactory):
    client = make_client(Script(msg(400, "Jobs can only be retried once")))
    with pytest.raises(BadRequestError) as info:
        client.retry_job("j1")
    assert info.value.already_retried
    other = make_client(Script(msg(400, "Only failed, timed out or canceled jobs can be retried")))
    with pytest.raises(BadRequestError) as info:
        other.retry_job("j1")
    assert not info.value.already_retried


def test_429_reports_the_budget_it_had(make_client: ClientFactory):
    limited = httpx.Response(429, json={"message": "x", "scope": "rest", "reset": 300})
    with pytest.raises(RateLimitError) as info:
        make_client(Script(limited), max_wait=50).get_job("j1")
    assert info.value.max_wait == 50
    assert info.value.reset_exceeds_budget


def test_a_200_html_page_shows_its_title(make_client: ClientFactory):
    page = "<html><head><title>Down for maintenance</title></head><body>...</body></html>"
    answer = httpx.Response(200, text=page, headers={"content-type": "text/html"})
    with pytest.raises(InvalidResponseError, match="a text/html body: 'HTML page: Down for"):
        make_client(Script(answer)).get_job("j1")


def test_invalid_json_with_a_json_content_type(make_client: ClientFactory):
    answer = httpx.Response(200, content=b"{oops", headers={"content-type": "application/json"})
    with pytest.raises(InvalidResponseError, match="a body that is not valid JSON: '{oops'"):
        make_client(Script(answer)).get_job("j1")


def test_empty_error_body(make_client: ClientFactory):
    with pytest.raises(ServerError, match=r"\(empty body\)"):
        make_client(Script(httpx.Response(503)), max_retries=0).get_job("j1")


@pytest.mark.parametrize(
    ("headers", "body", "scope", "expected_wait"),
    [
        ({"RateLimit-Reset": "7", "RateLimit-User-Reset": "40"}, {"scope": "rest"}, "rest", 7),
        (
            {"RateLimit-Reset": "7", "RateLimit-User-Reset": "40"},
            {"scope": "rest_user"},
            "rest_user",
            40,
        ),
        ({"RateLimit-User-Remaining": "0", "RateLimit-User-Reset": "12"}, {}, "rest_user", 12),
        ({}, {"scope": "rest", "reset": 3}, "rest", 3),
    ],
    ids=["org-window", "user-window", "user-window-from-headers", "body-reset"],
)
def test_429_waits_for_the_reset_of_the_scope_that_fired(
    make_client: ClientFactory,
    headers: dict[str, str],
    body: dict[str, Any],
    scope: str,
    expected_wait: float,
):
    limited = httpx.Response(429, json={"message": "Too many requests", **body}, headers=headers)
    script = Script(limited, ok())
    job = make_client(script).retry_job("j1")  # a 429 was not executed: even a PUT is re-sent
    assert job.id == "j1"
    assert script.calls == 2
    [waited] = make_client.sleeps
    assert expected_wait <= waited <= expected_wait + 1  # plus at most one second of jitter


def test_429_without_any_reset_backs_off(make_client: ClientFactory):
    script = Script(msg(429, "slow down"), msg(429, "slow down"), ok())
    make_client(script).get_job("j1")
    assert script.calls == 3
    assert len(make_client.sleeps) == 2
    assert make_client.sleeps[1] > make_client.sleeps[0] * 0.5


def test_429_gives_up_after_max_retries_with_scope_and_reset(make_client: ClientFactory):
    limited = httpx.Response(
        429,
        json={"message": "Too many", "scope": "rest_user", "limit": 50, "current": 55, "reset": 9},
        headers={"RateLimit-User-Reset": "9"},
    )
    script = Script(limited)
    with pytest.raises(RateLimitError) as info:
        make_client(script, max_retries=2).get_job("j1")
    assert script.calls == 3
    assert info.value.scope == "rest_user"
    assert info.value.reset_after == 9
    assert "resets in 9s" in str(info.value)


def test_429_total_wait_is_capped(make_client: ClientFactory):
    limited = httpx.Response(429, json={"message": "x", "scope": "rest", "reset": 50})
    script = Script(limited)
    with pytest.raises(RateLimitError):
        make_client(script, max_retries=10, max_wait=120).get_job("j1")
    assert sum(make_client.sleeps) <= 120
    assert script.calls == 3  # two waits of ~50s fit in 120s, a third does not


@pytest.mark.parametrize("status", [502, 503, 504])
def test_get_is_resent_after_a_gateway_error(make_client: ClientFactory, status: int):
    script = Script(httpx.Response(status, text="<html>bad gateway</html>"), ok())
    assert make_client(script).get_job("j1").id == "j1"
    assert script.calls == 2


def test_get_is_resent_after_a_connection_error(make_client: ClientFactory):
    script = Script(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ok())
    assert make_client(script).get_job("j1").id == "j1"
    assert script.calls == 3


def test_get_gives_up_with_a_connection_error_chained(make_client: ClientFactory):
    script = Script(httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError) as info:
        make_client(script, max_retries=1).get_job("j1")
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert script.calls == 2


@pytest.mark.parametrize(
    "method",
    [
        lambda c: c.retry_job("j1"),
        lambda c: c.unblock_job("j1"),
        lambda c: c.reprioritize_job("j1", 2),
    ],
    ids=["retry", "unblock", "reprioritize"],
)
@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (lambda: httpx.ReadTimeout("slow"), APITimeoutError),
        (lambda: httpx.RemoteProtocolError("server disconnected"), APIConnectionError),
        (lambda: httpx.Response(502, text="bad gateway"), ServerError),
        (lambda: httpx.Response(503), ServerError),
    ],
    ids=["timeout", "dropped", "502", "503"],
)
def test_put_is_never_resent_after_timeout_or_5xx(
    make_client: ClientFactory, method: Any, failure: Any, error: type[Exception]
):
    script = Script(failure(), ok())  # fresh per test: a Response's stream is read once
    with pytest.raises(error) as info:
        method(make_client(script))
    assert script.calls == 1
    if isinstance(info.value, APIConnectionError):
        assert "may have been executed" in str(info.value)


def test_delete_is_resent_after_a_connection_error(make_client: ClientFactory):
    script = Script(httpx.ConnectError("refused"), httpx.Response(204))
    make_client(script).delete_job_log("j1")
    assert script.calls == 2


def test_retries_are_logged_without_the_token(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    make_client(Script(httpx.Response(503), ok())).get_job("j1")
    assert "503 answer; sending again" in caplog.text
    assert TOKEN not in caplog.text


def test_a_token_echoed_in_an_error_body_is_scrubbed(make_client: ClientFactory) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        # A misconfigured proxy that echoes the request headers in its error page.
        body = {"message": f"denied; you sent {request.headers['authorization']}"}
        return httpx.Response(401, json=body)

    with pytest.raises(AuthenticationError) as caught:
        make_client(echo).get_job("some-job")
    for shown in (str(caught.value), repr(caught.value), repr(caught.value.body)):
        assert TOKEN not in shown
    assert "Bearer ***" in str(caught.value)
