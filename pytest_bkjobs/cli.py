"""The ``bkjobs`` command: Buildkite jobs from a terminal or from inside a step.

Inside a step the ``BUILDKITE_*`` variables give the organisation, pipeline, build and current
job; ``--org/--pipeline/--build/--job`` override them. The API token comes from
``BUILDKITE_API_TOKEN`` (environment or ``.env``) and is never printed.

Exit statuses: 0 success; 1 an error (one line on stderr: what went wrong; what to do), or for
``retry-failed`` a retry that failed or aborted; 2 a usage error; 3 ``retry-failed --wait``
whose retried jobs did not all pass. See ``RetryReport.exit_code``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from ._cli_errors import UsageError, describe_error, scrub
from ._cli_output import job_details, job_dict, job_line, print_json, progress, report_text
from ._cli_parser import PROG, build_parser
from ._errors import (
    APIConnectionError,
    BadRequestError,
    BuildkiteError,
    ConfigurationError,
    InvalidResponseError,
    ServerError,
)

if TYPE_CHECKING:
    from ._client import JobsClient
    from ._models import Job
    from ._retry_model import RetryReport
    from .ci import BuildContext

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


# -- resolving where to act ---------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """The organisation, build and job a command acts on, and how they were found."""

    org: str | None
    pipeline: str | None
    build: int | None
    job_id: str | None
    explicit_build: bool  # --pipeline and --build given on the command line
    bad_build: str | None = None  # a BUILDKITE_BUILD_NUMBER that is not a build number


def _where(args: argparse.Namespace, environ: dict[str, str]) -> Where:
    def pick(option: str, var: str) -> str | None:
        value = getattr(args, option, None)
        if value is not None and not value.strip():
            # An empty option must not fall back to the step's variable (the current job).
            raise UsageError(f"--{option} must not be empty; leave it out to use {var}")
        return value if value is not None else (environ.get(var, "").strip() or None)

    build: int | None = getattr(args, "build", None)
    bad_build = None
    if build is None:
        text = environ.get("BUILDKITE_BUILD_NUMBER", "").strip()
        if text.isdigit() and int(text) > 0:
            build = int(text)
        elif text:
            bad_build = text  # an error only for the commands that need the build
    return Where(
        org=pick("org", "BUILDKITE_ORGANIZATION_SLUG"),
        pipeline=pick("pipeline", "BUILDKITE_PIPELINE_SLUG"),
        build=build,
        job_id=pick("job", "BUILDKITE_JOB_ID"),
        explicit_build=getattr(args, "pipeline", None) is not None
        and getattr(args, "build", None) is not None,
        bad_build=bad_build,
    )


def _need_build(where: Where) -> tuple[str, int]:
    if where.pipeline and where.build is not None:
        return where.pipeline, where.build
    if where.bad_build is not None:
        raise ConfigurationError(
            f"BUILDKITE_BUILD_NUMBER must be the build number (a positive integer), got"
            f" {where.bad_build!r}; pass --build NUMBER"
        )
    missing = []
    if not where.pipeline:
        missing.append(("build", "BUILDKITE_PIPELINE_SLUG", "--pipeline SLUG"))
    if where.build is None:
        missing.append(("build", "BUILDKITE_BUILD_NUMBER", "--build NUMBER"))
    _fail_missing(missing + _access_missing(where))


#: (what, variable, how to give it) for each setting a command lacks.
_Missing = list[tuple[str, str, str]]


def _access_missing(where: Where) -> _Missing:
    """The organisation and API token, when neither given nor set (reported with the rest)."""
    from ._config import ORG_VAR, TOKEN_VAR, merged_environ

    values = merged_environ(None, ".env")
    missing = []
    if not (where.org or values.get(ORG_VAR, "").strip()):
        missing.append(("organisation", ORG_VAR, "--org SLUG"))
    if not values.get(TOKEN_VAR, "").strip():
        missing.append(("API token", TOKEN_VAR, ""))
    return missing


def _fail_missing(missing: _Missing) -> NoReturn:
    """One line naming every missing setting at once, and how to give each."""
    from ._config import TOKEN_VAR

    kinds = list(dict.fromkeys(what for what, _, _ in missing))
    whats = " or ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
    names = ", ".join(var for _, var, _ in missing)
    fixes = [fix for _, _, fix in missing if fix]
    todo = [f"pass {', '.join(fixes)}"] if fixes else []
    if any(var == TOKEN_VAR for _, var, _ in missing):
        todo.append(
            f"set {TOKEN_VAR} (in the environment or .env) to a REST API access token"
            " (Buildkite > Personal Settings > API Access Tokens)"
        )
    raise ConfigurationError(
        f"no {whats} given: not inside a Buildkite step ({names}"
        f" {'is' if len(missing) == 1 else 'are'} not set); {' and '.join(todo)}"
    )


def _job_route(args: argparse.Namespace, where: Where) -> tuple[str, dict[str, Any]]:
    """The job id to act on and the route: build-scoped when the build is known for it."""
    given = getattr(args, "job_id", None)
    if given is not None:
        if given.strip() in ("", ".", ".."):
            # An empty JOB must not fall back to the current job (delete-log would delete it).
            raise UsageError(
                f"JOB must be a job id (a UUID; `bkjobs list` shows them), got {given!r};"
                " leave JOB out to act on the current job where that is allowed"
            )
        if where.explicit_build:
            return given, {"pipeline": where.pipeline, "build": where.build}
        return given, {}  # a job of any build: the org-scoped route finds it
    if not where.job_id:
        _fail_missing(
            [
                ("job", "BUILDKITE_JOB_ID", f"a job id (bkjobs {args.command} JOB)"),
                *_access_missing(where),
            ]
        )
    if where.pipeline and where.build is not None:
        return where.job_id, {"pipeline": where.pipeline, "build": where.build}
    return where.job_id, {}


def _client(args: argparse.Namespace, where: Where, state: _State) -> JobsClient:
    from ._client import JobsClient
    from ._config import ORG_VAR, URL_VAR, merged_environ, settings_from_env

    values = merged_environ(None, ".env")
    if where.org:
        values[ORG_VAR] = where.org
    if getattr(args, "api_url", None):
        values[URL_VAR] = args.api_url
    missing = _access_missing(where)
    if len(missing) > 1:  # a token alone gets settings_from_env's fuller message
        _fail_missing(missing)
    if not values.get(ORG_VAR, "").strip():
        raise ConfigurationError(
            f"no organisation given: {ORG_VAR} is not set (not inside a Buildkite step, nor in"
            " .env); pass --org SLUG (the part after buildkite.com/ in your organisation's URL)"
        )
    settings = settings_from_env(values, dotenv_path=None)
    state.secrets.append(settings.token)
    state.base_url = settings.base_url
    return JobsClient(token=settings.token, org=settings.org, base_url=settings.base_url)


@dataclass
class _State:
    """What the error handler needs to know about the run."""

    command: str = ""
    base_url: str = ""
    secrets: list[str] = field(default_factory=list)  # scrubbed from anything printed


# -- commands -----------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, where: Where, state: _State) -> int:
    pipeline, build = _need_build(where)
    with _client(args, where, state) as client:
        jobs = list(
            client.iter_jobs(
                pipeline,
                build,
                state=args.state,
                include_retried_jobs=bool(args.include_retried),
            )
        )
    if args.json:
        print_json([job_dict(job) for job in jobs])
    else:
        for job in jobs:
            print(job_line(job))
        print(f"{len(jobs)} job(s) in {pipeline} #{build}", file=sys.stderr)
    return EXIT_OK


def cmd_get(args: argparse.Namespace, where: Where, state: _State) -> int:
    job_id, route = _job_route(args, where)
    with _client(args, where, state) as client:
        job = client.get_job(job_id, **route)
    if args.json:
        print_json(job_dict(job))
    else:
        print(job_details(job))
    return EXIT_OK


def cmd_env(args: argparse.Namespace, where: Where, state: _State) -> int:
    from ._env import REDACTED, format_env_text, redact_env

    job_id, route = _job_route(args, where)
    with _client(args, where, state) as client:
        env = client.get_job_env(job_id, **route)
    shown = env if args.reveal else redact_env(env)
    if args.json or args.format == "json":
        print_json(shown)
    else:
        sys.stdout.write(format_env_text(shown))
    hidden = sum(1 for key, value in shown.items() if value == REDACTED and env[key] != REDACTED)
    if hidden:
        print(f"{PROG}: {hidden} secret value(s) redacted; --reveal shows them", file=sys.stderr)
    return EXIT_OK


def cmd_log(args: argparse.Namespace, where: Where, state: _State) -> int:
    from ._files import atomic_writer, write_atomic
    from ._logs import drop_partial_line, iter_strip_log, strip_log

    job_id, route = _job_route(args, where)
    fmt = "json" if args.json and not args.output else args.format
    if args.tail is not None and fmt != "text":
        raise UsageError(
            f"--tail works with the text log only, not --format {fmt}"
            + (" (--json without -o prints the JSON format)" if args.json else "")
            + "; drop --tail, or use --format text"
        )
    if args.output is not None and not args.output.strip():
        raise UsageError("-o/--output must not be empty; give a file path, or leave -o out")
    if args.output:
        check_writable(args.output)
    with _client(args, where, state) as client:
        if fmt == "text" and args.tail is None:
            # Streamed: a log can be up to 1 GiB, so it is never held whole in memory.
            if args.output and not args.strip:
                size = client.download_job_log(job_id, args.output, **route)
                return _wrote(args, size)
            with client.stream_job_log(job_id, **route) as chunks:
                pieces = (
                    (piece.encode("utf-8") for piece in iter_strip_log(chunks))
                    if args.strip
                    else chunks
                )
                if args.output:
                    size = 0
                    with atomic_writer(args.output) as handle:
                        for piece in pieces:
                            handle.write(piece)
                            size += len(piece)
                    return _wrote(args, size)
                out = sys.stdout.buffer
                for piece in pieces:
                    out.write(piece)
                out.flush()
            return EXIT_OK
        if fmt == "json":
            log = client.get_job_log(job_id, **route)
            text = json.dumps(
                {
                    "url": log.url,
                    "content": strip_log(log.content) if args.strip else log.content,
                    "size": log.size,
                    "header_times": list(log.header_times),
                },
                indent=2,
                ensure_ascii=False,
            )
            text += "\n"
        elif fmt == "html":
            text = client.get_job_log_html(job_id, **route)
        else:  # the last --tail bytes
            text = client.get_job_log_text(job_id, tail=args.tail, **route)
            if args.strip:
                # A tail starts anywhere, even inside a timestamp marker: drop that first piece.
                partial = len(text.encode("utf-8", "surrogateescape")) >= args.tail
                text = strip_log(drop_partial_line(text) if partial else text)
    if args.output:
        data = text.encode("utf-8")
        write_atomic(args.output, data)
        return _wrote(args, len(data))
    sys.stdout.write(text)
    return EXIT_OK


def _wrote(args: argparse.Namespace, size: int) -> int:
    if args.json:
        print_json({"path": args.output, "bytes": size})
    else:
        print(f"{PROG}: wrote {size} bytes to {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, where: Where, state: _State) -> int:
    job_id, route = _job_route(args, where)
    with _client(args, where, state) as client:
        try:
            new = client.retry_job(job_id, **route)
        except BadRequestError as exc:
            if not exc.already_retried:
                raise
            old = client.get_job(job_id, **route)
            if not old.retried_in_job_id:
                raise
            raise BuildkiteError(
                f"{exc.message}: job {job_id} was already retried, as job {old.retried_in_job_id};"
                f" it was not retried again (bkjobs get {old.retried_in_job_id} shows the retry)"
            ) from exc
        except (APIConnectionError, ServerError, InvalidResponseError) as exc:
            # The PUT may have been executed: look instead of sending it again.
            try:
                old = client.get_job(job_id, **route)
            except BuildkiteError as read_error:
                raise BuildkiteError(
                    f"the retry's outcome is unknown ({exc}) and reading job {job_id} back failed"
                    f" ({read_error}); it was not sent again: running bkjobs retry {job_id} again"
                    " is safe (if the retry did happen, Buildkite refuses a second one and the"
                    " retry is shown)"
                ) from exc
            if not old.retried_in_job_id:
                raise BuildkiteError(
                    f"the retry's outcome is unknown ({exc}) and job {job_id} does not show as"
                    f" retried; it was not sent again: running bkjobs retry {job_id} again is"
                    " safe (if the retry did happen, Buildkite refuses a second one and the"
                    " retry is shown)"
                ) from exc
            new = client.get_job(old.retried_in_job_id, **route)
            progress(f"the answer was lost, but job {job_id} was retried (read back)")
    if args.json:
        print_json(job_dict(new))
    else:
        state_text = new.raw_state or "-"
        print(f"retried {job_id}: new job {new.id} ({state_text})")
    return EXIT_OK


def cmd_retry_failed(args: argparse.Namespace, where: Where, state: _State) -> int:
    from .ci import BuildContext

    pipeline, build = _need_build(where)
    hook = _load_plugins(args.plugin)
    with _client(args, where, state) as client:
        ctx = BuildContext(org=client.org, pipeline=pipeline, build=build, job_id=where.job_id)
        return run_retry_failed(client, ctx, args, hook=hook)


def _load_plugins(modules: Sequence[str]) -> Callable[[Job, BuildContext], bool | None] | None:
    """The select hook; ``--plugin`` modules are found in the working directory too."""
    from ._toolkit import load_select_hook

    # Like `python -m`, so that `--plugin agent_lost` finds ./agent_lost.py from the console
    # script too; only while importing them.
    cwd = os.getcwd()
    added = bool(modules) and cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return load_select_hook(modules)
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def check_writable(dest: str) -> None:
    """Fail before any request when ``dest`` cannot be written (a file is created and removed)."""
    import stat
    import tempfile

    from ._files import check_destination

    path = check_destination(dest)
    with contextlib.suppress(OSError):
        if not stat.S_ISREG(os.stat(dest).st_mode):
            # /dev/null, a FIFO: written into, not replaced, so its folder (/dev) need not be
            # writable; the device itself must be.
            if not os.access(dest, os.W_OK):
                raise ConfigurationError(
                    f"cannot write {dest}: permission denied; give a path you can write"
                )
            return
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write {dest}: {exc.strerror or exc} in {str(path.parent)!r};"
            " give a path in a writable folder"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _write_report(dest: str, data: bytes) -> None:
    from ._files import write_atomic

    try:
        write_atomic(dest, data)
    except OSError as exc:  # named after the real path, not the temporary file beside it
        raise ConfigurationError(
            f"cannot write the report to {dest}: {exc.strerror or exc}; the report was printed"
            " above, check the path and permissions"
        ) from None


def run_retry_failed(
    client: JobsClient,
    ctx: BuildContext,
    args: argparse.Namespace,
    *,
    hook: Callable[[Job, BuildContext], bool | None] | None = None,
) -> int:
    """``retry-failed``'s run, report and exit status (``bkjobs demo`` runs it too)."""
    from ._retry_model import RetryAbortedError, RetryInterrupted
    from .ci import retry_failed_siblings

    if args.annotate is not None and not args.annotate.strip():
        raise UsageError("--annotate must not be empty; give a file path, or leave it out")
    if args.annotate:
        check_writable(args.annotate)  # before any retry: the report must not be lost
    aborted: RetryAbortedError | None = None
    interrupted = False
    try:
        report = retry_failed_siblings(
            client,
            ctx,
            states=args.state or ("failed", "timed_out"),
            include_soft_failed=args.include_soft_failed,
            step_keys=args.step_key,
            max_attempts=args.max_attempts,
            dry_run=args.dry_run,
            concurrency=args.concurrency,
            wait=args.wait,
            wait_timeout=args.timeout,
            poll_interval=args.poll_interval,
            hook=hook,
            progress=progress,
        )
    except RetryAbortedError as exc:
        aborted, report = exc, exc.report
    except RetryInterrupted as exc:
        interrupted, report = True, exc.report
    if args.json:
        print_json(report.to_dict())
    else:
        print(report_text(report))
    sys.stdout.flush()
    if args.annotate:
        _write_report(args.annotate, report.to_markdown().encode("utf-8"))
        progress(f"wrote the Markdown report to {args.annotate} (buildkite-agent annotate)")
    if interrupted:
        raise KeyboardInterrupt
    if aborted is not None:
        _error(f"{aborted.message}; the build was canceled, so rebuild it instead of retrying")
    _explain_failures(report)
    return report.exit_code


