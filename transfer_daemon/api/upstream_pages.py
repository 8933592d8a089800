"""Upstream mode (`data_source = "upstream"`): /api/transfers pages read from the explorer.

What the explorer can answer comes from it, in the store-backed API's shape with a working
`nextCursor`: one chain of kind `etherscan` (account/tokentx), filtered by `contract` and block
range (`fromBlock`/`toBlock`), in either order, any page or cursor. The rest comes from the store
(`source: "store"`, the chain's real freshness):
- the aggregate (chainId 0): a merged page would cost a series of calls on every chain at once;
- `since`/`until`: tokentx has no time filter;
- `address`, `from`, `to`: tokentx can filter by an address, but Etherscan's rows carry no log
  index, so a transfer's `logIndex` is its ordinal among its block's rows of its contract (see
  model.Transfer); from the rows of one address that ordinal cannot be known, and the item would
  differ from the one the store serves (and `from`/`to` alone tokentx cannot filter);
- chains of kind `etherscan_logs` or `rpc_logs`: neither API sorts newest first nor filters by party;
- and whatever the explorer fails to answer, or the key's limiter cannot let through within
  LIMITER_WAIT_S, at the moment it is asked.

Cost: each contract's range is read in *chunks*: one explorer call of the chain's `page_size`
rows (its records per call), cut to whole blocks (tokentx ordinals need whole blocks), kept in the
warm cache for UPSTREAM_TTL_S. Every page of every size is sliced from the chunks, so a pageSize
never costs a call of its own, and concurrent requests for one chunk share one call per process.
A page is a merge of the chain's contracts (one chunk series each) in the API order; ties
between contracts (same second, block and ordinal) go by the contract's place in the config.

Cursor: "u." + base64 of the last item's position, per contract the bound of the chunk its next
rows are in, a digest of the filters (a cursor continues only the query that issued it) and a
keyed check. When the store must answer a cursor, it continues from that position.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import logging
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial

import orjson
import psycopg

from transfer_daemon import metrics, store
from transfer_daemon.api.params import ParameterError, ParsedRequest, parse_transfer_args
from transfer_daemon.api.resources import Resources
from transfer_daemon.cache import UPSTREAM_TTL_S
from transfer_daemon.config import ChainConfig, Config
from transfer_daemon.errors import UpstreamError
from transfer_daemon.upstream.limiter import LimiterBusy

log = logging.getLogger(__name__)

PREFIX = "u."
#: a request waits on the key's limiter at most this long in all, then the store answers
LIMITER_WAIT_S = 1.0
OPEN, DONE = -1, -2  # a contract's bound: the query's own range (nothing read yet); range exhausted
MAX_CURSOR_TEXT = 4096
_SORTS = ("desc", "asc")
_VERSION = 1
_HEAD = struct.Struct(">BB4sqqiHH")  # version, sort, filters digest, position (4 fields), bounds
_BOUND = struct.Struct(">q")
_CHECK_KEY = b"transfer-daemon/upstream-cursor/v1"
_CHECK_SIZE = 8
#: (time_stamp, block, log index, contract's place in the config): the API order of one chain
Key = tuple[int, int, int, int]
Row = tuple[Key, dict]


@dataclass(frozen=True, slots=True)
class Resume:
    """What an upstream cursor carries: where the last page ended and where each contract goes on."""

    sort: str
    filters: bytes
    after: Key
    bounds: tuple[int, ...]


def filters_digest(parsed: ParsedRequest) -> bytes:
    q = parsed.query
    shape = (parsed.chain_id, q.address, q.from_address, q.to_address, q.contract, q.from_block, q.to_block,
             q.since, q.until)
    return hashlib.blake2b(repr(shape).encode(), digest_size=4).digest()


def _check(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECK_SIZE, key=_CHECK_KEY).digest()


def encode_resume(resume: Resume) -> str:
    payload = _HEAD.pack(_VERSION, _SORTS.index(resume.sort), resume.filters, *resume.after, len(resume.bounds))
    payload += b"".join(_BOUND.pack(bound) for bound in resume.bounds)
    return PREFIX + base64.urlsafe_b64encode(payload + _check(payload)).rstrip(b"=").decode("ascii")


def decode_resume(text: str) -> Resume:
    """ValueError for anything this API did not issue."""
    if not text.startswith(PREFIX) or len(text) > MAX_CURSOR_TEXT:
        raise ValueError("not an upstream cursor")
    body = text[len(PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("malformed cursor") from None
    if len(raw) < _HEAD.size + _CHECK_SIZE or not hmac.compare_digest(raw[-_CHECK_SIZE:], _check(raw[:-_CHECK_SIZE])):
        raise ValueError("cursor failed its integrity check")
    version, sort, filters, ts, block, log_index, contract, count = _HEAD.unpack_from(raw)
    if version != _VERSION or sort >= len(_SORTS) or len(raw) != _HEAD.size + count * _BOUND.size + _CHECK_SIZE:
        raise ValueError("unsupported cursor")
    bounds = tuple(_BOUND.unpack_from(raw, _HEAD.size + i * _BOUND.size)[0] for i in range(count))
    return Resume(_SORTS[sort], filters, (ts, block, log_index, contract), bounds)


def parse(items: Iterable[tuple[str, str]], chain_ids: Iterable[int]) -> tuple[ParsedRequest, Resume | None]:
    """The request, and the upstream cursor it continues (None: no cursor, or a store cursor).

    An upstream cursor is taken out before params checks the rest, then held to the same rules.
    """
    items = list(items)
    cursors = [value for name, value in items if name == "cursor"]
    if len(cursors) != 1 or not cursors[0].startswith(PREFIX):
        return parse_transfer_args(items, chain_ids), None
    parsed = parse_transfer_args([(name, value) for name, value in items if name != "cursor"], chain_ids)
    if any(name == "page" for name, _ in items):
        raise ParameterError("cursor", "give either page or cursor, not both")
    try:
        resume = decode_resume(cursors[0])
    except ValueError:
        raise ParameterError("cursor", "not a cursor this API returned") from None
    if resume.sort != parsed.query.sort:
        raise ParameterError("cursor", f"this cursor continues a sort={resume.sort} listing")
    if resume.filters != filters_digest(parsed):
        raise ParameterError("cursor", "this cursor continues another query: repeat its chainId and filters")
    return replace(parsed, page=None), resume


# --- what the explorer answers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """One upstream query: the chain, its contracts in play (places in the config), the block range."""

    chain: ChainConfig
    contracts: tuple[int, ...]
    lo: int
    hi: int | None  # None: up to the head
    descending: bool

    def chunk_range(self, bound: int) -> tuple[int, int | None]:
        """The blocks a contract's chunk at `bound` reads: the query's range, moved up to the bound."""
        if bound == OPEN:
            return self.lo, self.hi
        return (self.lo, bound) if self.descending else (bound, self.hi)


def scope_of(config: Config, parsed: ParsedRequest) -> Scope | None:
    """The explorer query answering `parsed`, or None when the store answers (module docstring)."""
    q = parsed.query
    if parsed.chain_id == 0 or any(v is not None for v in (q.since, q.until, q.address, q.from_address,
                                                             q.to_address)):
        return None
    chain = config.chain(parsed.chain_id)
    if config.data_source_for(chain) != "upstream" or chain.kind != "etherscan":
        return None
    contracts = tuple(i for i, address in enumerate(chain.contracts)
                      if q.contract is None or bytes.fromhex(address[2:]) == q.contract)
    return Scope(chain, contracts, q.from_block or 0, q.to_block, q.sort == "desc")


def walk_order(key: Key, descending: bool) -> Key:
    return (-key[0], -key[1], -key[2], -key[3]) if descending else key


@dataclass(frozen=True, slots=True)
class Chunk:
    """One explorer call's whole blocks for one contract, in walk order, and where its range goes on."""

    fetched_at: float
    next_bound: int | None
    rows: list[Row]


