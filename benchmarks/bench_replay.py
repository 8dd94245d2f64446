"""B1-B3: replaying recorded ``get_job`` calls through ``bk_client``, respx and vcrpy.

One generated pytest project holds every variant; its conftest runs the tests in interleaved
order (repeat 0 of every variant, then repeat 1, ...) and writes each test's time to a JSON
file. The base URL is a loopback address nothing listens on: no request can leave the machine.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

from bench_util import PYTHON, Row, fmt_s, median, run

BASE = "http://127.0.0.1:9/v2"
ORG = "acme"
PIPELINE = "bench"

CONFTEST = """
import json, os, time
import pytest

ORDER = {"ours": 0, "respx": 1, "vcr": 2}


def pytest_collection_modifyitems(items):
    def key(item):
        p = item.callspec.params
        return (p["rep"], p["n"], ORDER[item.originalname.split("_", 1)[1]])
    items.sort(key=key)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = time.perf_counter()
    result = yield
    total = time.perf_counter() - start
    loop = dict(item.user_properties).get("loop")
    p = item.callspec.params
    with open(os.environ["BENCH_OUT"], "a") as out:
        out.write(json.dumps({"variant": item.originalname.split("_", 1)[1], "n": p["n"],
                              "rep": p["rep"], "total": total, "loop": loop}) + "\\n")
    return result


def pytest_bkjobs_cassette_path(item, config):
    p = item.callspec.params
    return config.rootpath / "cassettes" / f"ours_{p['n']}_{p['rep']}.json"
"""

TEST_FILE = """
import json, time
import pytest
import respx
from pytest_bkjobs import JobsClient

IDS = json.load(open(__file__.replace("test_replay.py", "ids.json")))
ONE_JOB = json.load(open(__file__.replace("test_replay.py", "one_job.json")))
BASE = {base!r}
PARAMS = pytest.mark.parametrize("n,rep", {ours_params!r})
BASELINE = pytest.mark.parametrize("n,rep", {other_params!r})


def replay(client, n, request):
    start = time.perf_counter()
    for job_id in IDS[:n]:
        job = client.get_job(job_id)
    request.node.user_properties.append(("loop", time.perf_counter() - start))
    assert job.id == IDS[n - 1] or job.id == ONE_JOB["id"]


@PARAMS
def test_ours(bk_client, n, rep, request):
    replay(bk_client, n, request)


@BASELINE
def test_respx(n, rep, request):
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.get(path__regex=r"/organizations/{org}/jobs/[^/]+$").respond(json=ONE_JOB)
        with JobsClient(token="bench-token", org="{org}", base_url=BASE) as client:
            replay(client, n, request)
"""

VCR_TEST = """

@BASELINE
@pytest.mark.vcr
@pytest.mark.default_cassette("vcr_{{n}}.yaml")
def test_vcr(n, rep, request):
    with JobsClient(token="bench-token", org="{org}", base_url=BASE) as client:
        replay(client, n, request)
