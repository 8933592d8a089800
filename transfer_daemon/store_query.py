"""Keyset queries over `transfers` for every filter and order of the HTTP API.

Order: time_stamp, block_number, log_index, then stream_id (chain + contract) as the
tie-breaker, all in the sort direction (the unique key makes that order total). Two plan
shapes, both index scans that stop after the page:
- by stream: for each (chain, contract) stream in scope, the unique key read in order and
  cut at the page size (LATERAL), then the few candidate rows merged;
- by address: the from/to address index (address key, time key) read in time order, rechecked
  against the full address, the few rows sharing one second sorted.
Block ranges become time bounds through `blocks` (block time never decreases with the number).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from transfer_daemon.model import Transfer
from transfer_daemon.store_cursor import CursorPosition, decode_cursor, encode_cursor

#: deepest row reachable with page/pageSize; deeper pages must use the cursor.
MAX_OFFSET = 10_000
_COLUMNS = ("t.time_stamp, t.block_number, t.log_index, t.stream_id, t.tx_hash, t.from_address,"
            " t.to_address, t.value, t.gas_used, t.gas_price, t.method_id")


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
    since: int | None = None  # unix seconds, inclusive
    until: int | None = None  # unix seconds, inclusive


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
        bounds.append(">= td_ts32(%(since)s)")
    if query.until is not None:
        conds.append("t.time_stamp <= %(until)s")
        bounds.append("<= td_ts32(%(until)s)")
    if query.cursor is not None:
        conds.append(f"(t.time_stamp, td_block_log(t.block_number, t.log_index)) {plan.le}"
                     " (%(c_ts)s, td_block_log(%(c_block)s, %(c_log)s))")
        conds.append(f"(t.time_stamp, td_block_log(t.block_number, t.log_index), t.stream_id) {plan.lt}"
                     " (%(c_ts)s, td_block_log(%(c_block)s, %(c_log)s), %(c_stream)s)")
        bounds.append(f"{plan.le} td_ts32(%(c_ts)s)")
    if lossy_key:
        conds.extend(f"td_ts32(t.time_stamp) {bound}" for bound in bounds)
    return conds


def _block_bound(chain: str, first: bool) -> str:
    """Time of the first stored block >= from_block (or last <= to_block) of `chain`."""
    if first:
        return (f"(SELECT b.time_stamp FROM blocks b WHERE b.chain_id = {chain} AND b.block_number >= %(fb)s"
                " ORDER BY b.block_number LIMIT 1)")
    return (f"(SELECT b.time_stamp FROM blocks b WHERE b.chain_id = {chain} AND b.block_number <= %(tb)s"
            " ORDER BY b.block_number DESC LIMIT 1)")


def _block_conditions(query: TransferQuery, by_stream: bool) -> list[str]:
    conds = []
    for present, column_cond, first in ((query.from_block is not None, "t.block_number >= %(fb)s", True),
                                        (query.to_block is not None, "t.block_number <= %(tb)s", False)):
        if not present:
            continue
        conds.append(column_cond)
        op = ">=" if first else "<="
        if by_stream:
            conds.append(f"t.time_stamp {op} {_block_bound('m.chain_id', first)}")
        else:
            agg = "min" if first else "max"
            bound = _block_bound("c.id", first)
            scoped = f"(SELECT {agg}({bound}) FROM unnest(%(scope_chains)s::int8[]) c(id))"
            conds.append(f"td_ts32(t.time_stamp) {op} td_ts32({scoped})")
    return conds


def _stream_sql(query: TransferQuery, plan: _Plan) -> str:
    conds = ["t.stream_id = m.stream_id", *_time_conditions(query, plan, False), *_block_conditions(query, True)]
    return (
        "SELECT m.chain_id, x.* FROM unnest(%(sids)s::int4[], %(cids)s::int8[]) AS m(stream_id, chain_id)"
        f" CROSS JOIN LATERAL (SELECT {_COLUMNS} FROM transfers t WHERE {' AND '.join(conds)}"
        f" ORDER BY {plan.key('t', with_stream=False)} LIMIT %(inner)s) x"
        f" ORDER BY {plan.key('x')} LIMIT %(limit)s OFFSET %(offset)s"
    )


def _address_branch(query: TransferQuery, plan: _Plan, column: str, extra: list[str]) -> str:
    conds = [f"td_addr32(t.{column}) = td_addr32(%({column})s)", f"t.{column} = %({column})s", *extra,
             *_time_conditions(query, plan, True), *_block_conditions(query, False)]
    return (f"(SELECT {_COLUMNS} FROM transfers t WHERE {' AND '.join(conds)}"
            f" ORDER BY td_ts32(t.time_stamp) {plan.order}, {plan.key('t')} LIMIT %(inner)s)")


def _address_sql(query: TransferQuery, plan: _Plan, all_streams: bool) -> str:
    extra = [] if all_streams else ["t.stream_id = ANY(%(sids)s)"]
    if query.to_address is not None and query.from_address is not None:
        extra.append("t.to_address = %(to_address)s")
    if query.address is not None and (query.from_address is not None or query.to_address is not None):
        extra.append("(t.from_address = %(address)s OR t.to_address = %(address)s)")
    if query.from_address is not None:
        branches = [_address_branch(query, plan, "from_address", extra)]
    elif query.to_address is not None:
        branches = [_address_branch(query, plan, "to_address", extra)]
    else:
        branches = [_address_branch(query, plan, "from_address", extra),
                    _address_branch(query, plan, "to_address", [*extra, "t.from_address <> %(address)s"])]
    return (
        "SELECT m.chain_id, x.* FROM (" + " UNION ALL ".join(branches) + ") x"
        " JOIN unnest(%(all_sids)s::int4[], %(all_cids)s::int8[]) AS m(stream_id, chain_id)"
        " ON m.stream_id = x.stream_id"
        f" ORDER BY {plan.key('x')} LIMIT %(limit)s OFFSET %(offset)s"
    )


def _streams(conn: psycopg.Connection) -> dict[int, tuple[int, bytes]]:
    return {sid: (chain, bytes(contract)) for sid, chain, contract in
            conn.execute("SELECT stream_id, chain_id, contract FROM streams")}


def _transfer(row: tuple, streams: dict[int, tuple[int, bytes]]) -> Transfer:
    chain, ts, block, log_index, sid, tx, frm, to, value, gas_used, gas_price, method, block_hash = row
    return Transfer(
        chain_id=chain, block_number=block, time_stamp=ts, tx_hash=bytes(tx), log_index=log_index,
        from_address=bytes(frm), to_address=bytes(to), value=int(value), contract_address=streams[sid][1],
        block_hash=None if block_hash is None else bytes(block_hash),
        gas_used=None if gas_used is None else int(gas_used),
        gas_price=None if gas_price is None else int(gas_price),
        method_id=None if method is None else "0x" + bytes(method).hex(),
    )


def _params(query: TransferQuery, position: CursorPosition | None, offset: int,
            streams: dict[int, tuple[int, bytes]], scope: list[int]) -> dict:
    params: dict = {
        "since": query.since, "until": query.until, "fb": query.from_block, "tb": query.to_block,
        "address": query.address, "from_address": query.from_address or query.address,
        "to_address": query.to_address or query.address,
        "sids": scope, "cids": [streams[s][0] for s in scope],
        "scope_chains": sorted({streams[s][0] for s in scope}),
        "all_sids": list(streams), "all_cids": [v[0] for v in streams.values()],
        "inner": offset + query.page_size + 1, "limit": query.page_size + 1, "offset": offset,
    }
    if position is not None:
        params.update(c_ts=position.time_stamp, c_block=position.block_number, c_log=position.log_index,
                      c_stream=position.stream_id)
    return params


def build_sql(query: TransferQuery, streams: dict[int, tuple[int, bytes]]) -> tuple[str, dict, list[int]]:
    """(SQL, parameters, streams in scope) for a query; exposed for EXPLAIN tests and benchmarks."""
    position, offset = _validate(query)
    plan = _PLANS[query.sort]
    scope = [sid for sid, (chain, contract) in streams.items()
             if (not query.chain_ids or chain in query.chain_ids)
             and (query.contract is None or contract == query.contract)]
    params = _params(query, position, offset, streams, scope)
    if query.address is None and query.from_address is None and query.to_address is None:
        sql = _stream_sql(query, plan)
    else:
        sql = _address_sql(query, plan, len(scope) == len(streams))
    # The page's block hashes in the same round trip.
    sql = (f"SELECT p.*, b.block_hash FROM ({sql}) p LEFT JOIN blocks b"
           f" ON b.chain_id = p.chain_id AND b.block_number = p.block_number ORDER BY {plan.key('p')}")
    return sql, params, scope


def query_transfers(conn: psycopg.Connection, query: TransferQuery) -> TransferPage:
    """One page in API order, plus the cursor of the next page (None on the last page).

    Raises ValueError for a bad cursor, sort or page beyond MAX_OFFSET.
    """
    streams = _streams(conn)
    sql, params, scope = build_sql(query, streams)
    if not scope:
        return TransferPage([], None)
    rows = conn.execute(sql, params).fetchall()
    page = rows[: query.page_size]
    items = [_transfer(row, streams) for row in page]
    next_cursor = None
    if len(rows) > query.page_size:
        last = page[-1]
        next_cursor = encode_cursor(CursorPosition(query.sort, last[1], last[2], last[3], last[4]))
    return TransferPage(items, next_cursor)
