-- Gas used and gas price as minimal big-endian unsigned bytes (0 is the empty string) instead of
-- numeric: 4 bytes instead of 7 for a typical gas used, 6 instead of 9 for a gas price, which
-- brings the heap tuple of a typical transfer to the next 8-byte boundary down (8 bytes per row).
-- The full uint256 range still round-trips. `value` stays numeric(78,0): it is what consumers
-- filter and sum in SQL. td_uint() reads these columns back as numeric for SQL users.

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

ALTER TABLE transfers
    ALTER COLUMN gas_used TYPE bytea USING td_uint_bytes(gas_used),
    ALTER COLUMN gas_price TYPE bytea USING td_uint_bytes(gas_price);

-- Blocks arrive in ascending order per chain: their key pages split where the new entry goes
-- (nbtree's "after new item" rule), so they can be packed full.
ALTER INDEX blocks_pkey SET (fillfactor = 100);
