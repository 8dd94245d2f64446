"""The loopback front door: HTTP/1.1 details, streaming, faults, clean start and stop."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pytest_bkjobs import APIConnectionError, ConfigurationError, JobsClient, ServerError
from pytest_bkjobs.fake import FakeBuildkite, SampleBuild, SyntheticLog, run_fake_server

TOKEN = "fake-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _fake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bkjobs-fake")]


@pytest.fixture
def fake() -> FakeBuildkite:
    return FakeBuildkite()


@pytest.fixture
def sample(fake: FakeBuildkite) -> SampleBuild:
    return fake.sample_build()


@pytest.fixture
def server(fake: FakeBuildkite) -> Iterator[str]:
    with fake.serve() as url:
        yield url


def _connection(url: str) -> http.client.HTTPConnection:
    parsed = httpx.URL(url)
    assert parsed.port is not None
    return http.client.HTTPConnection(parsed.host, parsed.port, timeout=5)


def test_serve_yields_a_v2_base_url_and_stops_without_leaks(fake: FakeBuildkite) -> None:
    sample = fake.sample_build()
    before = _fake_threads()
    with fake.serve() as url:
        host_port = url.removeprefix("http://").removesuffix("/v2")
        host, port = host_port.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert url.endswith("/v2")
        idle = _connection(url)  # an idle keep-alive connection must not keep the server up
        idle.request("GET", f"/v2/organizations/acme/jobs/{sample.current_job_id}", headers=AUTH)
        assert idle.getresponse().read()
        assert len(_fake_threads()) > len(before)
        started = time.monotonic()
    assert time.monotonic() - started < 3
    assert _fake_threads() == before
    # The port is free again and nothing answers on it.
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0
    with socket.socket() as again:
        # No listening socket is left (only TIME_WAIT remnants, which SO_REUSEADDR allows).
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind((host, int(port)))
    idle.close()


def test_two_servers_share_one_backend(fake: FakeBuildkite, sample: SampleBuild) -> None:
    with fake.serve() as first, fake.serve() as second:
        assert first != second
        with JobsClient(token=TOKEN, org="acme", base_url=first) as one:
            new = one.retry_job(sample.job_ids["failed"])
        with JobsClient(token=TOKEN, org="acme", base_url=second) as two:
            assert two.get_job(sample.job_ids["failed"]).retried_in_job_id == new.id
    assert fake.retry_calls(sample.job_ids["failed"]) == 1


def test_keep_alive_serves_many_requests_on_one_connection(
    server: str, sample: SampleBuild
) -> None:
    conn = _connection(server)
    conn.request("GET", f"/v2/organizations/acme/jobs/{sample.current_job_id}", headers=AUTH)
    first = conn.getresponse()
    assert first.status == 200
    assert json.loads(first.read())["id"] == sample.current_job_id
    sock = conn.sock
    body = json.dumps({"priority": 4})
    conn.request(
        "PUT",
        f"/v2/organizations/acme/jobs/{sample.job_ids['failed']}/reprioritize",
        body=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    second = conn.getresponse()
    assert second.status == 200
    assert json.loads(second.read())["priority"] == {"number": 4}
    conn.request("GET", "/v2/organizations/acme/jobs/missing", headers=AUTH)
    third = conn.getresponse()
    assert third.status == 404
    assert json.loads(third.read()) == {"message": "No job found"}
    assert conn.sock is sock  # the same socket all along
    conn.close()


def test_head_gives_content_length_and_no_body(
    fake: FakeBuildkite, server: str, sample: SampleBuild
) -> None:
    conn = _connection(server)
    path = f"/v2/organizations/acme/jobs/{sample.job_ids['failed']}/log"
    conn.request("HEAD", path, headers={**AUTH, "Accept": "text/plain"})
    head = conn.getresponse()
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == len(fake.log(sample.job_ids["failed"]))
    assert head.read() == b""
    conn.request("GET", path, headers={**AUTH, "Accept": "text/plain", "Range": "bytes=0-9"})
    ranged = conn.getresponse()
    assert ranged.status == 206
    assert ranged.read() == fake.log(sample.job_ids["failed"])[:10]
    conn.close()


def test_big_json_and_html_logs_are_chunked(fake: FakeBuildkite, server: str) -> None:
    number = fake.add_build("p")
    line = 'a "quoted" ↳ line\r\n'
    size = len(line.encode()) * 150_000  # whole lines: no multi-byte character cut in two
    job_id = fake.add_job("p", number, log=SyntheticLog(size, line=line))
    conn = _connection(server)
    conn.request("GET", f"/v2/organizations/acme/jobs/{job_id}/log", headers=AUTH)
    answer = conn.getresponse()
    assert answer.headers["Transfer-Encoding"] == "chunked"
    assert answer.headers.get("Content-Length") is None
    data = json.loads(answer.read())
    assert data["size"] == size
    assert len(data["content"].encode("utf-8")) == size
    assert data["content"].startswith('a "quoted" ↳ line\r\n')
    conn.request("GET", f"/v2/organizations/acme/jobs/{job_id}/log.html", headers=AUTH)
    html = conn.getresponse()
    assert html.headers["Transfer-Encoding"] == "chunked"
    text = html.read().decode()
    assert text.count('<div class="line">a &quot;quoted&quot; ↳ line</div>') > 100_000
    conn.close()


def test_a_large_log_streams_through_with_bounded_memory(
    fake: FakeBuildkite, server: str, tmp_path: Path
) -> None:
    size = 50 * 1024 * 1024
    number = fake.add_build("p")
    job_id = fake.add_job("p", number, log=SyntheticLog(size))
    dest = tmp_path / "big.log"
    with JobsClient(token=TOKEN, org="acme", base_url=server) as client:
        assert client.get_job_log_size(job_id) == size
        tracemalloc.start()
        try:
            written = client.download_job_log(job_id, dest)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert written == size
    assert dest.stat().st_size == size
    assert peak < 8 * 1024 * 1024  # server and client together, for a 50 MB log


def test_a_1_gib_log_costs_nothing_until_read() -> None:
    fake = FakeBuildkite()
    number = fake.add_build("p")
    job_id = fake.add_job("p", number, log=SyntheticLog(1024**3))
    client = fake.client()
    assert client.get_job_log_size(job_id) == 1024**3
    assert len(client.get_job_log_text(job_id, tail=100)) == 100


def test_faults_over_the_wire(fake: FakeBuildkite, server: str, sample: SampleBuild) -> None:
    sleeps: list[float] = []
    with JobsClient(token=TOKEN, org="acme", base_url=server, sleep=sleeps.append) as client:
        fake.inject_fault("drop", method="GET")
        assert client.get_job(sample.current_job_id).id == sample.current_job_id
        assert len(sleeps) == 1
        fake.inject_fault("error", status=502, method="PUT")
        with pytest.raises(ServerError, match="502 Bad Gateway"):
            client.retry_job(sample.job_ids["failed"])
        assert fake.retry_calls(sample.job_ids["failed"]) == 0
        fake.inject_fault("lost", method="PUT")
        with pytest.raises(APIConnectionError, match="may have been executed"):
            client.retry_job(sample.job_ids["failed"])
        assert fake.retry_calls(sample.job_ids["failed"]) == 1
        assert fake.job(sample.job_ids["failed"])["retried"] is True
    outcomes = [(r.method, r.status, r.outcome) for r in fake.requests]
    assert outcomes == [
        ("GET", None, "dropped"),
        ("GET", 200, "answered"),
        ("PUT", 502, "answered"),
        ("PUT", None, "lost"),
    ]


def test_control_routes_reset_the_fake(fake: FakeBuildkite, server: str) -> None:
    fake.sample_build()
    fake.set_rate_limits(user=1)
    health = httpx.get(server.removesuffix("/v2") + "/__fake__/health")
    assert health.json() == {"ok": True, "org": "acme"}
    reset = httpx.post(server.removesuffix("/v2") + "/__fake__/reset")
    assert reset.status_code == 200
    with pytest.raises(LookupError):
        fake.job_ids("sample-app", 1)
    sample = fake.sample_build()
    with JobsClient(token=TOKEN, org="acme", base_url=server) as client:
        for _ in range(3):  # the rate limit was reset too
            assert client.get_job(sample.current_job_id).step_key == "bkjobs"


def test_run_fake_server_prints_settings_and_stops() -> None:
    lines: list[str] = []
    stop = threading.Event()
    runner = threading.Thread(
        target=run_fake_server,
        kwargs={"sample": True, "print_fn": lines.append, "stop": stop, "token": "tok-1"},
    )
    before = _fake_threads()
    runner.start()
    deadline = time.monotonic() + 5
    while not any("Ctrl-C" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.01)
    settings = dict(
        line.strip().split("=", 1) for line in lines if line.strip().startswith("BUILDKITE_")
    )
    assert settings["BUILDKITE_API_TOKEN"] == "tok-1"
    assert settings["BUILDKITE_ORGANIZATION_SLUG"] == "acme"
    assert settings["BUILDKITE_API_URL"].startswith("http://127.0.0.1:")
    with JobsClient.from_env(settings, dotenv_path=None) as client:
        job = client.get_job(settings["BUILDKITE_JOB_ID"])
        assert job.step_key == "bkjobs"
        assert settings["BUILDKITE_BUILD_NUMBER"] == "1"
    stop.set()
    runner.join(5)
    assert not runner.is_alive()
    assert _fake_threads() == before


def test_an_error_inside_the_fake_answers_500(fake: FakeBuildkite, server: str) -> None:
    number = fake.add_build("p")
    job_id = fake.add_job("p", number, state="scheduled")

    def broken(job: dict[str, object]) -> str:
        raise RuntimeError("outcome callable failed")

    fake.script_job(job_id, broken, after_polls=1)
    answer = httpx.get(f"{server}/organizations/acme/jobs/{job_id}", headers=AUTH)
    assert answer.status_code == 500
    assert answer.json() == {"message": "fake Buildkite error: RuntimeError"}


def test_serves_on_ipv6_loopback_when_available(fake: FakeBuildkite) -> None:
    sample = fake.sample_build()
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with fake.serve(host="::1") as url, JobsClient(token=TOKEN, org="acme", base_url=url) as c:
        assert url.startswith("http://[::1]:")
        job = c.get_job(sample.current_job_id)
        assert job.log_url is not None
        assert job.log_url.startswith(url)


def test_a_busy_port_is_a_clear_error(fake: FakeBuildkite, server: str) -> None:
    port = httpx.URL(server).port
    assert port is not None
    busy = fake.serve(port=port)
    with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}.*port 0"):
        busy.__enter__()


def test_stop_while_a_client_is_stuck_mid_download(fake: FakeBuildkite) -> None:
    number = fake.add_build("p")
    job_id = fake.add_job("p", number, log=SyntheticLog(64 * 1024 * 1024))
    before = _fake_threads()
    with fake.serve() as url:
        stuck = _connection(url)
        stuck.request("GET", f"/v2/organizations/acme/jobs/{job_id}/log.txt", headers=AUTH)
        answer = stuck.getresponse()
        assert len(answer.read(1024 * 1024)) == 1024 * 1024  # then stop reading
        gone = _connection(url)  # a client that hangs up mid-body does not hurt the server
        gone.request("GET", f"/v2/organizations/acme/jobs/{job_id}/log.txt", headers=AUTH)
        assert len(gone.getresponse().read(1000)) == 1000
        gone.close()
        with JobsClient(token=TOKEN, org="acme", base_url=url) as client:
            assert client.get_job_log_size(job_id) == 64 * 1024 * 1024
        started = time.monotonic()
    assert time.monotonic() - started < 3
    assert _fake_threads() == before
    stuck.close()


# -- the wire: framing, protocol errors, hosts ---------------------------------------------------


def _exchange(url: str, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    parsed = httpx.URL(url)
    assert parsed.port is not None
    with socket.create_connection((parsed.host, parsed.port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # nothing more is coming: a short body is truncated
        received = bytearray()
        while chunk := sock.recv(1024 * 1024):
            received += chunk
    return bytes(received)


def _answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The (status, headers, body) of every answer in ``raw`` (bodies with a Content-Length)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", len(rest)))
        out.append((int(status_line.split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return out


def _put(path: str, framing: bytes, body: bytes) -> bytes:
    return (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
        + framing
        + b"\r\n"
        + body
    )


@pytest.mark.parametrize(
    ("framing", "body", "status", "message"),
    [
        (b"Content-Length: abc\r\n", b'{"priority": 9}', 400, "Invalid Content-Length"),
        (b"Content-Length: -5\r\n", b'{"priority": 9}', 400, "Invalid Content-Length"),
        (b"Content-Length: 15\r\nContent-Length: 15\r\n", b'{"priority": 9}', 400, "More than one"),
        (b"Content-Length: 99999999999\r\n", b'{"priority": 9}', 413, "too large"),
        (b"Transfer-Encoding: chunked\r\n", b"zz\r\n", 400, "Invalid chunk size"),
        (b"Transfer-Encoding: chunked\r\n", b"ffffffffff\r\n", 413, "too large"),
        (b"Transfer-Encoding: chunked\r\n", b"5\r\nab", 400, "Truncated chunk"),
        (b"Transfer-Encoding: gzip\r\n", b"", 400, "Unsupported Transfer-Encoding"),
    ],
)
def test_bad_body_framing_is_one_json_400_then_close(
    fake: FakeBuildkite,
    sample: SampleBuild,
    server: str,
    framing: bytes,
    body: bytes,
    status: int,
    message: str,
) -> None:
    path = f"/v2/organizations/acme/jobs/{sample.job_ids['failed']}/reprioritize"
    raw = _exchange(server, _put(path, framing, body))
    ((code, headers, content),) = _answers(raw)  # one answer, then the connection closed
    assert code == status
    assert message in json.loads(content)["message"]
    assert headers["connection"] == "close"
    assert headers["content-type"].startswith("application/json")
    assert fake.job(sample.job_ids["failed"])["priority"] == {"number": 0}
    assert fake.requests == []


def test_a_chunked_body_with_trailers_is_read(
    fake: FakeBuildkite, sample: SampleBuild, server: str
) -> None:
    path = f"/v2/organizations/acme/jobs/{sample.job_ids['failed']}/reprioritize"
    body = b'8\r\n{"priori\r\n8;ext=1\r\nty": 33}\r\n0\r\nX-Trailer: yes\r\n\r\n'
    request = _put(path, b"Transfer-Encoding: chunked\r\nConnection: close\r\n", body)
    ((code, _, content),) = _answers(_exchange(server, request))
    assert code == 200
    assert json.loads(content)["priority"] == {"number": 33}


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 120 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ],
)
def test_protocol_errors_are_json(server: str, request_bytes: bytes, status: int) -> None:
    ((code, headers, content),) = _answers(_exchange(server, request_bytes))
    assert code == status
    assert headers["content-type"].startswith("application/json")
    assert json.loads(content)["message"]
    assert headers["connection"] == "close"


@pytest.mark.parametrize("method", ["get", "OPTIONS", "BREW"])
def test_any_method_gets_a_json_404(server: str, sample: SampleBuild, method: str) -> None:
    request = (
        f"{method} /v2/organizations/acme/jobs/{sample.current_job_id} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    ((code, headers, content),) = _answers(_exchange(server, request.encode()))
    assert code == 404
    assert json.loads(content)["message"].startswith(f"No route matches [{method}]")
    assert headers["ratelimit-scope"] == "rest"


def test_host_header_is_checked_and_absolute_targets_work(server: str, sample: SampleBuild) -> None:
    job = f"/v2/organizations/acme/jobs/{sample.current_job_id}"
    auth = f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    bad = f"GET {job} HTTP/1.1\r\nHost: a b/c?d\r\n{auth}"
    ((code, _, content),) = _answers(_exchange(server, bad.encode()))
    assert (code, json.loads(content)) == (400, {"message": "Invalid Host header"})
    absolute = f"GET http://fake.test:8080{job}?x=1 HTTP/1.1\r\nHost: ignored\r\n{auth}"
    ((code, _, content),) = _answers(_exchange(server, absolute.encode()))
    assert code == 200
    assert json.loads(content)["log_url"].startswith("http://fake.test:8080/v2/")


def test_an_http_1_0_client_gets_a_close_delimited_body(fake: FakeBuildkite, server: str) -> None:
    number = fake.add_build("p")
    line = "x" * 1023 + "\n"
    job_id = fake.add_job("p", number, log=SyntheticLog(1100 * 1024, line=line))
    request = f"GET /v2/organizations/acme/jobs/{job_id}/log.html HTTP/1.0\r\n"
    raw = _exchange(server, f"{request}Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Connection: close" in head
    assert body.startswith(b'<div class="term-container">\n')
    assert body.endswith(b"</div>\n</div>\n")
    assert body.count(b'<div class="line">' + b"x" * 1023 + b"</div>") == 1100


def test_control_routes_are_not_recorded(fake: FakeBuildkite, server: str) -> None:
    root = server.removesuffix("/v2")
    assert httpx.get(root + "/__fake__/health").status_code == 200
    assert httpx.post(root + "/__fake__/reset").json() == {"message": "reset"}
    assert httpx.get(root + "/__fake__/nope").status_code == 404
    assert fake.requests == []


def test_a_stepping_clock_gives_the_same_sample_timestamps_every_time() -> None:
    from pytest_bkjobs.fake import SteppingClock

    first, second = (FakeBuildkite(clock=SteppingClock()) for _ in range(2))
    jobs = [f.client().list_jobs(f.sample_build().pipeline, 1).items for f in (first, second)]
    stamps = [[j.raw.get("created_at") for j in page] for page in jobs]
    assert stamps[0] == stamps[1]
    given = [s for s in stamps[0] if s]
    assert given
    assert all(s.startswith("2026-01-01T00:0") for s in given)
