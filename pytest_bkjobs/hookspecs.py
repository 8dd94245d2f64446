"""Hook specifications of pytest-bkjobs (pluggy).

Two sections: ``pytest_bkjobs_*`` hooks for the pytest plugin (``HookspecMarker("pytest")``),
and ``bkjobs_*`` hooks for the toolkit outside pytest (``HookspecMarker("bkjobs")``, loaded from
the ``bkjobs`` entry-point group and ``bkjobs --plugin MODULE``). Each plugin manager only picks
up the specs of its own project name, so both sections can live in this one module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._models import Job
    from .ci import BuildContext

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
