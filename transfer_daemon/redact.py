"""Secrets out of URLs and text, before they reach a log line, an event, an error or an API body.

Besides passwords and `key=`-style query values, a provider key pasted into an http(s) or ws(s)
URL's path is one: Alchemy's `…/v2/<key>`, Infura's `…/v3/<key>`, and the long token that ends many
other providers' RPC URLs (QuickNode, Ankr, …). A path segment after `v2`/`v3` of 8 or more, or any
path segment of 20 or more, letters, digits, `_` or `-` with a digit among them, counts as a key.
(Other schemes keep their paths: a database name is not a secret.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")  # the user may be empty: redis://:pw@host
_KEY_VALUE = re.compile(r"(?i)((?:api_?key|key|token|password)=)[^&\s]+")
_URL = re.compile(r"(?i)\b(?:https?|wss?)://[^\s\"'<>]+")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_VERSIONED = ("v2", "v3")
MIN_VERSIONED_KEY = 8
MIN_PATH_KEY = 20


def _is_key(previous: str, segment: str) -> bool:
    if not _TOKEN.fullmatch(segment):
        return False
    if previous.lower() in _VERSIONED:
        return len(segment) >= MIN_VERSIONED_KEY
    return len(segment) >= MIN_PATH_KEY and any(c.isdigit() for c in segment)


def _path_keys(url: str) -> list[str]:
    """The segments of `url`'s path that look like a provider key."""
    rest = url.split("://", 1)[-1]
    path = re.split(r"[?#]", rest, maxsplit=1)[0].split("/")[1:]  # [0] is the host
    return [segment for previous, segment in zip(["", *path], path, strict=False) if _is_key(previous, segment)]


def _redact_path(match: re.Match) -> str:
    url = match.group(0)
    for key in _path_keys(url):
        url = url.replace(f"/{key}", "/***")
    return url


def redact_url(url: str) -> str:
    """Drop passwords, key-like query values and keys in paths from a URL (or any text holding URLs)."""
    text = _KEY_VALUE.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", url))
    return _URL.sub(_redact_path, text)


def url_secrets(url: str) -> set[str]:
    """The keys in a configured URL's path: secret values to scrub wherever they appear alone."""
    return set(_path_keys(url)) if _URL.fullmatch(url) else set()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`redact_url`, and every known secret value replaced by `***` (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact_url(text)
