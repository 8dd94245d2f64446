"""Review of the B5/B7 changes: odd destinations and disk failures during a download."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_bkjobs._errors import InvalidArgumentError
from pytest_bkjobs._files import AtomicFile, atomic_writer
from tests.test_client_endpoints import JOB_ID, _IterStream


class _DiskFillsUp(io.FileIO):
    """A file on a disk with ``room`` bytes left: a write past it fails with ENOSPC."""

    room = 0

    def write(self, data: Any) -> int:
        if len(data) > _DiskFillsUp.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        _DiskFillsUp.room -= len(data)
        return super().write(data)


@pytest.fixture
def disk_room(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make new files land on a disk with ``disk_room(n)`` bytes free (via os.fdopen)."""

    def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> io.BufferedWriter:
        assert mode == "wb"
        return io.BufferedWriter(_DiskFillsUp(fd, "wb", closefd=True))

    def set_room(room: int) -> None:
        _DiskFillsUp.room = room
        monkeypatch.setattr(os, "fdopen", fdopen)

    return set_room


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_at_the_final_flush_leaves_no_temporary(tmp_path: Path, disk_room: Any) -> None:
    dest = tmp_path / "job.log"
    dest.write_bytes(b"previous")
    disk_room(0)
    with pytest.raises(OSError, match="No space left"), atomic_writer(dest) as file:
        file.write(b"a few bytes, still in the write buffer")
    assert _names(tmp_path) == ["job.log"]
    assert dest.read_bytes() == b"previous"


def test_a_full_disk_when_discarding_leaves_no_temporary(tmp_path: Path, disk_room: Any) -> None:
    disk_room(0)
    file = AtomicFile(tmp_path / "job.log")
    file.write(b"buffered")
    file.discard()
    assert _names(tmp_path) == []


def test_a_download_that_fills_the_disk_leaves_no_temporary(
    make_client: Any, tmp_path: Path, disk_room: Any
) -> None:
    dest = tmp_path / "job.log"
    dest.write_bytes(b"previous")
    client = make_client(
        lambda request: httpx.Response(200, stream=_IterStream([b"z" * 1000] * 100))
    )
    disk_room(20_000)  # the third 8 KiB flush of the write buffer fails
    with pytest.raises(OSError, match="No space left"):
        client.download_job_log(JOB_ID, dest)
    assert _names(tmp_path) == ["job.log"]
    assert dest.read_bytes() == b"previous"


def test_a_symlink_loop_destination_is_a_clear_error(make_client: Any, tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    client = make_client(lambda request: pytest.fail("sent a request for a bad destination"))
    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        client.download_job_log(JOB_ID, tmp_path / "a")
    assert _names(tmp_path) == ["a", "b"]


def test_ctrl_c_mid_download_keeps_the_old_file_and_leaves_no_temporary(
    make_client: Any, tmp_path: Path
) -> None:
    def interrupted() -> Any:
        yield b"a" * 5000
        raise KeyboardInterrupt

    dest = tmp_path / "job.log"
    dest.write_bytes(b"previous")
    client = make_client(lambda request: httpx.Response(200, stream=_IterStream(interrupted())))
    with pytest.raises(KeyboardInterrupt):
        client.download_job_log(JOB_ID, dest)
    assert _names(tmp_path) == ["job.log"]
    assert dest.read_bytes() == b"previous"


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_commit_of_a_download_keeps_the_old_file(
    make_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def broken(*args: Any) -> None:
        raise OSError(errno.EIO, f"Input/output error in {failing}")

    dest = tmp_path / "job.log"
    dest.write_bytes(b"previous")
    client = make_client(lambda request: httpx.Response(200, stream=_IterStream([b"new"] * 3)))
    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(OSError, match="Input/output error"):
        client.download_job_log(JOB_ID, dest)
    assert _names(tmp_path) == ["job.log"]
    assert dest.read_bytes() == b"previous"


def test_an_empty_log_replaces_the_destination_with_an_empty_file(
    make_client: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "job.log"
    dest.write_bytes(b"previous")
    client = make_client(lambda request: httpx.Response(200, content=b""))
    assert client.download_job_log(JOB_ID, dest) == 0
    assert dest.read_bytes() == b""
    assert _names(tmp_path) == ["job.log"]
