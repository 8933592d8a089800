-- Address indexes that no other address or stream can slow down. Until now their key was the last
-- 4 bytes of the address (td_addr32): anyone could ask for an address ending like the busiest
-- wallet's, and a page of it walked that wallet's whole history, rejecting it row by row in the heap;
-- the same walk happened for a busy wallet asked for on a chain (or contract) where it has few rows.
-- The key is now
--  * a 64-bit digest of the whole address (the first 8 bytes of its SHA-256): matching another
--    address's key takes about 2^64 tries, and the odds that any two of a billion addresses share
--    one by chance are about 3 %; the full address is still rechecked in the heap;
--  * then the stream (chain + contract), so a page reads only the streams in scope;
--  * then the time as int4, as before.
-- Index tuples grow from 16 to 24 bytes (8 more bytes per index, 16 per transfer). Only the two
-- address indexes are rebuilt: the `transfers` table and its rows are untouched. The rebuild holds
-- a lock that blocks reads and writes of `transfers` until it commits: run `transfer-daemon migrate`
-- before starting an upgraded daemon on a large store.

CREATE FUNCTION td_addr64(a bytea) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ('x' || encode(substr(sha256(a), 1, 8), 'hex'))::bit(64)::bigint $$;

-- Dropping an index of the partitioned table drops every partition's; creating one creates it on
-- every partition, and on each partition made later.
DROP INDEX transfers_from_idx;
DROP INDEX transfers_to_idx;
CREATE INDEX transfers_from_idx ON transfers (td_addr64(from_address), stream_id, td_ts32(time_stamp))
    WITH (fillfactor = 100);
CREATE INDEX transfers_to_idx ON transfers (td_addr64(to_address), stream_id, td_ts32(time_stamp))
    WITH (fillfactor = 100);

-- Each partition's statistics on (address, address key), which keep the planner from
-- underestimating a busy address, follow the key (db/partitions.py makes them for new months).
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'transfers'::regclass LOOP
        EXECUTE format('DROP STATISTICS IF EXISTS %I, %I', part.relname || '_from_stx', part.relname || '_to_stx');
        EXECUTE format('CREATE STATISTICS %I (dependencies) ON from_address, td_addr64(from_address) FROM %I',
                       part.relname || '_from_stx', part.relname);
        EXECUTE format('CREATE STATISTICS %I (dependencies) ON to_address, td_addr64(to_address) FROM %I',
                       part.relname || '_to_stx', part.relname);
    END LOOP;
END
$$;
DROP FUNCTION td_addr32(bytea);

-- The status page's lag chart asks, for each of its points, for the chain's last ingest at or
-- before that time: one entry of this index each, however often the chain syncs.
CREATE INDEX ingest_events_ingested_time_idx ON ingest_events (chain_id, occurred_at) WHERE status = 'ingested';

-- A new expression index has no statistics until the table is analyzed: without them a page of a
-- busy address could be planned as a sort of all its rows.
ANALYZE transfers;
