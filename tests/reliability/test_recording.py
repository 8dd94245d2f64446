"""Recording cassettes against a faulty API, and recording/replaying under ``pytest -n 4``.

A recording run against the fake (loopback, one fault kind on) leaves either a valid new
cassette, which then replays offline, or the previous file byte for byte: never a partial file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx  # noqa: F401 - imported once here, not again in every in-process run

from pytest_bkjobs import (
    APITimeoutError,
    JobsClient,
    _cassette_session,  # noqa: F401 - same
)
from pytest_bkjobs._cassette import load_cassette, save_cassette
from pytest_bkjobs.fake import FakeBuildkite

from ._support import CLIENT_TIMEOUT, FAULTS, SLOW_LATENCY, Rig, make_rig, record_figures

pytestmark = pytest.mark.slow

#: Hypothesis' plugin imports hypothesis in every in-process run: leave it out.
QUICK = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")
RUNS = 5
JOBS = 60
FAULT_RATE = 0.25
SLOW_RATE = 0.1

INNER = """
import pytest
from pytest_bkjobs import JobsClient


@pytest.mark.bk_cassette
def test_record(bk_sleep):
    settings = dict(dotenv_path=None, sleep=bk_sleep, max_wait=1e9, timeout={timeout!r})
    with JobsClient.from_env(max_retries={retries!r}, **settings) as client:
        jobs = list(client.iter_jobs({pipeline!r}, {build!r}, per_page=5))
        assert len(jobs) == {jobs!r} + 1
        assert client.get_job_log_text({job!r}) == {log!r}
        assert client.get_job_env({job!r})["APP_ENV"] == "ci"
"""


class SleepPlugin:
    """Gives the inner tests a ``bk_sleep`` fixture: the outer test's virtual clock."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    @pytest.fixture
    def bk_sleep(self) -> object:
        return self.rig.clock.sleep


def previous_cassette(path: Path) -> bytes:
    """A valid cassette from an earlier recording, which a failed recording must leave alone."""
    save_cassette(
        path,
        {
            "version": 1,
            "base_url": "https://api.buildkite.com/v2",
            "org": "acme",
            "interactions": [],
        },
    )
    return path.read_bytes()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BUILDKITE"):
            monkeypatch.delenv(name)


def seed(fake: FakeBuildkite) -> tuple[int, str]:
    build = fake.add_build("app")
    for i in range(JOBS):
        fake.add_job("app", build, name=f"job {i}", exit_status=i % 2)
    job = fake.add_job(
        "app", build, name="tests", exit_status=1, log="line 1\r\nline 2\r\n", env={"APP_ENV": "ci"}
    )
    return build, job


@pytest.mark.parametrize("fault", FAULTS)
def test_recording_leaves_a_valid_new_cassette_or_the_previous_one(
    fault: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, env: None
) -> None:
    rig = make_rig(fault, seed=sum(map(ord, fault)))
    fake = rig.fake
    build, job = seed(fake)
    timeout = CLIENT_TIMEOUT if fault == "slow" else 5.0
    pytester.makepyfile(
        test_inner=INNER.format(
            timeout=timeout,
            retries=2,  # few tries: some recordings fail, some pass
            pipeline="app",
            build=build,
            jobs=JOBS,
            job=job,
            log="line 1\r\nline 2\r\n",
        )
    )
    path = pytester.path / "cassettes" / "test_inner" / "test_record.json"
    current = previous_cassette(path)
    plugin = SleepPlugin(rig)
    monkeypatch.setenv("BUILDKITE_API_TOKEN", fake.token)
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", fake.org)
    written = kept = replayed = 0
    rig.arm(SLOW_RATE if fault == "slow" else FAULT_RATE, seed=5)
    with fake.serve() as url:
        monkeypatch.setenv("BUILDKITE_API_URL", url)
        for _ in range(RUNS):
            result = pytester.runpytest_inprocess(*QUICK, "--bk-record", plugins=[plugin])
            outcomes = result.parseoutcomes()
            assert sorted(p.name for p in path.parent.iterdir()) == ["test_record.json"]
            if outcomes.get("passed") == 1:
                written += 1
                data = load_cassette(path)  # valid: raises if not
                assert data["interactions"], "a passing recording keeps its interactions"
                current = path.read_bytes()
                # A new cassette replays offline (recorded faults and 429s included).
                if fault == "slow":
                    # The client's timeout applies while recording: a request it gave up on is
                    # still executed by the fake after its latency. Let it land before counting.
                    rig.slow.wait_idle()
                    time.sleep(0.05)
                sent = len(fake.requests)
                again = pytester.runpytest_inprocess(*QUICK, plugins=[plugin])
                again.assert_outcomes(passed=1)
                assert len(fake.requests) == sent  # nothing reached the server
                assert path.read_bytes() == current  # replay never writes
                replayed += 1
            else:
                assert outcomes.get("failed") == 1, result.stdout.str()
                kept += 1
                assert path.read_bytes() == current, "a failed recording changed the file"
    rig.slow.wait_idle()
    hits = rig.injected()
    assert hits >= 5, rig.outcomes()
    assert written >= 1
    record_figures(
        f"record-{fault}",
        check=f"recording a cassette ({RUNS} --bk-record runs, max_retries=2)",
        fault=fault,
        injected=hits,
        requests=len(fake.requests),
        runs=RUNS,
        written=written,
        kept_previous=kept,
        replayed=replayed,
        result=f"{written} valid new cassettes (each replayed offline), {kept} failed runs left"
        " the previous file byte for byte",
    )


