"""Cassette file names and the ``bk_cassette`` marker's arguments (standard library only)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._cassette import MODES

__all__ = ["MarkerOptions", "cassette_path", "marker_options", "safe_name"]

_MAX_ID = 60
#: Names Windows reserves for devices, with any extension (``CON``, ``nul.json``).
_RESERVED = frozenset(
    {
        "CON",
        "PRN",
        "AUX",
        "NUL",
        *(f"COM{i}" for i in range(1, 10)),
        *(f"LPT{i}" for i in range(1, 10)),
    }
)


def safe_name(text: str) -> str:
    """File-name-safe text; a changed or long text gets a stable hash so names stay unique."""
    cleaned = re.sub(r"[^A-Za-z0-9._=+,@-]", "_", text).strip(".") or "_"
    if cleaned.split(".", 1)[0].upper() in _RESERVED:
        cleaned = f"_{cleaned}"  # a changed name: the hash below keeps it unique
    if cleaned != text or len(cleaned) > _MAX_ID:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        cleaned = f"{cleaned[:40]}-{digest}"
    return cleaned


def _test_name(item: pytest.Item) -> str:
    """``Outer.Inner.test[param-id]`` (every enclosing class), made safe."""
    callspec = getattr(item, "callspec", None)
    base = str(getattr(item, "originalname", None) or item.name.split("[", 1)[0])
    classes = [node.name for node in item.listchain() if isinstance(node, pytest.Class)]
    if classes:
        base = ".".join([*classes, base])
    name = safe_name(base)
    if callspec is not None:
        name += f"[{safe_name(callspec.id)}]"
    return name


def _marker_name(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("bk_cassette")
    if marker is None:
        return None
    name = marker.kwargs.get("name", marker.args[0] if marker.args else None)
    return name if isinstance(name, str) and name else None


def cassette_path(item: pytest.Item, rootpath: Path, cassette_dir: Path | None) -> Path:
    """``<test dir>/cassettes/<module>/<test name>.json``, or under ``cassette_dir``."""
    test_file = Path(item.path)
    if cassette_dir is not None:
        try:
            relative = test_file.parent.relative_to(rootpath)
        except ValueError:
            relative = Path()
        folder = cassette_dir / relative / test_file.stem
    else:
        folder = test_file.parent / "cassettes" / test_file.stem
    name = _marker_name(item)
    return folder / f"{safe_name(name) if name else _test_name(item)}.json"


@dataclass(frozen=True)
class MarkerOptions:
    """The validated arguments of the closest ``bk_cassette`` marker."""

    name: str | None = None
    record_mode: str | None = None
    allow_playback_repeats: bool = False
    assert_all_played: bool = True
    match_on: tuple[str, ...] | None = None


def bk_cassette(
    name: str | None = None,
    *,
    record_mode: str | None = None,
    allow_playback_repeats: bool = False,
    assert_all_played: bool = True,
    match_on: Any = None,
) -> MarkerOptions:
    """The marker's signature: Python itself rejects unknown or misplaced arguments."""
    from ._cassette_match import check_match_on

    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if record_mode is not None and record_mode not in MODES:
        raise ValueError(f"record_mode must be one of {MODES}, got {record_mode!r}")
    for label, value in (
        ("allow_playback_repeats", allow_playback_repeats),
        ("assert_all_played", assert_all_played),
    ):
        if not isinstance(value, bool):
            raise ValueError(f"{label} must be True or False, got {value!r}")
    return MarkerOptions(
        name=name,
        record_mode=record_mode,
        allow_playback_repeats=allow_playback_repeats,
        assert_all_played=assert_all_played,
        match_on=check_match_on(match_on) if match_on is not None else None,
    )


def marker_options(item: pytest.Item) -> MarkerOptions:
    """The closest marker's options; ``TypeError``/``ValueError`` say what is wrong."""
    marker = item.get_closest_marker("bk_cassette")
    if marker is None:
        return MarkerOptions()
    return bk_cassette(*marker.args, **marker.kwargs)
