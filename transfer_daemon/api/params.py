"""Query string of GET /api/transfers -> TransferQuery, or ParameterError naming the parameter.

Pure: no Flask, no database. Unknown and repeated parameters are refused too, so a typo
(`pagesize=`) never silently returns the default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from transfer_daemon.store import MAX_OFFSET, TransferQuery, decode_cursor  # page x pageSize limit

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 25
MAX_BLOCK = 2**63 - 1
MAX_UNIX = 253402300799  # 9999-12-31T23:59:59Z
MAX_CURSOR_LENGTH = 1024
PARAMETERS = (
    "chainId", "page", "pageSize", "cursor", "address", "from", "to", "contract",
    "fromBlock", "toBlock", "since", "until", "sort",
)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_UINT = re.compile(r"[0-9]{1,20}")


class ParameterError(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    chain_id: int  # 0 = aggregate
    page: int | None  # None when a cursor is given
    query: TransferQuery

    @property
    def is_first_page(self) -> bool:
        """Unfiltered page 1 in either direction: the shape the warm cache and upstream mode serve."""
        q = self.query
        filters = (q.address, q.from_address, q.to_address, q.contract, q.from_block, q.to_block, q.since, q.until)
        return self.page == 1 and q.cursor is None and all(f is None for f in filters)


def _uint(name: str, raw: str, minimum: int, maximum: int) -> int:
    if not _UINT.fullmatch(raw):
        raise ParameterError(name, f"expected an integer {minimum}..{maximum}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ParameterError(name, f"out of range {minimum}..{maximum}")
    return value


def _address(name: str, raw: str) -> bytes:
    if not _ADDRESS.fullmatch(raw):
        raise ParameterError(name, "expected 0x followed by 40 hex digits")
    return bytes.fromhex(raw[2:])


def _instant(name: str, raw: str) -> int:
    """ISO 8601 (offset or Z; naive means UTC) or unix seconds -> unix seconds."""
    if _UINT.fullmatch(raw):
        return _uint(name, raw, 0, MAX_UNIX)
    if not raw.isascii() or len(raw) > 40 or not raw[:4].isdigit():
        raise ParameterError(name, "expected ISO 8601 (2024-05-01T12:00:00Z) or unix seconds")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ParameterError(name, "expected ISO 8601 (2024-05-01T12:00:00Z) or unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        seconds = int(moment.timestamp())
    except (OverflowError, ValueError):
        raise ParameterError(name, "out of range") from None
    if not 0 <= seconds <= MAX_UNIX:
        raise ParameterError(name, "out of range 1970..9999")
    return seconds


def _single(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in items:
        if name not in PARAMETERS:
            raise ParameterError(name[:64], "unknown parameter")
        if name in values:
            raise ParameterError(name, "given more than once")
        if value == "":
            raise ParameterError(name, "empty value")
        values[name] = value
    return values


def _cursor_sort(cursor: str) -> str:
    """The sort order a cursor continues; ParameterError unless this API issued it."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError
        return decode_cursor(cursor).sort
    except ValueError:
        raise ParameterError("cursor", "not a cursor this API returned") from None


def _paging(args: Mapping[str, str], sort: str) -> tuple[int | None, int, str | None]:
    page_size = _uint("pageSize", args["pageSize"], 1, MAX_PAGE_SIZE) if "pageSize" in args else DEFAULT_PAGE_SIZE
    cursor = args.get("cursor")
    if cursor is not None:
        if "page" in args:
            raise ParameterError("cursor", "give either page or cursor, not both")
        cursor_sort = _cursor_sort(cursor)
        if cursor_sort != sort:
            raise ParameterError("cursor", f"this cursor continues a sort={cursor_sort} listing")
        return None, page_size, cursor
    page = _uint("page", args["page"], 1, MAX_OFFSET) if "page" in args else 1
    if page * page_size > MAX_OFFSET:
        raise ParameterError("page", f"page x pageSize must be <= {MAX_OFFSET}; use nextCursor to go deeper")
    return page, page_size, None


def parse_transfer_args(items: Iterable[tuple[str, str]], chain_ids: Iterable[int]) -> ParsedRequest:
    """`items`: every (name, value) pair of the query string, repeats included.

    `chain_ids`: the configured chains; the aggregate (chainId 0) queries all of them.
    An unknown but well-formed chainId passes: the caller answers 404 for it.
    """
    args = _single(items)
    chain_id = _uint("chainId", args["chainId"], 0, MAX_BLOCK) if "chainId" in args else 0
    sort = args.get("sort", "desc")
    if sort not in ("desc", "asc"):
        raise ParameterError("sort", "expected desc or asc")
    page, page_size, cursor = _paging(args, sort)
    addresses = {k: _address(k, args[k]) if k in args else None for k in ("address", "from", "to", "contract")}
    from_block = _uint("fromBlock", args["fromBlock"], 0, MAX_BLOCK) if "fromBlock" in args else None
    to_block = _uint("toBlock", args["toBlock"], 0, MAX_BLOCK) if "toBlock" in args else None
    if from_block is not None and to_block is not None and from_block > to_block:
        raise ParameterError("toBlock", "must be >= fromBlock")
    since = _instant("since", args["since"]) if "since" in args else None
    until = _instant("until", args["until"]) if "until" in args else None
    if since is not None and until is not None and since > until:
        raise ParameterError("until", "must not be before since")
    query = TransferQuery(
        chain_ids=tuple(chain_ids) if chain_id == 0 else (chain_id,),
        page_size=page_size, page=page or 1, cursor=cursor, sort=sort,
        address=addresses["address"], from_address=addresses["from"], to_address=addresses["to"],
        contract=addresses["contract"], from_block=from_block, to_block=to_block, since=since, until=until,
    )
    return ParsedRequest(chain_id=chain_id, page=page, query=query)
