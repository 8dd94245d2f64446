"""Replay behaviour and every error message, through ``pytester`` with hand-written cassettes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import respx  # noqa: F401 - imported once here, not again in every in-process run

from pytest_bkjobs import _cassette_session  # noqa: F401 - same
from pytest_bkjobs._vcr_convert import convert_file

from .conftest import FIXTURES

QUICK = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")
BASE = "https://api.buildkite.com/v2"
JOBS = f"{BASE}/organizations/acme/pipelines/app/builds/1/jobs"


def job(job_id: str, state: str = "passed") -> dict[str, Any]:
    return {"id": job_id, "type": "script", "state": state, "name": job_id}


def ix(method: str, uri: str, answer: Any = None, status: int = 200, body: Any = None) -> Any:
    """One interaction with a JSON answer."""
    return {
        "request": {
            "method": method,
            "uri": uri,
            "headers": {},
            "body": None if body is None else {"json": body},
        },
        "response": {
            "status": status,
            "reason": "OK",
            "http_version": "HTTP/1.1",
            "headers": {"content-type": ["application/json"]},
            "body": None if answer is None else {"json": answer},
        },
    }


def write(pytester: pytest.Pytester, module: str, name: str, *interactions: Any) -> Path:
    path = pytester.path / "cassettes" / module / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": 1, "base_url": BASE, "org": "acme", "interactions": list(interactions)}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def lit(pattern: str) -> str:
    """An fnmatch pattern where ``[`` is literal (``*`` stays a wildcard)."""
    return pattern.replace("[", "[[]")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*QUICK, *args)


def test_options_in_help_and_report_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a():\n    pass\n")
    run(pytester, "--help").stdout.fnmatch_lines(
        [
            "Buildkite API cassettes (pytest-bkjobs):",
            "  --bk-record *",
            "  --bk-record-mode={none,once,new_episodes,all}",
            "  --bk-cassette-dir=BK_CASSETTE_DIR",
            "  --bk-api-url=BK_API_URL",
            "  bk_redact_env (linelist):*",
        ]
    )
    result = run(pytester)
    result.stdout.fnmatch_lines(
        ["bkjobs: record mode none (replay only), cassettes in cassettes/<module>/ beside each*"]
    )
    result.stdout.no_fnmatch_line("*bkjobs cassettes*")  # no summary when no cassette was used
    run(pytester, "--markers").stdout.fnmatch_lines(["@pytest.mark.bk_cassette(name=None, *"])


def test_ini_options_and_command_line_precedence(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nbk_record_mode = once\nbk_cassette_dir = recorded\n")
    pytester.makepyfile("def test_a():\n    pass\n")
    run(pytester).stdout.fnmatch_lines(
        ["bkjobs: record mode once (record missing cassettes), cassettes in */recorded"]
    )
    run(
        pytester, "--bk-record-mode=new_episodes", "--bk-cassette-dir=elsewhere"
    ).stdout.fnmatch_lines(["bkjobs: record mode new_episodes (*), cassettes in */elsewhere"])


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (
            ("--bk-record", "--bk-record-mode=once"),
            "",
            "ERROR: --bk-record means --bk-record-mode=all; it conflicts with"
            " --bk-record-mode=once",
        ),
        (
            (),
            "bk_record_mode = sometimes",
            "ERROR: ini option bk_record_mode = 'sometimes' is not a record mode; use one of *",
        ),
        (
            ("--bk-api-url=localhost:8080",),
            "",
            "ERROR: --bk-api-url / bk_api_url must be an http(s) URL such as *,"
            " got 'localhost:8080'",
        ),
    ],
)
def test_bad_settings_are_usage_errors(
    pytester: pytest.Pytester, args: tuple[str, ...], ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_a():\n    pass\n")
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_missing_cassette_says_how_to_record(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mod="def test_a(bk_client):\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*bkjobs: no cassette for test_mod.py::test_a at cassettes/test_mod/test_a.json:"
            " nothing to replay.",
            "Record it with: pytest --bk-record 'test_mod.py::test_a'",
        ]
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "cassettes/test_mod/test_a.json is not valid JSON: *"),
        (
            '{"version": 7, "interactions": []}',
            "cassettes/test_mod/test_a.json is not usable: unknown cassette version 7 (this"
            " pytest-bkjobs reads version 1)",
        ),
        (
            '{"version": 1, "interactions": [{"request": {}}]}',
            "cassettes/test_mod/test_a.json is not usable: interactions[0].response is not an"
            " object",
        ),
    ],
)
def test_corrupt_cassette_is_reported_and_kept(
    pytester: pytest.Pytester, content: str, problem: str
) -> None:
    path = write(pytester, "test_mod", "test_a")
    path.write_text(content, encoding="utf-8")
    pytester.makepyfile(test_mod="def test_a(bk_client):\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            lit(f"bkjobs: cassette {problem}"),
            "  test: test_mod.py::test_a",
            "The file is left as it is: fix or delete it, or record it again with: pytest"
            " --bk-record 'test_mod.py::test_a'",
        ]
    )
    assert path.read_text(encoding="utf-8") == content


def test_state_filter_mismatch_shows_closest_and_what_differed(pytester: pytest.Pytester) -> None:
    write(
        pytester,
        "test_mod",
        "test_a",
        ix("GET", f"{JOBS}?state%5B%5D=running&state%5B%5D=failed", {"items": [], "links": {}}),
        ix("GET", f"{BASE}/organizations/acme/jobs/j-1", job("j-1")),
    )
    pytester.makepyfile(
        test_mod="""
        def test_a(bk_client):
            bk_client.list_jobs("app", 1, state=["running"])
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(line)
            for line in [
                "E *pytest_bkjobs.CassetteMissError: no recorded interaction matches GET"
                f" {JOBS}?state%5B%5D=running",
                "E *test:     test_mod.py::test_a",
                "E *cassette: cassettes/test_mod/test_a.json",
                "E *closest recorded requests:",
                f"E *#0 GET {JOBS}?state%5B%5D=running&state%5B%5D=failed",
                "E *- query key 'state[]': recorded ['failed', 'running'], the request has"
                " ['running']",
                "E *#1 GET */organizations/acme/jobs/j-1",
                "E *- path: recorded /v2/organizations/acme/jobs/j-1, the request has"
                " /v2/organizations/acme/pipelines/app/builds/1/jobs",
                "E *- query key 'state[]': not recorded, the request has ['running']",
                "E *To re-record this test: pytest --bk-record 'test_mod.py::test_a'",
                "E *(or keep the old ones and add this request: --bk-record-mode=new_episodes)",
            ]
        ]
    )
    # Failing where the request was made is enough: no second report at teardown.
    result.stdout.no_fnmatch_line("*ERROR at teardown*")
    # The traceback starts in the test and leaves out httpx's, respx's and the client's frames.
    result.stdout.fnmatch_lines(
        ['>       bk_client.list_jobs("app", 1, state=*', "test_mod.py:2: CassetteMissError"]
    )
    for inside in ("*httpx/_client.py*", "*respx/*", "*pytest_bkjobs/*"):
        result.stdout.no_fnmatch_line(inside)


