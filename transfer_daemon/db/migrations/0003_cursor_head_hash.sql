-- The hash of the cursor's own head block (synced_block), kept even when that block holds no
-- transfer: the reorg check compares it every cycle, so a reorg that turns empty blocks into
-- blocks with transfers (or the reverse) below the head is not missed.
ALTER TABLE ingest_cursors ADD COLUMN synced_hash bytea;
