"""Verify: re-read a settled window from the upstream, compare it with the store transfer by
transfer, and repair the blocks that differ.

One comparison serves `transfer-daemon verify` and the worker's nightly job (`upkeep.verify`).
The window (planning.settled_window) is walked in chunks; each chunk is read whole with the
worker's own upstream source, through the key's shared limiter (so a verify beside a running
daemon never exceeds the key's rate), compared with the stored rows (planning.compare_transfers)
and, when asked, repaired block by block: `store.replace_block`, one transaction per block under
the chain's write lock. That is safe beside a running worker: the window lies inside what the
store holds whole and `confirmations` below the head, where the worker writes nothing but a reorg
repair, and the two take the same lock. A reorg deeper than `confirmations` landing between a
chunk's read and its repair could put back the rows it replaced; the next verify sees and
repairs that too.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from transfer_daemon import store
from transfer_daemon.config import ChainConfig, Config
from transfer_daemon.errors import StoreNotReady, UpstreamError
from transfer_daemon.ingest import planning
from transfer_daemon.ingest.backfill import read_whole, span_limits
from transfer_daemon.ingest.context import IngestContext, record
from transfer_daemon.model import IngestEvent, Transfer
from transfer_daemon.redact import redact_url

log = logging.getLogger(__name__)

HOUR = 3600
#: Repair policies: compare only; re-ingest the blocks where the upstream has rows the store
#: lacks (the nightly job: it never deletes on the upstream's word alone); every block that differs.
REPAIR_NONE, REPAIR_MISSING, REPAIR_ALL = "none", "missing", "all"
#: Pages per contract a chunk aims at: chunks bound the rows held at once.
PAGES_PER_CHUNK = 10
#: Seconds the command waits for the store before it gives up.
CONNECT_TIMEOUT_S = 5
#: Differing blocks named in a drift event (all of them are in the command's JSON).
BLOCKS_IN_EVENT = 50


@dataclass
class Progress:
    """A walk over a window, chunk by chunk; the nightly job spreads one over several runs."""

    window: planning.Window
    next_block: int
    span: int  # blocks in the next chunk, adapted to the rows seen
    started_at: float
    differed: bool = False  # some run of this pass found a difference

    @classmethod
    def start(cls, chain: ChainConfig, window: planning.Window, now: float) -> Progress:
        return cls(window, window.lo, span_limits(chain)[0], now)

    @property
    def done(self) -> bool:
        return self.next_block > self.window.hi


@dataclass
class Tally:
    """What one walk found over [from_block, to_block] (to_block < from_block: nothing compared)."""

    from_block: int
    to_block: int
    upstream: int = 0
    stored: int = 0
    missing: int = 0
    extra: int = 0
    repaired: int = 0  # rows inserted or deleted by repairs
    blocks: list[int] = field(default_factory=list)  # the blocks that differed, ascending

    @property
    def differs(self) -> bool:
        return self.missing + self.extra > 0

    def add(self, chunk: planning.Window, difference: planning.Difference, repaired: int) -> None:
        self.to_block = chunk.hi
        self.upstream += difference.upstream
        self.stored += difference.stored
        self.missing += difference.missing_rows
        self.extra += difference.extra_rows
        self.repaired += repaired
        self.blocks.extend(difference.blocks)

    def detail(self, trigger: str) -> dict:
        """The drift event's detail."""
        return {"job": "verify", "trigger": trigger, "from_block": self.from_block, "to_block": self.to_block,
                "upstream": self.upstream, "stored": self.stored, "missing": self.missing, "extra": self.extra,
                "repaired": self.repaired, "blocks": self.blocks[:BLOCKS_IN_EVENT]}


def plan_window(ctx: IngestContext, hours: float, now: float) -> planning.Window | None:
    """The settled window of the last `hours`, mapped to blocks by the stored block times and
    the upstream head; None when the store holds nothing settled to compare."""
    head = ctx.source.head_block()
    cutoff = now - hours * HOUR
    with ctx.pool.connection() as conn:
        cursor = store.get_cursor(conn, ctx.chain_id)
        oldest = store.chain_stats(conn, ctx.chain_id).oldest_block
        before, after = store.blocks_around(conn, ctx.chain_id, int(cutoff))
    return planning.settled_window(cursor, head, ctx.chain.confirmations, oldest, before, after, cutoff, now)


