"""GET /api/transfers — store-backed keyset pages and the warm cache; upstream mode's pages come
from `upstream_pages`, which also says what the store answers instead.

A response is an envelope (chain, paging, source, freshness; built per request so the lag is
current) spliced with a cached or freshly serialized `"items":…,"nextCursor":…` fragment.
"""

from __future__ import annotations

import time

import orjson
from flask import Blueprint, Response, request

from transfer_daemon import store
from transfer_daemon.api import error_response, json_response, upstream_pages
from transfer_daemon.api.params import ParsedRequest
from transfer_daemon.api.resources import Resources, resources
from transfer_daemon.cache import (
    ChainState,
    compute_page,
    load_snapshot,
    page_fragment,
    page_key,
)
from transfer_daemon.report import freshness_view

bp = Blueprint("transfers", __name__)


def snapshot(res: Resources) -> dict[int, ChainState]:
    """Versions and ingest times of every chain: from the cache, else from the store."""
    current = res.cache.snapshot()
    if current is None:
        with res.connection() as conn:
            current = load_snapshot(conn, [chain.id for chain in res.config.chains])
        res.cache.put_snapshot(current)
    return current


def chain_freshness(state: ChainState | None, now: float, stale_after_s: int) -> dict:
    """The chain's freshness and history, as the report defines them for every view."""
    state = state or ChainState(0, None, None)
    return freshness_view(state.last_ingested_at, state.complete_from, state.history_complete, now, stale_after_s)


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


def _upstream_response(res: Resources, parsed: ParsedRequest, answer: upstream_pages.UpstreamPage) -> Response:
    """An explorer page: the chain's freshness is when its oldest chunk was read."""
    state = ChainState(0, answer.fetched_at, None)
    fresh = {str(answer.chain.id): chain_freshness(state, time.time(), res.config.api.stale_after_s)}
    return respond(envelope(parsed, fresh, "upstream"), page_fragment(answer.items, answer.next_cursor))


@bp.get("/api/transfers")
def list_transfers() -> Response:
    res = resources()
    ids = [chain.id for chain in res.config.chains]
    parsed, resume = upstream_pages.parse(request.args.items(multi=True), ids)
    if parsed.chain_id and parsed.chain_id not in ids:
        return error_response(404, "unknown_chain", f"chain {parsed.chain_id} is not configured")
    answer = upstream_pages.page(res, parsed, resume)
    if answer is not None:
        return _upstream_response(res, parsed, answer)
    if resume is not None:
        with res.connection() as conn:
            parsed = upstream_pages.continue_in_store(conn, res.config, parsed, resume)
    snap = snapshot(res)
    fragment = _store_fragment(res, parsed, snap)
    now, stale_after = time.time(), res.config.api.stale_after_s
    fresh = {str(c): chain_freshness(snap.get(c), now, stale_after) for c in parsed.query.chain_ids}
    return respond(envelope(parsed, fresh, "store"), fragment)
