"""Finding the ``bkjobs`` and ``pytest`` command lines in shell text (README, pipeline YAML)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

#: Tokens that end one simple command and may start another.
_SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "do", "then", "else", "$("}
#: Tokens after which the rest of the command is redirections, not arguments.
_REDIRECTS = {"<", ">", ">>", "2>", "<<"}


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def shell_lines(text: str) -> Iterator[str]:
    """Each logical line of a shell script (backslash continuations joined, comments kept)."""
    pending = ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            yield line


def invocations(text: str, program: str) -> Iterator[list[str]]:
    """The argument lists of every call of ``program``, also as ``python -m program``."""
    for line in shell_lines(text):
        tokens = _tokens(line)
        at_start = True
        via_python = 0  # 1: after `python`, 2: after `python -m`
        current: list[str] | None = None
        for token in tokens:
            if token in _SEPARATORS or (token.endswith(("|", "&", ";")) and token[0] in "|&;"):
                if current is not None:
                    yield current
                current, at_start, via_python = None, True, 0
                continue
            if current is not None:
                if token in _REDIRECTS or token[0] in "<>":
                    yield current
                    current = None
                else:
                    current.append(token)
                continue
            name = token.rsplit("/", 1)[-1]
            if (at_start and name == program) or (via_python == 2 and token == program):
                current = []
            elif at_start and name.startswith("python"):
                via_python = 1
            elif via_python == 1 and token == "-m":
                via_python = 2
            else:
                via_python = 0
            at_start = False
        if current is not None:
            yield current