def _explain_failures(report: RetryReport) -> None:
    """One line per kind of failure whose fix is not in the API's message."""
    refused = [o for o in report.failed if o.status_code == 403]
    if refused:
        _error(
            f"{len(refused)} retr{'y was' if len(refused) == 1 else 'ies were'} refused (403):"
            " give the API token the write_builds scope (Buildkite > Personal Settings > API"
            " Access Tokens) or use one that has it"
        )
    limited = [o for o in report.failed if o.status_code == 429]
    if limited:
        _error(
            f"{len(limited)} retr{'y was' if len(limited) == 1 else 'ies were'} rate limited"
            " (429) and not sent: run bkjobs retry-failed again after the reset (safe: jobs"
            " already retried are skipped), or lower --concurrency"
        )
    unknown = [o for o in report.failed if (o.reason or "").startswith("outcome unknown")]
    if unknown:
        _error(
            f"{len(unknown)} retr{'y has' if len(unknown) == 1 else 'ies have'} an unknown outcome"
            " (the answer was lost and the job does not show as retried); running bkjobs"
            " retry-failed again is safe: a job that does not show as retried is picked up again"
        )


def cmd_unblock(args: argparse.Namespace, where: Where, state: _State) -> int:
    fields = _unblock_fields(args)
    job_id, route = _job_route(args, where)
    with _client(args, where, state) as client:
        job = client.unblock_job(job_id, fields=fields, unblocker=args.unblocker, **route)
    if args.json:
        print_json(job_dict(job))
    else:
        print(f"unblocked {job.id} ({job.display_name}): {job.raw_state or '-'}")
    return EXIT_OK


