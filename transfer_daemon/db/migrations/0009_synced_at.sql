-- When a sync last finished up to the upstream's head, with or without new rows: the freshness
-- every view reports. `last_ingested_at` moves on any commit (backfill windows, the first anchor)
-- and so cannot tell an operator that the newest data is there. Left empty on upgrade: a chain
-- reads stale until its next sync reaches the head, rather than fresh on an older meaning.
ALTER TABLE ingest_cursors ADD COLUMN synced_at timestamptz;
