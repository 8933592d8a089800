-- Why a chain stopped, kept in the store so that it survives a restart and shows in `status`:
--  * halted_*: a reorg deeper than max_reorg_depth; ingestion stays stopped until an operator
--    runs `transfer-daemon resume`;
--  * paused_*: the upstream refuses every call for now (daily cap, refused key, deprecated
--    endpoint, unknown chain). paused_until is when the refusal should end (a quota's reset);
--    NULL with a reason means until the chain's upstream settings or secret change, which
--    paused_config (a digest of them, never the secret itself) detects.
ALTER TABLE ingest_cursors
    ADD COLUMN halted_at        timestamptz,
    ADD COLUMN halted_reason    text,
    ADD COLUMN paused_reason    text,
    ADD COLUMN paused_at        timestamptz,
    ADD COLUMN paused_until     timestamptz,
    ADD COLUMN paused_message   text,
    ADD COLUMN paused_config    text,
    ADD COLUMN paused_probed_at timestamptz;

-- Retention prunes `blocks` by time (every chain at once) when it drops a month: without this
-- index that delete reads the whole table.
CREATE INDEX blocks_time_idx ON blocks (time_stamp);
