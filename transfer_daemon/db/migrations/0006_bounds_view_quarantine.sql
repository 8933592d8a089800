-- The bounds of model.py, named in the schema (transfers_log_index_range exists since 0001). The key
-- functions already refused block numbers and times past them (td_block_log, td_ts32 overflow), so no
-- stored row can break them: NOT VALID spares the scan of every partition; new rows are checked, and
-- partitions created from now on carry them validated.
ALTER TABLE transfers ADD CONSTRAINT transfers_block_number_range
    CHECK (block_number BETWEEN 0 AND 549755813887) NOT VALID;  -- 2^39 - 1
ALTER TABLE transfers ADD CONSTRAINT transfers_time_stamp_range
    CHECK (time_stamp BETWEEN 0 AND 4294967295) NOT VALID;  -- 2^32 - 1, 2106-02-07T06:28:15Z
ALTER TABLE transfers ADD CONSTRAINT transfers_value_range
    CHECK (value BETWEEN 0 AND 115792089237316195423570985008687907853269984665640564039457584007913129639935)
    NOT VALID;  -- 2^256 - 1: numeric(78,0) alone would take up to 10^78 - 1

-- A quarantined row is recorded once however often the upstream serves it (sync reads the unsettled
-- blocks every cycle, a repair reads its range again): its event carries a digest of the row.
CREATE UNIQUE INDEX ingest_events_quarantined_row ON ingest_events (chain_id, (detail ->> 'digest'))
    WHERE status = 'quarantined';

-- The SQL interface (a contract): one row per stored transfer, with ethereum-etl's column names and
-- types plus the chain. Hex is lower case with 0x; block_timestamp is UTC without a time zone.
-- It reads the tables as stored, whose indexes serve the HTTP API's orders and filters (by stream and
-- time, by address); a filter on block_timestamp cannot prune the monthly partitions (keyed by unix
-- seconds), so a query over a long history reads all of it.
CREATE VIEW token_transfers AS
SELECT s.chain_id,
       '0x' || encode(s.contract, 'hex') AS token_address,
       '0x' || encode(t.from_address, 'hex') AS from_address,
       '0x' || encode(t.to_address, 'hex') AS to_address,
       t.value,
       '0x' || encode(t.tx_hash, 'hex') AS transaction_hash,
       t.log_index::bigint AS log_index,
       to_timestamp(t.time_stamp) AT TIME ZONE 'UTC' AS block_timestamp,
       t.block_number,
       '0x' || encode(b.block_hash, 'hex') AS block_hash
FROM transfers t
JOIN streams s ON s.stream_id = t.stream_id
LEFT JOIN blocks b ON b.chain_id = s.chain_id AND b.block_number = t.block_number;
