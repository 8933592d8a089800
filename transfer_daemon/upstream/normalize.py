"""Upstream rows and logs -> `Transfer` | `Quarantined` | skipped. Pure, and fast on the happy path.

Each row first goes through a fast path (length checks + `bytes.fromhex` + `int`, no regexes,
one call per row); any surprise sends it to the slow path, which re-parses it field by field with
the model's helpers only to name the reason it is quarantined. Every number is held to the model's
bounds (what the store can hold): a row outside them is quarantined alone and its batch goes on.

Explorer `tokentx` rows carry no log index: a row's `log_index` is its ordinal among the rows of
the same (block, contract) in the order given, which callers keep as the upstream's ascending
order over whole blocks (see `model.Transfer`). Blockscout rows carry `logIndex`; it is used when
present. Ordinals are counted over every row whose block number and contract parse, quarantined
or not, so one bad row never shifts the keys of its siblings.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from transfer_daemon.model import (
    MAX_BLOCK_NUMBER,
    MAX_LOG_INDEX,
    MAX_TIME_STAMP,
    TRANSFER_TOPIC,
    UINT256_MAX,
    InvalidField,
    Quarantined,
    Transfer,
    address_to_bytes,
    hash_to_bytes,
    parse_uint,
    topic_to_address,
)

_ZERO_PAD = "0" * 24
#: the longest number a row may spell, whatever its value (a uint256 takes 78 digits, 64 in hex):
#: no zero padding past that, and no megabyte of digits handed to int()
MAX_DECIMAL_DIGITS = 78
MAX_HEX_DIGITS = 64


class _Bad(Exception):
    """Raised inside the fast path; the slow path finds the precise reason."""


@dataclass(slots=True)
class Normalized:
    """One page's outcome. `skipped_reasons` counts rows that are not ERC-20 transfers, by reason."""

    transfers: list[Transfer] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return sum(self.skipped_reasons.values())

    def skip(self, reason: str) -> None:
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + 1

    def extend(self, other: Normalized) -> None:
        self.transfers.extend(other.transfers)
        self.quarantined.extend(other.quarantined)
        for reason, count in other.skipped_reasons.items():
            self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + count


def _dec(value: object, maximum: int) -> int:
    """Strict decimal string -> int (no sign, spaces, underscores or non-ASCII digits)."""
    if type(value) is not str or not value.isdigit() or not value.isascii() or len(value) > MAX_DECIMAL_DIGITS:
        raise _Bad
    number = int(value)
    if number > maximum:
        raise _Bad
    return number


def _optional_dec(value: object) -> int | None:
    return None if value is None or value == "" else _dec(value, UINT256_MAX)


def _method_id(value: object) -> str | None:
    """Informational only: a malformed methodId becomes None rather than costing the row."""
    if type(value) is str and len(value) == 10 and value[:2] == "0x":
        try:
            bytes.fromhex(value[2:])
        except ValueError:
            return None
        return value.lower()
    return None


def normalize_tokentx(chain_id: int, rows: Iterable[object], contracts: Collection[bytes] | None = None) -> Normalized:
    """Explorer `account/tokentx` rows (ascending, whole blocks) -> Normalized.

    `contracts`: when given, rows of any other contract are skipped (`other_contract`).
    """
    out = Normalized()
    append = out.transfers.append
    ordinals: dict[tuple[int, bytes], int] = {}
    for row in rows:
        try:
            transfer = _tokentx_transfer(chain_id, row, ordinals, contracts)
        except (_Bad, KeyError, TypeError, ValueError, AttributeError):
            block = _block_or_none(row, _strict_uint)
            out.quarantined.append(Quarantined(chain_id, _tokentx_reason(row), row, block))
            continue
        if transfer is None:
            out.skip("other_contract")
        else:
            append(transfer)
    return out


