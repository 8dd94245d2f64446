"""B5-B7: the client against the fake Buildkite served on 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from bench_util import PYTHON, Row, bench_env, fmt_s, median, run

PIPELINE = "bench"
MIB = 1024 * 1024

_SERVER = """
import json, sys
from pytest_bkjobs.fake import FakeBuildkite, SyntheticLog
pipeline, spec = sys.argv[1], json.loads(sys.argv[2])
fake = FakeBuildkite()
info = {"token": fake.token, "org": fake.org}
for name, jobs in spec.get("builds", {}).items():
    info[name] = build = fake.add_build(pipeline)
    for i in range(jobs):
        fake.add_job(pipeline, build, name=f"job {i}")
if "log_bytes" in spec:
    build = fake.add_build(pipeline)
    info["job"] = fake.add_job(pipeline, build, state="passed", log=SyntheticLog(spec["log_bytes"]))
with fake.serve() as base_url:
    info["base_url"] = base_url
    print(json.dumps(info), flush=True)
    sys.stdin.read()  # serve until the benchmark closes our stdin
"""


@contextlib.contextmanager
def fake_server_process(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The fake in a child process: the server's work never shares a GIL with the timed side."""
    proc = subprocess.Popen(
        [PYTHON, "-c", _SERVER, PIPELINE, json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=bench_env(),
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake server did not start (exit status {proc.wait()})")
        yield json.loads(line)  # type: ignore[no-any-return]
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- B5: iter_jobs ------------------------------------------------------------------------------


def _plain_httpx(base_url: str, token: str, org: str, build: int) -> int:
    """The baseline: an httpx loop following ``links.next`` and counting the items."""
    url: str | None = f"{base_url}/organizations/{org}/pipelines/{PIPELINE}/builds/{build}/jobs"
    params: dict[str, str] | None = {"per_page": "100"}
    count = 0
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    with httpx.Client(headers=headers) as http:
        for _ in range(10_000):  # bounded: a server looping on links.next cannot hang us
            if url is None:
                break
            response = http.get(url, params=params)
            response.raise_for_status()
            page = response.json()
            count += len(page["items"])
            url, params = page["links"].get("next"), None
    return count


def _ours(base_url: str, token: str, org: str, build: int, read_fields: bool = False) -> int:
    from pytest_bkjobs import Job, JobsClient

    names = [f.name for f in dataclasses.fields(Job)] if read_fields else []
    count = 0
    with JobsClient(token=token, org=org, base_url=base_url) as client:
        for job in client.iter_jobs(PIPELINE, build, per_page=100):
            for name in names:  # fields parse on first read: this pays for all of them
                getattr(job, name)
            count += 1
    return count


def _ours_every_field(base_url: str, token: str, org: str, build: int) -> int:
    """For reference: ``iter_jobs`` reading every field of every job."""
    return _ours(base_url, token, org, build, read_fields=True)


_MEMORY_CHILD = """
import json, sys, tracemalloc
base_url, token, org, pipeline, build, who = sys.argv[1:7]
if who == "ours":
    from pytest_bkjobs import JobsClient
    with JobsClient(token=token, org=org, base_url=base_url) as client:
        tracemalloc.start()
        count = sum(1 for _ in client.iter_jobs(pipeline, int(build), per_page=100))
        peak = tracemalloc.get_traced_memory()[1]
else:
    sys.path.insert(0, sys.argv[7])
    from bench_loopback import _plain_httpx
    tracemalloc.start()
    count = _plain_httpx(base_url, token, org, int(build))
    peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"count": count, "peak": peak}))
"""


def _peak_mib(base_url: str, token: str, org: str, build: int, who: str = "ours") -> float:
    """Peak Python memory of a child process iterating the build (the server is not in it)."""
    here = str(Path(__file__).resolve().parent)
    args = [PYTHON, "-c", _MEMORY_CHILD, base_url, token, org, PIPELINE, str(build), who, here]
    return float(json.loads(run(args).strip().splitlines()[-1])["peak"]) / MIB


def rows_b5(jobs: int, repeats: int) -> list[Row]:
    ours_t: list[float] = []
    base_t: list[float] = []
    every_t: list[float] = []
    small_jobs = max(300, jobs // 4)  # several pages even in a quick run
    spec = {"builds": {"big": jobs, "small": small_jobs}}
    with fake_server_process(spec) as server:
        args = (server["base_url"], server["token"], server["org"])
        for _ in range(repeats):
            for fn, times in (
                (_ours, ours_t),
                (_plain_httpx, base_t),
                (_ours_every_field, every_t),
            ):
                start = time.perf_counter()
                count = fn(*args, server["big"])
                times.append(time.perf_counter() - start)
                if count != jobs:
                    raise RuntimeError(f"{fn.__name__} saw {count} jobs, expected {jobs}")
        # Memory: the peak while iterating the big build vs one a quarter of its size (both
        # several pages): flat means the peak does not grow with the number of pages.
        peak_big = _peak_mib(*args, server["big"])
        peak_small = _peak_mib(*args, server["small"])
        # For context: httpx's own reference cycles wait for the garbage collector, so the
        # baseline's peak also rises a little with the number of pages.
        base_big = _peak_mib(*args, server["big"], who="httpx")
        base_small = _peak_mib(*args, server["small"], who="httpx")
    ours, base = median(ours_t), median(base_t)
    ratio = ours / base
    every_ratio = median(every_t) / base
    flat = peak_big <= 1.5 * peak_small
    return [
        Row(
            "B5",
            f"`iter_jobs` over a {jobs:,}-job build (per_page 100), fake on loopback",
            fmt_s(ours),
            f"{fmt_s(base)} (httpx loop on links.next)",
            ratio,
            f"{ratio:.2f}x; peak {peak_big:.1f} MiB vs {peak_small:.1f} MiB at {small_jobs:,} jobs"
            f" (httpx loop: {base_big:.1f} vs {base_small:.1f}); reading every field of every"
            f" job: {every_ratio:.2f}x",
            "<= 1.2x, memory flat",
            ratio <= 1.2 and flat,
            repeats,
            {
                "ours_s": ours_t,
                "httpx_s": base_t,
                "every_field_s": every_t,
                "tracemalloc_peak_mib": peak_big,
                "tracemalloc_peak_mib_quarter": peak_small,
                "httpx_tracemalloc_peak_mib": base_big,
                "httpx_tracemalloc_peak_mib_quarter": base_small,
                "memory_flat": flat,
            },
        )
    ]


# -- B6: retry_failed_siblings ------------------------------------------------------------------


def _retry_run(failed: int, latency: float, concurrency: int) -> tuple[float, int, int]:
    """Seconds, retries the server executed, and jobs reported retried."""
    from pytest_bkjobs import JobsClient
    from pytest_bkjobs.ci import BuildContext, retry_failed_siblings
    from pytest_bkjobs.fake import FakeBuildkite

    fake = FakeBuildkite()
    build = fake.add_build(PIPELINE)
    ids = [
        fake.add_job(PIPELINE, build, name=f"shard {i}", state="failed", exit_status=1)
        for i in range(failed)
    ]
    me = fake.add_job(PIPELINE, build, name="bkjobs", state="running", step_key="bkjobs")
    ctx = BuildContext(org=fake.org, pipeline=PIPELINE, build=build, job_id=me)
    fake.latency = latency
    with (
        fake.serve() as base_url,
        JobsClient(token=fake.token, org=fake.org, base_url=base_url) as client,
    ):
        start = time.perf_counter()
        report = retry_failed_siblings(client, ctx, concurrency=concurrency)
        elapsed = time.perf_counter() - start
    executed = sum(fake.retry_calls(job_id) for job_id in ids)
    return elapsed, executed, len(report.retried)


def rows_b6(failed: int, latency: float, repeats: int) -> list[Row]:
    fast: list[float] = []
    slow: list[float] = []
    counts: set[tuple[int, int]] = set()
    for _ in range(repeats):
        for concurrency, times in ((8, fast), (1, slow)):
            elapsed, executed, retried = _retry_run(failed, latency, concurrency)
            times.append(elapsed)
            counts.add((executed, retried))
    exact = counts == {(failed, failed)}
    speedup = median(slow) / median(fast)
    return [
        Row(
            "B6",
            f"`retry_failed_siblings` on {failed} failed jobs, {latency * 1000:.0f} ms latency,"
            " concurrency 8",
            fmt_s(median(fast)),
            f"{fmt_s(median(slow))} (concurrency 1)",
            speedup,
            f"{speedup:.2f}x faster; retries executed/reported: "
            + ", ".join(f"{e}/{r}" for e, r in sorted(counts)),
            f">= 5x faster; {failed} retries exactly",
            speedup >= 5 and exact,
            repeats,
            {"concurrency_8_s": fast, "concurrency_1_s": slow, "exactly_once": exact},
        )
    ]


# -- B7: download_job_log -----------------------------------------------------------------------

_CHILD = """
import json, resource, sys, time
import httpx
from pytest_bkjobs import JobsClient
base_url, token, org, job_id, dest, do = sys.argv[1:7]
if do == "ours-256k":  # for reference only: httpcore reads the socket 64 KiB at a time
    from httpcore._sync.http11 import HTTP11Connection
    HTTP11Connection.READ_NUM_BYTES = 256 * 1024
def peak_kib():
    # VmHWM is this process's own peak; on Linux ru_maxrss also counts the parent's at fork.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
client = JobsClient(token=token, org=org, base_url=base_url)
before = peak_kib()
start = time.perf_counter()
size = 0
if do in ("ours", "ours-256k"):
    size = client.download_job_log(job_id, dest)
elif do == "httpx":  # for reference: plain httpx into a plain file, no rename, no fsync
    url = f"{base_url}/organizations/{org}/jobs/{job_id}/log.txt"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("GET", url, headers=headers) as response, open(dest, "wb") as out:
        for chunk in response.iter_raw():
            size += out.write(chunk)
elapsed = time.perf_counter() - start
client.close()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"size": size, "seconds": elapsed, "before_kib": before,
                  "maxrss_kib": peak_kib(), "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def _download_child(args: list[str], dest: Path, do: str) -> dict[str, float]:
    """Run the download child: ``do`` is "ours", "ours-256k", "httpx" or "idle" (no download)."""
    out = run([PYTHON, "-c", _CHILD, *args, str(dest), do], timeout=300)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _check_and_remove(dest: Path, size: int, who: str, reported: float | None = None) -> None:
    """Check a downloaded file's size, then delete it and flush the disk for the next run."""
    if dest.stat().st_size != size or reported not in (None, size):
        raise RuntimeError(f"{who} downloaded {dest.stat().st_size} bytes, expected {size}")
    dest.unlink()
    os.sync()


def _curl(url: str, token: str, dest: Path) -> float:
    done = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--noproxy",
            "*",
            "-H",
            f"Authorization: Bearer {token}",
            "-o",
            str(dest),
            "-w",
            "%{time_total} %{size_download}",
            url,
        ],
        capture_output=True,
        text=True,
        env=bench_env(),
        timeout=300,
        check=True,
    )
    seconds, _size = done.stdout.split()
    return float(seconds)


def rows_b7(size_mib: int, repeats: int) -> list[Row]:
    what = f"`download_job_log` of a {size_mib} MiB log, fake on loopback"
    target = ">= 0.7x curl's throughput; peak RSS growth < 64 MiB"
    if shutil.which("curl") is None:
        from bench_util import skipped

        return [skipped("B7", what, target, "curl is not installed")]
    size = size_mib * MIB
    ours_t: list[float] = []
    curl_t: list[float] = []
    httpx_t: list[float] = []
    big_reads_t: list[float] = []
    growth: list[float] = []
    cpu: list[float] = []  # the download's CPU seconds (the idle child's subtracted)
    with (
        tempfile.TemporaryDirectory(prefix="bkjobs-bench-log-") as tmp,
        fake_server_process({"log_bytes": size}) as server,
    ):
        base, token, org, job = (server[k] for k in ("base_url", "token", "org", "job"))
        dest = Path(tmp) / "job.log"
        args = [base, token, org, job]
        url = f"{base}/organizations/{org}/jobs/{job}/log.txt"
        for _ in range(repeats):
            idle = _download_child(args, dest, do="idle")
            result = _download_child(args, dest, do="ours")
            _check_and_remove(dest, size, "download_job_log", result["size"])
            ours_t.append(result["seconds"])
            growth.append((result["maxrss_kib"] - idle["maxrss_kib"]) / 1024)
            cpu.append(result["cpu_s"] - idle["cpu_s"])
            curl_t.append(_curl(url, token, dest))
            _check_and_remove(dest, size, "curl")
            plain = _download_child(args, dest, do="httpx")
            _check_and_remove(dest, size, "plain httpx", plain["size"])
            httpx_t.append(plain["seconds"])
            big_reads = _download_child(args, dest, do="ours-256k")
            _check_and_remove(dest, size, "download_job_log, 256 KiB reads", big_reads["size"])
            big_reads_t.append(big_reads["seconds"])
    ours_rate, curl_rate = size_mib / median(ours_t), size_mib / median(curl_t)
    ratio = ours_rate / curl_rate
    plain_ratio = median(curl_t) / median(httpx_t)
    big_reads_ratio = median(curl_t) / median(big_reads_t)
    rss = median(growth)
    return [
        Row(
            "B7",
            what,
            f"{ours_rate:.0f} MiB/s, RSS +{rss:.1f} MiB",
            f"{curl_rate:.0f} MiB/s (`curl -o`)",
            ratio,
            f"{ratio:.2f}x curl; RSS +{rss:.1f} MiB; plain httpx to a file, no fsync:"
            f" {plain_ratio:.2f}x curl; ours with httpcore reading 256 KiB, not 64 KiB, a"
            f" time: {big_reads_ratio:.2f}x curl",
            target,
            ratio >= 0.7 and rss < 64,
            repeats,
            {
                "ours_s": ours_t,
                "ours_cpu_s": cpu,
                "curl_s": curl_t,
                "plain_httpx_s": httpx_t,
                "ours_256k_reads_s": big_reads_t,
                "rss_growth_mib": growth,
            },
        )
    ]
