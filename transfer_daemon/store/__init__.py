"""The store: everything that reads or writes the transfer tables.

- `writes`: a batch with its cursor and event in one transaction, reorg repair, one block
  replaced (verify's repair), events;
- `reads`: cursors, stored hashes and keys, recent events, freshness, chain and storage statistics;
- `queries`: keyset page queries for every filter and order of the HTTP API;
- `cursor`: opaque page cursors;
- `retention`: partitions made ahead, old months dropped, closed months compacted.

Callers use the names re-exported here; the store knows nothing of HTTP or of the upstreams.
"""

from transfer_daemon.store.cursor import CursorPosition, decode_cursor, encode_cursor
from transfer_daemon.store.queries import MAX_OFFSET, TransferPage, TransferQuery, query_items, query_transfers
from transfer_daemon.store.reads import (
    ChainStats,
    Freshness,
    StorageStats,
    blocks_around,
    chain_stats,
    count_recent_events,
    data_version,
    freshness,
    get_cursor,
    get_stops,
    known_transfer_keys,
    last_event,
    last_ingests,
    recent_events,
    storage_stats,
    stored_block_hashes,
    stored_transfers,
    stream_id,
)
from transfer_daemon.store.retention import apply_retention, compact_closed_partitions
from transfer_daemon.store.writes import (
    record_event,
    record_synced,
    replace_block,
    replace_from_block,
    save_halt,
    save_pause,
    write_batch,
)

__all__ = [
    "ChainStats", "CursorPosition", "Freshness", "MAX_OFFSET", "StorageStats", "TransferPage", "TransferQuery",
    "apply_retention", "blocks_around", "chain_stats", "compact_closed_partitions", "count_recent_events",
    "data_version", "decode_cursor", "encode_cursor", "freshness", "get_cursor", "get_stops", "known_transfer_keys",
    "last_event", "last_ingests", "query_items", "query_transfers", "recent_events", "record_event",
    "record_synced", "replace_block", "replace_from_block", "save_halt", "save_pause", "storage_stats",
    "stored_block_hashes", "stored_transfers", "stream_id", "write_batch",
]
