"""Job log text: strip timestamp markers and ANSI escapes, split into ``~~~``/``---``/``+++`` parts.

A Buildkite log line looks like ``ESC _bk;t=1745322209921 BEL ~~~ Running script\\r\\n``: the
agent prefixes lines with an APC timestamp marker (also mid-line, after ``\\r`` or ``ESC[K``
progress redraws), and line endings mix ``\\r\\n`` and ``\\r\\r\\n``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["LogSection", "drop_partial_line", "iter_strip_log", "split_sections", "strip_log"]

# One alternation so a single left-to-right pass sees each escape exactly once; the timestamp
# marker comes first because it is itself an APC string.
_ESCAPES = re.compile(
    r"(?P<bk>\x1b_bk;t=(?P<ms>\d*)\x07)"
    r"|(?P<string>\x1b[\]_P^X][^\x07\x1b]*(?:\x07|\x1b\\))"  # OSC (incl. 1338 images), APC, DCS
    r"|(?P<csi>\x1b\[[0-?]*[ -/]*[@-~])"  # colours, cursor moves, erase
    r"|(?P<other>\x1b[ -/]*[0-~])"  # charset selection and two-byte escapes
)
# The start of a timestamp marker cut off by the end of a partial log (a running job's).
_CUT_MARKER = re.compile(r"\x1b(?:_(?:b(?:k(?:;(?:t(?:=\d*)?)?)?)?)?)?\Z")
_NEWLINES = re.compile(r"\r*\n")
_HEADER = re.compile(r"^(~~~|---|\+\+\+) +(\S.*)$")  # a header has a title
_EXPAND = re.compile(r"^\^\^\^ \+\+\+\s*$")


def strip_log(
    text: str, *, timestamps: bool = True, ansi: bool = True, redraws: bool = False
) -> str:
    """Remove ``_bk;t=`` markers and/or ANSI escapes and normalise line endings to ``\\n``.

    ``redraws=True`` also keeps only the last ``\\r``-separated segment of each line (what a
    terminal ends up showing for progress bars).
    """

    def replace(match: re.Match[str]) -> str:
        if match.group("bk") is not None:
            return "" if timestamps else match.group(0)
        if not ansi:
            return match.group(0)
        # "Cursor to next line" (ESC[1E, used by test runners' live output) is a line break.
        csi = match.group("csi")
        return "\n" if csi is not None and csi.endswith("E") else ""

    if timestamps:
        text = _CUT_MARKER.sub("", text)
    cleaned = _ESCAPES.sub(replace, text) if (timestamps or ansi) else text
    cleaned = _NEWLINES.sub("\n", cleaned)
    if redraws:
        cleaned = "\n".join(_last_redraw(line) for line in cleaned.split("\n"))
    return cleaned


def iter_strip_log(
    chunks: Iterable[bytes], *, timestamps: bool = True, ansi: bool = True, redraws: bool = False
) -> Iterator[str]:
    """``strip_log`` over a byte stream (``stream_job_log``), one run of whole lines at a time.

    Only complete lines are cleaned, so an escape or a ``\r\r\n`` split between two chunks
    is handled; memory stays bounded by the longest line.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        cut = pending.rfind("\n") + 1
        if cut:
            yield strip_log(pending[:cut], timestamps=timestamps, ansi=ansi, redraws=redraws)
            pending = pending[cut:]
    pending += decoder.decode(b"", final=True)
    if pending:
        yield strip_log(pending, timestamps=timestamps, ansi=ansi, redraws=redraws)


def drop_partial_line(text: str) -> str:
    """Drop the cut-off start of a log's tail: a marker's leftover end, or a partial line."""
    if text.startswith("\x1b_bk;t="):
        return text  # it starts at a marker: a whole line
    cut = text.find("\n")
    first = text if cut < 0 else text[:cut]
    bell = first.find("\x07")
    if bell >= 0 and "\x1b" not in first[:bell]:
        return text[bell + 1 :]  # "...4000959\a--- Tests": the line goes on after the marker
    if cut < 0:
        return text  # one unfinished line: all there is
    return text[cut + 1 :]


def _last_redraw(line: str) -> str:
    segments = [segment for segment in line.split("\r") if segment]
    return segments[-1] if segments else ""


@dataclass(frozen=True)
class LogSection:
    """One section of a log: its header marker, title and the lines under it.

    ``kind`` is ``"~~~"``, ``"---"`` (collapsed) or ``"+++"`` (expanded); ``""`` for the lines
    before the first header. ``expanded`` is also true for a section that a later ``^^^ +++``
    line opened. ``timestamp_ms`` is the header's ``_bk;t=`` time, when it has one.
    """

    kind: str
    title: str
    lines: tuple[str, ...] = ()
    expanded: bool = False
    timestamp_ms: int | None = None

    @property
    def text(self) -> str:
        """The section's lines joined with ``\\n``."""
        return "\n".join(self.lines)


def split_sections(text: str, *, redraws: bool = False) -> list[LogSection]:
    """Split a raw or stripped log into sections; their lines are stripped of escapes.

    A header is a line that STARTS with ``~~~``, ``---`` or ``+++``, a space and a title, so a
    progress bar full of dashes is not one; after ``\\r`` redraws, the line a terminal shows
    (the last segment) counts. ``ESC[1E`` breaks a line in two. ``^^^ +++`` expands the
    section it appears in and is not kept as a line. Lines before the first header form a
    section of kind ``""`` (only when there are any).
    """
    sections: list[LogSection] = []
    kind, title, stamp = "", "", None
    lines: list[str] = []
    expanded = False

    def close() -> None:
        if kind or lines:
            sections.append(LogSection(kind, title, tuple(lines), expanded, stamp))

    for raw_line in _NEWLINES.sub("\n", text).split("\n"):
        # ESC[1E (cursor to next line) makes more than one line of one raw line.
        for line in strip_log(raw_line, redraws=redraws).split("\n"):
            # A header redrawn after a "\r" is what a terminal shows: the last segment.
            header = _HEADER.match(_last_redraw(line) if "\r" in line else line)
            if header:
                close()
                kind, title, lines = header.group(1), header.group(2).strip(), []
                expanded, stamp = kind == "+++", _first_timestamp(raw_line)
            elif _EXPAND.match(line):
                expanded = True
            else:
                lines.append(line)
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the log does not start another line
    close()
    return sections


def _first_timestamp(raw_line: str) -> int | None:
    for match in _ESCAPES.finditer(raw_line):
        if match.group("bk") is not None and match.group("ms"):
            return int(match.group("ms"))
    return None
