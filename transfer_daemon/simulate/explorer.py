"""Etherscan-compatible explorer answers (`/api`, `/v2/api`): tokentx, logs/getLogs and module=proxy.

Pure: (chain, head, query parameters) -> the JSON body Etherscan would send, always with HTTP 200;
what the quirks left out or served is added to a `quirks.Served`. Shapes follow the real answers
collected in the shared upstream samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice

from transfer_daemon.model import TRANSFER_TOPIC
from transfer_daemon.simulate import quirks
from transfer_daemon.simulate.chain import (
    APPROVAL_TOPIC,
    ERC20,
    ERC721,
    METHODS,
    OTHER,
    POISON,
    Block,
    Log,
    SimChain,
)
from transfer_daemon.simulate.jsonrpc import block_json
from transfer_daemon.simulate.quirks import Served

RESULT_WINDOW = 10_000
LOGS_MAX_RECORDS = 1000  # logs/getLogs returns at most 1000 records per call
NO_TRANSACTIONS = {"status": "0", "message": "No transactions found", "result": []}
NO_RECORDS = {"status": "0", "message": "No records found", "result": []}
WINDOW_TOO_LARGE = {
    "status": "0",
    "message": "Result window is too large, PageNo x Offset size must be less than or equal to 10000",
    "result": None,
}
MISSING_CHAIN_ID = (
    "Missing or unsupported chainid parameter (required for v2 api), "
    "please see https://api.etherscan.io/v2/chainlist for the list of supported chainids"
)
_OPEN_END = 10**12  # "endblock=99999999"-style open ends are clamped to the head anyway


class BadParameter(ValueError):
    """A query parameter Etherscan would refuse; the text is what goes in `result`."""


def notok(text: str) -> dict:
    return {"status": "0", "message": "NOTOK", "result": text}


def rate_limited(rate: float) -> dict:
    """Etherscan's per-second answer; its older generic wording when no per-second rate is enforced."""
    return notok(f"Max calls per sec rate limit reached ({rate:g}/sec)" if rate > 0 else "Max rate limit reached")


def daily_limited(calls: int, cap: int) -> dict:
    """Etherscan's answer once a key has used its calls for the day (later calls are still counted)."""
    return notok(f"Max daily rate limit reached. {calls} (100%) of {cap} day/limit")


def answer(chain: SimChain, head: int, query: Mapping[str, str], *, index_lag: int = 0,
           served: Served | None = None) -> dict:
    """The body for one explorer call (module/action dispatch); account and logs rows stop `index_lag`
    blocks short of `head` (see quirks)."""
    module, action = query.get("module", ""), query.get("action", "")
    served = Served() if served is None else served
    try:
        if module == "account" and action == "tokentx":
            return tokentx(chain, head, query, index_lag, served)
        if module == "logs" and action == "getLogs":
            return get_logs(chain, head, query, index_lag, served)
        if module == "proxy" and action in ("eth_blockNumber", "eth_getBlockByNumber"):
            return proxy(chain, head, action, query)
    except BadParameter as exc:
        return notok(str(exc))
    if module not in ("account", "logs", "proxy"):
        return notok("Error! Missing Or invalid Module name")
    return notok("Error! Missing Or invalid Action name")


# --- parameters ---------------------------------------------------------------------------------


def _block_param(query: Mapping[str, str], name: str, default: int, head: int) -> int:
    raw = query.get(name, "").strip().lower()
    if not raw:
        return default
    if raw == "latest":
        return head
    try:
        return int(raw, 16) if raw.startswith("0x") else int(raw)
    except ValueError:
        raise BadParameter(f"Error! Invalid {name}") from None


def _paging(query: Mapping[str, str], default_offset: int) -> tuple[int, int]:
    try:
        page = int(query.get("page") or 1)
        offset = int(query.get("offset") or default_offset)
    except ValueError:
        raise BadParameter("Error! Invalid page or offset") from None
    if page < 1 or offset < 1:
        raise BadParameter("Error! Invalid page or offset")
    return page, offset


def _address_param(query: Mapping[str, str], name: str) -> str | None:
    raw = query.get(name, "").strip().lower()
    if not raw:
        return None
    if len(raw) != 42 or not raw.startswith("0x"):
        raise BadParameter("Error! Invalid address format")
    return raw


# --- account/tokentx ----------------------------------------------------------------------------


def tokentx(chain: SimChain, head: int, query: Mapping[str, str], index_lag: int, served: Served) -> dict:
    contract = _address_param(query, "contractaddress")
    address = _address_param(query, "address")
    if contract is None and address is None:
        raise BadParameter("Error! Invalid address format")
    first = _block_param(query, "startblock", 0, head)
    last = _block_param(query, "endblock", _OPEN_END, head)
    sort = query.get("sort", "asc").lower()
    if sort not in ("asc", "desc"):
        raise BadParameter("Error! Invalid sort order")
    page, offset = _paging(query, RESULT_WINDOW)
    if page * offset > RESULT_WINDOW:
        return dict(WINDOW_TOO_LARGE)
    indexed = head - index_lag
    matches = chain.token_transfers(first, min(last, indexed), head, contract=contract, address=address,
                                    descending=sort == "desc")
    picked = list(islice(matches, (page - 1) * offset, page * offset))
    quirks.tally(chain, picked, served, names=True)
    if index_lag > 0:
        served.withheld += sum(1 for _ in chain.token_transfers(max(first, indexed + 1), last, head,
                                                                contract=contract, address=address))
    rows = [tokentx_row(chain, head, block, log) for block, log in picked]
    return {"status": "1", "message": "OK", "result": rows} if rows else dict(NO_TRANSACTIONS)


