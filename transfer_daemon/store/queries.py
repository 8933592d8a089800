"""Keyset queries over `transfers` for every filter and order of the HTTP API.

Order: time_stamp, block_number, log_index, then stream_id (chain + contract) as the
tie-breaker, all in the sort direction (the unique key makes that order total). Two plan
shapes, both index scans that stop after the page; both read each (chain, contract) stream in
scope on its own, cut at the page size (LATERAL), then merge the few candidate rows:
- by stream: the unique key read in order;
- by address: the from/to address index (64-bit address digest, stream, time key) read in time
  order, rechecked against the full address, the few rows sharing one second sorted. Nothing
  the index returns belongs to another stream, and another address meets the key only by a
  64-bit digest collision nobody can aim at: a page costs the same however busy a wallet is
  on another chain, or however much another wallet's address looks like the one asked for.
Block ranges become time bounds through `blocks` (block time never decreases with the number).

Planning costs more than running these statements (partitions x indexes), so each shape is built to
be planned once per connection (a prepared statement's generic plan, see build_sql) wherever a plan
made without the values is as good as one made with them, and to be planned per call where it is not.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace

import psycopg

from transfer_daemon.model import Transfer, iso_utc
from transfer_daemon.store.cursor import CursorPosition, decode_cursor, encode_cursor

#: deepest row reachable with page/pageSize; deeper pages must use the cursor.
MAX_OFFSET = 10_000
#: the last second td_ts32() maps (2106-02-07T06:28:15Z). No stored row is later (its index entry
#: could not be made) or earlier than 0, so the address index's time key is bounded at the nearer end
#: of that range by a time beyond it, while the time itself is compared with the value as given.
TS32_MAX = 2**32 - 1
_COLUMNS = ("t.time_stamp, t.block_number, t.log_index, t.stream_id, t.tx_hash, t.from_address,"
            " t.to_address, t.value, t.gas_used, t.gas_price, t.method_id")
#: the page as stored (query_transfers) or as the API item's text (query_items: hex and decimal
#: strings made in Postgres, where they cost less than parsing bytea/numeric and re-encoding them)
_RAW = ("p.chain_id, p.contract, p.time_stamp, p.block_number, p.log_index, p.stream_id, p.tx_hash, p.from_address,"
        " p.to_address, p.value, p.gas_used, p.gas_price, p.method_id, b.block_hash")
_TEXT = ("p.chain_id, '0x' || encode(p.contract, 'hex'), p.time_stamp, p.block_number, p.log_index, p.stream_id,"
         " '0x' || encode(p.tx_hash, 'hex'), '0x' || encode(p.from_address, 'hex'),"
         " '0x' || encode(p.to_address, 'hex'), p.value::text, p.gas_used, p.gas_price,"
         " '0x' || lpad(to_hex(p.method_id), 8, '0'), '0x' || encode(b.block_hash, 'hex')")
#: gas_used/gas_price are stored as minimal big-endian bytes (migration 0004): no SQL cast makes
#: their decimal text, Python does it cheaply
_uint = functools.partial(int.from_bytes, byteorder="big")
#: iso_utc in parts: the date once per day, the time of day from tables (a page by address spans
#: many seconds, where a cache of whole timestamps mostly missed)
_iso_date = functools.lru_cache(maxsize=1024)(lambda days: iso_utc(days * 86400)[:11])
_HH_MM = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_SS = tuple(f"{s:02d}Z" for s in range(60))


def _iso_utc(unix_seconds: int) -> str:
    days, seconds = divmod(unix_seconds, 86400)
    minutes, seconds = divmod(seconds, 60)
    return _iso_date(days) + _HH_MM[minutes] + _SS[seconds]


@dataclass(frozen=True)
class TransferQuery:
    chain_ids: tuple[int, ...] = ()  # () = every chain
    page_size: int = 25
    page: int = 1
    cursor: str | None = None
    sort: str = "desc"
    address: bytes | None = None  # from or to
    from_address: bytes | None = None
    to_address: bytes | None = None
    contract: bytes | None = None
    from_block: int | None = None
    to_block: int | None = None
    since: int | None = None  # unix seconds, inclusive (any value)
    until: int | None = None  # unix seconds, inclusive (any value)


@dataclass(frozen=True)
class TransferPage:
    items: list[Transfer] = field(default_factory=list)
    next_cursor: str | None = None


@dataclass(frozen=True)
class _Plan:
    """The pieces of SQL for one direction; every fragment is fixed text, values are parameters."""

    order: str  # ASC | DESC
    lt: str  # strictly after the cursor
    le: str  # at or after the cursor's (time, block, log index)

    def key(self, alias: str, with_stream: bool = True) -> str:
        """The API order as the unique key `transfers_key` spells it (block and log index as one)."""
        stream = f", {alias}.stream_id {self.order}" if with_stream else ""
        return (f"{alias}.time_stamp {self.order}, td_block_log({alias}.block_number, {alias}.log_index)"
                f" {self.order}{stream}")


_PLANS = {"desc": _Plan("DESC", "<", "<="), "asc": _Plan("ASC", ">", ">=")}

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_PAGE_BOUNDS = ("inner", "limit", "offset")


def _literal(value: object) -> str:
    """SQL text of a query value: ints, bytes and lists of ints only, so nothing is quoted or escaped."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, bytes):
        return f"decode('{value.hex()}', 'hex')"
    if isinstance(value, list):
        return "'{" + ",".join(str(int(v)) for v in value) + "}'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def _inline(sql: str, params: dict, names: tuple[str, ...] | None = None) -> str:
    """`sql` with the placeholders of `names` (default: all) replaced by their values as literals."""
    def literal(match: re.Match) -> str:
        name = match.group(1)
        return _literal(params[name]) if names is None or name in names else match.group(0)

    return _PLACEHOLDER.sub(literal, sql)


