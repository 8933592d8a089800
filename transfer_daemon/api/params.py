"""Query string of GET /api/transfers -> TransferQuery, or ParameterError naming the parameter.

Pure: no Flask, no database. Unknown and repeated parameters are refused too, so a typo
(`pagesize=`) never silently returns the default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from transfer_daemon.store import MAX_OFFSET, TransferQuery, decode_cursor  # page x pageSize limit

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 25
MAX_BLOCK = 2**63 - 1
PARAMETERS = (
    "chainId", "page", "pageSize", "cursor", "address", "from", "to", "contract",
    "fromBlock", "toBlock", "since", "until", "sort",
)
# Each pattern below is also the parameter's `pattern` in /api/openapi.json (JSON Schema and Python
# read them alike): what the document allows is what is accepted, but for what no pattern can say
# (a cursor this API issued, a day that exists, the rules between parameters).
ADDRESS = r"0x[0-9a-fA-F]{40}"
#: nextCursor: urlsafe base64 without padding of 34 bytes (store.cursor)
CURSOR = r"[A-Za-z0-9_-]{46}"
#: since/until: unix seconds, or a day of 1970..9999 with an optional time of day (seconds, fraction
#: and UTC offset optional; without an offset, UTC)
INSTANT = (r"[0-9]{1,12}|(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
           r"([Tt ]([01][0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9])(\.([0-9]{1,9}))?)?"
           r"([Zz]|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))?)?")
_ADDRESS = re.compile(ADDRESS)
_CURSOR = re.compile(CURSOR)
_INSTANT = re.compile(INSTANT)
_UINT = re.compile(r"[0-9]{1,20}")
_EPOCH_DAY = date(1970, 1, 1).toordinal()


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


def _instant(name: str, raw: str, *, upper: bool) -> int:
    """INSTANT -> unix seconds: the first whole second at or after it (`upper`: at or before it).
    Any value is kept; the store reads times beyond its own range as the ends of that range."""
    match = _INSTANT.fullmatch(raw)
    if match is None:
        raise ParameterError(name, "expected unix seconds or ISO 8601 (2024-05-01, 2024-05-01T12:00:00Z)")
    if match.group(1) is None:
        return int(raw)
    year, month, day, _, hour, minute, _, second, _, fraction, _, sign, off_hour, off_minute = match.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY
    except ValueError:
        raise ParameterError(name, f"{year}-{month}-{day} is not a day of the calendar") from None
    seconds = days * 86400 + int(hour or 0) * 3600 + int(minute or 0) * 60 + int(second or 0)
    if sign:
        seconds -= (1 if sign == "+" else -1) * (int(off_hour) * 3600 + int(off_minute) * 60)
    return seconds + (1 if fraction and int(fraction) and not upper else 0)


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
        if not _CURSOR.fullmatch(cursor):
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
    since = _instant("since", args["since"], upper=False) if "since" in args else None
    until = _instant("until", args["until"], upper=True) if "until" in args else None
    if since is not None and until is not None and since > until:
        raise ParameterError("until", "must not be before since")
    query = TransferQuery(
        chain_ids=tuple(chain_ids) if chain_id == 0 else (chain_id,),
        page_size=page_size, page=page or 1, cursor=cursor, sort=sort,
        address=addresses["address"], from_address=addresses["from"], to_address=addresses["to"],
        contract=addresses["contract"], from_block=from_block, to_block=to_block, since=since, until=until,
    )
    return ParsedRequest(chain_id=chain_id, page=page, query=query)