def _tokentx_transfer(chain_id: int, row: dict, ordinals: dict[tuple[int, bytes], int],
                      contracts: Collection[bytes] | None) -> Transfer | None:
    """The fast path of one row: a Transfer, None for another contract, or an exception."""
    fromhex = bytes.fromhex
    block_number = _dec(row["blockNumber"], MAX_BLOCK_NUMBER)
    contract_hex = row["contractAddress"]
    if len(contract_hex) != 42 or contract_hex[:2] != "0x":
        raise _Bad
    contract = fromhex(contract_hex[2:])
    key = (block_number, contract)
    ordinal = ordinals.get(key, 0)
    ordinals[key] = ordinal + 1  # before any other check: a bad row still takes its ordinal
    if contracts is not None and contract not in contracts:
        return None
    tx_hex, sender, receiver = row["hash"], row["from"], row["to"]
    if (len(tx_hex) != 66 or len(sender) != 42 or len(receiver) != 42 or tx_hex[:2] != "0x"
            or sender[:2] != "0x" or receiver[:2] != "0x"):
        raise _Bad
    block_hash = row.get("blockHash")
    if block_hash:
        if len(block_hash) != 66 or block_hash[:2] != "0x":
            raise _Bad
        block_hash = fromhex(block_hash[2:])
    log_index = row.get("logIndex")
    return Transfer(
        chain_id, block_number, _dec(row["timeStamp"], MAX_TIME_STAMP), fromhex(tx_hex[2:]),
        ordinal if log_index is None or log_index == "" else _dec(log_index, MAX_LOG_INDEX),
        fromhex(sender[2:]), fromhex(receiver[2:]), _dec(row["value"], UINT256_MAX), contract, block_hash or None,
        _optional_dec(row.get("gasUsed")), _optional_dec(row.get("gasPrice")), _method_id(row.get("methodId")),
    )


def _tokentx_reason(row: object) -> str:
    """Why the fast path refused `row` (field by field, in a fixed order)."""
    if not isinstance(row, dict):
        return f"row is {type(row).__name__}, expected an object"
    try:
        hash_to_bytes(row.get("hash"), "hash")
        address_to_bytes(row.get("contractAddress"), "contractAddress")
        address_to_bytes(row.get("from"), "from")
        address_to_bytes(row.get("to"), "to")
        if row.get("blockHash"):
            hash_to_bytes(row["blockHash"], "blockHash")
        _strict_uint(row.get("blockNumber"), "blockNumber", MAX_BLOCK_NUMBER)
        _strict_uint(row.get("timeStamp"), "timeStamp", MAX_TIME_STAMP)
        _strict_uint(row.get("value"), "value", UINT256_MAX)
        for name, maximum in (("logIndex", MAX_LOG_INDEX), ("gasUsed", UINT256_MAX), ("gasPrice", UINT256_MAX)):
            if row.get(name) not in (None, ""):
                _strict_uint(row[name], name, maximum)
    except InvalidField as exc:
        return str(exc)
    return "unexpected row shape"


def _strict_uint(value: object, name: str, maximum: int) -> int:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise InvalidField(name, value, "expected a decimal string")
    if len(value) > MAX_DECIMAL_DIGITS:
        raise InvalidField(name, value, f"more than {MAX_DECIMAL_DIGITS} digits")
    return parse_uint(value, name, maximum)


def _block_or_none(row: object, parse: Callable[[object, str, int], int]) -> int | None:
    """A refused row's block when that field is valid: callers place the row by it."""
    try:
        return parse(row.get("blockNumber"), "blockNumber", MAX_BLOCK_NUMBER)  # type: ignore[union-attr]
    except (InvalidField, AttributeError):
        return None


def _hex(value: object, maximum: int) -> int:
    """Strict 0x-hex quantity -> int; "0x" alone is 0 (Etherscan's getLogs writes logIndex 0 so)."""
    if type(value) is not str or value[:2] != "0x":
        raise _Bad
    digits = value[2:]
    if not digits:
        return 0
    if not digits.isalnum() or not digits.isascii() or len(digits) > MAX_HEX_DIGITS:
        raise _Bad
    number = int(digits, 16)
    if number > maximum:
        raise _Bad
    return number


def _topic_address(topic: object) -> bytes:
    if type(topic) is not str or len(topic) != 66 or topic[:2] != "0x" or topic[2:26] != _ZERO_PAD:
        raise _Bad
    return bytes.fromhex(topic[26:])


def normalize_logs(chain_id: int, logs: Iterable[object],
                   blocks: Mapping[int, tuple[bytes, int]] | None = None) -> Normalized:
    """`eth_getLogs` / explorer `logs/getLogs` entries -> Normalized.

    Timestamp from the log (`timeStamp` on explorers, `blockTimestamp` on newer nodes), else from
    `blocks` (block number -> (block hash, timestamp)). Removed logs, other events and ERC-721
    transfers (4 topics) are skipped and counted.
    """
    out = Normalized()
    append = out.transfers.append
    for log in logs:
        try:
            transfer = _log_transfer(chain_id, log, blocks)
        except (_Bad, KeyError, TypeError, ValueError, AttributeError, IndexError):
            block = _block_or_none(log, _strict_hex)
            out.quarantined.append(Quarantined(chain_id, _log_reason(log, blocks), log, block))
            continue
        if type(transfer) is str:
            out.skip(transfer)
        else:
            append(transfer)
    return out


