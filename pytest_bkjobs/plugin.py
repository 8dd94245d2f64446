"""The pytest plugin: options, the ``bk_cassette`` marker, fixtures, teardown checks, reporting.

Loaded in every pytest run of every project that installs pytest-bkjobs, so this module imports
only pytest and the standard library; httpx, respx and the client load when a fixture needs them.
(respx's own ``pytest11`` plugin, ``respx.plugin``, imports respx and httpx in every run: that is
respx's entry point, not ours; ``-p no:respx`` leaves it out.)
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ._cassette import MODES  # standard library only, like everything imported here

if TYPE_CHECKING:
    from ._cassette_marker import MarkerOptions
    from ._cassette_session import CassetteRouter, CassetteSession
    from ._client import AsyncJobsClient, JobsClient
    from .ci import BuildContext
    from .fake import FakeBuildkite

_MODE_HELP = {
    "none": "replay only",
    "once": "record missing cassettes",
    "new_episodes": "record requests the cassette lacks",
    "all": "re-record every cassette used",
}
_CASSETTE_FIXTURES = ("bk_cassette", "bk_router", "bk_client", "bk_async_client")
_REPLAY_TOKEN = "bkjobs-replay-token"
# Here, not beside the marker's parser: every pytest run registers it, few use the marker.
_MARKER_DOC = (
    "bk_cassette(name=None, *, record_mode=None, allow_playback_repeats=False,"
    " assert_all_played=True, match_on=None): replay (or record) the test's Buildkite API"
    " requests from a cassette file."
)


@dataclass
class _Settings:
    """The run's cassette settings, command line over ini."""

    mode: str
    mode_from_cli: bool
    cassette_dir: Path | None
    api_url: str | None
    redact_env: tuple[str, ...]
    summary: dict[str, int] = field(default_factory=dict)
    unused: int = 0


SETTINGS = pytest.StashKey[_Settings]()
PATH_KEY = pytest.StashKey[Path]()
PASSED_KEY = pytest.StashKey[dict[str, bool]]()  # phase -> passed
SUMMARY_KEY = pytest.StashKey[dict[str, Any]]()
CLASH_KEY = pytest.StashKey[str]()
SESSION_KEY = pytest.StashKey["CassetteSession"]()  # the active cassette, for reporting
SETTINGS_FAILED_KEY = pytest.StashKey[bool]()  # the call failed for want of a token or org


# -- configuration ------------------------------------------------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bkjobs", "Buildkite API cassettes (pytest-bkjobs)")
    group.addoption(
        "--bk-record",
        action="store_true",
        default=False,
        help="send Buildkite API requests to the real API and rewrite each cassette used"
        " (same as --bk-record-mode=all)",
    )
    group.addoption(
        "--bk-record-mode",
        choices=MODES,
        default=None,
        help="none: replay only (default); once: record missing cassettes; new_episodes: record"
        " requests a cassette lacks; all: re-record",
    )
    group.addoption(
        "--bk-cassette-dir",
        default=None,
        help="folder for cassettes (default: cassettes/ beside each test file)",
    )
    group.addoption(
        "--bk-api-url",
        default=None,
        help="API base URL to record against, such as a fake server (default: the real API)",
    )
    parser.addini("bk_record_mode", "default cassette record mode (none)", default="none")
    parser.addini("bk_cassette_dir", "folder for cassettes", default="")
    parser.addini("bk_api_url", "API base URL to record against", default="")
    parser.addini(
        "bk_redact_env",
        "extra secret variable name patterns (globs) masked in recorded job envs",
        type="linelist",
        default=[],
    )


