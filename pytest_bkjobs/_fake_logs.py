"""Job logs for the fake: in-memory or synthetic sources, streamed as text, JSON or HTML."""

from __future__ import annotations

import codecs
import html
import json
import re
from collections.abc import Iterator

CHUNK = 64 * 1024
# Logs up to this size are rendered whole (with a Content-Length); bigger ones are streamed.
INLINE_LIMIT = 1024 * 1024
_MAX_LINE = 256 * 1024  # an HTML line longer than this is cut, so memory stays bounded

_HEADER = re.compile(rb"^(?:\x1b_bk;t=(\d+)\x07)?(?:~~~|---|\+\+\+) ", re.MULTILINE)
_ESCAPES = re.compile(
    r"\x1b_[^\x07]*\x07"  # APC, e.g. _bk;t= timestamps
    r"|\x1b\][^\x07]*\x07"  # OSC, e.g. inline images
    r"|\x1b\[[0-9;?]*[A-Za-z]"  # CSI: colours, cursor moves, erase
    r"|\x1b[()][A-Za-z0-9]"
)


class LogSource:
    """A job log the fake can serve in pieces; subclass it to generate huge logs lazily."""

    @property
    def size(self) -> int:
        """Length in bytes."""
        raise NotImplementedError

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes ``[start, end)`` in chunks of at most 64 KiB."""
        raise NotImplementedError

    def read_all(self) -> bytes:
        """The whole log (only sensible for small logs)."""
        return b"".join(self.iter_bytes())


class BytesLog(LogSource):
    """A log held in memory."""

    def __init__(self, data: bytes | str) -> None:
        self.data = data.encode("utf-8") if isinstance(data, str) else bytes(data)

    @property
    def size(self) -> int:
        return len(self.data)

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        stop = self.size if end is None else min(end, self.size)
        for offset in range(start, stop, CHUNK):
            yield self.data[offset : min(offset + CHUNK, stop)]

    def read_all(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"BytesLog(size={self.size})"


class SyntheticLog(LogSource):
    """``size`` bytes made of ``line`` repeated, generated on demand (a 1 GiB log costs nothing)."""

    def __init__(self, size: int, line: bytes | str = b"") -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"SyntheticLog size must be an integer >= 0, got {size!r}")
        pattern = line.encode("utf-8") if isinstance(line, str) else bytes(line)
        if not pattern:
            pattern = b"\x1b_bk;t=1700000000000\x07synthetic log line for a large job log\r\n"
        self._size = size
        # One block of whole patterns about CHUNK long, sliced for every chunk we send.
        self._block = pattern * max(1, CHUNK // len(pattern) + 1)
        self._period = len(pattern)

    @property
    def size(self) -> int:
        return self._size

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        stop = self._size if end is None else min(end, self._size)
        offset = start
        while offset < stop:
            phase = offset % self._period
            take = min(CHUNK, stop - offset, len(self._block) - phase)
            yield self._block[phase : phase + take]
            offset += take

    def __repr__(self) -> str:
        return f"SyntheticLog(size={self._size})"


EMPTY_LOG: LogSource = BytesLog(b"")


def as_log_source(log: LogSource | bytes | str | None) -> LogSource:
    """Accept a ``LogSource``, bytes or text (``None`` is an empty log)."""
    if log is None:
        return EMPTY_LOG
    if isinstance(log, LogSource):
        return log
    if isinstance(log, (bytes, bytearray, memoryview, str)):
        return BytesLog(log if isinstance(log, str) else bytes(log))
    raise TypeError(
        f"log must be str, bytes or a pytest_bkjobs.fake.LogSource (e.g. SyntheticLog),"
        f" got {type(log).__name__}"
    )


def header_times(log: LogSource) -> list[int]:
    """Nanosecond times of section headers that carry a ``_bk;t=`` marker (small logs only)."""
    if log.size > INLINE_LIMIT:
        return []
    return [int(m.group(1)) * 1_000_000 for m in _HEADER.finditer(log.read_all()) if m.group(1)]


def _decoded(chunks: Iterator[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for chunk in chunks:
        text = decoder.decode(chunk)
        if text:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def json_log_chunks(log: LogSource, url: str) -> Iterator[bytes]:
    """``{"url", "content", "size", "header_times"}`` produced piece by piece."""
    yield b'{"url": ' + json.dumps(url).encode() + b', "content": "'
    for text in _decoded(log.iter_bytes()):
        yield json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")
    times = json.dumps(header_times(log))
    yield f'", "size": {log.size}, "header_times": {times}}}'.encode()


def _html_line(raw: str) -> str:
    # A carriage return redraws the line: what a terminal shows is the last non-empty redraw.
    parts = [p for p in _ESCAPES.sub("", raw).split("\r") if p]
    text = parts[-1] if parts else ""
    css = "line section" if text.startswith(("~~~ ", "--- ", "+++ ")) else "line"
    return f'<div class="{css}">{html.escape(text)}</div>\n'


def html_log_chunks(log: LogSource) -> Iterator[bytes]:
    """The log as HTML: escapes and timestamps removed, text escaped, one ``div`` per line."""
    yield b'<div class="term-container">\n'
    pending = ""
    for text in _decoded(log.iter_bytes()):
        pending += text
        lines = pending.split("\n")
        pending = lines.pop()
        if len(pending) > _MAX_LINE:
            lines.append(pending)
            pending = ""
        if lines:
            yield "".join(_html_line(line) for line in lines).encode("utf-8")
    if pending:
        yield _html_line(pending).encode("utf-8")
    yield b"</div>\n"