def _unblock_fields(args: argparse.Namespace) -> dict[str, Any] | None:
    fields: dict[str, Any] = {}
    if args.fields_json is not None:
        text = sys.stdin.read() if args.fields_json == "-" else args.fields_json
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--fields-json is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))
            for v in data.values()
        ):
            raise UsageError(
                "--fields-json must be a JSON object of strings or lists of strings,"
                ' such as {"release": "v1.2", "regions": ["eu", "us"]}'
            )
        fields.update(data)
    for item in args.field:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--field takes KEY=VALUE, got {item!r}")
        if key in fields:  # a repeated key is a multi-select field
            previous = fields[key]
            fields[key] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            fields[key] = value
    return fields or None


def cmd_reprioritize(args: argparse.Namespace, where: Where, state: _State) -> int:
    job_id, route = _job_route(args, where)
    with _client(args, where, state) as client:
        job = client.reprioritize_job(job_id, args.priority, **route)
    if args.json:
        print_json(job_dict(job))
    else:
        print(f"job {job.id} now has priority {job.priority if job.priority is not None else '-'}")
    return EXIT_OK


def cmd_delete_log(args: argparse.Namespace, where: Where, state: _State) -> int:
    job_id, route = _job_route(args, where)
    if not args.yes:
        raise UsageError(
            f"refusing to delete the log of {job_id} without --yes (this cannot be undone)"
        )
    with _client(args, where, state) as client:
        client.delete_job_log(job_id, **route)
    if args.json:
        print_json({"deleted": job_id})
    else:
        print(f"deleted the log of {job_id}")
    return EXIT_OK


