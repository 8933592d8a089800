"""Opaque page cursors: a position in the (time, block, log index, stream) order.

Format: urlsafe base64 (no padding) of a fixed struct plus an 8-byte keyed BLAKE2b check, so a
cursor that was truncated, edited or made up is rejected with ValueError. The check guards
integrity, not secrecy: a forged cursor can only name a position, which since/until can too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass

_VERSION = 2
_LAYOUT = struct.Struct(">BBqqii")  # version, sort, time_stamp, block, log_index, stream
_CHECK_KEY = b"transfer-daemon/cursor/v1"
_CHECK_SIZE = 8
_SORTS = ("desc", "asc")
MAX_CURSOR_LENGTH = 128


@dataclass(frozen=True, slots=True)
class CursorPosition:
    """The last row of a page; the next page starts strictly after it in `sort` order."""

    sort: str
    time_stamp: int
    block_number: int
    log_index: int
    stream_id: int


def _check(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECK_SIZE, key=_CHECK_KEY).digest()


def encode_cursor(position: CursorPosition) -> str:
    payload = _LAYOUT.pack(
        _VERSION, _SORTS.index(position.sort), position.time_stamp, position.block_number,
        position.log_index, position.stream_id,
    )
    return base64.urlsafe_b64encode(payload + _check(payload)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> CursorPosition:
    """The position a cursor names; ValueError for anything that is not a cursor we issued."""
    if not isinstance(text, str) or not text or len(text) > MAX_CURSOR_LENGTH:
        raise ValueError("malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("malformed cursor") from None
    if len(raw) != _LAYOUT.size + _CHECK_SIZE:
        raise ValueError("malformed cursor")
    payload, check = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    if not hmac.compare_digest(check, _check(payload)):
        raise ValueError("cursor failed its integrity check")
    version, sort, time_stamp, block, log_index, stream_id = _LAYOUT.unpack(payload)
    if version != _VERSION or sort >= len(_SORTS):
        raise ValueError("unsupported cursor version")
    return CursorPosition(_SORTS[sort], time_stamp, block, log_index, stream_id)