def test_query_order_and_blank_values(pytester: pytest.Pytester) -> None:
    write(
        pytester,
        "test_mod",
        "test_a",
        ix("GET", f"{JOBS}?b=&state%5B%5D=failed&a=1&state%5B%5D=running", {"ok": 1}),
    )
    pytester.makepyfile(
        test_mod=f"""
        import httpx, pytest

        def test_a(bk_cassette):
            url = "{JOBS}?a=1&state[]=running&b=&state[]=failed"
            assert httpx.get(url).json() == {{"ok": 1}}
            with pytest.raises(Exception, match="query key 'b': recorded \\\\[''\\\\], missing"):
                httpx.get("{JOBS}?a=1&state[]=running&state[]=failed")
            bk_cassette.errors.clear()
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_put_body_and_method_differences(pytester: pytest.Pytester) -> None:
    uri = f"{BASE}/organizations/acme/jobs/j-1/unblock"
    write(
        pytester,
        "test_mod",
        "test_a",
        ix("PUT", uri, job("j-1", "unblocked"), body={"fields": {"release": "v1"}}),
    )
    pytester.makepyfile(
        test_mod="""
        def test_a(bk_client):
            bk_client.unblock_job("j-1", fields={"release": "v2"})
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E **CassetteMissError: no recorded interaction matches PUT */j-1/unblock"
            '  body: {"fields":{"release":"v2"}}',
            "E *- body differs:",
            '*-    "release": "v1"',
            '*+    "release": "v2"',
        ]
    )