@dataclass(slots=True)
class _Series:
    """One contract's place in a walk: the chunk its next row is in, and that row's index."""

    slot: int
    bound: int
    chunk: Chunk | None = None
    at: int = 0


@dataclass
class Walk:
    """A merge of the contracts' chunk series in the API order, from just after `after`.

    Pure: `load(slot, bound)` hands it the chunks; tests pass lists, the API the cached explorer.
    """

    bounds: tuple[int, ...]
    after: Key | None
    descending: bool
    load: Callable[[int, int], Chunk]
    fetched_at: list[float] = field(default_factory=list)

    def take(self, want: int, skip: int = 0) -> tuple[list[Row], tuple[int, ...] | None]:
        """`want` rows after `skip` more, and each contract's bound to go on from (None: the end)."""
        series = [_Series(slot, bound) for slot, bound in enumerate(self.bounds)]
        taken: list[Row] = []
        while True:
            heads = [(row, s) for s in series if (row := self._head(s)) is not None]
            if not heads:
                return taken, None
            if len(taken) == want:
                return taken, tuple(s.bound for s in series)
            row, s = min(heads, key=lambda head: walk_order(head[0][0], self.descending))
            s.at += 1
            if skip:
                skip -= 1
            else:
                taken.append(row)

    def _head(self, s: _Series) -> Row | None:
        """The contract's next row, reading its next chunks as far as needed; None at its end."""
        while True:
            if s.chunk is None:
                if s.bound == DONE:
                    return None
                s.chunk = self.load(s.slot, s.bound)
                self.fetched_at.append(s.chunk.fetched_at)
                s.at = self._first_after(s.chunk)
            if s.at < len(s.chunk.rows):
                return s.chunk.rows[s.at]
            s.bound = DONE if s.chunk.next_bound is None else s.chunk.next_bound
            s.chunk = None

    def _first_after(self, chunk: Chunk) -> int:
        if self.after is None:
            return 0
        orders = [walk_order(key, self.descending) for key, _ in chunk.rows]
        return bisect.bisect_right(orders, walk_order(self.after, self.descending))