def tokentx_row(chain: SimChain, head: int, block: Block, log: Log) -> dict:
    tx = block.txs[log.tx]
    token = chain.token_by_address[log.address]
    method_id, function_name = METHODS[tx.method]
    row = {
        "blockNumber": str(block.number),
        "timeStamp": str(block.timestamp),
        "hash": tx.hash,
        "nonce": str(tx.nonce),
        "blockHash": block.hash,
        "from": log.from_,
        "contractAddress": log.address,
        "to": log.to,
        "value": str(log.value),
        "tokenName": quirks.nul_padded(token.name) if quirks.has_nul_name(chain, block, log) else token.name,
        "tokenSymbol": token.symbol,
        "tokenDecimal": str(token.decimals),
        "transactionIndex": str(tx.index),
        "gas": str(tx.gas),
        "gasPrice": str(tx.gas_price),
        "gasUsed": str(tx.gas_used),
        "cumulativeGasUsed": str(tx.cumulative_gas_used),
        "input": "deprecated",
        "methodId": method_id,
        "functionName": function_name,
        "confirmations": str(head - block.number + 1),
    }
    if log.kind == POISON:
        row["logIndex"] = quirks.POISON_LOG_INDEX_DEC[quirks.poison_variant(chain, block.number)]
    return row


# --- logs/getLogs -------------------------------------------------------------------------------


def get_logs(chain: SimChain, head: int, query: Mapping[str, str], index_lag: int, served: Served) -> dict:
    address = _address_param(query, "address")
    topics = [query.get(f"topic{i}", "").strip().lower() or None for i in range(4)]
    if address is None and not any(topics):
        raise BadParameter("Error! Missing address or topic")
    first = _block_param(query, "fromBlock", 0, head)
    last = _block_param(query, "toBlock", _OPEN_END, head)
    page, offset = _paging(query, LOGS_MAX_RECORDS)
    if page * offset > RESULT_WINDOW:
        return dict(WINDOW_TOO_LARGE)
    offset = min(offset, LOGS_MAX_RECORDS)
    indexed = head - index_lag
    matches = _matching_logs(chain, first, min(last, indexed), head, address, topics)
    picked = list(islice(matches, (page - 1) * offset, page * offset))
    quirks.tally(chain, picked, served, names=False)
    if index_lag > 0:
        served.withheld += sum(1 for _ in _matching_logs(chain, max(first, indexed + 1), last, head, address, topics))
    rows = [log_row(chain, block, log) for block, log in picked]
    return {"status": "1", "message": "OK", "result": rows} if rows else dict(NO_RECORDS)


def _matching_logs(chain: SimChain, first: int, last: int, head: int, address: str | None,
                   topics: list[str | None]) -> Iterator[tuple[Block, Log]]:
    if address is not None and address not in chain.token_by_address:
        return
    kinds = _kinds_for_topic0(topics[0])
    for block in chain.blocks(first, last, head):
        for log in block.logs:
            if log.kind in kinds and (address is None or log.address == address) and (
                    not any(topics[1:]) or _topics_match(chain.topics(log), topics)):
                yield block, log


_KINDS_BY_TOPIC0 = {TRANSFER_TOPIC: frozenset((ERC20, ERC721, POISON)), APPROVAL_TOPIC: frozenset((OTHER,))}


def _kinds_for_topic0(topic0: str | None) -> frozenset[int]:
    if topic0 is None:
        return frozenset((ERC20, ERC721, OTHER, POISON))
    return _KINDS_BY_TOPIC0.get(topic0, frozenset())


def _topics_match(actual: list[str], wanted: list[str | None]) -> bool:
    return all(want is None or (i < len(actual) and actual[i] == want) for i, want in enumerate(wanted))


def _quirk_hex(number: int) -> str:
    """Etherscan's getLogs writes zero as a bare "0x"."""
    return hex(number) if number else "0x"


def log_row(chain: SimChain, block: Block, log: Log) -> dict:
    tx = block.txs[log.tx]
    return {
        "address": log.address,
        "topics": chain.topics(log),
        "data": chain.data(log),
        "blockNumber": hex(block.number),
        "blockHash": block.hash,
        "timeStamp": hex(block.timestamp),
        "gasPrice": _quirk_hex(tx.gas_price),
        "gasUsed": _quirk_hex(tx.gas_used),
        "logIndex": quirks.log_index_hex(chain, block, log) if log.kind == POISON else _quirk_hex(log.log_index),
        "transactionHash": tx.hash,
        "transactionIndex": _quirk_hex(tx.index),
    }


# --- module=proxy -------------------------------------------------------------------------------


def proxy(chain: SimChain, head: int, action: str, query: Mapping[str, str]) -> dict:
    """JSON-RPC-shaped bodies, as Etherscan's proxy module answers."""
    if action == "eth_blockNumber":
        return {"jsonrpc": "2.0", "id": 83, "result": hex(head)}
    tag = query.get("tag", "").strip().lower()
    if tag == "latest":
        number = head
    elif tag.startswith("0x") and len(tag) > 2:
        try:
            number = int(tag, 16)
        except ValueError:
            number = -1
        if number < 0:
            return _proxy_error("invalid argument 0: hex string of odd length or invalid")
    else:
        return _proxy_error("invalid argument 0: hex string without 0x prefix")
    full = query.get("boolean", "false").strip().lower() == "true"
    block = chain.block(number, head)
    return {"jsonrpc": "2.0", "id": 1, "result": None if block is None else block_json(chain, block, full)}


def _proxy_error(message: str) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": message}}
