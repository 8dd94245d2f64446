"""The toolkit's pluggy plugin manager: ``bkjobs`` entry points and ``--plugin MODULE``."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

from . import hookspecs
from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._models import Job
    from ._retry_model import SelectHook
    from .ci import BuildContext

ENTRY_POINT_GROUP = "bkjobs"


def plugin_manager(
    plugins: Iterable[object] = (), *, entry_points: bool = True
) -> pluggy.PluginManager:
    """A manager with the toolkit hookspecs, the ``bkjobs`` entry points and ``plugins``.

    A plugin is a module object or an import path (``"mypkg.bkjobs_plugin"``).
    """
    manager = pluggy.PluginManager("bkjobs")
    manager.add_hookspecs(hookspecs)
    if entry_points:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in plugins:
        if isinstance(plugin, str):
            name = plugin
            try:
                plugin = importlib.import_module(name)
            except Exception as exc:  # any import-time failure of user code
                raise ConfigurationError(
                    f"cannot import the plugin module {name!r} ({type(exc).__name__}: {exc});"
                    " give an importable module path (on PYTHONPATH), such as mypkg.bkjobs_hooks"
                ) from exc
        if not manager.is_registered(plugin):
            manager.register(plugin)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigurationError(
            f"a bkjobs plugin implements an unknown hook: {exc}; toolkit hooks are"
            " bkjobs_select_job(job, ctx)"
        ) from exc
    return manager


def select_hook(manager: pluggy.PluginManager) -> SelectHook | None:
    """The ``bkjobs_select_job`` hook as a plain callable, or None when no plugin implements it."""
    caller = manager.hook.bkjobs_select_job
    if not caller.get_hookimpls():
        return None

    def hook(job: Job, ctx: BuildContext) -> bool | None:
        try:
            result = caller(job=job, ctx=ctx)
        except Exception as exc:  # a bug in a plugin, not in pytest-bkjobs
            plugins = ", ".join(
                getattr(impl.plugin, "__name__", impl.plugin_name)
                for impl in caller.get_hookimpls()
            )
            raise ConfigurationError(
                f"a bkjobs_select_job hook raised {type(exc).__name__}: {exc} (plugins: {plugins});"
                " fix the plugin or run without it"
            ) from exc
        return None if result is None else bool(result)

    return hook


def load_select_hook(
    plugins: Iterable[object] = (), *, entry_points: bool = True
) -> SelectHook | None:
    """The combined ``bkjobs_select_job`` of the installed and given plugins, if any."""
    return select_hook(plugin_manager(plugins, entry_points=entry_points))
