"""GET /api/transfers — store-backed keyset pages, the warm cache, and upstream mode.

A response is an envelope (chain, paging, source, freshness; built per request so the lag is
current) spliced with a cached or freshly serialized `"items":…,"nextCursor":…` fragment.
"""

from __future__ import annotations

import logging
import time

import orjson
from flask import Blueprint, Response, request

from transfer_daemon import store
from transfer_daemon.api import error_response, json_response
from transfer_daemon.api.params import ParsedRequest, parse_transfer_args
from transfer_daemon.api.resources import Resources, resources
from transfer_daemon.cache import (
    UPSTREAM_TTL_S,
    ChainState,
    compute_page,
    load_snapshot,
    page_fragment,
    page_key,
)
from transfer_daemon.config import ChainConfig
from transfer_daemon.errors import UpstreamError
from transfer_daemon.report import freshness_view

log = logging.getLogger(__name__)
bp = Blueprint("transfers", __name__)


def snapshot(res: Resources) -> dict[int, ChainState]:
    """Versions and ingest times of every chain: from the cache, else from the store."""
    current = res.cache.snapshot()
    if current is None:
        with res.connection() as conn:
            current = load_snapshot(conn, [chain.id for chain in res.config.chains])
        res.cache.put_snapshot(current)
    return current


def chain_freshness(state: ChainState | None, now: float, stale_after_s: int, *, force_stale: bool = False) -> dict:
    """The chain's freshness and history, as the report defines them for every view."""
    state = state or ChainState(0, None, None)
    fresh = freshness_view(state.last_ingested_at, state.complete_from, state.history_complete, now, stale_after_s)
    return {**fresh, "stale": force_stale or fresh["stale"]}


def envelope(parsed: ParsedRequest, chains: dict[str, dict], source: str) -> dict:
    """The response minus items/nextCursor; the overall freshness is the worst chain's (the oldest
    sync, the longest lag, stale if any chain is)."""
    lags = [c["ingestLagSeconds"] for c in chains.values()]
    times = [c["lastIngestedAt"] for c in chains.values()]
    return {
        "chainId": parsed.chain_id,
        "page": parsed.page,
        "pageSize": parsed.query.page_size,
        "source": source,
        "lastIngestedAt": None if None in times or not times else min(times),
        "ingestLagSeconds": None if None in lags or not lags else max(lags),
        "stale": any(c["stale"] for c in chains.values()),
        "chains": chains,
    }


def respond(head: dict, fragment: bytes) -> Response:
    return json_response(orjson.dumps(head)[:-1] + b"," + fragment + b"}")


def _store_fragment(res: Resources, parsed: ParsedRequest, snap: dict[int, ChainState]) -> bytes:
    query = parsed.query
    if parsed.is_first_page:
        key = page_key(query.chain_ids, query.page_size, query.sort, snap)
        cached = res.cache.page(key)
        if cached is not None:
            return cached
        with res.connection(for_queries=True) as conn:
            fragment = compute_page(conn, query.chain_ids, query.page_size, query.sort)
        res.cache.put_page(key, fragment)
        return fragment
    with res.connection(for_queries=True) as conn:
        items, next_cursor = store.query_items(conn, query)
    return page_fragment(items, next_cursor)


def _upstream_items(res: Resources, chain: ChainConfig, limit: int) -> tuple[float, list[dict]] | None:
    """(fetched_at, items) from the explorer, cached UPSTREAM_TTL_S; None while it is failing."""
    key, failed_key = f"upstream:{chain.id}:{limit}", f"upstream-failed:{chain.id}"
    cached = res.cache.get(key)
    if cached is not None:
        fetched_at, items = orjson.loads(cached)
        return fetched_at, items
    if res.cache.peek(failed_key) is not None:
        return None
    try:
        transfers = res.source(chain).latest_transfers(limit)
    except UpstreamError as exc:
        log.warning("failed upstream page for %s, answering from the store: %s", chain.name, exc)
        res.cache.put(failed_key, b"1", UPSTREAM_TTL_S)
        return None
    result = (time.time(), [t.to_api() for t in transfers[:limit]])
    res.cache.put(key, orjson.dumps(result), UPSTREAM_TTL_S)
    return result


def _upstream_response(res: Resources, parsed: ParsedRequest, chains: list[ChainConfig]) -> Response | None:
    limit = parsed.query.page_size
    answers = [_upstream_items(res, chain, limit) for chain in chains]
    if any(answer is None for answer in answers):
        return None
    items = [item for _, chain_items in answers for item in chain_items]
    items.sort(key=lambda i: (i["timeStamp"], i["blockNumber"], i["logIndex"], i["chainId"]), reverse=True)
    now = time.time()
    fresh = {
        str(chain.id): chain_freshness(ChainState(0, fetched_at, None), now, res.config.api.stale_after_s)
        for chain, (fetched_at, _) in zip(chains, answers, strict=True)
    }
    return respond(envelope(parsed, fresh, "upstream"), page_fragment(items[:limit], None))


def _upstream_chains(res: Resources, parsed: ParsedRequest) -> list[ChainConfig]:
    """Chains to ask the explorer for: all covered chains, when each is in upstream mode."""
    if not parsed.is_first_page or parsed.query.sort != "desc":
        return []
    chains = [c for c in res.config.chains if c.id in parsed.query.chain_ids]
    if all(res.config.data_source_for(c) == "upstream" for c in chains):
        return chains
    return []


@bp.get("/api/transfers")
def list_transfers() -> Response:
    res = resources()
    ids = [chain.id for chain in res.config.chains]
    parsed = parse_transfer_args(request.args.items(multi=True), ids)
    if parsed.chain_id and parsed.chain_id not in ids:
        return error_response(404, "unknown_chain", f"chain {parsed.chain_id} is not configured")
    upstream_chains = _upstream_chains(res, parsed)
    if upstream_chains:
        answer = _upstream_response(res, parsed, upstream_chains)
        if answer is not None:
            return answer
    snap = snapshot(res)
    fragment = _store_fragment(res, parsed, snap)
    now, stale_after = time.time(), res.config.api.stale_after_s
    fresh = {
        str(c): chain_freshness(snap.get(c), now, stale_after, force_stale=bool(upstream_chains))
        for c in parsed.query.chain_ids
    }
    return respond(envelope(parsed, fresh, "store"), fragment)
