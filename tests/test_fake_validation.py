"""The fake refuses bad seeding and configuration at the call, with errors that say what to do."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pytest_bkjobs import parse_env_text
from pytest_bkjobs.fake import FakeBuildkite
from tests.conftest import ORG, TOKEN, load_json


class Seeded:
    """A fake with a build ``p#1`` holding one job of each type."""

    def __init__(self) -> None:
        self.fake = FakeBuildkite(org=ORG, token=TOKEN)
        self.number = self.fake.add_build("p")
        self.script = self.fake.add_job("p", self.number, state="running")
        self.waiter = self.fake.add_job("p", self.number, type="waiter")
        self.manual = self.fake.add_job("p", self.number, type="manual")


Call = Callable[[Seeded], object]

BAD_CALLS: list[tuple[str, Call, type[Exception], str]] = [
    # -- constructor, users and tokens
    ("scope typo", lambda s: FakeBuildkite(scopes=["read_build"]), ValueError, "'read_builds'"),
    ("empty token", lambda s: s.fake.add_token(""), ValueError, "non-empty string"),
    (
        "main token again",
        lambda s: s.fake.add_token(TOKEN, scopes=[]),
        ValueError,
        "main token",
    ),
    ("user without name", lambda s: s.fake.add_user(None), TypeError, "user name"),  # type: ignore[arg-type]
    ("org with slash", lambda s: FakeBuildkite(org="a/b"), ValueError, "slug"),
    ("seed not int", lambda s: FakeBuildkite(seed="x"), TypeError, "seed"),  # type: ignore[arg-type]
    # -- rate limits and latency
    ("infinite window", lambda s: s.fake.set_rate_limits(window=math.inf), ValueError, "finite"),
    ("zero window", lambda s: s.fake.set_rate_limits(window=0), ValueError, "positive"),
    ("text window", lambda s: s.fake.set_rate_limits(window="60"), TypeError, "window"),  # type: ignore[arg-type]
    ("negative org", lambda s: s.fake.set_rate_limits(org=-1), ValueError, ">= 1"),
    ("zero org", lambda s: s.fake.set_rate_limits(org=0), ValueError, ">= 1"),
    ("bool user", lambda s: s.fake.set_rate_limits(user=True), TypeError, "integer"),
    ("negative latency", lambda s: setattr(s.fake, "latency", -1), ValueError, "latency"),
    # -- faults
    ("bad regex", lambda s: s.fake.inject_fault(path="("), ValueError, "regular expression"),
    ("text status", lambda s: s.fake.inject_fault(status="x"), TypeError, "fault status"),  # type: ignore[arg-type]
    ("status 99", lambda s: s.fake.inject_fault(status=99), ValueError, "from 500 to 599"),
    ("status 200", lambda s: s.fake.inject_fault(status=200), ValueError, "from 500 to 599"),
    ("zero times", lambda s: s.fake.inject_fault(times=0), ValueError, "times"),
    ("negative times", lambda s: s.fake.inject_fault(times=-1), ValueError, "times"),
    ("fault kind", lambda s: s.fake.inject_fault("explode"), ValueError, "fault kind"),
    ("fault body", lambda s: s.fake.inject_fault(body="xml"), ValueError, "fault body"),
    ("fault method", lambda s: s.fake.inject_fault(method="P UT"), ValueError, "method"),
    ("rate 2", lambda s: s.fake.random_faults(2), ValueError, "probability"),
    ("rate -1", lambda s: s.fake.random_faults(-1), ValueError, "probability"),
    ("rate nan", lambda s: s.fake.random_faults(math.nan), ValueError, "probability"),
    ("rate text", lambda s: s.fake.random_faults("x"), TypeError, "probability"),  # type: ignore[arg-type]
    ("no statuses", lambda s: s.fake.random_faults(0.5, statuses=[]), ValueError, "statuses"),
    ("no kinds", lambda s: s.fake.random_faults(0.5, kinds=[]), ValueError, "kinds"),
    ("kinds string", lambda s: s.fake.random_faults(0.5, kinds="drop"), TypeError, "kinds"),
    ("methods string", lambda s: s.fake.random_faults(0.5, methods="GET"), TypeError, "methods"),
    ("random 200", lambda s: s.fake.random_faults(0.5, statuses=[200]), ValueError, "500"),
    # -- builds and jobs
    ("build state", lambda s: s.fake.add_build("p", state="bogus"), ValueError, "build state"),
    (
        "set build state",
        lambda s: s.fake.set_build_state("p", 1, "cancelled"),
        ValueError,
        "did you mean 'canceled'",
    ),
    ("job state int", lambda s: s.fake.add_job("p", 1, state=5), ValueError, "job state"),
    ("text exit status", lambda s: s.fake.add_job("p", 1, exit_status="0"), TypeError, "exit"),
    ("empty id", lambda s: s.fake.add_job("p", 1, id=""), ValueError, "job id"),
    ("dotted id", lambda s: s.fake.add_job("p", 1, id="a.b"), ValueError, "job id"),
    ("slashed id", lambda s: s.fake.add_job("p", 1, id="a/b"), ValueError, "job id"),
    ("env None", lambda s: s.fake.add_job("p", 1, env={"A": None}), TypeError, "env value"),
    ("env space", lambda s: s.fake.add_job("p", 1, env={"A B": "x"}), ValueError, "env name"),
    ("env equals", lambda s: s.fake.add_job("p", 1, env={"A=B": "x"}), ValueError, "env name"),
    ("env hash", lambda s: s.fake.add_job("p", 1, env={"#A": "x"}), ValueError, "env name"),
    ("env empty", lambda s: s.fake.add_job("p", 1, env={"": "x"}), ValueError, "env name"),
    (
        "config typo",
        lambda s: s.fake.add_job("p", 1, permit_on_pass=True),
        TypeError,
        "did you mean 'permit_on_passed'",
    ),
    ("config type", lambda s: s.fake.add_job("p", 1, declared_failing="yes"), TypeError, "True"),
    (
        "waiter exit",
        lambda s: s.fake.add_job("p", 1, type="waiter", exit_status=0),
        ValueError,
        "no exit",
    ),
    ("finish state", lambda s: s.fake.finish_job(s.script, 1, state="bogus"), ValueError, "state"),
    ("finish text", lambda s: s.fake.finish_job(s.script, "0"), TypeError, "exit_status"),  # type: ignore[arg-type]
    ("finish bool", lambda s: s.fake.finish_job(s.script, True), TypeError, "exit_status"),
    ("finish waiter", lambda s: s.fake.finish_job(s.waiter, 0), ValueError, "only script jobs"),
    ("finish manual", lambda s: s.fake.finish_job(s.manual, 0), ValueError, "only script jobs"),
    ("script manual", lambda s: s.fake.script_job(s.manual, "passed"), ValueError, "script jobs"),
    ("update id", lambda s: s.fake.update_job(s.script, id="changed"), ValueError, "job's id"),
    ("update type", lambda s: s.fake.update_job(s.script, type="manual"), ValueError, "type"),
    ("update state", lambda s: s.fake.update_job(s.script, state="weird"), ValueError, "state"),
    # -- the loopback server
    ("port -1", lambda s: s.fake.serve(port=-1), ValueError, "port must be an integer from 0"),
    ("port 70000", lambda s: s.fake.serve(port=70000), ValueError, "65535"),
    ("port text", lambda s: s.fake.serve(port="8080"), TypeError, "port"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [pytest.param(call, error, match, id=name) for name, call, error, match in BAD_CALLS],
)
def test_bad_arguments_are_refused_at_the_call(
    call: Call, error: type[Exception], match: str
) -> None:
    seeded = Seeded()
    before = {job_id: seeded.fake.job(job_id) for job_id in seeded.fake.job_ids("p", 1)}
    with pytest.raises(error, match=match):
        call(seeded)
    after = {job_id: seeded.fake.job(job_id) for job_id in seeded.fake.job_ids("p", 1)}
    assert after == before  # nothing half-done


def test_the_defaults_and_none_still_work() -> None:
    seeded = Seeded()
    fake = seeded.fake
    assert fake.job(fake.add_job("p", 1, state=None))["state"] == "passed"
    fake.finish_job(seeded.script, None, state="canceled", soft_failed=False)
    assert fake.job(seeded.script)["state"] == "canceled"
    fake.set_rate_limits(org=None, user=None, window=0.5)
    fake.inject_fault("error", status=599, times=None, method="put", path=r"/retry$", body="json")
    fake.random_faults(0, kinds=["drop"], statuses=[500], methods=["get"])
    fake.latency = 0
    fake.add_token("second", scopes=["read_builds", "read_agents"])
    with pytest.raises(ValueError, match="already added"):
        fake.add_token("second")
    custom = fake.add_job("p", 1, id="my-job_1", env={"_X1": "$HOME ${PATH}"})
    assert fake.env(custom)["_X1"] == "$HOME ${PATH}"


def test_dotenv_text_round_trips_dollars_with_interpolation_off() -> None:
    fake = FakeBuildkite(org=ORG, token=TOKEN)
    number = fake.add_build("p")
    env = {"A": "$HOME ${PATH} ${NOPE:-x}", "B": "'single' \"double\" #hash"}
    job_id = fake.add_job("p", number, env=env)
    text = fake.client(token=TOKEN).get_job_env_text(job_id)
    parsed = parse_env_text(text)
    assert {k: parsed[k] for k in env} == env


def test_update_job_keeps_the_index_and_replaces_env() -> None:
    seeded = Seeded()
    fake = seeded.fake
    fake.update_job(seeded.script, name="renamed", env={"ONLY": "this"}, log="new\n")
    assert fake.job(seeded.script)["name"] == "renamed"
    assert fake.env(seeded.script) == {"ONLY": "this"}
    assert fake.log(seeded.script) == b"new\n"
    assert fake.client(token=TOKEN).get_job(seeded.script).name == "renamed"


# -- load_build --------------------------------------------------------------------------------


def _payload(*jobs: dict[str, Any], number: int = 2) -> dict[str, Any]:
    return {"number": number, "pipeline": {"slug": "q"}, "jobs": list(jobs)}


def test_load_build_takes_a_manual_job_without_unblock_url() -> None:
    fake = FakeBuildkite(org=ORG, token=TOKEN)
    number = fake.load_build(_payload({"id": "m1", "type": "manual", "unblock_url": None}))
    assert fake.job_ids("q", number) == ["m1"]
    assert fake.job("m1")["unblock_url"] is None


@pytest.mark.parametrize(
    ("payload", "error", "match"),
    [
        (_payload({"id": "a"}, {"id": "a"}), ValueError, r"jobs\[1\]: job id a appears twice"),
        (
            _payload({"id": "a"}, "nope"),  # type: ignore[arg-type]
            TypeError,
            r"jobs\[1\] must be a job object",
        ),
        (_payload({"id": "a"}, {"id": "b/c"}), ValueError, r"jobs\[1\]: job id"),
        (_payload({"id": "a"}, {"id": "b", "type": "cmd"}), ValueError, r"jobs\[1\]: job type"),
        (_payload({"id": "a"}, {"id": "b", "state": "x"}), ValueError, r"jobs\[1\]: job state"),
        ({**_payload({"id": "a"}), "state": "bogus"}, ValueError, "build state"),
        ({**_payload(), "jobs": {"id": "a"}}, TypeError, "'jobs' must be a list"),
        (_payload({"id": "a"}, number=0), ValueError, "positive integer"),
        ({**_payload({"id": "a"}), "number": True}, ValueError, "integer 'number'"),
        ({**_payload({"id": "a"}), "pipeline": {"slug": ""}}, ValueError, "pipeline slug"),
    ],
)
def test_load_build_checks_the_whole_payload_before_changing_anything(
    payload: dict[str, Any], error: type[Exception], match: str
) -> None:
    fake = FakeBuildkite(org=ORG, token=TOKEN)
    with pytest.raises(error, match=match):
        fake.load_build(payload)
    with pytest.raises(LookupError):
        fake.job_ids("q", 2)
    with pytest.raises(KeyError):
        fake.job("a")


def test_load_build_refuses_a_job_already_in_the_fake_and_leaves_no_build() -> None:
    fake = FakeBuildkite(org=ORG, token=TOKEN)
    payload = load_json("docs_get_build_with_jobs_retry_source.json")
    fake.load_build(payload)
    with pytest.raises(ValueError, match="already in the fake"):
        fake.load_build({**payload, "number": 999})
    with pytest.raises(LookupError):
        fake.job_ids(payload["pipeline"]["slug"], 999)


# -- errors while answering --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "error"),
    [(lambda job: 1 / 0, ZeroDivisionError), (lambda job: "weird", ValueError)],
)
def test_an_outcome_callable_that_fails_answers_500_in_process(
    outcome: Callable[[dict[str, Any]], Any], error: type[Exception]
) -> None:
    fake = FakeBuildkite(org=ORG, token=TOKEN)
    number = fake.add_build("p")
    job_id = fake.add_job("p", number, state="scheduled")
    fake.script_job(job_id, outcome, after_polls=1)
    raw = httpx.Client(transport=fake.transport(), headers={"Authorization": f"Bearer {TOKEN}"})
    answer = raw.get(f"https://api.buildkite.com/v2/organizations/{ORG}/jobs/{job_id}")
    assert answer.status_code == 500
    assert answer.json() == {"message": f"fake Buildkite error: {error.__name__}"}
    assert answer.headers["RateLimit-Scope"] == "rest"
    (recorded,) = fake.requests
    assert (recorded.status, recorded.outcome) == (500, "error")
    (caught,) = fake.errors
    assert isinstance(caught, error)
    assert fake.job(job_id)["state"] == "scheduled"  # a bad outcome never becomes a state
    fake.clear_requests()
    assert fake.errors == []


def test_an_injected_sleep_that_raises_is_a_500_too() -> None:
    def sleep(seconds: float) -> None:
        raise RuntimeError("no sleeping here")

    fake = FakeBuildkite(org=ORG, token=TOKEN, sleep=sleep)
    fake.latency = 0.1
    raw = httpx.Client(transport=fake.transport(), headers={"Authorization": f"Bearer {TOKEN}"})
    answer = raw.get(f"https://api.buildkite.com/v2/organizations/{ORG}/jobs/x")
    assert answer.status_code == 500
    assert [type(e) for e in fake.errors] == [RuntimeError]
    assert fake.requests[-1].outcome == "error"