def cmd_fake_server(args: argparse.Namespace, where: Where, state: _State) -> int:
    from ._demo import serve_fake

    def emit(line: str) -> None:
        if args.json:
            print_json({"message": line})
        else:
            print(line, flush=True)

    return serve_fake(
        port=args.port, host=args.host, sample=args.sample, print_fn=emit, env_file=args.env_file
    )


def cmd_demo(args: argparse.Namespace, where: Where, state: _State) -> int:
    from ._demo import run_demo

    return run_demo(json_output=args.json)


def cmd_cassette(args: argparse.Namespace, where: Where, state: _State) -> int:
    try:
        from ._vcr_convert import convert_file
    except ImportError:
        raise ConfigurationError(
            "cassette conversion is not available in this version of pytest-bkjobs"
            " (pytest_bkjobs._vcr_convert is missing); upgrade pytest-bkjobs"
        ) from None
    dest = convert_file(args.src, args.output, force=args.force)
    if args.json:
        print_json({"source": args.src, "destination": str(dest)})
    else:
        print(f"converted {args.src} -> {dest}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Where, _State], int]] = {
    "list": cmd_list,
    "get": cmd_get,
    "env": cmd_env,
    "log": cmd_log,
    "retry": cmd_retry,
    "retry-failed": cmd_retry_failed,
    "unblock": cmd_unblock,
    "reprioritize": cmd_reprioritize,
    "delete-log": cmd_delete_log,
    "fake-server": cmd_fake_server,
    "demo": cmd_demo,
    "cassette": cmd_cassette,
}


# -- errors -------------------------------------------------------------------------------------


def _error(message: str, secrets: Sequence[str] = ()) -> None:
    print(f"{PROG}: error: {scrub(message, secrets)}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bkjobs`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    state = _State(command=args.command)
    handler: logging.Handler | None = None
    logger = logging.getLogger("pytest_bkjobs")
    if args.debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("bkjobs debug: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        where = _where(args, dict(os.environ))
        return COMMANDS[args.command](args, where, state)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted; a retry already sent is not undone: check the build")
        return 130
    except BrokenPipeError:
        # stdout was closed early (``bkjobs log | head``): not worth a message; silence the
        # interpreter's own complaint when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        if args.debug:
            sys.stderr.write(scrub(traceback.format_exc(), state.secrets))
        _error(describe_error(exc, state.command, state.base_url), state.secrets)
        return EXIT_ERROR
    finally:
        if handler is not None:
            logger.removeHandler(handler)
