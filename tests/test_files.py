"""AtomicFile: all or nothing at the destination, early writeback, and cancel-safe async use."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_bkjobs import AsyncJobsClient, _files
from pytest_bkjobs._files import AtomicFile, atomic_writer
from tests.conftest import ORG, TOKEN
from tests.test_client_endpoints import JOB_ID, _IterStream


@pytest.fixture
def writeback_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the ranges handed to posix_fadvise, with a 1 KiB step instead of 8 MiB."""
    calls: list[tuple[int, int]] = []

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        assert os.fstat(fd).st_size >= offset + length  # flushed before the hint
        calls.append((offset, length))

    monkeypatch.setattr(_files, "WRITEBACK_STEP", 1024)
    monkeypatch.setattr(_files, "_fadvise", fadvise)
    return calls


def test_writeback_is_started_for_every_step_in_order(
    tmp_path: Path, writeback_calls: list[tuple[int, int]]
) -> None:
    dest = tmp_path / "job.log"
    with atomic_writer(dest) as file:
        for _ in range(10):
            file.write(b"x" * 300)
    assert dest.read_bytes() == b"x" * 3000
    assert file.written == 3000
    assert writeback_calls == [(0, 1200), (1200, 1200)]  # the last 600 bytes: the fsync's


def test_a_refused_hint_does_not_fail_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(_files, "WRITEBACK_STEP", 10)
    monkeypatch.setattr(_files, "_fadvise", refuse)
    dest = tmp_path / "job.log"
    with atomic_writer(dest) as file:
        file.writelines([b"a" * 20, b"b" * 20])
    assert dest.read_bytes() == b"a" * 20 + b"b" * 20


def test_a_failed_commit_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "job.log"
    dest.write_bytes(b"previous")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    file = AtomicFile(dest)
    file.write(b"new content")
    with pytest.raises(OSError, match="No space left"):
        file.commit()
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["job.log"]


def test_discard_is_safe_twice_and_never_touches_a_committed_file(tmp_path: Path) -> None:
    dest = tmp_path / "job.log"
    dropped = AtomicFile(dest)
    dropped.write(b"never seen")
    dropped.discard()
    dropped.discard()
    assert list(tmp_path.iterdir()) == []

    kept = AtomicFile(dest)
    kept.write(b"kept")
    kept.commit()
    kept.discard()
    assert dest.read_bytes() == b"kept"
    assert [p.name for p in tmp_path.iterdir()] == ["job.log"]


def test_download_of_many_chunks_starts_writeback_and_keeps_every_byte(
    make_client: Any, tmp_path: Path, writeback_calls: list[tuple[int, int]]
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, so the async client sends more than one batch
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    client = make_client(lambda request: httpx.Response(200, stream=_IterStream(chunks)))
    dest = tmp_path / "job.log"
    assert client.download_job_log(JOB_ID, dest) == len(body)
    assert dest.read_bytes() == body
    offsets = [offset for offset, _ in writeback_calls]
    assert offsets == sorted(offsets)
    assert sum(length for _, length in writeback_calls) > len(body) - 2048


def test_cancelling_an_async_download_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "job.log"
    started = asyncio.Event()

    class SlowStream(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            for _ in range(64):
                yield b"x" * 65536  # past the 1 MiB batch, so a disk write is in flight
            started.set()
            await asyncio.sleep(3600)
            yield b"never"

    async def main() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=SlowStream()))
        async with AsyncJobsClient(token=TOKEN, org=ORG, transport=transport) as client:
            task = asyncio.create_task(client.download_job_log(JOB_ID, dest))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert list(tmp_path.iterdir()) == []


def test_download_failure_after_a_batch_leaves_no_file(make_client: Any, tmp_path: Path) -> None:
    def drop_after_two_mib(request: httpx.Request) -> httpx.Response:
        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(32):
                yield b"y" * 65536
            raise httpx.ReadError("connection reset")

        return httpx.Response(200, stream=_IterStream(chunks()))

    client = make_client(drop_after_two_mib, max_retries=0)
    with pytest.raises(Exception, match="connection failed while reading"):
        client.download_job_log(JOB_ID, tmp_path / "job.log")
    assert list(tmp_path.iterdir()) == []


def test_a_fifo_destination_is_written_into_not_replaced(make_client: Any, tmp_path: Path) -> None:
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "stdout-like"
    link.symlink_to(fifo)  # as /dev/stdout points at the terminal or a pipe
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    body = b"line\n" * 50_000
    try:
        written = make_client(lambda request: httpx.Response(200, content=body)).download_job_log(
            JOB_ID, link
        )
        still_a_fifo = stat.S_ISFIFO(fifo.stat().st_mode)
    finally:
        if reader.is_alive() and stat.S_ISFIFO(fifo.lstat().st_mode):
            fifo.write_bytes(b"")  # nobody wrote into it: let the reader go
        reader.join(timeout=10)
    assert still_a_fifo  # not replaced by a regular file
    assert written == len(body)
    assert received == [body]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.fifo", "stdout-like"]


def test_a_chdir_during_a_download_does_not_misplace_the_file(
    make_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "start").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "start")

    def chunks():  # type: ignore[no-untyped-def]
        yield b"first half, "
        os.chdir(tmp_path / "elsewhere")  # another thread of the program moves the process
        yield b"second half"

    client = make_client(lambda request: httpx.Response(200, stream=_IterStream(chunks())))
    client.download_job_log(JOB_ID, "job.log")
    assert (tmp_path / "start" / "job.log").read_bytes() == b"first half, second half"
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_cancel_waits_for_the_disk_write_in_flight_even_when_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "job.log"
    writing = threading.Event()
    release = threading.Event()
    events: list[str] = []
    real_writelines = AtomicFile.writelines
    real_discard = AtomicFile.discard

    def slow_writelines(self: AtomicFile, chunks: Any) -> None:
        writing.set()
        release.wait(10)
        real_writelines(self, chunks)
        events.append("write done")

    def discard(self: AtomicFile) -> None:
        events.append("discard")
        real_discard(self)

    monkeypatch.setattr(AtomicFile, "writelines", slow_writelines)
    monkeypatch.setattr(AtomicFile, "discard", discard)

    class Stream(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            for _ in range(32):
                yield b"z" * 65536  # 2 MiB: the first batch goes to the disk thread

    async def main() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Stream()))
        async with AsyncJobsClient(token=TOKEN, org=ORG, transport=transport) as client:
            task = asyncio.create_task(client.download_job_log(JOB_ID, dest))
            await asyncio.to_thread(writing.wait, 10)
            task.cancel()
            await asyncio.sleep(0.01)
            task.cancel()  # a second cancel must not cut the wait short
            await asyncio.sleep(0.01)
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert events == ["write done", "discard"]
    assert list(tmp_path.iterdir()) == []