def _settings(config: pytest.Config) -> _Settings:
    record = bool(config.getoption("bk_record"))
    cli_mode = config.getoption("bk_record_mode")
    if record and cli_mode not in (None, "all"):
        raise pytest.UsageError(
            f"--bk-record means --bk-record-mode=all; it conflicts with --bk-record-mode={cli_mode}"
        )
    ini_mode = str(config.getini("bk_record_mode") or "none").strip()
    if ini_mode not in MODES:
        raise pytest.UsageError(
            f"ini option bk_record_mode = {ini_mode!r} is not a record mode; use one of {MODES}"
        )
    mode = "all" if record else (cli_mode or ini_mode)
    raw_dir = config.getoption("bk_cassette_dir") or str(config.getini("bk_cassette_dir") or "")
    cassette_dir = None
    if raw_dir:
        cassette_dir = Path(raw_dir)
        if not cassette_dir.is_absolute():
            base = (
                config.invocation_params.dir
                if config.getoption("bk_cassette_dir")
                else config.rootpath
            )
            cassette_dir = base / cassette_dir
    api_url = config.getoption("bk_api_url") or str(config.getini("bk_api_url") or "") or None
    if api_url and not api_url.startswith(("http://", "https://")):
        raise pytest.UsageError(
            f"--bk-api-url / bk_api_url must be an http(s) URL such as"
            f" http://127.0.0.1:8080/v2, got {api_url!r}"
        )
    return _Settings(
        mode=mode,
        mode_from_cli=record or cli_mode is not None,
        cassette_dir=cassette_dir,
        api_url=api_url.rstrip("/") if api_url else None,
        redact_env=tuple(str(p) for p in config.getini("bk_redact_env")),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_DOC)
    settings = _settings(config)
    config.stash[SETTINGS] = settings
    from ._cassette_report import Reporter

    config.pluginmanager.register(Reporter(settings), "bkjobs-reporter")


def pytest_report_header(config: pytest.Config) -> str:
    settings = config.stash[SETTINGS]
    where = settings.cassette_dir or "cassettes/<module>/ beside each test file"
    line = (
        f"bkjobs: record mode {settings.mode} ({_MODE_HELP[settings.mode]}), cassettes in {where}"
    )
    if settings.mode != "none" and settings.api_url:
        line += f", recording against {settings.api_url}"
    return line


# -- cassette paths -----------------------------------------------------------------------------


def default_cassette_path(item: pytest.Item, config: pytest.Config) -> Path:
    """``<test dir>/cassettes/<module>/<test name>.json``, or under ``--bk-cassette-dir``."""
    from ._cassette_marker import cassette_path

    return cassette_path(item, config.rootpath, config.stash[SETTINGS].cassette_dir)


def _cassette_path(item: pytest.Item, config: pytest.Config) -> Path:
    """The ``pytest_bkjobs_cassette_path`` hook's answer, else the default path."""
    path = config.hook.pytest_bkjobs_cassette_path(item=item, config=config)
    return Path(path) if path is not None else default_cassette_path(item, config)


def _uses_cassette(item: pytest.Item) -> bool:
    """True if the test asks for a cassette; one marked ``bk_cassette`` is made to ask."""
    names = getattr(item, "fixturenames", ())
    if any(f in names for f in _CASSETTE_FIXTURES):
        return True
    if item.get_closest_marker("bk_cassette") is None:
        return False
    _request_cassette(item, names)
    return True