def _validate(query: TransferQuery) -> tuple[CursorPosition | None, int]:
    if query.sort not in _PLANS:
        raise ValueError("sort must be desc or asc")
    if query.page_size < 1 or query.page < 1:
        raise ValueError("page and page_size must be >= 1")
    position = decode_cursor(query.cursor) if query.cursor is not None else None
    if position is not None and position.sort != query.sort:
        raise ValueError("cursor was issued for the other sort order")
    offset = 0 if position is not None else (query.page - 1) * query.page_size
    if offset + query.page_size > MAX_OFFSET:
        raise ValueError(f"page too deep: page x pageSize must be <= {MAX_OFFSET}; use the cursor")
    return position, offset


def _time_conditions(query: TransferQuery, plan: _Plan, lossy_key: bool) -> list[str]:
    """since/until/cursor; with `lossy_key` also the same bounds on td_ts32() for the address index."""
    conds = []
    bounds = []
    if query.since is not None:
        conds.append("t.time_stamp >= %(since)s")
        bounds.append(">= td_ts32(%(since_key)s)")
    if query.until is not None:
        conds.append("t.time_stamp <= %(until)s")
        bounds.append("<= td_ts32(%(until_key)s)")
    if query.cursor is not None:
        conds.append(f"(t.time_stamp, td_block_log(t.block_number, t.log_index)) {plan.le}"
                     " (%(c_ts)s, td_block_log(%(c_block)s, %(c_log)s))")
        conds.append(f"(t.time_stamp, td_block_log(t.block_number, t.log_index), t.stream_id) {plan.lt}"
                     " (%(c_ts)s, td_block_log(%(c_block)s, %(c_log)s), %(c_stream)s)")
        bounds.append(f"{plan.le} td_ts32(%(c_ts)s)")
    if lossy_key:
        conds.extend(f"td_ts32(t.time_stamp) {bound}" for bound in bounds)
    return conds


def _block_bound(first: bool) -> str:
    """Time of the first stored block >= from_block (or last <= to_block) of the stream's chain."""
    if first:
        return ("(SELECT b.time_stamp FROM blocks b WHERE b.chain_id = m.chain_id AND b.block_number >= %(fb)s"
                " ORDER BY b.block_number LIMIT 1)")
    return ("(SELECT b.time_stamp FROM blocks b WHERE b.chain_id = m.chain_id AND b.block_number <= %(tb)s"
            " ORDER BY b.block_number DESC LIMIT 1)")


def _scope(query: TransferQuery) -> list[str]:
    """The streams a query covers, as conditions on `streams m` (read in the same statement: a stream
    created after this process started is in scope at once)."""
    conds = []
    if query.chain_ids:
        # in the text, not a parameter: a handful of configured sets, and no array to send per call
        conds.append(f"m.chain_id = ANY({_literal(list(query.chain_ids))}::int8[])")
    if query.contract is not None:
        conds.append("m.contract = %(contract)s")
    return conds


def _where(conds: list[str]) -> str:
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def _block_conditions(query: TransferQuery, lossy_key: bool) -> list[str]:
    """fromBlock/toBlock of the stream `m`; with `lossy_key` also as bounds on td_ts32() (the time key
    of the address index)."""
    conds = []
    for present, column_cond, first in ((query.from_block is not None, "t.block_number >= %(fb)s", True),
                                        (query.to_block is not None, "t.block_number <= %(tb)s", False)):
        if not present:
            continue
        op = ">=" if first else "<="
        conds.extend([column_cond, f"t.time_stamp {op} {_block_bound(first)}"])
        if lossy_key:
            conds.append(f"td_ts32(t.time_stamp) {op} td_ts32({_block_bound(first)})")
    return conds


