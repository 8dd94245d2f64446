"""The README's code runs: Python blocks against a loopback fake, command lines through the
real parsers, links and the error table checked against the code.

A block preceded by ``<!-- not-run: reason -->`` is only compiled. The Quickstart's commands
are run by ``.ci/run`` (in a fresh virtual environment), not here.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import pytest_bkjobs
import pytest_bkjobs.ci
from pytest_bkjobs import parse_env_text
from pytest_bkjobs._cli_parser import build_parser
from pytest_bkjobs.cli import main as bkjobs_main
from pytest_bkjobs.fake import FakeBuildkite

from ._doc_commands import invocations, shell_lines

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README."""

    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    section: str  # the "## " heading it is under
    not_run: str | None  # the reason given in a <!-- not-run: ... --> comment

    @property
    def file_name(self) -> str | None:
        """``agent_lost.py`` for a block whose first line is ``# agent_lost.py: ...``."""
        match = re.match(r"#\s*([\w.-]+\.py)\b", self.code)
        return match.group(1) if match else None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang}, {self.section})"


def _blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    found, section, index = [], "", 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = _FENCE.match(line)
        if not fence:
            index += 1
            continue
        indent = len(fence["indent"])
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = _NOT_RUN.match(previous)
        body = []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][indent:])
            index += 1
        found.append(
            Block(
                lang=fence["lang"],
                code="\n".join(body) + "\n",
                line=index - len(body),
                section=section,
                not_run=marker["reason"] if marker else None,
            )
        )
        index += 1
    return found


BLOCKS = _blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang == "sh"]


def _params(blocks: list[Block]) -> list[object]:
    return [pytest.param(b, id=f"line{b.line}") for b in blocks]


def test_the_readme_has_the_blocks_these_tests_check() -> None:
    assert len(PYTHON) >= 5
    assert len(SHELL) >= 4
    assert all(b.lang for b in BLOCKS if b.section == "Quickstart")


# -- Python -------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", _params(PYTHON))
def test_python_block_compiles(block: Block) -> None:
    compile(block.code, str(block), "exec")


