-- Initial schema. Sizes matter: every byte per transfer is paid ~100M times, so
--  * time_stamp is unix seconds (bigint), the partition key;
--  * chain + contract collapse into a 4-byte stream_id (dimension table `streams`);
--  * per-block data (hash) lives once per block in `blocks`, joined for the returned page only;
--  * the unique key doubles as the keyset index of every stream;
--  * address indexes hold a 4-byte address key and a 4-byte time key (16-byte index tuples):
--    a lossy key, rechecked against the full address in the heap.

-- The last 4 bytes of a 20-byte address as int4 (addresses are hashes: their tail is uniform).
CREATE FUNCTION td_addr32(a bytea) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (get_byte(a, 16) << 24) | (get_byte(a, 17) << 16) | (get_byte(a, 18) << 8) | get_byte(a, 19) $$;

-- Unix seconds 0 .. 2^32-1 (1970 .. 2106) mapped onto int4 preserving order.
CREATE FUNCTION td_ts32(ts bigint) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (ts - 2147483648)::integer $$;

-- (block, log index) as one order-preserving int8; the CHECK on transfers keeps it one-to-one.
CREATE FUNCTION td_block_log(block bigint, log_index integer) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT block * 16777216 + log_index $$;

CREATE TABLE streams (
    stream_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id  bigint NOT NULL,
    contract  bytea  NOT NULL,
    UNIQUE (chain_id, contract)
);

-- Column order keeps fixed-width columns first so no alignment padding is stored.
CREATE TABLE transfers (
    time_stamp   bigint        NOT NULL,
    block_number bigint        NOT NULL,
    stream_id    integer       NOT NULL,
    log_index    integer       NOT NULL,
    tx_hash      bytea         NOT NULL,
    from_address bytea         NOT NULL,
    to_address   bytea         NOT NULL,
    value        numeric(78,0) NOT NULL,
    gas_used     numeric(78,0),
    gas_price    numeric(78,0),
    method_id    bytea
) PARTITION BY RANGE (time_stamp);

-- Key (chain + contract, block, log index): a log index is unique within its block, and Etherscan
-- `tokentx` rows (no log index) number their rows per block and contract (see model.Transfer).
-- time_stamp is in the key only because the partition key must be; it sits before the block so the
-- same index serves the API order (time, block, log index) both ways. Block and log index enter
-- the index as one int8 (td_block_log): 36-byte entries instead of 44, no hash in the key.
-- Inserts land in the middle of the index (at the end of each stream's range), where btree splits
-- pages 50/50: an open month's indexes run ~60-75% full. Once a month is closed it no longer
-- grows, and the retention job rebuilds its indexes packed full (fillfactor 100).
ALTER TABLE transfers ADD CONSTRAINT transfers_log_index_range CHECK (log_index BETWEEN 0 AND 16777215);
CREATE UNIQUE INDEX transfers_key
    ON transfers (stream_id, time_stamp, td_block_log(block_number, log_index)) WITH (fillfactor = 100);
CREATE INDEX transfers_from_idx ON transfers (td_addr32(from_address), td_ts32(time_stamp)) WITH (fillfactor = 100);
CREATE INDEX transfers_to_idx ON transfers (td_addr32(to_address), td_ts32(time_stamp)) WITH (fillfactor = 100);

CREATE TABLE blocks (
    chain_id     bigint NOT NULL,
    block_number bigint NOT NULL,
    time_stamp   bigint NOT NULL,
    block_hash   bytea,
    PRIMARY KEY (chain_id, block_number)
);

CREATE TABLE ingest_cursors (
    chain_id              bigint PRIMARY KEY,
    synced_block          bigint,
    backfilled_block      bigint,
    backfill_target_block bigint,
    backfill_done         boolean     NOT NULL DEFAULT false,
    data_version          bigint      NOT NULL DEFAULT 0,
    row_count             bigint      NOT NULL DEFAULT 0,
    last_ingested_at      timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ingest_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id    bigint      NOT NULL,
    status      text        NOT NULL,
    message     text        NOT NULL DEFAULT '',
    rows        integer     NOT NULL DEFAULT 0,
    detail      jsonb       NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_events_chain_idx ON ingest_events (chain_id, id);
CREATE INDEX ingest_events_time_idx ON ingest_events (occurred_at);