def walk(ctx: IngestContext, progress: Progress, repair: str, deadline: float | None = None) -> Tally:
    """Compare (and repair, per `repair`) chunk after chunk from `progress.next_block`, until
    the window is done, `deadline` (ctx.clock) passes after at least one chunk, or a stop is
    requested. Advances `progress` after each chunk."""
    tally = Tally(progress.next_block, progress.next_block - 1)
    _, smallest, largest = span_limits(ctx.chain)
    rows_goal = ctx.chain.page_size * len(ctx.chain.contracts) * PAGES_PER_CHUNK
    while not progress.done and ctx.may_call_upstream:
        if deadline is not None and tally.to_block >= tally.from_block and ctx.clock() >= deadline:
            break
        chunk = planning.Window(progress.next_block, min(progress.window.hi, progress.next_block + progress.span - 1))
        read = read_whole(ctx, chunk)
        if read is None:
            break
        upstream = read[0]
        with ctx.pool.connection() as conn:
            stored = store.stored_transfers(conn, ctx.chain_id, _contracts(ctx.chain), chunk.lo, chunk.hi)
        difference = planning.compare_transfers(upstream, stored)
        repaired = _repair(ctx, upstream, difference, repair) if repair != REPAIR_NONE else 0
        tally.add(chunk, difference, repaired)
        progress.next_block = chunk.hi + 1
        progress.span = planning.next_span(progress.span, difference.upstream, rows_goal, smallest, largest)
    return tally


def _contracts(chain: ChainConfig) -> list[bytes]:
    return [bytes.fromhex(address[2:]) for address in chain.contracts]



def _repair(ctx: IngestContext, upstream: list[Transfer], difference: planning.Difference, repair: str) -> int:
    """Re-ingest the blocks the policy picks, one transaction each; returns rows inserted or deleted."""
    by_block: dict[int, list[Transfer]] = defaultdict(list)
    for transfer in upstream:
        by_block[transfer.block_number].append(transfer)
    changed = 0
    for block in planning.blocks_to_repair(difference, delete_extra=repair == REPAIR_ALL):
        missing, extra = difference.missing.get(block, 0), difference.extra.get(block, 0)
        event = IngestEvent(ctx.chain_id, "repair", f"verify re-ingested block {block}: {missing} missing, "
                            f"{extra} extra", rows=missing + extra,
                            detail={"job": "verify", "block": block, "missing": missing, "extra": extra})
        with ctx.pool.connection() as conn:
            deleted, inserted = store.replace_block(conn, ctx.chain_id, block, by_block.get(block, []),
                                                    contracts=_contracts(ctx.chain), event=event)
        log.warning("repaired chain=%s block=%d deleted=%d inserted=%d", ctx.chain.name, block, deleted, inserted)
        changed += deleted + inserted
    if changed:
        ctx.on_changed()
    return changed


def record_drift(ctx: IngestContext, tally: Tally, trigger: str) -> None:
    """Log what a walk found; record a `drift` event when the store differed."""
    level = logging.WARNING if tally.differs else logging.INFO
    log.log(level, "verified chain=%s blocks=%d..%d upstream=%d stored=%d missing=%d extra=%d repaired=%d",
            ctx.chain.name, tally.from_block, tally.to_block, tally.upstream, tally.stored, tally.missing,
            tally.extra, tally.repaired)
    if tally.differs:
        message = (f"verify blocks {tally.from_block}..{tally.to_block}: {tally.missing} missing, "
                   f"{tally.extra} extra, {tally.repaired} repaired")
        record(ctx, IngestEvent(ctx.chain_id, "drift", message, rows=tally.missing + tally.extra,
                                detail=tally.detail(trigger)))


def record_verified(ctx: IngestContext, window: planning.Window, trigger: str) -> None:
    """A `verified` event: a whole window compared without a difference (resolves `Drift`)."""
    record(ctx, IngestEvent(ctx.chain_id, "verified", f"verify blocks {window.lo}..{window.hi}: no difference",
                            detail={"job": "verify", "trigger": trigger, "from_block": window.lo,
                                    "to_block": window.hi}))


# --- the command ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainVerdict:
    """One chain's answer to `transfer-daemon verify`."""

    chain: ChainConfig
    window: planning.Window | None
    tally: Tally | None
    repair: bool
    error: str | None = None

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "failed"
        if self.tally is None:
            return "nothing stored"
        if not self.tally.differs:
            return "match"
        return "repaired" if self.repair else "differs"

    @property
    def ok(self) -> bool:
        return self.verdict == "match"


@dataclass(frozen=True)
class VerifyReport:
    hours: float
    repair: bool
    chains: list[ChainVerdict]

    @property
    def ok(self) -> bool:
        """Every chain matched the upstream (a repaired chain did not: the next run confirms it)."""
        return all(chain.ok for chain in self.chains)