def _request_cassette(item: pytest.Item, names: Any) -> None:
    """Make a test marked ``bk_cassette`` set the cassette up as if it asked for the fixture.

    An autouse fixture would do it, at the price of a fixture setup in every test of every
    project with the plugin installed. The cassette goes in before the test's first
    function-scoped fixture, where an autouse fixture of ours would be: after the fixtures
    of wider scope (their requests are not the test's), before the ones that may call the API.
    """
    if not isinstance(names, list):
        return
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    at = len(names)
    for index, name in enumerate(names):
        defs = definitions.get(name)
        if defs and str(getattr(defs[-1], "scope", "function")) == "function":
            at = index
            break
    # A new list: parametrized tests share one, and a mark may be on one parameter only.
    item.fixturenames = [*names[:at], "bk_cassette", *names[at:]]  # type: ignore[attr-defined]


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    owners: dict[Path, list[str]] = {}
    for item in items:
        if not _uses_cassette(item):
            continue
        path = _cassette_path(item, config)
        item.stash[PATH_KEY] = path
        owners.setdefault(path, []).append(item.nodeid)
    for path, ids in owners.items():
        if len(ids) < 2:
            continue
        message = (
            f"bkjobs: several tests would use the same cassette file {_display(config, path)}:\n"
            + "".join(f"  {nodeid}\n" for nodeid in ids)
            + "Give each one its own name with @pytest.mark.bk_cassette('some-name'), or return"
            " distinct paths from pytest_bkjobs_cassette_path."
        )
        # A failed collect report: pytest (and each xdist worker) stops with a collection error.
        report = pytest.CollectReport(ids[0], "failed", message, [])
        config.hook.pytest_collectreport(report=report)
        for item in items:
            if item.nodeid in ids:  # under xdist the run goes on: never let them race
                item.stash[CLASH_KEY] = message


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A marker added after our collection hook still activates the cassette.

    A ``pytest_collection_modifyitems`` that runs after ours (``trylast``, or a plugin
    registered before this one) or a conftest's ``pytest_runtest_setup`` may add the marker;
    this runs after the latter and before the test's fixtures are set up.
    """
    if PATH_KEY not in item.stash:  # not seen using a cassette at collection
        _uses_cassette(item)


def _display(config: pytest.Config, path: Path) -> str:
    try:
        return str(path.relative_to(config.rootpath))
    except ValueError:
        return str(path)


def _marker_options(item: pytest.Item) -> MarkerOptions:
    from ._cassette_marker import marker_options

    try:
        return marker_options(item)
    except (TypeError, ValueError) as exc:
        problem = str(exc)
    item.stash[SUMMARY_KEY] = {"outcome": "failed"}  # each such test counts as one with errors
    pytest.fail(
        f"bad @pytest.mark.bk_cassette on {item.nodeid}: {problem}\n"
        f"expected {_MARKER_DOC.split(':', 1)[0]}",
        pytrace=False,
    )


# -- the cassette fixture -----------------------------------------------------------------------


def _environ() -> dict[str, str]:
    from ._config import merged_environ

    return merged_environ(None, ".env")


def _start(request: pytest.FixtureRequest) -> CassetteSession:
    from ._cassette import CassetteError
    from ._cassette_match import DEFAULT_MATCH_ON
    from ._cassette_redact import redactor_for
    from ._cassette_session import CassetteSession, SessionOptions
    from ._config import DEFAULT_BASE_URL, TOKEN_VAR, URL_VAR

    item, config = request.node, request.config
    clash = item.stash.get(CLASH_KEY, None)
    if clash is not None:
        item.stash[SUMMARY_KEY] = {"outcome": "failed"}
        pytest.fail(clash, pytrace=False)
    settings = config.stash[SETTINGS]
    options = _marker_options(item)
    if settings.mode_from_cli or options.record_mode is None:
        mode = settings.mode
    else:
        mode = options.record_mode
    path = item.stash.get(PATH_KEY, None) or _cassette_path(item, config)
    item.stash[PATH_KEY] = path  # also marks the test as one using a cassette
    environ = _environ()
    api_url = settings.api_url or environ.get(URL_VAR, "").strip() or DEFAULT_BASE_URL
    rerecord = "pytest --bk-record"
    if settings.api_url:  # the hint must record against the same server as this run
        rerecord += f" --bk-api-url {shlex.quote(settings.api_url)}"
    session_options = SessionOptions(
        path=path,
        test_id=item.nodeid,
        mode=mode,
        api_url=api_url.rstrip("/"),
        allow_playback_repeats=options.allow_playback_repeats,
        assert_all_played=options.assert_all_played,
        match_on=options.match_on or DEFAULT_MATCH_ON,
        redactor=redactor_for(environ.get(TOKEN_VAR), settings.redact_env),
        display_path=_display(config, path),
        rerecord=f"{rerecord} '{item.nodeid}'",
    )
    try:
        return CassetteSession(session_options)
    except CassetteError as exc:
        problem = str(exc)
    item.stash[SUMMARY_KEY] = {"path": session_options.display_path, "outcome": "failed"}
    pytest.fail(f"bkjobs: {problem}", pytrace=False)  # outside ``except``: no chained traceback


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _finish(request: pytest.FixtureRequest, session: CassetteSession) -> None:
    from ._cassette import save_cassette
    from ._errors import BuildkiteError

    item, config = request.node, request.config
    phases = item.stash.get(PASSED_KEY, {})
    passed = phases.get("setup", False) and phases.get("call", False)
    summary: dict[str, Any] = {"path": session.where, "unused": 0}
    item.stash[SUMMARY_KEY] = summary
    if item.stash.get(SETTINGS_FAILED_KEY, False):
        summary["outcome"] = "failed"  # the test never got to use its cassette
        return
    if session.errors:
        summary["outcome"] = "failed"
        # The error already failed the test where the request was made: do not repeat it.
        surfaced = any(
            any(e is err for err in session.errors) for e in _chain(_call_exception(item))
        )
        if not surfaced:
            pytest.fail(
                "bkjobs: the code under test hit cassette errors (and may have swallowed"
                " them):\n" + "\n\n".join(str(e) for e in session.errors),
                pytrace=False,
            )
        return
    if session.recording:
        if not passed:
            summary["outcome"] = "not written"
            return
        if session.mode == "new_episodes" and not session.new and session.options.path.exists():
            summary["outcome"] = "replayed"
            summary["unused"] = len(session.unplayed)
            return

        def scrub(interaction: dict[str, Any]) -> None:
            config.hook.pytest_bkjobs_scrub_interaction(interaction=interaction, config=config)

        data = session.to_file(scrub)
        try:
            save_cassette(session.options.path, data)
        except (OSError, BuildkiteError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            problem = ""
        if problem:
            summary["outcome"] = "not written"
            pytest.fail(
                f"bkjobs: could not write the cassette {session.where} of {item.nodeid}:"
                f" {problem} (the previous file, if any, is unchanged)",
                pytrace=False,
            )
        summary["outcome"] = "recorded"
        summary["interactions"] = len(data["interactions"])
        return
    summary["outcome"] = "replayed"
    unplayed = session.unplayed
    summary["unused"] = len(unplayed)
    if passed and unplayed and session.options.assert_all_played:
        lines = [
            f"bkjobs: {len(unplayed)} recorded interaction(s) were never played",
            f"  test:     {item.nodeid}",
            f"  cassette: {session.where}",
        ]
        pairs = zip(session.recorded, session.played, strict=True)
        for i, (interaction, done) in enumerate(pairs):
            if not done:
                req = interaction["request"]
                lines.append(f"  #{i} {req['method']} {req['uri']}")
        lines.append(
            f"If the test no longer makes these requests, re-record: {session.options.rerecord}"
        )
        lines.append("or opt out: @pytest.mark.bk_cassette(assert_all_played=False)")
        summary["outcome"] = "failed"
        pytest.fail("\n".join(lines), pytrace=False)


_CALL_EXC = pytest.StashKey[BaseException]()


def _call_exception(item: pytest.Item) -> BaseException | None:
    return item.stash.get(_CALL_EXC, None)


@pytest.fixture
def bk_cassette(request: pytest.FixtureRequest) -> Iterator[CassetteSession]:
    """The test's active cassette (``.path``, ``.mode``, ``.recorded``, ``.played``, ``.unplayed``).

    While it is active, requests to the Buildkite API base URL, from any httpx client, are
    replayed from the file or, when recording, sent on and kept.
    """
    from ._cassette_session import CassetteRouter

    session = _start(request)
    request.node.stash[SESSION_KEY] = session
    router = CassetteRouter(session)
    session.router = router
    router.start()
    try:
        yield session
    finally:
        router.stop(quiet=True)
        session.close()
    _finish(request, session)


@pytest.fixture
def bk_router(bk_cassette: CassetteSession) -> CassetteRouter:
    """The respx router in use: routes added to it win over the cassette."""
    router: CassetteRouter = bk_cassette.router
    return router


class _ClientKwargs(dict[str, Any]):
    """A client's keyword arguments; ``repr`` hides the token (``--showlocals`` shows locals)."""

    def __repr__(self) -> str:
        return repr({k: "***" if k == "token" else v for k, v in self.items()})


