"""Write files atomically: a temporary file beside the target, then a rename."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ._errors import InvalidArgumentError


def check_destination(dest: str | os.PathLike[str]) -> Path:
    """Refuse a destination that is a directory or whose folder does not exist."""
    if not isinstance(dest, (str, os.PathLike)):
        raise InvalidArgumentError(f"destination must be a file path, got {dest!r}")
    path = Path(dest)
    if path.is_symlink():
        path = path.resolve()  # write where the link points, as `curl -o` would
    if path.is_dir():
        raise InvalidArgumentError(f"destination {str(path)!r} is a directory; give a file path")
    if not path.parent.is_dir():
        raise InvalidArgumentError(
            f"destination folder {str(path.parent)!r} does not exist; create it first"
        )
    return path


@contextlib.contextmanager
def atomic_writer(dest: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it replaces ``dest``, on error nothing is left."""
    path = check_destination(dest)
    tmp_name = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.part")
    # os.open with 0o666 lets the umask decide, as for any new file (mkstemp would force 0600).
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        if path.exists():
            os.chmod(tmp_name, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_atomic(dest: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``dest`` with ``data`` atomically."""
    with atomic_writer(dest) as handle:
        handle.write(data)
