"""JSON-RPC client, kind `rpc_logs` (Cronos and any EVM chain): `eth_getLogs` in block windows.

One `eth_getLogs` per window covers every configured contract (`address` is a list) with
`topics = [Transfer]`. Providers refuse wide windows in their own words (see `classify.py`): the
window is cut to the range the provider suggests, else to the limit it states, else halved, and
grows back by half again after each answered window — never past a limit a provider stated.
Block hash and timestamp come from the log's `blockTimestamp` when the node sends it, else from
`eth_getBlockByNumber` (JSON-RPC batches, cached by number and checked against the log's block
hash). A block whose header the node answers `null` (behind a load balancer, one node may serve the
logs of a block another has not seen yet) ends the read before it: it is not covered, and read again
next time. Logs with `removed: true` are dropped. No window ever reaches past the head.

When `api_key_env` is set, the key is the last path segment of the URL (Infura `/v3/KEY`,
Alchemy `/v2/KEY`, Ankr `/eth/KEY`), read at call time and scrubbed from every message.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import requests

from transfer_daemon.config import ChainConfig
from transfer_daemon.errors import InvalidApiKey, RangeTooWide, RateLimited, UpstreamError
from transfer_daemon.model import TRANSFER_TOPIC
from transfer_daemon.upstream import FetchResult, classify
from transfer_daemon.upstream.http import HttpClient, check_status, retry_after_seconds, upstream_error
from transfer_daemon.upstream.normalize import Normalized, normalize_logs

log = logging.getLogger(__name__)
BATCH_SIZE = 50  # blocks per eth_getBlockByNumber batch: under every public provider's batch cap
BLOCK_CACHE_SIZE = 20_000
_TRANSIENT = ("header not found", "unknown block", "internal error", "try again", "timeout")


class BeyondHead(UpstreamError):
    """The node's head is behind the window asked for: re-read the head and clip."""