@dataclass
class Served:
    fake: FakeBuildkite
    env: dict[str, str]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Served]:
    """A loopback fake with the sample build (as its running step) and my-pipeline #42;
    the environment and the working directory (no .env) of a step pointed at it.
    """
    fake = FakeBuildkite()
    sample = fake.sample_build()
    fake.add_build("my-pipeline", number=42, state="failed")
    fake.add_job(
        "my-pipeline", 42, name="Unit tests", state="failed", exit_status=1, log="1 failed\n"
    )
    fake.add_job("my-pipeline", 42, name="Lint", state="passed", exit_status=0)
    fake.on_retry("passed", after_polls=0)  # finished at the first poll: no real waiting
    for name in list(os.environ):
        if name.startswith("BUILDKITE"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    with fake.serve() as base_url:
        env = {k: v for k, v in sample.env.items() if k.startswith("BUILDKITE")}
        env.update(BUILDKITE_API_URL=base_url, BUILDKITE_API_TOKEN=fake.token)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield Served(fake, env)


RUNNABLE = [b for b in PYTHON if b.not_run is None]


@pytest.mark.parametrize("block", _params(RUNNABLE))
def test_python_block_runs_against_a_fake(
    block: Block, served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, object] = {"__name__": "__readme__"}
    code: object = 0
    try:
        exec(compile(block.code, str(block), "exec"), namespace)
    except SystemExit as exc:  # a script ending with raise SystemExit(report.exit_code)
        code = exc.code
    assert code == 0, f"{block} exited with {code}"
    # A test function the block shows is run too, with bk_client as the fake's client.
    for name, function in namespace.items():
        wants_client = inspect.isfunction(function) and list(
            inspect.signature(function).parameters
        ) == ["bk_client"]
        if name.startswith("test_") and wants_client:
            with served.fake.client(base_url=served.env["BUILDKITE_API_URL"]) as client:
                function(client)
    assert served.fake.errors == []
    assert served.fake.token not in capsys.readouterr().out


def test_the_client_in_10_lines_really_retries(served: Served) -> None:
    block = next(b for b in PYTHON if b.section == "The client in 10 lines")
    exec(compile(block.code, str(block), "exec"), {})
    retried = [r for r in served.fake.requests if r.method == "PUT" and r.status == 200]
    assert len(retried) == 1


# -- command lines ------------------------------------------------------------------------------


def _command_blocks() -> list[Block]:
    return [b for b in BLOCKS if b.lang in ("sh", "yaml")]


def _commands(block: Block) -> str:
    if block.lang == "yaml":
        data = yaml.safe_load(block.code)
        return "\n".join(str(step.get("command", "")) for step in data.get("steps", []))
    return block.code


def test_every_bkjobs_command_line_parses() -> None:
    parser = build_parser()
    seen = 0
    for block in _command_blocks():
        for args in invocations(_commands(block), "bkjobs"):
            seen += 1
            try:
                parser.parse_args(args)
            except SystemExit:
                pytest.fail(f"{block}: bkjobs {' '.join(args)} is not a valid command line")
    assert seen >= 3


@pytest.fixture(scope="module")
def pytest_options() -> set[str]:
    """Every option ``pytest --help`` lists here (with pytest-xdist and this plugin)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(re.findall(r"(?<![\w-])(--?[\w][\w-]*)", result.stdout))


def test_every_pytest_option_exists(pytest_options: set[str]) -> None:
    seen = 0
    for block in _command_blocks():
        for args in invocations(_commands(block), "pytest"):
            for arg in args:
                if arg.startswith("-"):
                    seen += 1
                    option = arg.split("=", 1)[0]
                    assert option in pytest_options, f"{block}: pytest has no option {option}"
    assert seen >= 3


def test_tox_environments_and_benchmark_options_exist() -> None:
    tox_ini = (ROOT / "tox.ini").read_text(encoding="utf-8")
    envs = set(re.search(r"env_list\s*=\s*(.+)", tox_ini)[1].replace(" ", "").split(","))  # type: ignore[index]
    bench_help = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    seen = 0
    for block in SHELL:
        for args in invocations(block.code, "tox"):
            seen += 1
            chosen = args[args.index("-e") + 1].split(",")
            assert set(chosen) <= envs, f"{block}: tox has no environment {set(chosen) - envs}"
        for line in shell_lines(block.code):
            if "benchmarks/run.py" in line:
                seen += 1
                for option in re.findall(r"\s(--[\w-]+)", line.split("benchmarks/run.py", 1)[1]):
                    assert option in bench_help, f"{block}: benchmarks/run.py has no {option}"
    assert seen >= 2


def test_bkjobs_commands_run_against_a_fake(served: Served, tmp_path: Path) -> None:
    """The ``bkjobs`` lines of sh blocks (not the Quickstart's: .ci/run runs those)."""
    for block in PYTHON:
        if block.file_name:  # e.g. agent_lost.py, used by `bkjobs retry-failed --plugin`
            (tmp_path / block.file_name).write_text(block.code, encoding="utf-8")
    ran = 0
    for block in SHELL:
        if block.section == "Quickstart" or block.not_run:
            continue
        for args in invocations(block.code, "bkjobs"):
            if args[0] == "fake-server":  # serves until Ctrl-C (tests/test_cli_e2e.py runs it)
                continue
            ran += 1
            with contextlib.redirect_stdout(sys.stderr):
                code = bkjobs_main(args)
            assert code == 0, f"{block}: bkjobs {' '.join(args)} exited with {code}"
    for name in [m for m in sys.modules if m == "agent_lost"]:
        del sys.modules[name]
    assert ran >= 2
    assert served.fake.errors == []


def test_gitignore_command_adds_env_once(tmp_path: Path) -> None:
    line = next(
        line for b in SHELL for line in shell_lines(b.code) if line.endswith(">> .gitignore")
    )
    (tmp_path / ".gitignore").write_text("dist/\n", encoding="utf-8")
    for _ in range(2):
        subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True, timeout=30)
    assert (tmp_path / ".gitignore").read_text(encoding="utf-8") == "dist/\n.env\n"


def test_dotenv_example_names_what_from_env_reads() -> None:
    block = next(b for b in BLOCKS if b.lang == "ini" and "BUILDKITE_API_TOKEN" in b.code)
    assert set(parse_env_text(block.code)) == {
        "BUILDKITE_API_TOKEN",
        "BUILDKITE_ORGANIZATION_SLUG",
    }


def test_data_blocks_parse() -> None:
    for block in BLOCKS:
        if block.lang == "json":
            json.loads(block.code)
        elif block.lang == "yaml":
            assert isinstance(yaml.safe_load(block.code), dict), block
        elif block.lang == "toml" and sys.version_info >= (3, 11):
            import tomllib

            tomllib.loads(block.code)


# -- links and the error table ------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if target.startswith("http"):
            continue
        if target.startswith("#"):
            assert target[1:] in anchors, f"README link {target} has no heading"
        else:
            assert (ROOT / target.split("#", 1)[0]).exists(), f"README link {target} is missing"


def _error_table() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Errors and what to do", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


_SOURCE = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "pytest_bkjobs").glob("*.py"))