def _client_kwargs(session: CassetteSession, item: pytest.Item) -> _ClientKwargs:
    from ._config import ORG_VAR, TOKEN_VAR, masked

    environ: dict[str, str] = masked(_environ()) or {}
    org = environ.get(ORG_VAR, "").strip() or session.org
    if session.replaying:
        return _ClientKwargs(
            token=_REPLAY_TOKEN,
            org=session.org or org or "unknown-org",  # a cassette without requests
            base_url=session.base_url or session.options.api_url,
        )
    # No plain local holds the token: a failing fixture's frames are shown with their locals.
    kwargs = _ClientKwargs(token=environ.get(TOKEN_VAR, "").strip(), org=org)
    if not kwargs["token"] or not org:
        missing = TOKEN_VAR if not kwargs["token"] else ORG_VAR
        item.stash[SETTINGS_FAILED_KEY] = True  # counted with errors, not as "not written"
        pytest.fail(
            f"bkjobs: recording {session.options.test_id} needs {missing} in the environment or"
            f" .env (a REST API token and the organisation slug to record against)"
            + _loopback_hint(session.options.api_url),
            pytrace=False,
        )
    from ._cassette_session import is_loopback
    from ._config import DEFAULT_BASE_URL

    # Through a local fake, the client keeps the real API's URL (the cassette router sends its
    # requests on to the fake): the cassette then never holds the fake's random port.
    api_url = session.options.api_url
    kwargs["base_url"] = DEFAULT_BASE_URL if is_loopback(api_url) else api_url
    return kwargs


