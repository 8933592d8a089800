-- Smaller rows (every byte per transfer is paid ~100M times), by rebuilding `transfers`:
--  * gas used and gas price as minimal big-endian unsigned bytes (0 is the empty string) instead
--    of numeric: 4 bytes instead of 7 for a typical gas used, 6 instead of 9 for a gas price; the
--    whole uint256 range still round-trips, and td_uint() reads them back as numeric in SQL;
--  * the method id (a 4-byte selector) as int4, and stream_id as int2, both among the fixed-width
--    columns where they need no padding (a column order ALTER TABLE cannot change; hence the rebuild).
-- `value` stays numeric(78,0): it is what consumers filter and sum in SQL.

CREATE FUNCTION td_uint_bytes(n numeric) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    result bytea := ''::bytea;
    rest numeric := n;
BEGIN
    IF n < 0 OR n <> trunc(n) THEN
        RAISE EXCEPTION 'td_uint_bytes: % is not an unsigned integer', n;
    END IF;
    WHILE rest > 0 LOOP
        result := set_byte('\x00'::bytea, 0, mod(rest, 256)::integer) || result;
        rest := div(rest, 256);
    END LOOP;
    RETURN result;
END
$$;

CREATE FUNCTION td_uint(b bytea) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    result numeric := 0;
BEGIN
    FOR i IN 0 .. length(b) - 1 LOOP
        result := result * 256 + get_byte(b, i);
    END LOOP;
    RETURN result;
END
$$;

-- stream ids are stored as int2 in transfers
ALTER TABLE streams ADD CONSTRAINT streams_id_range CHECK (stream_id BETWEEN 1 AND 32767);

-- The old table and its partitions move aside (their names are reused below).
ALTER TABLE transfers RENAME TO transfers_old;
ALTER INDEX transfers_key RENAME TO transfers_old_key;
ALTER INDEX transfers_from_idx RENAME TO transfers_old_from_idx;
ALTER INDEX transfers_to_idx RENAME TO transfers_old_to_idx;
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'transfers_old'::regclass LOOP
        EXECUTE format('DROP STATISTICS IF EXISTS %I, %I', part.relname || '_from_stx', part.relname || '_to_stx');
        EXECUTE format('ALTER TABLE %I RENAME TO %I', part.relname, 'old_' || part.relname);
    END LOOP;
END
$$;

-- Fixed-width columns first, widest first, so that nothing is padded.
CREATE TABLE transfers (
    time_stamp   bigint        NOT NULL,
    block_number bigint        NOT NULL,
    log_index    integer       NOT NULL,
    method_id    integer,
    stream_id    smallint      NOT NULL,
    tx_hash      bytea         NOT NULL,
    from_address bytea         NOT NULL,
    to_address   bytea         NOT NULL,
    value        numeric(78,0) NOT NULL,
    gas_used     bytea,
    gas_price    bytea
) PARTITION BY RANGE (time_stamp);
ALTER TABLE transfers ADD CONSTRAINT transfers_log_index_range CHECK (log_index BETWEEN 0 AND 16777215);
CREATE UNIQUE INDEX transfers_key
    ON transfers (stream_id, time_stamp, td_block_log(block_number, log_index)) WITH (fillfactor = 100);
CREATE INDEX transfers_from_idx ON transfers (td_addr32(from_address), td_ts32(time_stamp)) WITH (fillfactor = 100);
CREATE INDEX transfers_to_idx ON transfers (td_addr32(to_address), td_ts32(time_stamp)) WITH (fillfactor = 100);

-- The same months again, as db/partitions.py creates them.
DO $$
DECLARE
    part record;
    name text;
    first timestamptz;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'transfers_old'::regclass LOOP
        name := substr(part.relname, 5);
        first := make_timestamptz(substr(name, 12, 4)::integer, substr(name, 16, 2)::integer, 1, 0, 0, 0, 'UTC');
        EXECUTE format('CREATE TABLE %I PARTITION OF transfers FOR VALUES FROM (%s) TO (%s)', name,
                       extract(epoch FROM first)::bigint, extract(epoch FROM first + interval '1 month')::bigint);
        EXECUTE format('CREATE STATISTICS %I (dependencies) ON from_address, td_addr32(from_address) FROM %I',
                       name || '_from_stx', name);
        EXECUTE format('CREATE STATISTICS %I (dependencies) ON to_address, td_addr32(to_address) FROM %I',
                       name || '_to_stx', name);
    END LOOP;
END
$$;

INSERT INTO transfers (time_stamp, block_number, log_index, method_id, stream_id, tx_hash, from_address,
                       to_address, value, gas_used, gas_price)
SELECT time_stamp, block_number, log_index, ('x' || encode(method_id, 'hex'))::bit(32)::integer, stream_id,
       tx_hash, from_address, to_address, value, td_uint_bytes(gas_used), td_uint_bytes(gas_price)
FROM transfers_old
ORDER BY stream_id, time_stamp, block_number, log_index;
DROP TABLE transfers_old;
-- The months were rebuilt: the retention job packs their indexes again once they are closed.
DELETE FROM partition_maintenance;

-- Blocks arrive in ascending order per chain: their key pages split where the new entry goes
-- (nbtree's "after new item" rule), so they can be packed full.
ALTER INDEX blocks_pkey SET (fillfactor = 100);