def _code_messages() -> str:
    """Every string literal of the package, f-string fields as NUL (names of variables filled)."""
    from pytest_bkjobs import _config

    names = {n: getattr(_config, n) for n in ("TOKEN_VAR", "ORG_VAR", "AGENT_TOKEN_VAR", "URL_VAR")}
    found = []
    for path in sorted((ROOT / "pytest_bkjobs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                pieces = []
                for value in node.values:
                    if isinstance(value, ast.Constant):
                        pieces.append(str(value.value))
                    elif isinstance(value, ast.FormattedValue) and isinstance(
                        value.value, ast.Name
                    ):
                        pieces.append(names.get(value.value.id, "\0"))
                    else:
                        pieces.append("\0")
                found.append("".join(pieces))
    return "\n".join(found)


def test_error_table_quotes_the_code() -> None:
    """Each quoted message fragment is a message of the package; each error class exists."""
    messages = _code_messages()
    rows = _error_table()
    assert len(rows) >= 15
    for row in rows:
        first = row.split(" | ", 1)[0]
        for quoted in re.findall(r"`([^`]+)`", first):
            if re.fullmatch(r"[A-Z]\w+Error", quoted):
                assert hasattr(pytest_bkjobs, quoted) or hasattr(pytest_bkjobs.ci, quoted)
                continue
            if quoted.startswith("."):  # an attribute of the error
                assert re.search(rf"\b{quoted[1:]}\b", messages + _SOURCE), quoted
                continue
            message = re.sub(r"^\d{3} ", "", quoted)  # the status is added when it is shown
            for part in message.split("..."):
                assert part.strip(" .") in messages, f"{part!r} is not a message of the code"


# -- docs/ ---------------------------------------------------------------------------------------

DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_the_readme_links_every_doc() -> None:
    text = README.read_text(encoding="utf-8")
    assert DOCS, "docs/ has no pages"
    for page in DOCS:
        assert f"](docs/{page.name})" in text, f"README does not link docs/{page.name}"


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_doc_links_resolve_and_code_compiles(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    readme_anchors = {
        _slug(h)
        for h in re.findall(r"^#+ (.+)$", README.read_text(encoding="utf-8"), flags=re.MULTILINE)
    }
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if target.startswith("http"):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (page.parent / path).exists(), f"{page.name}: link {target} is missing"
        wanted = readme_anchors if path.endswith("README.md") else anchors
        if anchor and (not path or path.endswith("README.md")):
            assert anchor in wanted, f"{page.name}: link {target} has no heading"
    for code in re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL):
        compile(code, page.name, "exec")
    for code in re.findall(r"^```sh\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL):
        parser = build_parser()
        for args in invocations(code, "bkjobs"):
            parser.parse_args(args)