def _replay_transport(*, asynchronous: bool) -> Any:
    """An httpx transport sharing one SSL context: a default one costs tens of ms per client.

    Replay connects nowhere (respx answers at this transport), so the cached default context is
    never used for a handshake; recording keeps httpx's own per-client setup.
    """
    import httpx

    from ._cassette_session import shared_ssl_context

    if asynchronous:
        return httpx.AsyncHTTPTransport(verify=shared_ssl_context())
    return httpx.HTTPTransport(verify=shared_ssl_context())


def _no_sleep(delay: float) -> None:
    """Replayed rate limits need no real wait."""


async def _no_async_sleep(delay: float) -> None:
    """Replayed rate limits need no real wait."""


@pytest.fixture
def bk_client(request: pytest.FixtureRequest, bk_cassette: CassetteSession) -> Iterator[JobsClient]:
    """A ``JobsClient`` bound to the cassette (recorded base URL and org when replaying)."""
    from ._client import JobsClient

    kwargs = _client_kwargs(bk_cassette, request.node)
    if bk_cassette.replaying:
        kwargs["sleep"] = _no_sleep
        kwargs["transport"] = _replay_transport(asynchronous=False)
    with JobsClient(**kwargs) as client:
        yield client


@pytest.fixture
def bk_async_client(
    request: pytest.FixtureRequest, bk_cassette: CassetteSession
) -> Iterator[AsyncJobsClient]:
    """An ``AsyncJobsClient`` bound to the cassette."""
    from ._client import AsyncJobsClient

    kwargs = _client_kwargs(bk_cassette, request.node)
    if bk_cassette.replaying:
        kwargs["sleep"] = _no_async_sleep
        kwargs["transport"] = _replay_transport(asynchronous=True)
    client = AsyncJobsClient(**kwargs)
    yield client
    import asyncio  # here, not at the top: loading the plugin must stay cheap

    with contextlib.suppress(RuntimeError):  # a loop is still running: it closes with it
        asyncio.run(client.aclose())