POLL = """
import pytest

def test_a(bk_client):
    states = [bk_client.get_job("j-1").state.value for _ in range(3)]
    assert states == ["running", "running", "passed"]
"""


def _poll_cassette(pytester: pytest.Pytester) -> None:
    uri = f"{BASE}/organizations/acme/jobs/j-1"
    write(
        pytester,
        "test_mod",
        "test_a",
        ix("GET", uri, job("j-1", "running")),
        ix("GET", uri, job("j-1", "running")),
        ix("GET", uri, job("j-1", "passed")),
    )


def test_identical_requests_replay_in_order_each_once(pytester: pytest.Pytester) -> None:
    _poll_cassette(pytester)
    pytester.makepyfile(test_mod=POLL)
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["bkjobs: cassettes 1 replayed; 0 interaction(s) unused"])


def test_all_played_says_so(pytester: pytest.Pytester) -> None:
    _poll_cassette(pytester)
    pytester.makepyfile(test_mod=POLL.replace("range(3)", "range(4)"))
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E **CassetteExhaustedError: GET */jobs/j-1 matches 3 recorded interaction(s), but"
            " all of them were already played (each recorded answer plays once)",
            "E *test:     test_mod.py::test_a",
            "E *cassette: cassettes/test_mod/test_a.json",
            "E *If the test now makes this request more often, re-record: pytest --bk-record*",
            "E *or allow repeats: @pytest.mark.bk_cassette(allow_playback_repeats=True)",
        ]
    )


