"""A ``bk_cassette`` marker added after collection, and the cassette path hook at run time."""

from __future__ import annotations

import json

import pytest

from .test_plugin_replay import BASE, ix, job, run, write

GET = ix("GET", f"{BASE}/organizations/acme/jobs/j-1", job("j-1"))

TESTS = """
import httpx

def check(request):
    # Before any request: without a cassette it would go to the network.
    assert "bk_cassette" in request.fixturenames
    return httpx.get("https://api.buildkite.com/v2/organizations/acme/jobs/j-1").json()["id"]

def test_late(request):
    assert check(request) == "j-1"

def test_setupmark(request):
    assert check(request) == "j-1"
"""


def test_a_marker_added_after_our_collection_hook_still_activates_the_cassette(
    pytester: pytest.Pytester,
) -> None:
    # The autouse fixture this replaced saw such markers: a trylast modifyitems hook runs
    # after ours, a conftest's pytest_runtest_setup after collection.
    for name in ("test_late", "test_setupmark"):
        write(pytester, "test_mod", name, GET)
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(items):
            for item in items:
                if item.name == "test_late":
                    item.add_marker(pytest.mark.bk_cassette)

        def pytest_runtest_setup(item):
            if item.name == "test_setupmark":
                item.add_marker(pytest.mark.bk_cassette)
        """
    )
    pytester.makepyfile(test_mod=TESTS)
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 replayed*"])


def test_the_path_hook_names_a_cassette_requested_at_run_time(pytester: pytest.Pytester) -> None:
    path = pytester.path / "recordings" / "test_dyn.json"
    path.parent.mkdir()
    data = {"version": 1, "base_url": BASE, "org": "acme", "interactions": [GET]}
    path.write_text(json.dumps(data), encoding="utf-8")
    pytester.makeconftest(
        """
        def pytest_bkjobs_cassette_path(item, config):
            return config.rootpath / "recordings" / f"{item.name}.json"
        """
    )
    pytester.makepyfile(
        test_mod="""
        import httpx

        def test_dyn(request):
            cassette = request.getfixturevalue("bk_cassette")
            assert cassette.options.path.parent.name == "recordings"
            url = "https://api.buildkite.com/v2/organizations/acme/jobs/j-1"
            assert httpx.get(url).json()["id"] == "j-1"
        """
    )
    run(pytester).assert_outcomes(passed=1)
