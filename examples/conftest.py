"""Configuration of the examples: a hook that scrubs a field the default redaction keeps.

The ini settings (``bk_redact_env``, ``bk_record_mode``) are in ``pytest.ini`` beside this file.
"""

from __future__ import annotations

from typing import Any

import pytest

#: What a user's e-mail address becomes in the committed cassettes.
SCRUBBED_EMAIL = "someone@example.com"


def _scrub_emails(value: Any) -> None:
    """Replace every ``"email"`` value in a JSON document, in place."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "email" and isinstance(item, str):
                value[key] = SCRUBBED_EMAIL
            else:
                _scrub_emails(item)
    elif isinstance(value, list):
        for item in value:
            _scrub_emails(item)


def pytest_bkjobs_scrub_interaction(interaction: dict[str, Any], config: pytest.Config) -> None:
    """Keep people's e-mail addresses (creator, retried_by, unblocked_by) out of cassettes."""
    body = interaction["response"]["body"]
    if body and "json" in body:  # bodies are tagged: {"json": ...}, {"text": ...}, {"base64": ...}
        _scrub_emails(body["json"])
    # Mutate in place; the return value is ignored. Raise pytest_bkjobs.DropInteraction to leave
    # an interaction out of the file. Redaction runs again after this hook.