def test_async_clients_get_the_same_errors(pytester: pytest.Pytester) -> None:
    _poll_cassette(pytester)
    pytester.makepyfile(
        test_mod="""
        import pytest
        from pytest_bkjobs import CassetteExhaustedError, CassetteMissError

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.anyio
        async def test_a(bk_async_client, bk_cassette):
            states = [(await bk_async_client.get_job("j-1")).state.value for _ in range(3)]
            assert states == ["running", "running", "passed"]
            with pytest.raises(CassetteExhaustedError):
                await bk_async_client.get_job("j-1")
            with pytest.raises(CassetteMissError):
                await bk_async_client.get_job("j-2")
            assert len(bk_cassette.errors) == 2
            bk_cassette.errors.clear()  # handled here: no teardown failure
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_allow_playback_repeats_replays_the_last_answer(pytester: pytest.Pytester) -> None:
    _poll_cassette(pytester)
    pytester.makepyfile(
        test_mod="""
        import pytest

        @pytest.mark.bk_cassette(allow_playback_repeats=True)
        def test_a(bk_client):
            states = [bk_client.get_job("j-1").state.value for _ in range(5)]
            assert states == ["running", "running", "passed", "passed", "passed"]
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_swallowed_error_fails_at_teardown(pytester: pytest.Pytester) -> None:
    write(pytester, "test_mod", "test_a")
    pytester.makepyfile(
        test_mod="""
        def test_a(bk_client):
            try:
                bk_client.get_job("j-404")
            except Exception:
                pass  # code under test that hides errors
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_a*",
            "bkjobs: the code under test hit cassette errors (and may have swallowed them):",
            "no recorded interaction matches GET */organizations/acme/jobs/j-404",
            "  test:     test_mod.py::test_a",
            "the cassette has no recorded interactions",
        ]
    )


def test_unplayed_interactions_fail_unless_opted_out(pytester: pytest.Pytester) -> None:
    _poll_cassette(pytester)
    write(
        pytester, "test_mod", "test_b", ix("GET", f"{BASE}/organizations/acme/jobs/j-2", job("j-2"))
    )
    pytester.makepyfile(
        test_mod="""
        import pytest

        def test_a(bk_client):
            bk_client.get_job("j-1")

        @pytest.mark.bk_cassette(assert_all_played=False)
        def test_b(bk_cassette):
            assert len(bk_cassette.unplayed) == 1
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "bkjobs: 2 recorded interaction(s) were never played",
            "  test:     test_mod.py::test_a",
            "  cassette: cassettes/test_mod/test_a.json",
            "  #1 GET */organizations/acme/jobs/j-1",
            "  #2 GET */organizations/acme/jobs/j-1",
            "If the test no longer makes these requests, re-record: pytest --bk-record*",
            "or opt out: @pytest.mark.bk_cassette(assert_all_played=False)",
            "bkjobs: cassettes 1 replayed, 1 with errors; 3 interaction(s) unused",
        ]
    )


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('record_mode="sometimes"', "record_mode must be one of (*), got 'sometimes'"),
        ("colour=1", "bk_cassette() got an unexpected keyword argument 'colour'"),
        ('"a", "b"', "bk_cassette() takes from 0 to 1 positional arguments but 2 were given"),
        ("assert_all_played=0", "assert_all_played must be True or False, got 0"),
        ('match_on=["method", "colour"]', "match_on has unknown or no names ['colour']; choose*"),
        ("name=''", "name must be a non-empty string, got ''"),
    ],
)
def test_bad_marker_arguments_fail_that_test(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        test_mod=f"""
        import pytest

        @pytest.mark.bk_cassette({marker})
        def test_bad():
            pass

        def test_fine():
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            lit(f"bad @pytest.mark.bk_cassette on test_mod.py::test_bad: {message}"),
            "expected bk_cassette(name=None, *, record_mode=None, allow_playback_repeats=False,"
            " assert_all_played=True, match_on=None)",
        ]
    )


def test_closest_marker_wins_and_names_the_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mod="""
        import pytest

        pytestmark = pytest.mark.bk_cassette("from-module", assert_all_played=False)

        def test_module(bk_cassette):
            assert bk_cassette.path.name == "from-module.json"
            assert not bk_cassette.options.assert_all_played

        @pytest.mark.bk_cassette("from-class")
        class TestIt:
            def test_class(self, bk_cassette):
                assert bk_cassette.path.name == "from-class.json"
                assert bk_cassette.options.assert_all_played

            @pytest.mark.bk_cassette("from-function", allow_playback_repeats=True)
            def test_function(self, bk_cassette):
                assert bk_cassette.path.name == "from-function.json"
                assert bk_cassette.options.allow_playback_repeats
        """
    )
    for name in ("from-module", "from-class", "from-function"):
        write(pytester, "test_mod", name)
    run(pytester).assert_outcomes(passed=3)


def test_same_cassette_path_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mod="""
        import pytest

        @pytest.mark.bk_cassette("shared")
        def test_one():
            pass

        @pytest.mark.bk_cassette("shared")
        def test_two():
            pass
        """
    )
    result = run(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting test_mod.py*",
            "bkjobs: several tests would use the same cassette file"
            " cassettes/test_mod/shared.json:",
            "  test_mod.py::test_one",
            "  test_mod.py::test_two",
            "Give each one its own name with @pytest.mark.bk_cassette('some-name'), or return*",
            "*Interrupted: 1 error during collection*",
        ]
    )


def test_cassette_path_hook_and_cassette_dir(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        def pytest_bkjobs_cassette_path(item, config):
            if item.name == "test_hooked":
                return config.rootpath / "custom" / "hooked.json"
            return None
        """
    )
    pytester.makepyfile(
        test_mod="""
        def test_hooked(bk_cassette):
            assert bk_cassette.path.parts[-2:] == ("custom", "hooked.json")

        def test_default(bk_cassette):
            assert bk_cassette.path.parts[-3:] == ("store", "test_mod", "test_default.json")
        """
    )
    for path in (pytester.path / "custom", pytester.path / "store" / "test_mod"):
        path.mkdir(parents=True)
    (pytester.path / "custom" / "hooked.json").write_text('{"version":1,"interactions":[]}')
    (pytester.path / "store" / "test_mod" / "test_default.json").write_text(
        '{"version":1,"interactions":[]}'
    )
    run(pytester, "--bk-cassette-dir=store").assert_outcomes(passed=2)


