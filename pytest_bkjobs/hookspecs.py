"""Hook specifications of pytest-bkjobs (pluggy).

Two sections: ``pytest_bkjobs_*`` hooks for the pytest plugin (``HookspecMarker("pytest")``),
and ``bkjobs_*`` hooks for the toolkit outside pytest (``HookspecMarker("bkjobs")``, loaded from
the ``bkjobs`` entry-point group and ``bkjobs --plugin MODULE``). Each plugin manager only picks
up the specs of its own project name, so both sections can live in this one module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
import pytest

if TYPE_CHECKING:
    from ._models import Job
    from .ci import BuildContext

# -- pytest hooks (pytest_bkjobs_*), registered by the plugin in pytest_addhooks ---------------

#: Same as ``pytest.hookspec``, which older pytest versions do not export.
spec_for_pytest = pluggy.HookspecMarker("pytest")


@spec_for_pytest
def pytest_bkjobs_scrub_interaction(interaction: dict[str, Any], config: pytest.Config) -> None:
    """Clean an interaction before it is written to a cassette, by mutating it in place.

    ``interaction`` is already redacted (credentials headers dropped, the token and secret
    environment values replaced) and has the cassette's shape: ``{"request": {"method", "uri",
    "headers", "body"}, "response": {"status", "reason", "http_version", "headers", "body"}}``.
    To leave it out of the file, raise ``pytest_bkjobs.DropInteraction``. The return value is
    ignored, so forgetting a ``return`` never drops data. Redaction runs again afterwards and
    ``Content-Length`` is recomputed.
    """


@spec_for_pytest(firstresult=True)
def pytest_bkjobs_cassette_path(item: pytest.Item, config: pytest.Config) -> Path | None:
    """Return the cassette file for ``item``, or None for the default location.

    The default is ``<test file dir>/cassettes/<module>/<test name>.json`` (or under
    ``--bk-cassette-dir``). The first non-None result wins.
    """


# -- toolkit hooks (bkjobs_*) -------------------------------------------------------------------

bkjobs_hookspec = pluggy.HookspecMarker("bkjobs")
#: Decorate toolkit hook implementations with this (``@bkjobs_hookimpl``).
bkjobs_hookimpl = pluggy.HookimplMarker("bkjobs")


@bkjobs_hookspec(firstresult=True)
def bkjobs_select_job(job: Job, ctx: BuildContext) -> bool | None:
    """Decide whether ``retry-failed`` retries ``job``: True or False overrides the default
    choice, None keeps it.

    Only jobs that pass the safety rules reach the hook (never the current job, a non-script
    job, a job already retried, or a job whose own state is not a chosen one). The first
    non-None answer wins. Example, retry only jobs whose agent was lost::

        @bkjobs_hookimpl
        def bkjobs_select_job(job, ctx):
            return None if job.exit_status == -1 else False
    """
