-- The report reads each chain's newest event of a status (last success, last error) and counts
-- the last minute's errors on every status request: one index entry each, however many events
-- of other statuses came after.
CREATE INDEX ingest_events_status_idx ON ingest_events (chain_id, status, id);
