"""Odd log destinations found by a newcomer: a trailing slash, /dev/null, a read-only folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_bkjobs import ConfigurationError, InvalidArgumentError
from pytest_bkjobs import cli as cli_module
from pytest_bkjobs._files import write_atomic
from pytest_bkjobs.cli import main
from pytest_bkjobs.fake import FakeBuildkite, SampleBuild
from tests.conftest import ClientFactory

LOG = b"~~~ Running commands\nhello\n"


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=LOG)


def test_a_trailing_slash_after_a_file_is_refused_and_the_file_kept(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_bytes(b"precious")
    with pytest.raises(InvalidArgumentError, match=r"ends with '/'.*give a file path"):
        make_client(_answer).download_job_log("j1", f"{keep}/")
    assert keep.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]  # no .part left behind


def test_a_trailing_slash_after_a_missing_name_creates_no_file(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgumentError, match=r"ends with '/'.*no folder"):
        make_client(_answer).download_job_log("j1", f"{tmp_path / 'logs'}/")
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_refuses_a_trailing_slash_too(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="ends with '/'"):
        write_atomic(f"{tmp_path / 'report.md'}/", b"x")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_names_the_destination_not_the_temporary_file(
    make_client: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root here, where chmod 555 does not stop a write: refuse like a read-only folder.
    real_open = os.open

    def read_only_folder(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if os.fspath(path).endswith(".part"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", read_only_folder)
    dest = tmp_path / "job.log"
    with pytest.raises(PermissionError) as caught:
        make_client(_answer).download_job_log("j1", dest)
    assert caught.value.filename == str(dest)
    assert ".part" not in str(caught.value)
    assert "writable folder" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# -- bkjobs log -o ------------------------------------------------------------------------------


@pytest.fixture
def sample(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SampleBuild]:
    """The fake's sample build on a loopback port, with its running job's environment."""
    monkeypatch.chdir(tmp_path)
    fake = FakeBuildkite()
    build = fake.sample_build()
    with fake.serve() as url:
        for name, value in {
            "BUILDKITE_API_URL": url,
            "BUILDKITE_API_TOKEN": fake.token,
            "BUILDKITE_ORGANIZATION_SLUG": fake.org,
            "BUILDKITE_PIPELINE_SLUG": build.pipeline,
            "BUILDKITE_BUILD_NUMBER": str(build.number),
            "BUILDKITE_JOB_ID": build.current_job_id,
        }.items():
            monkeypatch.setenv(name, value)
        yield build


def test_cli_log_refuses_a_trailing_slash_after_a_file(
    sample: SampleBuild, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_bytes(b"precious")
    assert main(["log", sample.job_ids["failed"], "-o", "keep.txt/"]) == 1
    err = capsys.readouterr().err
    assert "bkjobs: error: destination 'keep.txt/' ends with '/'" in err
    assert "Traceback" not in err
    assert keep.read_bytes() == b"precious"


def test_cli_log_into_dev_null_needs_no_writable_dev_folder(
    sample: SampleBuild, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As a normal user /dev is read-only: the writability probe must not create a file there.
    def no_new_files(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    real_replace = os.replace

    def never_over_dev_null(src: Any, dst: Any) -> None:
        # A regression must fail here, not rename a regular file over the machine's /dev/null.
        assert os.fspath(dst) != os.devnull, "a rename over /dev/null"
        real_replace(src, dst)

    monkeypatch.setattr(tempfile, "mkstemp", no_new_files)
    monkeypatch.setattr(os, "replace", never_over_dev_null)
    before = os.stat(os.devnull)
    assert main(["log", sample.job_ids["failed"], "-o", os.devnull]) == 0
    assert "bytes to /dev/null" in capsys.readouterr().err
    assert os.stat(os.devnull).st_rdev == before.st_rdev  # still the character device


def test_check_writable_still_probes_the_folder_of_a_regular_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_new_files(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", no_new_files)
    with pytest.raises(ConfigurationError, match="give a path in a writable folder"):
        cli_module.check_writable(str(tmp_path / "job.log"))


def test_check_writable_refuses_a_device_it_cannot_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: False)
    with pytest.raises(ConfigurationError, match="cannot write /dev/null"):
        cli_module.check_writable(os.devnull)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["log", "-o", ""], "-o/--output must not be empty"),
        (["log", "-o", "  "], "-o/--output must not be empty"),
        (["retry-failed", "--annotate", ""], "--annotate must not be empty"),
    ],
)
def test_an_empty_output_path_is_a_usage_error(
    sample: SampleBuild, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""  # the log was not printed instead


def test_a_file_used_as_a_folder_is_named_as_such(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    (tmp_path / "keep.txt").write_bytes(b"precious")
    with pytest.raises(InvalidArgumentError, match="'.*keep.txt' is a file, not a folder"):
        make_client(_answer).download_job_log("j1", tmp_path / "keep.txt" / "x.log")
    assert (tmp_path / "keep.txt").read_bytes() == b"precious"