def _log_transfer(chain_id: int, log: dict, blocks: Mapping[int, tuple[bytes, int]] | None) -> Transfer | str:
    """The fast path of one log: a Transfer, the reason it is skipped, or an exception."""
    if log.get("removed") is True:
        return "removed"
    topics = log["topics"]
    topic0 = topics[0] if type(topics) is list and topics else None
    if topic0 != TRANSFER_TOPIC and (type(topic0) is not str or topic0.lower() != TRANSFER_TOPIC):
        if type(topics) is not list:
            raise _Bad
        return "other_event"
    if len(topics) == 4:
        return "erc721"
    if len(topics) != 3:
        raise _Bad
    data, contract_hex, tx_hex = log["data"], log["address"], log["transactionHash"]
    if len(data) != 66 or data[:2] != "0x" or len(contract_hex) != 42 or contract_hex[:2] != "0x" \
            or len(tx_hex) != 66 or tx_hex[:2] != "0x":
        raise _Bad
    fromhex = bytes.fromhex
    fromhex(data[2:])
    block_number = _hex(log["blockNumber"], MAX_BLOCK_NUMBER)
    block_hash, time_stamp = _log_block(log, block_number, blocks)
    return Transfer(
        chain_id, block_number, time_stamp, fromhex(tx_hex[2:]), _hex(log["logIndex"], MAX_LOG_INDEX),
        _topic_address(topics[1]), _topic_address(topics[2]), int(data[2:], 16), fromhex(contract_hex[2:]),
        block_hash, _optional_hex(log.get("gasUsed")), _optional_hex(log.get("gasPrice")), None,
    )


def _optional_hex(value: object) -> int | None:
    return None if value is None or value == "" else _hex(value, UINT256_MAX)


def _log_block(log: Mapping, block_number: int,
               blocks: Mapping[int, tuple[bytes, int]] | None) -> tuple[bytes | None, int]:
    known = blocks.get(block_number) if blocks else None
    block_hash = log.get("blockHash")
    if block_hash:
        if len(block_hash) != 66 or block_hash[:2] != "0x":
            raise _Bad
        block_hash = bytes.fromhex(block_hash[2:])
    elif known is not None:
        block_hash = known[0]
    else:
        block_hash = None
    stamp = log.get("timeStamp") or log.get("blockTimestamp")
    if stamp:
        return block_hash, _hex(stamp, MAX_TIME_STAMP)
    if known is None or not 0 <= known[1] <= MAX_TIME_STAMP:
        raise _Bad
    return block_hash, known[1]


def _log_reason(log: object, blocks: Mapping[int, tuple[bytes, int]] | None) -> str:
    if not isinstance(log, dict):
        return f"log is {type(log).__name__}, expected an object"
    topics = log.get("topics")
    if not isinstance(topics, list):
        return "topics: expected a list"
    if len(topics) != 3:
        return f"topics: Transfer log with {len(topics)} topics, expected 3"
    try:
        topic_to_address(topics[1], "topics[1]")
        topic_to_address(topics[2], "topics[2]")
        address_to_bytes(log.get("address"), "address")
        hash_to_bytes(log.get("transactionHash"), "transactionHash")
        data = log.get("data")
        if not isinstance(data, str) or len(data) != 66:
            raise InvalidField("data", data, "expected 0x + 64 hex digits (one uint256)")
        parse_uint(data, "data")
        if log.get("blockHash"):
            hash_to_bytes(log["blockHash"], "blockHash")
        for name, maximum in (("blockNumber", MAX_BLOCK_NUMBER), ("logIndex", MAX_LOG_INDEX)):
            _strict_hex(log.get(name), name, maximum)
        stamp = log.get("timeStamp") or log.get("blockTimestamp")
        if stamp:
            _strict_hex(stamp, "timeStamp", MAX_TIME_STAMP)
        else:
            known = (blocks or {}).get(parse_uint(log["blockNumber"], "blockNumber"))
            if known is None:
                return "timeStamp: missing and the block is unknown"
            parse_uint(known[1], "timeStamp", MAX_TIME_STAMP)
        for name in ("gasUsed", "gasPrice"):
            if log.get(name) not in (None, ""):
                _strict_hex(log[name], name, UINT256_MAX)
    except InvalidField as exc:
        return str(exc)
    return "unexpected log shape"


def _strict_hex(value: object, name: str, maximum: int) -> int:
    if not isinstance(value, str) or value[:2] != "0x" or not (value[2:].isalnum() or value == "0x"):
        raise InvalidField(name, value, "expected a 0x hex quantity")
    if len(value) > 2 + MAX_HEX_DIGITS:
        raise InvalidField(name, value, f"more than {MAX_HEX_DIGITS} hex digits")
    return parse_uint(value, name, maximum)