@pytest.fixture
def bk_fake() -> FakeBuildkite:
    """A fresh ``FakeBuildkite`` for this test; ``bk_fake.client()`` gives a client wired to it."""
    from .fake import FakeBuildkite

    return FakeBuildkite()


@pytest.fixture
def bk_build_context(request: pytest.FixtureRequest) -> BuildContext:
    """A ``BuildContext``: of ``bk_fake``'s sample build when the test uses ``bk_fake``
    (its ``last_sample``, seeded here if the test has none yet), else of ``BUILDKITE_*``.
    """
    from .ci import BuildContext

    if "bk_fake" in request.fixturenames:
        fake: FakeBuildkite = request.getfixturevalue("bk_fake")
        sample = fake.last_sample or fake.sample_build()
        return BuildContext.from_env(sample.env)
    return BuildContext.from_env()


# -- reporting ----------------------------------------------------------------------------------


def _loopback_hint(api_url: str) -> str:
    """For a local server (``bkjobs fake-server``): the fake's own token and org will do."""
    from ._cassette_session import is_loopback

    if not is_loopback(api_url):
        return ""
    return (
        f"; {api_url} is a local server: for `bkjobs fake-server` set"
        " BUILDKITE_API_TOKEN=fake-token (or the token it printed) and"
        " BUILDKITE_ORGANIZATION_SLUG=acme (or the org it printed)"
    )


def _settings_note(session: CassetteSession, exc: BaseException | None) -> str | None:
    """What to set when the code under test could not build its client (no token or org)."""
    from ._config import ORG_VAR, TOKEN_VAR
    from ._errors import ConfigurationError

    found = next((e for e in _chain(exc) if isinstance(e, ConfigurationError)), None)
    if found is None or not (TOKEN_VAR in str(found) or ORG_VAR in str(found)):
        return None
    org = session.org or "<the organisation in the cassette>"
    if session.replaying:
        return (
            f"bkjobs: replaying {session.where}: no real API token is needed, any placeholder"
            f" works ({TOKEN_VAR}=placeholder); set {ORG_VAR}={org} (the cassette's recorded"
            " organisation)"
        )
    return (
        f"bkjobs: recording {session.where} against {session.options.api_url} needs {TOKEN_VAR}"
        f" (a REST API token) and {ORG_VAR}" + _loopback_hint(session.options.api_url)
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # Outcomes are kept for every test: a fixture may ask for a cassette in the middle of one.
    item.stash.setdefault(PASSED_KEY, {})[report.when] = report.passed
    if PATH_KEY not in item.stash:
        return report  # no cassette: keep no exception (its traceback holds every frame)
    if report.when == "call" and call.excinfo is not None:
        item.stash[_CALL_EXC] = call.excinfo.value
        session = item.stash.get(SESSION_KEY, None)
        note = _settings_note(session, call.excinfo.value) if session is not None else None
        if report.failed and note is not None:
            item.stash[SETTINGS_FAILED_KEY] = True
            report.sections.append(("bkjobs: what to set", note))
        if report.failed:
            from ._cassette_report import shorten_traceback

            shorten_traceback(item, call.excinfo, report, also_settings=note is not None)
    if report.when == "teardown":
        if _CALL_EXC in item.stash:
            del item.stash[_CALL_EXC]  # its traceback holds every frame: let it go
        if SESSION_KEY in item.stash:
            del item.stash[SESSION_KEY]
        summary = item.stash.get(SUMMARY_KEY, None)
        if summary is not None:
            report.bkjobs_cassette = summary  # type: ignore[attr-defined]
    return report