def test_formats_of_one_url_replay_by_accept_header(pytester: pytest.Pytester) -> None:
    uri = f"{BASE}/organizations/acme/jobs/j-1/env"
    as_json = ix("GET", uri, {"env": {"A": "1"}})
    as_json["request"]["headers"] = {"accept": ["application/json"]}
    as_text = ix("GET", uri)
    as_text["request"]["headers"] = {"accept": ["text/plain"]}
    as_text["response"]["headers"] = {"content-type": ["text/plain"]}
    as_text["response"]["body"] = {"text": 'A="1"\n'}
    write(pytester, "test_mod", "test_a", as_json, as_text)
    pytester.makepyfile(
        test_mod="""
        def test_a(bk_client):
            assert bk_client.get_job_env_text("j-1") == 'A="1"\\n'  # the other order
            assert bk_client.get_job_env("j-1") == {"A": "1"}
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_match_on_can_ignore_the_query(pytester: pytest.Pytester) -> None:
    write(
        pytester,
        "test_mod",
        "test_a",
        ix("GET", f"{JOBS}?per_page=100", {"items": [], "links": {}}),
    )
    pytester.makepyfile(
        test_mod="""
        import pytest

        @pytest.mark.bk_cassette(match_on=["method", "path"])
        def test_a(bk_client):
            assert bk_client.list_jobs("app", 1, state="failed").items == ()
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_router_routes_win_and_other_hosts_pass_through(pytester: pytest.Pytester) -> None:
    from pytest_bkjobs.fake import FakeBuildkite

    fake = FakeBuildkite()
    ids = fake.sample_build().job_ids
    write(
        pytester, "test_mod", "test_a", ix("GET", f"{BASE}/organizations/acme/jobs/j-1", job("j-1"))
    )
    with fake.serve() as url:
        pytester.makepyfile(
            test_mod=f"""
            import httpx
            from pytest_bkjobs import JobsClient

            def test_a(bk_client, bk_router):
                bk_router.get(url__regex=r".*/j-teapot$").respond(418, json={{"message": "tea"}})
                assert bk_client.get_job("j-1").id == "j-1"
                assert httpx.get("{BASE}/organizations/acme/jobs/j-teapot").status_code == 418
                # Another base URL (here a live fake server) is not the cassette's business.
                with JobsClient(token="fake-token", org="acme", base_url="{url}") as other:
                    assert other.get_job({ids["passed"]!r}).state.value == "passed"
            """
        )
        run(pytester).assert_outcomes(passed=1)


def test_marker_alone_replays_code_that_builds_its_own_client(pytester: pytest.Pytester) -> None:
    write(
        pytester, "test_mod", "test_a", ix("GET", f"{BASE}/organizations/acme/jobs/j-1", job("j-1"))
    )
    pytester.makepyfile(
        test_mod="""
        import pytest
        from pytest_bkjobs import AsyncJobsClient, JobsClient

        def code_under_test():
            with JobsClient(token="t0k3n-of-the-user", org="acme") as client:
                return client.get_job("j-1").name

        @pytest.mark.bk_cassette
        def test_a():
            assert code_under_test() == "j-1"
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_marker_sets_the_cassette_up_after_wider_fixtures_and_before_function_ones(
    pytester: pytest.Pytester,
) -> None:
    write(
        pytester, "test_mod", "test_a", ix("GET", f"{BASE}/organizations/acme/jobs/j-1", job("j-1"))
    )
    pytester.makeconftest(
        """
        SET_UP = []

        def pytest_fixture_setup(fixturedef):
            SET_UP.append(fixturedef.argname)
        """
    )
    pytester.makepyfile(
        test_mod="""
        import pytest
        from conftest import SET_UP
        from pytest_bkjobs import JobsClient

        @pytest.fixture(scope="module")
        def wide():
            return "wide"

        @pytest.fixture
        def job_name(wide):
            with JobsClient(token="t0k3n-of-the-user", org="acme") as client:
                return client.get_job("j-1").name  # replayed: the cassette is already active

        @pytest.mark.bk_cassette
        def test_a(job_name):
            assert SET_UP.index("wide") < SET_UP.index("bk_cassette") < SET_UP.index("job_name")
            assert job_name == "j-1"
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_marker_on_one_parameter_gives_only_that_parameter_a_cassette(
    pytester: pytest.Pytester,
) -> None:
    write(
        pytester,
        "test_mod",
        "test_a[with]",
        ix("GET", f"{BASE}/organizations/acme/jobs/j-1", job("j-1")),
    )
    pytester.makepyfile(
        test_mod="""
        import httpx
        import pytest

        @pytest.mark.parametrize(
            "which", [pytest.param("with", marks=pytest.mark.bk_cassette), "without"]
        )
        def test_a(request, which):
            assert ("bk_cassette" in request.fixturenames) is (which == "with")
            if which == "with":
                url = "https://api.buildkite.com/v2/organizations/acme/jobs/j-1"
                assert httpx.get(url).json()["id"] == "j-1"
        """
    )
    result = run(pytester, "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*1 replayed*"])


def test_marker_on_a_class_and_a_module_activates_the_cassette(pytester: pytest.Pytester) -> None:
    for name in ("TestJobs.test_a", "test_b"):
        write(
            pytester, "test_mod", name, ix("GET", f"{BASE}/organizations/acme/jobs/j-1", job("j-1"))
        )
    pytester.makepyfile(
        test_mod="""
        import httpx
        import pytest

        pytestmark = pytest.mark.bk_cassette

        def get():
            return httpx.get("https://api.buildkite.com/v2/organizations/acme/jobs/j-1").json()

        class TestJobs:
            def test_a(self):
                assert get()["id"] == "j-1"

        def test_b():
            assert get()["id"] == "j-1"
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 replayed*"])


def test_tests_without_the_marker_get_no_fixture_of_ours(pytester: pytest.Pytester) -> None:
    # An autouse fixture would cost a fixture setup in every test of every project.
    pytester.makepyfile(
        """
        def test_plain(request):
            assert [name for name in request.fixturenames if "bk" in name] == []
        """
    )
    run(pytester).assert_outcomes(passed=1)


REAL = {
    "buildkiterb_build_retrieve_2023": """
        import httpx
        def test_it(bk_client):
            pipeline = "/organizations/acme-test/pipelines/starter-buildkite-pipeline"
            url = bk_client.base_url + pipeline + "/builds/1"
            build = httpx.get(url).json()
            assert build["number"] == 1 and len(build["jobs"]) == 4
    """,
    "buildkiterb_job_log_bk_timestamps_2023": """
        def test_it(bk_client):
            log = bk_client.get_job_log("018a147f-3803-4ade-8282-34aeaf0117e7",
                                        pipeline="starter-buildkite-pipeline", build=7)
            assert log.size == len(log.content.encode()) == 1403
    """,
    "buildkiterb_job_retry_retry_source_2023": """
        def test_it(bk_client):
            new = bk_client.retry_job("018a1478-a14e-481c-b71e-588fd81027d2",
                                      pipeline="starter-buildkite-pipeline", build=2)
            assert new.id.startswith("018a147d")
            assert new.retry_source.job_id == "018a1478-a14e-481c-b71e-588fd81027d2"
    """,
    "buildkiterb_job_unblock_manual_2023": """
        def test_it(bk_client):
            job = bk_client.unblock_job("018a147f-3801-464d-bfe2-d45b7cdb3178",
                                        pipeline="starter-buildkite-pipeline", build=7)
            assert job.state.value == "unblocked"
    """,
    "buildkiterb_job_delete_log_204_2023": """
        def test_it(bk_client):
            assert bk_client.delete_job_log("018a147f-3803-4ade-8282-34aeaf0117e7",
                                            pipeline="starter-buildkite-pipeline", build=7) is None
    """,
    "shopify_buildkit_unblock_job_2024": """
        def test_it(bk_client):
            job = bk_client.unblock_job("01920d5c-ecf9-479b-89de-b746318d0fbe",
                                        pipeline="demokite", build=1)
            assert job.type == "manual" and bk_client.org == "acmeo"
    """,
    "shopify_buildkit_404_error": """
        import httpx
        def test_it(bk_cassette):
            answer = httpx.get("https://api.buildkite.com/404-not-found")
            assert answer.status_code == 404
            assert answer.json() == {"message": "No route matches 404-not-found"}
    """,
}


def test_real_vcr_cassettes_convert_and_replay(pytester: pytest.Pytester) -> None:
    sources = sorted((FIXTURES / "cassettes").glob("*.yml"))
    assert {p.stem for p in sources} == set(REAL)
    for source in sources:
        folder = pytester.path / "cassettes" / f"test_{source.stem}"
        folder.mkdir(parents=True)
        shutil.copy(source, folder / "test_it.yml")
        convert_file(folder / "test_it.yml")
        (folder / "test_it.yml").unlink()
        pytester.makepyfile(**{f"test_{source.stem}": REAL[source.stem]})
    result = run(pytester)
    result.assert_outcomes(passed=len(REAL))
    result.stdout.fnmatch_lines(
        [f"bkjobs: cassettes {len(REAL)} replayed; 0 interaction(s) unused"]
    )


def test_fake_and_build_context_fixtures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILDKITE_ORGANIZATION_SLUG", "env-org")
    monkeypatch.setenv("BUILDKITE_PIPELINE_SLUG", "env-pipe")
    monkeypatch.setenv("BUILDKITE_BUILD_NUMBER", "7")
    monkeypatch.setenv("BUILDKITE_JOB_ID", "env-job")
    pytester.makepyfile(
        test_mod="""
        def test_fake(bk_fake, bk_build_context):
            assert (bk_build_context.org, bk_build_context.pipeline) == ("acme", "sample-app")
            with bk_fake.client() as client:
                job = client.get_job(bk_build_context.job_id)
            assert job.state.value == "running"

        def test_env(bk_build_context):
            assert (bk_build_context.pipeline, bk_build_context.build) == ("env-pipe", 7)
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_a_miss_for_another_organisation_says_which_one_was_recorded(
    pytester: pytest.Pytester,
) -> None:
    write(
        pytester, "test_mod", "test_a", ix("GET", f"{BASE}/organizations/acme/jobs/j-1", job("j-1"))
    )
    pytester.makepyfile(
        test_mod=f"""
        from pytest_bkjobs import JobsClient

        def test_a(bk_cassette):
            with JobsClient(token="x", org="other", base_url="{BASE}") as client:
                client.get_job("j-1")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E *no recorded interaction matches GET */organizations/other/jobs/j-1",
            "E *recorded for organisation 'acme', the request is for 'other': set"
            " BUILDKITE_ORGANIZATION_SLUG=acme (or re-record)",
        ]
    )


def test_each_test_with_a_bad_marker_counts_as_one_with_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mod="""
        import httpx
        import pytest

        @pytest.mark.parametrize("i", range(5))
        @pytest.mark.bk_cassette(colour=1)
        def test_bad(i):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=5)
    result.stdout.fnmatch_lines(["bkjobs: cassettes 5 with errors; 0 interaction(s) unused"])


OWN_CLIENT_TEST = """
import pytest
from pytest_bkjobs import JobsClient

@pytest.mark.bk_cassette
def test_a():
    with JobsClient.from_env(dotenv_path=None) as client:
        client.get_job("j-1")
"""


@pytest.fixture
def no_buildkite_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BUILDKITE"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_buildkite_env")
def test_replaying_own_client_without_settings_says_what_to_set(pytester: pytest.Pytester) -> None:
    write(
        pytester, "test_mod", "test_a", ix("GET", f"{BASE}/organizations/acme/jobs/j-1", job("j-1"))
    )
    pytester.makepyfile(test_mod=OWN_CLIENT_TEST)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ConfigurationError: BUILDKITE_API_TOKEN is not set*",
            "*bkjobs: what to set*",
            "bkjobs: replaying cassettes/test_mod/test_a.json: no real API token is needed, any"
            " placeholder works (BUILDKITE_API_TOKEN=placeholder); set"
            " BUILDKITE_ORGANIZATION_SLUG=acme (the cassette's recorded organisation)",
            "bkjobs: cassettes 1 with errors; 0 interaction(s) unused",
        ]
    )
    result.stdout.no_fnmatch_line("*_client_base.py*")  # the client's own frames are left out


@pytest.mark.usefixtures("no_buildkite_env")
def test_recording_against_a_local_server_without_a_token_suggests_the_fakes(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_mod=OWN_CLIENT_TEST + "\n\ndef test_b(bk_client):\n    pass\n")
    result = run(pytester, "--bk-record", "--bk-api-url", "http://127.0.0.1:9/v2")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*http://127.0.0.1:9/v2 is a local server: for `bkjobs fake-server` set"
            " BUILDKITE_API_TOKEN=fake-token (or the token it printed)*",
        ]
    )
    # test_a and test_b each say it (the short summary may repeat it, depending on its width).
    assert result.stdout.str().count("BUILDKITE_API_TOKEN=fake-token") >= 2
    result.stdout.fnmatch_lines(["bkjobs: cassettes 2 with errors; 0 interaction(s) unused"])
