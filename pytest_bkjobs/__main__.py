"""``python -m pytest_bkjobs``: the ``bkjobs`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