def _per_stream(query: TransferQuery, plan: _Plan, inner: list[str]) -> str:
    """The page merged from each stream's candidate rows (`inner`: a SELECT per stream `m`, each in
    order and cut at the page)."""
    return (
        "SELECT m.chain_id, m.contract, x.* FROM streams m"
        f" CROSS JOIN LATERAL ({' UNION ALL '.join(inner)}) x{_where(_scope(query))}"
        f" ORDER BY {plan.key('x')} LIMIT %(limit)s OFFSET %(offset)s"
    )


def _stream_sql(query: TransferQuery, plan: _Plan) -> str:
    conds = ["t.stream_id = m.stream_id", *_time_conditions(query, plan, False), *_block_conditions(query, False)]
    return _per_stream(query, plan, [
        f"SELECT {_COLUMNS} FROM transfers t WHERE {' AND '.join(conds)}"
        f" ORDER BY {plan.key('t', with_stream=False)} LIMIT %(inner)s"
    ])


def _address_branch(query: TransferQuery, plan: _Plan, columns: dict[str, str], extra: list[str]) -> str:
    """One stream's rows whose `columns` (from_address, to_address) hold the parameters named, read
    from an address index in time order. With both columns the planner picks the index of the rarer
    address (such statements are planned with their values)."""
    conds = ["t.stream_id = m.stream_id"]
    for column, value in columns.items():
        conds += [f"td_addr64(t.{column}) = td_addr64(%({value})s)", f"t.{column} = %({value})s"]
    conds += [*extra, *_time_conditions(query, plan, True), *_block_conditions(query, True)]
    return (f"(SELECT {_COLUMNS} FROM transfers t WHERE {' AND '.join(conds)}"
            f" ORDER BY td_ts32(t.time_stamp) {plan.order}, {plan.key('t', with_stream=False)} LIMIT %(inner)s)")


def _address_sql(query: TransferQuery, plan: _Plan) -> str:
    if query.from_address is None and query.to_address is None:
        # rows from the address, and rows to it from another: each row once
        return _per_stream(query, plan, [
            _address_branch(query, plan, {"from_address": "address"}, []),
            _address_branch(query, plan, {"to_address": "address"}, ["t.from_address <> %(address)s"]),
        ])
    columns = {c: c for c in ("from_address", "to_address") if getattr(query, c) is not None}
    # `address` beside both from and to, and equal to neither (see _fold_address): no row matches
    extra = ["(t.from_address = %(address)s OR t.to_address = %(address)s)"] if query.address is not None else []
    return _per_stream(query, plan, [_address_branch(query, plan, columns, extra)])


def _fold_address(query: TransferQuery) -> TransferQuery:
    """`address` (from or to) beside from and/or to, as the from/to filter it amounts to: equal to
    one of them it adds nothing; beside one of them only, it is the other side."""
    address, sender, recipient = query.address, query.from_address, query.to_address
    if address is None or (sender is None and recipient is None):
        return query
    if address in (sender, recipient):
        return replace(query, address=None)
    if sender is None:
        return replace(query, address=None, from_address=address)
    if recipient is None:
        return replace(query, address=None, to_address=address)
    return query


def _transfer(row: tuple) -> Transfer:
    chain, contract, ts, block, log_index, _, tx, frm, to, value, gas_used, gas_price, method, block_hash = row
    return Transfer(
        chain_id=chain, block_number=block, time_stamp=ts, tx_hash=bytes(tx), log_index=log_index,
        from_address=bytes(frm), to_address=bytes(to), value=int(value), contract_address=bytes(contract),
        block_hash=None if block_hash is None else bytes(block_hash),
        gas_used=None if gas_used is None else _uint(gas_used),
        gas_price=None if gas_price is None else _uint(gas_price),
        method_id=None if method is None else f"0x{method & 0xFFFFFFFF:08x}",  # stored as a signed int4
    )


def _item(row: tuple) -> dict:
    """Transfer.to_api() of a row selected as text (_TEXT), without building the Transfer."""
    chain, contract, ts, block, log_index, _, tx, frm, to, value, gas_used, gas_price, method, block_hash = row
    return {
        "chainId": chain, "blockNumber": block, "timeStamp": _iso_utc(ts), "hash": tx, "logIndex": log_index,
        "from": frm, "to": to, "value": value, "contractAddress": contract, "blockHash": block_hash,
        "gasUsed": None if gas_used is None else str(_uint(gas_used)),
        "gasPrice": None if gas_price is None else str(_uint(gas_price)), "methodId": method,
    }


