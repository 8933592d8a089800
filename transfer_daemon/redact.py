"""Secrets out of URLs and text, before they reach a log line, an event, an error or an API body."""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")  # the user may be empty: redis://:pw@host
_KEY_VALUE = re.compile(r"(?i)((?:api_?key|key|token|password)=)[^&\s]+")


def redact_url(url: str) -> str:
    """Drop passwords and key-like query values from a URL (or any text holding URLs)."""
    return _KEY_VALUE.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", url))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`redact_url`, and every known secret value replaced by `***` (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact_url(text)