class RpcSource:
    """`UpstreamSource` over a JSON-RPC endpoint."""

    def __init__(self, chain: ChainConfig, http: HttpClient) -> None:
        self.chain = chain
        self.http = http
        self.window = chain.log_window_blocks
        self.ceiling = chain.log_window_blocks  # lowered for good when a provider states its limit
        self._blocks: OrderedDict[int, tuple[bytes, int]] = OrderedDict()
        self._blocks_lock = threading.Lock()  # the API calls one source from several threads
        self._ids = itertools.count(1)
        self._head: int | None = None

    @property
    def stats(self):
        return self.http.stats

    # --- calls ---------------------------------------------------------------------------------

    def _url(self) -> str:
        key = self.http.api_key()
        return f"{self.chain.rpc_url.rstrip('/')}/{key}" if key else self.chain.rpc_url

    def _interpret(self, response: requests.Response) -> Any:
        payload, problem = classify.parse_body(response.content)
        if problem:
            check_status(response)
            raise upstream_error("malformed", problem, retryable=True)
        items = payload if isinstance(payload, list) else [payload]
        for item in items:
            if isinstance(item, dict) and item.get("error") is not None:
                raise self._refusal(item["error"], response)
        check_status(response)
        if response.status_code != 200:
            raise upstream_error("http_4xx", f"HTTP {response.status_code}", retryable=False)
        if not all(isinstance(item, dict) and "result" in item for item in items):
            raise upstream_error("malformed", "JSON-RPC answer without result", retryable=True)
        return payload

    def _refusal(self, error: Any, response: requests.Response) -> UpstreamError:
        refusal = classify.classify_rpc_error(error if isinstance(error, dict) else {"message": str(error)})
        message = refusal.message[:300]
        if refusal.kind == classify.RANGE:
            return upstream_error("range_refused", message, retryable=False, kind=RangeTooWide,
                        suggested=refusal.suggested, limit=refusal.limit)
        if refusal.kind == classify.BEYOND_HEAD:
            return upstream_error("beyond_head", message, retryable=False, kind=BeyondHead)
        if refusal.kind == classify.RATE_LIMITED:
            return upstream_error("rate_limited", message, retryable=True, kind=RateLimited,
                        retry_after=retry_after_seconds(response.headers.get("Retry-After")))
        if refusal.kind == classify.INVALID_KEY:
            return upstream_error("invalid_key", message, retryable=False, kind=InvalidApiKey)
        transient = response.status_code >= 500 or any(m in message.lower() for m in _TRANSIENT)
        return upstream_error("error", message, retryable=transient)

    def _call(self, method: str, params: list, what: str) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        return self.http.call("POST", self._url(), self._interpret, json=body, what=what)["result"]

    def _batch(self, calls: list[tuple[str, list]], what: str) -> list[Any]:
        body = [{"jsonrpc": "2.0", "id": next(self._ids), "method": m, "params": p} for m, p in calls]
        answer = self.http.call("POST", self._url(), self._interpret, json=body, what=what)
        if not isinstance(answer, list):
            raise upstream_error("malformed", "batch answered with a single object", retryable=False)
        by_id = {item.get("id"): item.get("result") for item in answer}
        if any(request["id"] not in by_id for request in body):
            raise upstream_error("malformed", "batch answer is missing ids", retryable=False)
        return [by_id[request["id"]] for request in body]

    # --- UpstreamSource --------------------------------------------------------------------------

    def head_block(self) -> int:
        result = self._call("eth_blockNumber", [], "eth_blockNumber")
        try:
            self._head = int(result, 16)
        except (TypeError, ValueError):
            raise upstream_error("malformed", f"eth_blockNumber answered {str(result)[:40]!r}",
                                 retryable=False) from None
        return self._head

    def block_hashes(self, blocks: Sequence[int]) -> dict[int, bytes]:
        """Fresh from the node (reorg checks must not trust a cache); refreshes the cache too."""
        found, _ = self._fetch_blocks_info(list(blocks))
        return {number: info[0] for number, info in found.items()}

    def fetch_blocks(self, from_block: int, to_block: int, *, max_calls: int | None = None) -> FetchResult:
        head_calls = 0  # not charged to max_calls, so a budget of 1 still reads a window
        if self._head is None or to_block > self._head:
            self.head_block()
            head_calls += 1
        last = min(to_block, self._head)
        out, start, calls = Normalized(), from_block, 0
        while start <= last and (max_calls is None or calls < max_calls):
            end = min(last, start + self.window - 1)
            calls += 1
            try:
                logs = self._get_logs(start, end)
            except RangeTooWide as refusal:
                self._narrow(refusal, start, end)
                continue
            except BeyondHead:
                # Load-balanced nodes may disagree on the head: always shrink, so this ends.
                last = min(last, self.head_block(), end - 1)
                head_calls += 1
                continue
            page, block_calls, headless = self._normalize(logs)
            calls += block_calls
            out.extend(page)
            if headless is not None:  # covered up to the block before it; a later read tries again
                start = headless
                break
            start = end + 1
            self.window = min(self.ceiling, self.window + max(1, self.window // 2))
        out.transfers.sort(key=lambda t: (t.block_number, t.log_index))
        return FetchResult(out.transfers, out.quarantined, out.skipped, start - 1, calls + head_calls,
                           out.skipped_reasons)

    # --- windows and blocks ------------------------------------------------------------------------

    def _get_logs(self, start: int, end: int) -> list:
        query = {"fromBlock": hex(start), "toBlock": hex(end), "address": list(self.chain.contracts),
                 "topics": [TRANSFER_TOPIC]}
        logs = self._call("eth_getLogs", [query], f"eth_getLogs {start}-{end}")
        if not isinstance(logs, list):
            raise upstream_error("malformed", f"eth_getLogs answered a {type(logs).__name__}", retryable=False)
        return logs

    def _narrow(self, refusal: RangeTooWide, start: int, end: int) -> None:
        width = end - start + 1
        if width == 1:
            raise UpstreamError(f"eth_getLogs refused a single block {start}: {refusal.detail}",
                                chain=self.chain.name, retryable=False) from refusal
        if refusal.suggested and refusal.suggested[1] >= refusal.suggested[0]:
            wanted = refusal.suggested[1] - refusal.suggested[0] + 1
        elif refusal.limit:
            wanted = refusal.limit
            self.ceiling = min(self.ceiling, refusal.limit)
        else:
            wanted = width // 2
        if wanted >= width:  # the stated limit does not match the refusal: do not creep down by one
            wanted = width // 2
        self.window = max(1, wanted)
        log.warning("narrowed window chain=%s: eth_getLogs %d-%d refused (%s), now %d blocks",
                    self.chain.name, start, end, refusal.detail[:120], self.window)

    def _normalize(self, logs: list) -> tuple[Normalized, int, int | None]:
        """Logs -> Normalized, fetching the blocks whose timestamp the logs lack. Returns the calls
        made and the first block whose header the node answered null (a load-balanced node that
        has not seen it yet): its logs and those after it are left for a later read, never
        quarantined for a timestamp the node did not give."""
        wanted = set()
        for entry in logs:
            if isinstance(entry, dict) and not entry.get("blockTimestamp") and not entry.get("timeStamp") \
                    and not entry.get("removed"):
                number = _quantity(entry.get("blockNumber"))
                cached = self._blocks.get(number) if number is not None else None
                if number is not None and (cached is None or _hash_of(entry) not in (None, cached[0])):
                    wanted.add(number)
        fetched, calls = self._fetch_blocks_info(sorted(wanted))
        headless = min(wanted - fetched.keys(), default=None)
        if headless is not None:
            logs = [entry for entry in logs if not isinstance(entry, dict)
                    or (_quantity(entry.get("blockNumber")) or 0) < headless]
            log.debug("waiting chain=%s block=%d header not served yet", self.chain.name, headless)
        for entry in logs:
            number = _quantity(entry.get("blockNumber")) if isinstance(entry, dict) else None
            if number in fetched and _hash_of(entry) not in (None, fetched[number][0]):
                raise upstream_error("reorg", f"block {number} changed while it was read (reorg in progress)",
                           retryable=False, chain=self.chain.name)
        numbers = {_quantity(entry.get("blockNumber")) for entry in logs if isinstance(entry, dict)}
        with self._blocks_lock:
            blocks = {number: self._blocks[number] for number in numbers if number in self._blocks}
        return normalize_logs(self.chain.id, logs, blocks), calls, headless

    def _fetch_blocks_info(self, numbers: list[int]) -> tuple[dict[int, tuple[bytes, int]], int]:
        found: dict[int, tuple[bytes, int]] = {}
        calls = 0
        for i in range(0, len(numbers), BATCH_SIZE):
            chunk = numbers[i:i + BATCH_SIZE]
            results = self._batch([("eth_getBlockByNumber", [hex(n), False]) for n in chunk],
                                  f"eth_getBlockByNumber x{len(chunk)} from {chunk[0]}")
            calls += 1
            for number, block in zip(chunk, results, strict=True):
                info = _block_info(block)
                if info is not None:
                    found[number] = info
                    self._remember(number, info)
        return found, calls

    def _remember(self, number: int, info: tuple[bytes, int]) -> None:
        with self._blocks_lock:
            self._blocks[number] = info
            self._blocks.move_to_end(number)
            while len(self._blocks) > BLOCK_CACHE_SIZE:
                self._blocks.popitem(last=False)


def _quantity(value: Any) -> int | None:
    try:
        return int(value, 16) if isinstance(value, str) and value.startswith("0x") else None
    except ValueError:
        return None


def _hash_of(entry: dict, key: str = "blockHash") -> bytes | None:
    value = entry.get(key)
    try:
        return bytes.fromhex(value[2:]) if isinstance(value, str) and len(value) == 66 else None
    except ValueError:
        return None


def _block_info(block: Any) -> tuple[bytes, int] | None:
    """An eth_getBlockByNumber result -> (hash, timestamp); None for a block the node lacks."""
    if not isinstance(block, dict):
        return None
    block_hash, stamp = _hash_of(block, "hash"), _quantity(block.get("timestamp"))
    return None if block_hash is None or stamp is None else (block_hash, stamp)
