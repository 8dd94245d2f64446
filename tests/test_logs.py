"""strip_log and split_sections on the real job logs in tests/fixtures/real/logs/."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_bkjobs._logs import drop_partial_line
from pytest_bkjobs.ci import LogSection, iter_strip_log, split_sections, strip_log
from tests.conftest import FIXTURES

LOGS = FIXTURES / "logs"


def read_log(name: str) -> str:
    # bytes, not read_text(): universal newlines would hide the \r\n and \r\r\n endings
    return (LOGS / name).read_bytes().decode("utf-8")


@pytest.fixture(scope="module")
def bash_log() -> str:
    return read_log("buildkite_logs_bash_example.log")


@pytest.fixture(scope="module")
def playwright_log() -> str:
    return read_log("terminal_to_html_playwright_cursor_moves.log")


def test_fixture_is_the_raw_input(bash_log: str) -> None:
    assert bash_log.count("\x1b_bk;t=") == 287
    assert "\r\r\n" in bash_log


def test_strip_log_removes_every_marker_and_escape(bash_log: str) -> None:
    text = strip_log(bash_log)
    assert "\x1b" not in text
    assert "_bk;t=" not in text
    assert "\x07" not in text
    assert "\r\n" not in text
    assert "1338;url=" not in text  # the inline image escape is gone with its payload


def test_strip_log_keeps_text_emoji_and_lines(bash_log: str) -> None:
    text = strip_log(bash_log)
    lines = text.split("\n")
    assert lines[0] == "~~~ Running global environment hook"
    assert lines[1] == "$ /buildkite/agent/hooks/environment"
    assert "👍" in text
    assert "[REDACTED]" in text
    assert text.count("\n") == bash_log.count("\n")


def test_strip_log_handles_markers_mid_line_after_redraws(bash_log: str) -> None:
    text = strip_log(bash_log)
    line = next(ln for ln in text.split("\n") if ln.startswith("remote: Counting objects:   1%"))
    # ESC[K and the marker after it are gone, the \r redraws stay unless asked
    assert "remote: Counting objects:   1% (1/54)\rremote: Counting objects:   3% (2/54)" in line
    redrawn = strip_log(bash_log, redraws=True).split("\n")
    counting = [ln for ln in redrawn if ln.startswith("remote: Counting objects:")]
    assert counting == ["remote: Counting objects: 100% (54/54), done."]


def test_strip_log_timestamps_only(bash_log: str) -> None:
    text = strip_log(bash_log, ansi=False)
    assert "_bk;t=" not in text
    assert "\x1b[90m$\x1b[0m /buildkite/agent/hooks/environment" in text
    assert "\x1b]1338;url=artifact://artifacts/image.gif;alt=Rainbows\x07" in text


def test_strip_log_ansi_only_keeps_markers(bash_log: str) -> None:
    text = strip_log(bash_log, timestamps=False)
    assert text.count("\x1b_bk;t=") == 287
    assert "\x1b[" not in text
    assert "\x1b]1338" not in text


def test_strip_log_nothing_only_normalises_line_endings() -> None:
    raw = "\x1b_bk;t=1\x07a\r\r\nb\r\nc\n"
    assert strip_log(raw, timestamps=False, ansi=False) == "\x1b_bk;t=1\x07a\nb\nc\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x1b[38;5;48mgreen\x1b[0m", "green"),  # 256 colours
        ("a\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),  # OSC 8, ST end
        ("\x1b(Bplain", "plain"),  # charset selection
        ("x\x1b_other;apc\x07y", "xy"),  # an APC that is not a timestamp
        ("one\x1b[1Etwo", "one\ntwo"),  # cursor to next line breaks the line
    ],
)
def test_strip_log_escape_kinds(raw: str, expected: str) -> None:
    assert strip_log(raw) == expected


def test_playwright_log_cursor_moves(playwright_log: str) -> None:
    text = strip_log(playwright_log)
    assert "\x1b" not in text
    assert (
        "✓  1 [chromium] › c1/default/checkout.spec.ts:3:5 › checkout default flow (11.7s)" in text
    )
    assert text.split("\n")[0].startswith("$ npx playwright test")
    assert text.endswith("Done in 96.34s.")


@pytest.mark.parametrize("name", sorted(p.name for p in LOGS.iterdir()))
@pytest.mark.parametrize("size", [1, 7, 4096])
@pytest.mark.parametrize("redraws", [False, True])
def test_iter_strip_log_matches_strip_log_whatever_the_chunks(
    name: str, size: int, redraws: bool
) -> None:
    raw = (LOGS / name).read_bytes()
    chunks = (raw[i : i + size] for i in range(0, len(raw), size))
    streamed = "".join(iter_strip_log(chunks, redraws=redraws))
    assert streamed == strip_log(raw.decode("utf-8"), redraws=redraws)


def test_iter_strip_log_splits_a_multibyte_character_and_a_crlf() -> None:
    raw = "👍 ok\r\r\n\x1b_bk;t=1\x07next".encode()
    chunks = [raw[:2], raw[2:8], raw[8:9], raw[9:]]
    assert list(iter_strip_log(chunks)) == ["👍 ok\n", "next"]


def test_split_sections_bash_example_counts(bash_log: str) -> None:
    sections = split_sections(bash_log)
    kinds = [s.kind for s in sections]
    assert len(sections) == 13
    assert kinds.count("~~~") == 9
    assert kinds.count("---") == 2
    assert kinds.count("+++") == 2
    assert [s.title for s in sections if s.kind != "~~~"] == [
        ":package: Build job checkout directory",
        ":evergreen_tree: Build job environment",
        ":hammer: Example tests",
        ":frame_with_picture: Inline image uploaded as a build artifact",
    ]


def test_split_sections_content_and_times(bash_log: str) -> None:
    sections = split_sections(bash_log)
    first = sections[0]
    assert first == LogSection(
        "~~~",
        "Running global environment hook",
        ("$ /buildkite/agent/hooks/environment",),
        expanded=False,
        timestamp_ms=1745322209921,
    )
    hammer = sections[8]
    assert hammer.expanded
    assert any("👍" in line for line in hammer.lines)
    assert all("\x1b" not in line for s in sections for line in s.lines)
    assert sections[-1].title == "Running global pre-exit hook"
    assert sections[-1].lines[-1] != ""
    # every line of the log lands in exactly one section (header or body)
    body_lines = sum(len(s.lines) + 1 for s in sections)
    assert body_lines == len(strip_log(bash_log).rstrip("\n").split("\n"))


def test_split_sections_without_headers(playwright_log: str) -> None:
    sections = split_sections(playwright_log)
    assert len(sections) == 1
    assert sections[0].kind == ""
    assert sections[0].title == ""
    assert sections[0].lines[0].startswith("$ npx playwright test")


@pytest.mark.parametrize(
    "line",
    [
        "----------------------------------------",  # a separator, no space after the marker
        "--------->                     42%",  # a progress bar
        "  --- indented",  # not at the line start
        "~~~",  # a marker alone
        "+++foo",
    ],
)
def test_dashes_are_not_headers(line: str) -> None:
    sections = split_sections(f"--- real\n{line}\nafter\n")
    assert [s.title for s in sections] == ["real"]
    assert sections[0].lines == (line, "after")


def test_expand_previous_section() -> None:
    raw = "--- build\nok\n--- test\nboom\n\x1b_bk;t=5\x07^^^ +++\n--- next\n"
    sections = split_sections(raw)
    assert [(s.title, s.expanded, s.lines) for s in sections] == [
        ("build", False, ("ok",)),
        ("test", True, ("boom",)),
        ("next", False, ()),
    ]


def test_header_with_marker_and_colour() -> None:
    raw = "pre\r\n\x1b_bk;t=42\x07\x1b[1m+++ :rocket: Deploy\x1b[0m\r\r\nline\r\n"
    sections = split_sections(raw)
    assert sections[0] == LogSection("", "", ("pre",))
    assert sections[1].kind == "+++"
    assert sections[1].title == ":rocket: Deploy"
    assert sections[1].timestamp_ms == 42
    assert sections[1].text == "line"


def test_cursor_next_line_splits_a_section_line() -> None:
    sections = split_sections("--- tests\none\x1b[1Etwo\n")
    assert sections[0].lines == ("one", "two")


@pytest.mark.parametrize("line", ["--- ", "+++  ", "~~~ \x1b[0m"])
def test_a_marker_without_a_title_is_not_a_header(line: str) -> None:
    sections = split_sections(f"--- real\n{line}\nafter\n")
    assert [s.title for s in sections] == ["real"]
    assert len(sections[0].lines) == 2


def test_a_header_after_a_redraw_is_found_by_default() -> None:
    raw = "progress 10%\rprogress 100%\r\x1b[K\x1b_bk;t=9\x07--- Tests\r\nok\r\n"
    sections = split_sections(raw)
    assert [(s.kind, s.title, s.lines, s.timestamp_ms) for s in sections] == [
        ("---", "Tests", ("ok",), 9)
    ]


@pytest.mark.parametrize("cut", ["\x1b", "\x1b_", "\x1b_bk", "\x1b_bk;t", "\x1b_bk;t=12"])
def test_an_unterminated_marker_at_the_end_of_a_partial_log_is_dropped(cut: str) -> None:
    raw = "\x1b_bk;t=1\x07done\r\n" + cut
    assert strip_log(raw) == "done\n"
    assert "".join(iter_strip_log([raw.encode()])) == "done\n"
    assert split_sections(raw) == [LogSection("", "", ("done",))]
    assert strip_log(raw, timestamps=False, ansi=False).endswith(cut)  # left alone


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (
            "4000000959\x07$ bkjobs list\r\n\x1b_bk;t=2\x07ok\r\n",
            "$ bkjobs list\r\n\x1b_bk;t=2\x07ok\r\n",
        ),
        ("ing for jobs\r\n\x1b_bk;t=2\x07ok\r\n", "\x1b_bk;t=2\x07ok\r\n"),  # a cut line
        ("\x1b_bk;t=1\x07whole\r\nok\r\n", "\x1b_bk;t=1\x07whole\r\nok\r\n"),
        ("4000000959\x07$ bkjobs list", "$ bkjobs list"),  # one unfinished line
        ("t=1\x07", ""),
        ("plain text", "plain text"),
        ("\x1b_bk;t=1\x07x", "\x1b_bk;t=1\x07x"),  # a whole marker: not a leftover
    ],
)
def test_drop_partial_line(tail: str, expected: str) -> None:
    assert drop_partial_line(tail) == expected


# -- properties ---------------------------------------------------------------------------------

PLAIN = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x1b\r\n\x07"),
    max_size=20,
)
ESCAPE = st.one_of(
    st.integers(0, 2**45).map(lambda ms: f"\x1b_bk;t={ms}\x07"),
    st.lists(st.integers(0, 255), max_size=4).flatmap(
        lambda params: st.sampled_from("mKJHABCDGf").map(
            lambda final: "\x1b[" + ";".join(map(str, params)) + final
        )
    ),
    PLAIN.map(lambda payload: f"\x1b]1338;url={payload}\x07"),
    PLAIN.map(lambda payload: f"\x1b]8;;{payload}\x1b\\"),
)


@given(st.lists(st.tuples(PLAIN, ESCAPE, st.sampled_from(["", "\n", "\r\n", "\r\r\n"]))))
def test_strip_log_keeps_exactly_the_plain_text(parts: list[tuple[str, str, str]]) -> None:
    raw = "".join(plain + escape + newline for plain, escape, newline in parts)
    expected = "".join(plain + ("\n" if newline else "") for plain, _, newline in parts)
    assert strip_log(raw) == expected