# --- chunks: the explorer behind the warm cache ----------------------------------------------------

MEMO_SIZE = 64


class _Chunks:
    """An app's chunks in this process: those decoded lately (until their TTL), and the calls under way."""

    def __init__(self) -> None:
        self.memo: dict[str, tuple[float, Chunk]] = {}  # key -> (expires at, monotonic; chunk)
        self.flights: dict[str, threading.Lock] = {}
        self.lock = threading.Lock()

    def recall(self, key: str) -> Chunk | None:
        memo = self.memo.get(key)
        if memo is None or memo[0] <= time.monotonic():
            return None
        metrics.CACHE_REQUESTS.labels("hit").inc()  # as the warm cache counts its own memo
        return memo[1]

    def remember(self, key: str, chunk: Chunk) -> Chunk:
        if len(self.memo) >= MEMO_SIZE:
            self.memo.clear()
        left = UPSTREAM_TTL_S - (time.time() - chunk.fetched_at)
        self.memo[key] = (time.monotonic() + max(0.0, left), chunk)
        return chunk

    @contextmanager
    def single_flight(self, key: str, timeout: float) -> Iterator[None]:
        """One explorer call per chunk at a time: the others wait, then read what it cached."""
        with self.lock:
            flight = self.flights.setdefault(key, threading.Lock())
        if not flight.acquire(timeout=timeout):
            raise LimiterBusy(timeout)
        try:
            yield
        finally:
            flight.release()
            with self.lock:
                if not flight.locked():
                    self.flights.pop(key, None)


_apps: weakref.WeakKeyDictionary[Resources, _Chunks] = weakref.WeakKeyDictionary()
_apps_lock = threading.Lock()


def _chunks_of(res: Resources) -> _Chunks:
    with _apps_lock:
        chunks = _apps.get(res)
        if chunks is None:
            chunks = _apps[res] = _Chunks()
        return chunks


def chunk_key(scope: Scope, contract: str, bound: int) -> str:
    lo, hi = scope.chunk_range(bound)
    shape = (contract, lo, hi, scope.descending, scope.chain.page_size)
    return f"upstream:{scope.chain.id}:{hashlib.sha256(repr(shape).encode()).hexdigest()[:32]}"


def _decode_chunk(raw: bytes) -> Chunk:
    fetched_at, next_bound, rows = orjson.loads(raw)
    return Chunk(fetched_at, next_bound, [((ts, block, log_index, slot), item)
                                          for ts, block, log_index, slot, item in rows])


def _encode_chunk(chunk: Chunk) -> bytes:
    return orjson.dumps([chunk.fetched_at, chunk.next_bound, [[*key, item] for key, item in chunk.rows]])