def verify_chain(ctx: IngestContext, hours: float, repair: bool, now: float) -> ChainVerdict:
    """Compare (and repair) one chain's settled window of the last `hours`, whole."""
    try:
        window = plan_window(ctx, hours, now)
        if window is None:
            return ChainVerdict(ctx.chain, None, None, repair)
        tally = walk(ctx, Progress.start(ctx.chain, window, now), REPAIR_ALL if repair else REPAIR_NONE)
    except UpstreamError as exc:
        log.error("failed chain=%s job=verify: %s", ctx.chain.name, exc)
        return ChainVerdict(ctx.chain, None, None, repair, error=str(exc))
    record_drift(ctx, tally, "command")
    if not tally.differs:
        record_verified(ctx, window, "command")
    return ChainVerdict(ctx.chain, window, tally, repair)


def verify_command(config: Config, chain_names: list[str], hours: float, repair: bool) -> VerifyReport:
    """`transfer-daemon verify`: every named chain against its upstream, beside a running daemon
    or not (the chain lock is not needed; the limiter files in data_dir are shared)."""
    import psycopg

    from transfer_daemon.db.bootstrap import resolve_database_url
    from transfer_daemon.db.pool import open_pool
    from transfer_daemon.upstream import make_source

    limiter_dir = str(Path(config.daemon.data_dir) / "limiter")
    url = resolve_database_url(config)
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()  # fail fast, and in one line
        pool = open_pool(url, 1, 2, "verify")
    except psycopg.Error as exc:
        raise StoreNotReady(f"cannot reach {redact_url(url)}: {_first_line(exc)}") from exc
    try:
        verdicts = []
        for name in chain_names:
            chain = config.chain(name)
            ctx = IngestContext(config=config, chain=chain, pool=pool,
                                source=make_source(chain, limiter_dir=limiter_dir))
            verdicts.append(verify_chain(ctx, hours, repair, time.time()))
        return VerifyReport(hours, repair, verdicts)
    except psycopg.Error as exc:
        raise StoreNotReady(f"store: {_first_line(exc)}") from exc
    finally:
        pool.close()


def _first_line(exc: Exception) -> str:
    return redact_url((str(exc).strip().splitlines() or [type(exc).__name__])[0])


# --- rendering -----------------------------------------------------------------------------


def document(report: VerifyReport) -> dict:
    """`verify --json`: camelCase keys, like every JSON document of the product."""
    return {"ok": report.ok, "hours": report.hours, "repair": report.repair,
            "chains": [_chain_document(verdict) for verdict in report.chains]}


def _chain_document(verdict: ChainVerdict) -> dict:
    tally, window = verdict.tally, verdict.window
    return {"chain": verdict.chain.name, "chainId": verdict.chain.id, "verdict": verdict.verdict,
            "fromBlock": window.lo if window else None, "toBlock": window.hi if window else None,
            "upstream": tally.upstream if tally else None, "stored": tally.stored if tally else None,
            "missing": tally.missing if tally else None, "extra": tally.extra if tally else None,
            "repaired": tally.repaired if tally else None, "differingBlocks": tally.blocks if tally else [],
            "error": verdict.error}


_COLUMNS = ("chain", "blocks", "upstream", "stored", "missing", "extra", "repaired", "verdict")
#: Differing blocks named in the table's summary line.
BLOCKS_SHOWN = 10


def render(report: VerifyReport) -> str:
    """The table, then one line per chain that did not match: the chain, the counts, the blocks."""
    rows = [_COLUMNS] + [_table_row(verdict, report.repair) for verdict in report.chains]
    if not report.repair:
        rows = [row[:6] + row[7:] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = {0, 1, len(widths) - 1}  # chain, blocks, verdict; the counts align right
    lines = ["  ".join(cell.ljust(width) if i in text else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines += [_summary(verdict) for verdict in report.chains if not verdict.ok]
    return "\n".join(lines)


def _table_row(verdict: ChainVerdict, repair: bool) -> tuple[str, ...]:
    tally, window = verdict.tally, verdict.window
    blocks = f"{window.lo}..{window.hi}" if window else "-"
    counts = (tally.upstream, tally.stored, tally.missing, tally.extra, tally.repaired) if tally else ("-",) * 5
    return (verdict.chain.name, blocks, *map(str, counts), verdict.verdict.upper())


def _summary(verdict: ChainVerdict) -> str:
    name, tally = verdict.chain.name, verdict.tally
    if verdict.error is not None:
        return f"verify: chain {name} failed: {verdict.error}"
    if tally is None:
        return f"verify: chain {name}: nothing settled is stored yet to compare"
    blocks = ", ".join(map(str, tally.blocks[:BLOCKS_SHOWN])) + (" …" if len(tally.blocks) > BLOCKS_SHOWN else "")
    counts = (f"{tally.missing} missing, {tally.extra} extra in blocks {tally.from_block}..{tally.to_block}"
              f" (differing blocks: {blocks})")
    if not verdict.repair:
        return f"verify: chain {name} differs: {counts}"
    return (f"verify: chain {name} differed: {counts}; repaired {tally.repaired} rows in {len(tally.blocks)} blocks,"
            " run verify again to confirm")
