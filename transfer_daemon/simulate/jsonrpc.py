"""JSON-RPC answers (`POST /rpc/<chainId>`): single calls and batches, geth/Ethermint shapes.

Pure: (chain, head, decoded request) -> the JSON body. eth_getLogs refuses wide ranges with the exact
Cronos (Ethermint) error; logs carry `blockTimestamp` only when the chain's spec says so; block
headers near the head may be null (see quirks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transfer_daemon.simulate import quirks
from transfer_daemon.simulate.chain import METHODS, Block, Log, SimChain
from transfer_daemon.simulate.quirks import Served

_EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
_ZERO_BLOOM = "0x" + "00" * 256
_ZERO_HASH = "0x" + "00" * 32


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: object = None, with_data: bool = False) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message}
        if with_data:
            self.error["data"] = data


@dataclass(frozen=True, slots=True)
class _Call:
    """What every request of one HTTP call is answered against."""

    head: int
    range_cap: int
    header_head: int  # the newest block whose header the node has
    served: Served


def error_body(request_id: object, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def answer(chain: SimChain, head: int, payload: object, range_cap: int, *, null_headers: int = 0,
           served: Served | None = None) -> dict | list:
    """A decoded request body (object or batch) -> the response body. eth_getBlockByNumber answers
    null for the newest `null_headers` blocks (see quirks)."""
    call = _Call(head, range_cap, head - null_headers, Served() if served is None else served)
    if isinstance(payload, list):
        if not payload:
            return error_body(None, -32600, "empty batch")
        return [_one(chain, call, item) for item in payload]
    return _one(chain, call, payload)


def _one(chain: SimChain, call: _Call, request: object) -> dict:
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        return error_body(None, -32600, "invalid request")
    request_id = request.get("id")
    params = request.get("params") or []
    handler = _METHODS.get(request["method"])
    if handler is None:
        return error_body(request_id, -32601,
                          f"the method {request['method']} does not exist/is not available")
    if not isinstance(params, list):
        return error_body(request_id, -32602, "invalid params")
    try:
        result = handler(chain, call, params)
    except RpcError as exc:
        return {"jsonrpc": "2.0", "id": request_id, "error": exc.error}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _block_number(tag: object, head: int, position: int) -> int:
    if tag is None or tag in ("latest", "safe", "finalized", "pending"):
        return head
    if tag == "earliest":
        return 0
    if isinstance(tag, str) and tag[:2] in ("0x", "0X") and len(tag) > 2:
        try:
            return int(tag, 16)
        except ValueError:
            pass
    raise RpcError(-32602, f"invalid argument {position}: hex string without 0x prefix")


def _chain_id(chain: SimChain, call: _Call, params: list) -> str:
    return hex(chain.id)


def _net_version(chain: SimChain, call: _Call, params: list) -> str:
    return str(chain.id)


def _head(chain: SimChain, call: _Call, params: list) -> str:
    return hex(call.head)


def _client_version(chain: SimChain, call: _Call, params: list) -> str:
    return "transfer-daemon-simulator/1.0"


def _get_block(chain: SimChain, call: _Call, params: list) -> dict | None:
    if not params:
        raise RpcError(-32602, "missing value for required argument 0")
    number = _block_number(params[0], call.header_head, 0)
    if number > call.header_head:
        if number <= call.head:
            call.served.null_headers += 1
        return None
    block = chain.block(number, call.head)
    return None if block is None else block_json(chain, block, bool(params[1]) if len(params) > 1 else False)


def _get_logs(chain: SimChain, call: _Call, params: list) -> list[dict]:
    if not params or not isinstance(params[0], dict):
        raise RpcError(-32602, "missing value for required argument 0")
    query = params[0]
    if query.get("blockHash") is not None:
        raise RpcError(-32602, "invalid argument 0: blockHash filters are not served by the simulator")
    first = _block_number(query.get("fromBlock"), call.head, 0)
    last = _block_number(query.get("toBlock"), call.head, 0)
    if last - first > call.range_cap:
        raise RpcError(-32000, f"maximum [from, to] blocks distance: {call.range_cap}", None, with_data=True)
    if first > last:
        raise RpcError(-32000, "invalid block range params")
    addresses = _address_filter(query.get("address"))
    topics = _topic_filter(query.get("topics"))
    picked = [
        (block, log)
        for block in chain.blocks(first, last, call.head)
        for log in block.logs
        if (addresses is None or log.address in addresses) and _topics_match(chain.topics(log), topics)
    ]
    quirks.tally(chain, picked, call.served, names=False)
    return [log_json(chain, block, log) for block, log in picked]


def _address_filter(raw: object) -> frozenset[str] | None:
    if raw is None:
        return None
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise RpcError(-32602, "invalid argument 0: address must be a string or a list of strings")
    return frozenset(item.lower() for item in items)


def _topic_filter(raw: object) -> list[frozenset[str] | None]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RpcError(-32602, "invalid argument 0: topics must be a list")
    positions: list[frozenset[str] | None] = []
    for item in raw:
        if item is None:
            positions.append(None)
        elif isinstance(item, str):
            positions.append(frozenset((item.lower(),)))
        elif isinstance(item, list) and all(isinstance(value, str) for value in item):
            positions.append(frozenset(value.lower() for value in item) or None)
        else:
            raise RpcError(-32602, "invalid argument 0: bad topic")
    return positions


def _topics_match(actual: list[str], wanted: list[frozenset[str] | None]) -> bool:
    if len(wanted) > len(actual):
        return False
    return all(want is None or actual[i] in want for i, want in enumerate(wanted))


_METHODS: dict[str, Callable[[SimChain, _Call, list], object]] = {
    "eth_chainId": _chain_id,
    "net_version": _net_version,
    "web3_clientVersion": _client_version,
    "eth_blockNumber": _head,
    "eth_getBlockByNumber": _get_block,
    "eth_getLogs": _get_logs,
}


# --- shapes -------------------------------------------------------------------------------------


def log_json(chain: SimChain, block: Block, log: Log) -> dict:
    tx = block.txs[log.tx]
    row = {
        "address": log.address,
        "topics": chain.topics(log),
        "data": chain.data(log),
        "blockNumber": hex(block.number),
        "transactionHash": tx.hash,
        "transactionIndex": hex(tx.index),
        "blockHash": block.hash,
        "logIndex": quirks.log_index_hex(chain, block, log),
        "removed": False,
    }
    if chain.spec.log_block_timestamp:
        row["blockTimestamp"] = hex(block.timestamp)
    return row


def block_json(chain: SimChain, block: Block, full: bool) -> dict:
    """An eth_getBlockByNumber result (also what the explorer proxy module wraps)."""
    transactions = [_tx_json(chain, block, position) if full else tx.hash for position, tx in enumerate(block.txs)]
    gas_used = block.txs[-1].cumulative_gas_used if block.txs else 0
    return {
        "number": hex(block.number),
        "hash": block.hash,
        "parentHash": block.parent_hash,
        "nonce": "0x0000000000000000",
        "sha3Uncles": _EMPTY_UNCLES,
        "logsBloom": _ZERO_BLOOM,
        "transactionsRoot": _ZERO_HASH,
        "stateRoot": _ZERO_HASH,
        "receiptsRoot": _ZERO_HASH,
        "miner": "0x" + "00" * 20,
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "extraData": "0x",
        "size": hex(600 + 200 * len(block.txs)),
        "gasLimit": hex(30_000_000),
        "gasUsed": hex(gas_used),
        "timestamp": hex(block.timestamp),
        "transactions": transactions,
        "uncles": [],
        "baseFeePerGas": hex(1_000_000_000),
        "mixHash": _ZERO_HASH,
    }


def _tx_json(chain: SimChain, block: Block, position: int) -> dict:
    tx = block.txs[position]
    target = next((log.address for log in block.logs if log.tx == position), "0x" + "00" * 20)
    return {
        "blockHash": block.hash,
        "blockNumber": hex(block.number),
        "from": tx.sender,
        "gas": hex(tx.gas),
        "gasPrice": hex(tx.gas_price),
        "hash": tx.hash,
        "input": METHODS[tx.method][0] + "00" * 64,
        "nonce": hex(tx.nonce),
        "to": target,
        "transactionIndex": hex(tx.index),
        "value": "0x0",
        "type": "0x0",
        "chainId": hex(chain.id),
        "v": hex(chain.id * 2 + 35),
        "r": "0x" + tx.hash[2:34].rjust(64, "1"),
        "s": "0x" + tx.hash[34:].rjust(64, "2"),
    }