def _fetch(res: Resources, scope: Scope, slot: int, bound: int) -> Chunk:
    contract_place = scope.contracts[slot]
    lo, hi = scope.chunk_range(bound)
    transfers, next_bound = res.source(scope.chain).whole_block_page(
        scope.chain.contracts[contract_place], lo, hi, descending=scope.descending)
    rows = [((t.time_stamp, t.block_number, t.log_index, contract_place), t.to_api()) for t in transfers]
    rows.sort(key=lambda row: walk_order(row[0], scope.descending))
    return Chunk(time.time(), next_bound, rows)


def load_chunk(res: Resources, scope: Scope, slot: int, bound: int) -> Chunk:
    """A contract's chunk at `bound`: this process's memo, the warm cache, else one explorer call."""
    key = chunk_key(scope, scope.chain.contracts[scope.contracts[slot]], bound)
    chunks = _chunks_of(res)
    chunk = chunks.recall(key)
    if chunk is not None:
        return chunk
    raw = res.cache.get(key)
    if raw is not None:
        return chunks.remember(key, _decode_chunk(raw))
    with chunks.single_flight(key, LIMITER_WAIT_S + scope.chain.request_timeout_s):
        raw = res.cache.get(key)
        if raw is not None:
            return chunks.remember(key, _decode_chunk(raw))
        chunk = _fetch(res, scope, slot, bound)
        res.cache.put(key, _encode_chunk(chunk), UPSTREAM_TTL_S)
    return chunks.remember(key, chunk)


# --- the page ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamPage:
    chain: ChainConfig
    items: list[dict]
    next_cursor: str | None
    fetched_at: float  # when the oldest chunk it was cut from was read


_busy_logged: dict[int, float] = {}


def _note_busy(chain: ChainConfig) -> None:
    """Busy answers come by the hundred under load: one line per chain per minute."""
    now = time.monotonic()
    if now - _busy_logged.get(chain.id, float("-inf")) >= 60.0:
        _busy_logged[chain.id] = now
        log.info("answered from the store chain=%s: its explorer key's limiter is busy", chain.name)


def page(res: Resources, parsed: ParsedRequest, resume: Resume | None) -> UpstreamPage | None:
    """The page from the explorer, or None when the store answers it (module docstring)."""
    scope = scope_of(res.config, parsed)
    if scope is None or (resume is not None and len(resume.bounds) != len(scope.contracts)):
        return None
    failed_key = f"upstream-failed:{scope.chain.id}"
    if res.cache.peek(failed_key) is not None:
        return None
    q = parsed.query
    walk = Walk(resume.bounds if resume else (OPEN,) * len(scope.contracts), resume.after if resume else None,
                scope.descending, partial(load_chunk, res, scope))
    try:
        with res.source(scope.chain).http.limiter.waiting_at_most(LIMITER_WAIT_S):
            rows, bounds = walk.take(q.page_size, 0 if resume else (q.page - 1) * q.page_size)
    except LimiterBusy:
        _note_busy(scope.chain)
        return None
    except UpstreamError as exc:
        log.warning("failed upstream page chain=%s, answering from the store: %s", scope.chain.name, exc)
        res.cache.put(failed_key, b"1", UPSTREAM_TTL_S)
        return None
    cursor = None if bounds is None else encode_resume(Resume(q.sort, filters_digest(parsed), rows[-1][0], bounds))
    return UpstreamPage(scope.chain, [item for _, item in rows], cursor, min(walk.fetched_at, default=time.time()))


def continue_in_store(conn: psycopg.Connection, config: Config, parsed: ParsedRequest,
                      resume: Resume) -> ParsedRequest:
    """`parsed` with the store cursor of the position an upstream cursor names."""
    ts, block, log_index, place = resume.after
    contracts = config.chain(parsed.chain_id).contracts
    stream = None if place >= len(contracts) else store.stream_id(conn, parsed.chain_id,
                                                                     bytes.fromhex(contracts[place][2:]))
    if stream is None:  # the store has no row of it: keep every row that ties with the position
        stream = 2**31 - 1 if resume.sort == "desc" else -(2**31)
    cursor = store.encode_cursor(store.CursorPosition(resume.sort, ts, block, log_index, stream))
    return replace(parsed, query=replace(parsed.query, cursor=cursor))