def _params(query: TransferQuery, position: CursorPosition | None, offset: int) -> dict:
    params: dict = {
        "since": query.since, "until": query.until, "fb": query.from_block, "tb": query.to_block,
        "since_key": None if query.since is None else min(max(query.since, 0), TS32_MAX),
        "until_key": None if query.until is None else min(max(query.until, 0), TS32_MAX),
        "address": query.address, "from_address": query.from_address, "to_address": query.to_address,
        "contract": query.contract,
        "inner": offset + query.page_size + 1, "limit": query.page_size + 1, "offset": offset,
    }
    if position is not None:
        params.update(c_ts=position.time_stamp, c_block=position.block_number, c_log=position.log_index,
                      c_stream=position.stream_id)
    return params


def _planned_once(query: TransferQuery, by_stream: bool) -> bool:
    """Whether a plan made without the query's values (a prepared statement's generic plan) is as good
    as one made with them. Without values Postgres guesses a range's rows: a third for one bound, 0.5%
    for a window closed on both sides (time, blocks or cursor), and the product for several address
    filters; guessed below a page, it sorts every matching row instead of reading the index in order
    (for a hot address, thousands of rows; for a window by stream, 30,000 rows in 28 ms)."""
    cursor_lower = query.cursor is not None and query.sort == "asc"
    lower = query.since is not None or query.from_block is not None or cursor_lower
    upper = query.until is not None or query.to_block is not None or (query.cursor is not None and not cursor_lower)
    if lower and upper:
        return False
    return by_stream or sum(a is not None for a in (query.address, query.from_address, query.to_address)) == 1


def build_sql(query: TransferQuery, as_text: bool = False) -> tuple[str, dict | None]:
    """(SQL, parameters) for a query; `as_text` selects the API item's strings (see _TEXT).
    Exposed for EXPLAIN tests and benchmarks.

    Parameters None: every value is in the text, so the statement is planned for its values on each
    call; that is the case unless _planned_once. Otherwise the values stay parameters, but for the page
    bounds by stream: planned without them Postgres assumes a LIMIT keeps 10% of the rows, and the
    page's blocks join becomes a scan of every block (250 ms). By address the page bounds stay
    parameters too; there the time-ordered read of the address index is kept by the API's query
    session, which disables sorts wherever an index gives the order (api.resources.query_session).
    """
    position, offset = _validate(query)
    query = _fold_address(query)
    plan = _PLANS[query.sort]
    params = _params(query, position, offset)
    by_stream = query.address is None and query.from_address is None and query.to_address is None
    sql = _stream_sql(query, plan) if by_stream else _address_sql(query, plan)
    # The page's block hashes in the same round trip.
    sql = (f"SELECT {_TEXT if as_text else _RAW} FROM ({sql}) p LEFT JOIN blocks b"
           f" ON b.chain_id = p.chain_id AND b.block_number = p.block_number ORDER BY {plan.key('p')}")
    if not _planned_once(query, by_stream):
        return _inline(sql, params), None
    return (_inline(sql, params, _PAGE_BOUNDS) if by_stream else sql), params


def _page(conn: psycopg.Connection, query: TransferQuery, as_text: bool) -> tuple[list[tuple], str | None]:
    """The page's rows and the cursor of the next page (None on the last page)."""
    sql, params = build_sql(query, as_text)
    # a statement with its values in the text is not worth keeping prepared (prepare=False: psycopg
    # neither prepares it nor counts it against the statements that are)
    rows = conn.execute(sql, params, prepare=False if params is None else None).fetchall()
    if len(rows) <= query.page_size:
        return rows, None
    page = rows[: query.page_size]
    last = page[-1]
    return page, encode_cursor(CursorPosition(query.sort, last[2], last[3], last[4], last[5]))


def query_transfers(conn: psycopg.Connection, query: TransferQuery) -> TransferPage:
    """One page in API order, plus the cursor of the next page (None on the last page).

    Raises ValueError for a bad cursor, sort or page beyond MAX_OFFSET.
    """
    rows, next_cursor = _page(conn, query, as_text=False)
    return TransferPage([_transfer(row) for row in rows], next_cursor)


def query_items(conn: psycopg.Connection, query: TransferQuery) -> tuple[list[dict], str | None]:
    """query_transfers' page as API items (exactly `[t.to_api() for t in page.items]`) and its
    next cursor, built straight from the rows: the per-request path of the HTTP API."""
    rows, next_cursor = _page(conn, query, as_text=True)
    return [_item(row) for row in rows], next_cursor
