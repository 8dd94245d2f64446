"""Write files atomically: a temporary file beside the target, then a rename."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ._errors import InvalidArgumentError


def check_destination(dest: str | os.PathLike[str]) -> Path:
    """Refuse a destination that is a directory or whose folder does not exist."""
    if not isinstance(dest, (str, os.PathLike)):
        raise InvalidArgumentError(f"destination must be a file path, got {dest!r}")
    path = Path(dest)
    text = os.fspath(dest)
    if text.endswith(("/", os.sep)) and not path.is_dir():
        # Path() drops the slash: without this, "out.log/" would replace the file out.log.
        raise InvalidArgumentError(
            f"destination {text!r} ends with {text[-1]!r}, which names a folder, and there is"
            f" no folder {str(path)!r}; give a file path without the trailing {text[-1]!r}"
        )
    if path.is_symlink():
        with contextlib.suppress(OSError, RuntimeError):  # a loop: RuntimeError before 3.13
            path = path.resolve()  # write where the link points, as `curl -o` would
        if path.is_symlink():
            raise InvalidArgumentError(
                f"destination {str(dest)!r} is a symbolic link that never reaches a file"
                " (a loop); give a file path"
            )
    if path.is_dir():
        raise InvalidArgumentError(f"destination {str(path)!r} is a directory; give a file path")
    if path.parent.exists() and not path.parent.is_dir():
        raise InvalidArgumentError(
            f"destination folder {str(path.parent)!r} is a file, not a folder; give a path in"
            " an existing folder"
        )
    if not path.parent.is_dir():
        raise InvalidArgumentError(
            f"destination folder {str(path.parent)!r} does not exist; create it first"
        )
    return path


#: Every this many bytes, ask the kernel to start writing the file to disk (see below).
WRITEBACK_STEP = 8 * 1024 * 1024


class AtomicFile:
    """A temporary file that replaces ``dest`` on ``commit()`` (a device or FIFO: written into)."""

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        # Absolute, so that a chdir while a long download runs cannot misplace the rename.
        self.path = check_destination(dest).absolute()
        self.written = 0
        self._writeback_from = 0
        self._committed = False
        try:
            existing: os.stat_result | None = os.stat(dest)  # through links, as open() goes
        except (FileNotFoundError, NotADirectoryError):
            existing = None
        self._direct = existing is not None and not stat.S_ISREG(existing.st_mode)
        if self._direct:
            # /dev/null, /dev/stdout, a FIFO: nothing to replace atomically, and a rename over
            # one would destroy it (as root, /dev/null itself): write into it, as `curl -o` does.
            self._tmp = os.fspath(dest)
            self._file: BinaryIO = open(dest, "wb")  # noqa: SIM115 (closed by commit/discard)
            return
        self._tmp = str(self.path.parent / f".{self.path.name}.{secrets.token_hex(6)}.part")
        # os.open with 0o666 lets the umask decide, as for any new file (mkstemp forces 0600).
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self._tmp, flags, 0o666)
        except OSError as exc:  # name the destination, not the temporary file beside it
            raise type(exc)(
                exc.errno,
                f"{exc.strerror}: cannot create a file in {str(self.path.parent)!r} (the data"
                " goes to a temporary file there, then is renamed); give a path in a writable"
                " folder",
                os.fspath(dest),
            ) from None
        try:
            if existing is not None:
                os.chmod(self._tmp, stat.S_IMODE(existing.st_mode))
            self._file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self._tmp)
            raise

    def write(self, data: bytes) -> int:
        """Append ``data``; returns its length."""
        count = self._file.write(data)
        self.written += count
        if self.written - self._writeback_from >= WRITEBACK_STEP and not self._direct:
            self._start_writeback()
        return count

    def writelines(self, chunks: Iterable[bytes]) -> None:
        """Append every chunk (one call, for one hop to a worker thread per batch)."""
        for chunk in chunks:
            self.write(chunk)

    def _start_writeback(self) -> None:
        # Linux starts writing the range to disk and returns without waiting (dirty pages stay
        # cached), so the fsync in commit() waits for the last few MiB, not the whole file: a
        # 256 MiB log commits in a fraction of the time. Only a hint: elsewhere, a no-op.
        self._file.flush()
        if _fadvise is not None:
            with contextlib.suppress(OSError):
                _fadvise(
                    self._file.fileno(),
                    self._writeback_from,
                    self.written - self._writeback_from,
                    os.POSIX_FADV_DONTNEED,
                )
        self._writeback_from = self.written

    def commit(self) -> None:
        """Make the data durable, then rename it over ``dest``; on error nothing is left."""
        try:
            self._file.flush()
            if not self._direct:
                os.fsync(self._file.fileno())
            self._file.close()
            if not self._direct:
                os.replace(self._tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self._committed = True

    def discard(self) -> None:
        """Close and remove the temporary file (``dest`` is untouched); safe to call twice."""
        try:
            # Closing flushes the write buffer, which fails again on a full disk: the data is
            # dropped anyway, and the temporary file must go all the same.
            with contextlib.suppress(OSError):
                self._file.close()
        finally:
            if not self._committed and not self._direct:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._tmp)


_fadvise = getattr(os, "posix_fadvise", None) if sys.platform.startswith("linux") else None


@contextlib.contextmanager
def atomic_writer(dest: str | os.PathLike[str]) -> Iterator[AtomicFile]:
    """Yield a file to write; on success it replaces ``dest``, on error nothing is left."""
    file = AtomicFile(dest)
    try:
        yield file
    except BaseException:
        file.discard()
        raise
    file.commit()


def write_atomic(dest: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``dest`` with ``data`` atomically."""
    with atomic_writer(dest) as handle:
        handle.write(data)
