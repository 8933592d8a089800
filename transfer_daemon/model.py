"""Records shared by every layer, and the hex/bytes conversions they rely on.

The simulator imports only this module from the product, so it stays free of I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

#: keccak256("Transfer(address,address,uint256)") — topic0 of ERC-20 and ERC-721 transfers.
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

# Bounds: what the `transfers` table can hold, and so what normalization accepts; anything outside
# is quarantined. Each has a CHECK named below in the schema (migrations 0001, 0006), which
# tests/test_bounds.py reads back. The binary COPY would wrap an out-of-range int4 silently (2**32
# arrives as 0) into a wrong key: normalization keeps such rows out, the store refuses a batch with one.
#: transfers_log_index_range; the key packs (block, log index) into one int8 with 24 bits for the index
MAX_LOG_INDEX = 2**24 - 1
#: transfers_block_number_range; block * 2**24 + log index must fit a bigint (td_block_log)
MAX_BLOCK_NUMBER = 2**39 - 1
#: transfers_time_stamp_range; unix seconds up to 2106-02-07, mapped onto int4 by td_ts32
MAX_TIME_STAMP = 2**32 - 1
#: transfers_value_range; an ERC-20 amount is a uint256 (the column is numeric(78,0))
UINT256_MAX = 2**256 - 1


class InvalidField(ValueError):
    """A field of an upstream row that does not have the expected shape."""

    def __init__(self, name: str, value: object, reason: str) -> None:
        super().__init__(f"{name}: {reason} (got {str(value)[:80]!r})")
        self.name = name
        self.value = value
        self.reason = reason


def hex_to_bytes(value: str, length: int, name: str) -> bytes:
    """`0x`-prefixed hex of exactly `length` bytes (any case) -> bytes."""
    if not isinstance(value, str) or len(value) != 2 + 2 * length or value[:2] not in ("0x", "0X"):
        raise InvalidField(name, value, f"expected 0x + {2 * length} hex digits")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise InvalidField(name, value, "not hex") from None


def address_to_bytes(value: str, name: str = "address") -> bytes:
    return hex_to_bytes(value, 20, name)


def hash_to_bytes(value: str, name: str = "hash") -> bytes:
    return hex_to_bytes(value, 32, name)


def topic_to_address(topic: str, name: str = "topic") -> bytes:
    """A 32-byte log topic holding a left-padded address -> the 20 address bytes."""
    raw = hex_to_bytes(topic, 32, name)
    if raw[:12] != b"\0" * 12:
        raise InvalidField(name, topic, "address topic with non-zero padding")
    return raw[12:]


def to_hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


def parse_uint(value: object, name: str, maximum: int = UINT256_MAX) -> int:
    """Decimal string/int or 0x-hex string -> int within 0..maximum.

    Explorer rows carry decimal strings; JSON-RPC and getLogs rows carry hex ("0x" alone is 0).
    """
    if isinstance(value, bool):
        raise InvalidField(name, value, "expected an unsigned integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii():  # int() reads other scripts' digits too
        try:
            if value[:2] in ("0x", "0X"):
                number = int(value[2:], 16) if len(value) > 2 else 0
            elif value.isdigit():
                number = int(value)
            else:
                raise ValueError
        except ValueError:
            raise InvalidField(name, value, "expected an unsigned integer") from None
    else:
        raise InvalidField(name, value, "expected an unsigned integer")
    if number < 0 or number > maximum:
        raise InvalidField(name, value, f"out of range 0..{maximum}")
    return number


def iso_utc(unix_seconds: int) -> str:
    # isoformat costs half of strftime; the API formats one per item it serves
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat()[:19] + "Z"


@dataclass(frozen=True, slots=True)
class Transfer:
    """One ERC-20 transfer, normalized from any upstream kind.

    `log_index` is the log's index in its block when the upstream gives it (`rpc_logs`,
    `etherscan_logs`, Blockscout). Etherscan's `tokentx` rows carry none: there it is the row's
    ordinal among the rows of the same block and contract, in the upstream's ascending order —
    stable because blocks are always ingested whole; it follows log order within the block and
    keeps identical transfers inside one transaction apart. Real log indexes are unique per block,
    so for every kind the store's key is (chain_id, contract_address, block_number, log_index).
    """

    chain_id: int
    block_number: int
    time_stamp: int  # unix seconds, UTC
    tx_hash: bytes  # 32 bytes
    log_index: int
    from_address: bytes  # 20 bytes
    to_address: bytes  # 20 bytes
    value: int  # 0 .. 2**256-1
    contract_address: bytes  # 20 bytes
    block_hash: bytes | None = None  # 32 bytes when known
    gas_used: int | None = None
    gas_price: int | None = None
    method_id: str | None = None  # "0xa9059cbb" or None

    def to_api(self) -> dict:
        """The HTTP API item (camelCase, lower-case hex, decimal value)."""
        return {
            "chainId": self.chain_id,
            "blockNumber": self.block_number,
            "timeStamp": iso_utc(self.time_stamp),
            "hash": "0x" + self.tx_hash.hex(),
            "logIndex": self.log_index,
            "from": "0x" + self.from_address.hex(),
            "to": "0x" + self.to_address.hex(),
            "value": str(self.value),
            "contractAddress": "0x" + self.contract_address.hex(),
            "blockHash": to_hex(self.block_hash),
            "gasUsed": None if self.gas_used is None else str(self.gas_used),
            "gasPrice": None if self.gas_price is None else str(self.gas_price),
            "methodId": self.method_id,
        }


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An upstream row that failed validation: kept verbatim with the reason, never inserted."""

    chain_id: int
    reason: str
    raw: dict | list | str
    block_number: int | None = None  # the row's block, when that field itself is valid


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a chain's ingestion has got.

    `synced_block`: every block <= it (and >= `backfilled_block`) is stored whole.
    `backfilled_block`: the oldest block reached by backfill (None until backfill starts).
    `synced_hash`: the upstream hash of `synced_block` (None when unknown), checked for reorgs.
    """

    chain_id: int
    synced_block: int | None = None
    backfilled_block: int | None = None
    backfill_target_block: int | None = None
    backfill_done: bool = False
    synced_hash: bytes | None = None  # upstream hash of `synced_block`, read before its rows


@dataclass(frozen=True, slots=True)
class IngestEvent:
    """One line of a chain's ingest history (`ingest_events`)."""

    chain_id: int
    status: str  # ingested | reorg | quarantined | error | alert | drift | verified | repair | halted | resumed
    #               | retention
    message: str = ""
    rows: int = 0
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pause:
    """A chain's upstream calls stopped because the upstream refuses them all for now.

    `until` (unix seconds) is when the refusal is expected to end (a daily quota's reset); None
    means until the chain's upstream settings or secret change. `config` is a digest of those
    settings and secret at the refusal, so a worker started with different ones lifts the pause.
    """

    reason: str  # daily_cap | invalid_key | endpoint_refused
    since: float
    until: float | None
    message: str = ""
    config: str = ""
    probed_at: float | None = None  # the last call that checked whether the refusal still holds


@dataclass(frozen=True, slots=True)
class Halt:
    """A chain whose ingestion stopped until an operator has looked (a reorg deeper than allowed)."""

    reason: str
    at: float