def test_recording_honours_the_client_timeout(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, env: None
) -> None:
    rig = make_rig("slow")
    fake = rig.fake
    _, job = seed(fake)
    pytester.makepyfile(
        f"""
        import pytest, time
        from pytest_bkjobs import APITimeoutError, JobsClient

        @pytest.mark.bk_cassette
        def test_slow():
            settings = dict(dotenv_path=None, timeout={CLIENT_TIMEOUT}, max_retries=0)
            with JobsClient.from_env(**settings) as c:
                start = time.monotonic()
                with pytest.raises(APITimeoutError):
                    c.get_job({job!r})
                assert time.monotonic() - start < {SLOW_LATENCY}
        """
    )
    monkeypatch.setenv("BUILDKITE_API_TOKEN", fake.token)
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", fake.org)
    rig.slow.rate = 1.0
    fake.latency = SLOW_LATENCY
    with fake.serve() as url:
        # Without a cassette the same client times out, as it should.
        with (
            JobsClient(
                token=fake.token, org=fake.org, base_url=url, timeout=CLIENT_TIMEOUT, max_retries=0
            ) as client,
            pytest.raises(APITimeoutError),
        ):
            client.get_job(job)
        monkeypatch.setenv("BUILDKITE_API_URL", url)
        result = pytester.runpytest_inprocess(*QUICK, "--bk-record")
    result.assert_outcomes(passed=1)


CROSS_HOST = """
from pytest_bkjobs import JobsClient


def test_pages(bk_cassette):
    # Code under test builds its own client for the real API, as in CI.
    with JobsClient.from_env(dotenv_path=None) as client:
        assert len(list(client.iter_jobs("app", {build!r}, per_page=20))) == {jobs!r}
"""


def test_listing_recorded_against_the_fake_replays_for_a_client_of_the_real_api(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, env: None
) -> None:
    fake = FakeBuildkite()
    build, _ = seed(fake)
    pytester.makepyfile(test_cross=CROSS_HOST.format(build=build, jobs=JOBS + 1))
    monkeypatch.setenv("BUILDKITE_API_TOKEN", fake.token)
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", fake.org)
    with fake.serve() as url:
        recorded = pytester.runpytest_inprocess(*QUICK, "--bk-record", "--bk-api-url", url)
    # Recording rewrites the fake's links.next to the client's own base URL, so the client
    # follows them while recording, and the cassette replays for a client of the real API.
    recorded.assert_outcomes(passed=1)
    pytester.runpytest_inprocess(*QUICK).assert_outcomes(passed=1)


# -- parallel runs ------------------------------------------------------------------------------

PARALLEL = """
import pytest


@pytest.mark.parametrize("n", range(40))
def test_job(bk_client, n):
    jobs = list(bk_client.iter_jobs("app", {build!r}, per_page=20))
    job = jobs[n % len(jobs)]
    assert bk_client.get_job(job.id).name == job.name
"""


def _pytest(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BUILDKITE")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *QUICK, "-n", "4", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FakeBuildkite, str, int]]:
    fake = FakeBuildkite()
    build, _ = seed(fake)
    with fake.serve() as url:
        yield fake, url, build


def test_forty_tests_record_and_replay_under_xdist(
    tmp_path: Path, served: tuple[FakeBuildkite, str, int]
) -> None:
    fake, url, build = served
    (tmp_path / "test_par.py").write_text(PARALLEL.format(build=build), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    settings = {"BUILDKITE_API_TOKEN": fake.token, "BUILDKITE_ORGANIZATION_SLUG": fake.org}
    recorded = _pytest(tmp_path, "--bk-record", "--bk-api-url", url, **settings)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert "40 passed" in recorded.stdout
    files = sorted((tmp_path / "cassettes" / "test_par").iterdir())
    assert len(files) == 40
    assert [p.name for p in files] == sorted(f"test_job[{n}].json" for n in range(40))
    contents = {}
    for path in files:
        data = load_cassette(path)
        assert len(data["interactions"]) == 5  # 4 pages and one job
        contents[path.name] = path.read_bytes()
        assert fake.token not in path.read_text("utf-8")
    workers = {r.headers.get("user-agent") for r in fake.requests}
    assert workers  # sent by real clients
    # Replay: no server, no token, four workers.
    replayed = _pytest(tmp_path, "--bk-api-url", "http://127.0.0.1:9/v2")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "40 passed" in replayed.stdout
    assert {p.name: p.read_bytes() for p in files} == contents
    record_figures(
        "parallel",
        check="40 tests recording then replaying under pytest -n 4",
        fault="4 workers writing cassettes at once",
        injected=40,
        requests=len(fake.requests),
        result="40 valid cassettes recorded, 40 tests passed on replay, files unchanged",
    )
