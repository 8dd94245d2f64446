"""The ``bkjobs`` argument parser."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ._models import FILTER_STATES

PROG = "bkjobs"


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every command accepts, before or after its name."""
    # Subcommands default to SUPPRESS so a value given before the command name is not reset.
    default: Any = None if top else argparse.SUPPRESS
    flag: Any = False if top else argparse.SUPPRESS
    group = parser.add_argument_group("where (default: the BUILDKITE_* variables of the step)")
    group.add_argument("--org", default=default, help="organisation slug")
    group.add_argument("--pipeline", default=default, help="pipeline slug")
    group.add_argument("--build", type=_build_number, default=default, help="build number")
    group.add_argument("--job", default=default, help="the current job's id (BUILDKITE_JOB_ID)")
    group.add_argument(
        "--api-url", default=default, help="API base URL (default: BUILDKITE_API_URL or Buildkite)"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", default=flag, help="print JSON")
    out.add_argument(
        "--debug", action="store_true", default=flag, help="show tracebacks and request logs"
    )


def _build_number(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"must be a build number (a positive integer such as 42), got {text!r}"
        )
    return int(text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:  # nan would wait forever, inf never end
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds >= 0 (such as 600), got {text!r}"
        )
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a TCP port from 0 to 65535 (0 picks a free one), got {text!r}"
        )
    return value


def _glob(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a non-empty glob pattern such as 'test-*'")
    return text


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``bkjobs`` argument parser."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Buildkite jobs from the command line or from inside a Buildkite step.",
        epilog="Run 'bkjobs demo' to see retry-failed at work against a built-in fake"
        " (no token, no network). 'bkjobs COMMAND --help' shows a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common(sub, top=False)
        return sub

    sub = command("list", "list the jobs of a build")
    sub.add_argument(
        "--state", action="append", choices=FILTER_STATES, metavar="S", help="filter (repeatable)"
    )
    sub.add_argument(
        "--include-retried", action="store_true", help="also list the earlier attempts of jobs"
    )
    for name, what in (("get", "show a job"), ("env", "print a job's environment")):
        sub = command(name, f"{what} (default: the current job)")
        sub.add_argument("job_id", nargs="?", metavar="JOB")
        if name == "env":
            sub.add_argument("--format", choices=("dotenv", "json"), default="dotenv")
            sub.add_argument(
                "--reveal", action="store_true", help="show secret values (redacted by default)"
            )
    sub = command("log", "print or save a job's log (default: the current job)")
    sub.add_argument("job_id", nargs="?", metavar="JOB")
    sub.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically)")
    sub.add_argument("--format", choices=("text", "json", "html"), default="text")
    sub.add_argument("--strip", action="store_true", help="remove timestamps and ANSI escapes")
    sub.add_argument("--tail", type=_positive, metavar="BYTES", help="only the last BYTES bytes")
    sub = command("retry", "retry one job (exactly once)")
    sub.add_argument("job_id", metavar="JOB")
    sub = command("retry-failed", "retry the failed jobs of the build, each exactly once")
    sub.add_argument("--dry-run", action="store_true", help="show what would be retried")
    sub.add_argument(
        "--state",
        action="append",
        choices=FILTER_STATES,
        metavar="S",
        help="states to retry (repeatable; default: failed and timed_out)",
    )
    sub.add_argument(
        "--step-key",
        action="append",
        type=_glob,
        metavar="GLOB",
        help="only these step keys (repeatable)",
    )
    sub.add_argument("--include-soft-failed", action="store_true")
    sub.add_argument(
        "--max-attempts", type=_positive, metavar="N", help="skip jobs retried N times"
    )
    sub.add_argument("--concurrency", type=_positive, default=4, metavar="N")
    sub.add_argument("--wait", action="store_true", help="wait for the retried jobs to finish")
    sub.add_argument("--timeout", type=_seconds, default=600.0, metavar="S", help="for --wait")
    sub.add_argument("--poll-interval", type=_seconds, default=5.0, metavar="S")
    sub.add_argument("--annotate", metavar="FILE", help="write the Markdown report to FILE")
    sub.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE as a bkjobs plugin (bkjobs_select_job hook)",
    )
    sub = command("unblock", "unblock a block step (manual job)")
    sub.add_argument("job_id", metavar="JOB")
    sub.add_argument(
        "--field", action="append", default=[], metavar="KEY=VALUE", help="repeat a KEY for lists"
    )
    sub.add_argument(
        "--fields-json", metavar="JSON", help="fields as a JSON object ('-' reads stdin)"
    )
    sub.add_argument("--unblocker", metavar="USER_ID", help="unblock on behalf of this user")
    sub = command("reprioritize", "change a job's priority")
    sub.add_argument("job_id", metavar="JOB")
    sub.add_argument("priority", type=_integer, metavar="N")
    sub = command("delete-log", "delete a job's log")
    sub.add_argument("job_id", metavar="JOB")
    sub.add_argument("--yes", action="store_true", help="confirm the deletion")
    sub = command("fake-server", "serve a fake Buildkite API on a loopback port")
    sub.add_argument("--port", type=_port, default=0, help="0 picks a free port")
    sub.add_argument("--host", default="127.0.0.1")
    sub.add_argument("--sample", action="store_true", help="seed a realistic sample build")
    sub.add_argument(
        "--env-file",
        metavar="PATH",
        help="also write the settings as KEY=value lines to PATH (to source, or as .env)",
    )
    command("demo", "retry-failed --wait against a built-in fake build (no token, no network)")
    sub = command("cassette", "cassette tools")
    tools = sub.add_subparsers(dest="cassette_command", metavar="TOOL", required=True)
    convert = tools.add_parser("convert", help="convert a Ruby VCR cassette to ours")
    convert.add_argument("src", metavar="SRC")
    convert.add_argument("-o", "--output", metavar="DEST")
    convert.add_argument("--force", action="store_true", help="replace an existing DEST")
    return parser