"""


def vcr_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("vcr", "pytest_recording"))


def _jobs(count: int) -> list[dict[str, Any]]:
    """``count`` failed script jobs rendered by the fake, as ``GET .../jobs/{id}`` answers."""
    from pytest_bkjobs.fake import FakeBuildkite

    fake = FakeBuildkite(org=ORG, base_url=BASE)
    build = fake.add_build(PIPELINE)
    ids = [
        fake.add_job(PIPELINE, build, name=f"test shard {i}", state="failed", exit_status=1)
        for i in range(count)
    ]
    return [fake.job(job_id) for job_id in ids]


def _ours_cassette(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    interactions = [
        {
            # No Accept header recorded: it matches any (as documented for VCR imports).
            "request": {
                "method": "GET",
                "uri": f"{BASE}/organizations/{ORG}/jobs/{job['id']}",
                "headers": {},
                "body": None,
            },
            "response": {
                "status": 200,
                "reason": "OK",
                "http_version": "HTTP/1.1",
                "headers": {"content-type": ["application/json; charset=utf-8"]},
                "body": {"json": job},
            },
        }
        for job in jobs
    ]
    return {"version": 1, "base_url": BASE, "org": ORG, "interactions": interactions}


def _vcr_cassette(jobs: list[dict[str, Any]]) -> str:
    import yaml

    interactions = [
        {
            "request": {
                "body": None,
                "headers": {},
                "method": "GET",
                "uri": f"{BASE}/organizations/{ORG}/jobs/{job['id']}",
            },
            "response": {
                "status": {"code": 200, "message": "OK"},
                "headers": {"content-type": ["application/json; charset=utf-8"]},
                "body": {"string": json.dumps(job, separators=(",", ":"))},
            },
        }
        for job in jobs
    ]
    return str(yaml.safe_dump({"interactions": interactions, "version": 1}))


def write_project(
    folder: Path, n_main: int, sizes: list[int], repeats: int, with_vcr: bool
) -> None:
    """The generated project: cassettes for every size and repeat, tests and conftest."""
    sizes = sorted(set([*sizes, n_main]))
    jobs = _jobs(max(sizes))
    (folder / "cassettes").mkdir(parents=True)
    (folder / "ids.json").write_text(json.dumps([job["id"] for job in jobs]))
    (folder / "one_job.json").write_text(json.dumps(jobs[0]))
    (folder / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    for n in sizes:
        data = json.dumps(_ours_cassette(jobs[:n]), indent=2)
        for rep in range(repeats):
            (folder / "cassettes" / f"ours_{n}_{rep}.json").write_text(data)
    ours = [(n, rep) for rep in range(repeats) for n in sizes]
    others = [(n_main, rep) for rep in range(repeats)]
    text = TEST_FILE.format(base=BASE, org=ORG, ours_params=ours, other_params=others)
    if with_vcr:
        vcr_dir = folder / "cassettes" / "test_replay"
        vcr_dir.mkdir(parents=True)
        (vcr_dir / f"vcr_{n_main}.yaml").write_text(_vcr_cassette(jobs[:n_main]))
        text += VCR_TEST.format(org=ORG).replace("{n}", str(n_main))
    (folder / "test_replay.py").write_text(text)
    (folder / "conftest.py").write_text(CONFTEST)


def measure(n_main: int, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """Run the generated project once; every test's record (variant, n, rep, total, loop)."""
    with tempfile.TemporaryDirectory(prefix="bkjobs-bench-replay-") as tmp:
        folder = Path(tmp)
        write_project(folder, n_main, sizes, repeats, vcr_available())
        out = folder / "times.jsonl"
        import os

        os.environ["BENCH_OUT"] = str(out)
        try:
            run([PYTHON, "-m", "pytest", "-q", "-p", "no:randomly", "-x"], cwd=folder, timeout=3600)
        finally:
            os.environ.pop("BENCH_OUT", None)
        return [json.loads(line) for line in out.read_text().splitlines()]


def rows(n_main: int, sizes: list[int], repeats: int) -> list[Row]:
    """B1, B2 and B3 from one run of the generated project."""
    records = measure(n_main, sizes, repeats)

    def times(variant: str, n: int, key: str) -> list[float]:
        return [r[key] for r in records if r["variant"] == variant and r["n"] == n]

    ours = median(times("ours", n_main, "total"))
    respx_t = median(times("respx", n_main, "total"))
    b1 = ours / respx_t
    out = [
        Row(
            "B1",
            f"replay {n_main:,} `get_job` calls from a cassette through `bk_client` (whole test)",
            fmt_s(ours),
            f"{fmt_s(respx_t)} (one respx route)",
            b1,
            f"{b1:.2f}x",
            "<= 1.5x",
            b1 <= 1.5,
            repeats,
            {
                "ours_loop_s": median(times("ours", n_main, "loop")),
                "respx_loop_s": median(times("respx", n_main, "loop")),
                "ours_total_s": ours,
                "respx_total_s": respx_t,
            },
        )
    ]
    what2 = f"the same replay ({n_main:,} calls) vs pytest-recording/vcrpy"
    vcr_times = times("vcr", n_main, "total")
    if vcr_times:
        vcr_t = median(vcr_times)
        b2 = vcr_t / ours
        out.append(
            Row(
                "B2",
                what2,
                fmt_s(ours),
                f"{fmt_s(vcr_t)} (vcrpy)",
                b2,
                f"{b2:.2f}x faster",
                ">= 3x faster",
                b2 >= 3,
                repeats,
                {"vcr_total_s": vcr_t, "vcr_loop_s": median(times("vcr", n_main, "loop"))},
            )
        )
    else:
        from bench_util import skipped

        out.append(skipped("B2", what2, ">= 3x faster", "pip install -e '.[bench]'"))
    per = {n: median(times("ours", n, "loop")) / n for n in sizes}
    small, big = min(sizes), max(sizes)
    growth = per[big] / per[small]
    # Linear growth would multiply the per-request cost by big/small; we ask for at most the
    # square root of that (an index keeps it near 1x).
    limit = (big / small) ** 0.5
    out.append(
        Row(
            "B3",
            "replay cost per request with "
            + ", ".join(f"{n:,}" for n in sizes)
            + " interactions in the cassette",
            ", ".join(fmt_s(per[n]) for n in sizes),
            f"{fmt_s(per[small])} (at {small})",
            growth,
            ", ".join(f"{per[n] / per[small]:.2f}x" for n in sizes),
            f"sub-linear (<= {limit:.0f}x at {big:,})",
            growth <= limit,
            repeats,
            {"per_request_s": {str(n): per[n] for n in sizes}},
        )
    )
    return out
