"""Explorer client: kinds `etherscan` (account/tokentx) and `etherscan_logs` (logs/getLogs).

Speaks Etherscan v2 (`/v2/api?chainid=N`), v1-style *scan base URLs (no chainid) and Blockscout's
Etherscan-compatible API. Both kinds take one contract per call, so each contract is its own
call series.

Window walking: every page is asked with `page=1` from a moving start block, so `page × offset`
never reaches the explorer's 10,000-result window however long the range. A full page may end
inside a block: that trailing block's rows are dropped and the next call starts at that block,
so only whole blocks are ever handed on (tokentx keys are ordinals within a block's rows).
A full page holding a single block is read alone, page after page, up to the 10,000 window; a
block with more rows than that cannot be read whole through this API: the rows that can be read
are kept and one `Quarantined` record names the block so the gap is visible as an event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from transfer_daemon.config import ChainConfig
from transfer_daemon.errors import (
    DailyCapReached,
    EndpointRefused,
    InvalidApiKey,
    RateLimited,
    ResultWindowExceeded,
    UpstreamError,
)
from transfer_daemon.model import TRANSFER_TOPIC, Quarantined, Transfer
from transfer_daemon.upstream import FetchResult, classify
from transfer_daemon.upstream.http import HttpClient, check_status, upstream_error
from transfer_daemon.upstream.normalize import Normalized, normalize_logs, normalize_tokentx

log = logging.getLogger(__name__)
RESULT_WINDOW = 10_000
#: endblock of a range open towards the head that still names its startblock
OPEN_END_BLOCK = 9_999_999_999
LOGS_PAGE_MAX = 1000  # logs/getLogs returns at most 1000 records per call on every plan


class QueryTimeout(UpstreamError):
    """'Query Timeout occured. Please select a smaller result dataset': narrow the block window."""


@dataclass
class _Budget:
    limit: int | None
    used: int = 0

    def spent(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    def use(self) -> None:
        self.used += 1


def refusal(kind: str, message: str, retry_after: float | None = None) -> UpstreamError:
    """An explorer verdict other than rows/empty -> the exception the HTTP layer acts on."""
    if kind == classify.RATE_LIMITED:
        return upstream_error("rate_limited", message, retryable=True, kind=RateLimited, retry_after=retry_after)
    if kind == classify.DAILY_LIMIT:
        return upstream_error("daily_cap", message, retryable=False, kind=DailyCapReached)
    if kind == classify.ENDPOINT:
        return upstream_error("endpoint_refused", message, retryable=False, kind=EndpointRefused)
    if kind == classify.INVALID_KEY:
        return upstream_error("invalid_key", message, retryable=False, kind=InvalidApiKey)
    if kind == classify.RESULT_WINDOW:
        return upstream_error("result_window", message, retryable=False, kind=ResultWindowExceeded)
    if kind == classify.QUERY_TIMEOUT:
        return upstream_error("query_timeout", message, retryable=False, kind=QueryTimeout)
    if kind == classify.MALFORMED:
        return upstream_error("malformed", message, retryable=True)
    return upstream_error("error", message, retryable=False)


class ExplorerSource:
    """`UpstreamSource` over an Etherscan-compatible explorer API."""

    def __init__(self, chain: ChainConfig, http: HttpClient, *, address: str | None = None) -> None:
        self.chain = chain
        self.http = http
        self.address = address  # optional tokentx filter: transfers from or to this address only
        self.logs = chain.kind == "etherscan_logs"
        self.offset = min(chain.page_size, LOGS_PAGE_MAX) if self.logs else chain.page_size
        self._contracts = frozenset(bytes.fromhex(a[2:]) for a in chain.contracts)
        self._v2 = "/v2/" in urlsplit(chain.base_url).path + "/"

    @property
    def stats(self):
        return self.http.stats

    # --- calls ---------------------------------------------------------------------------------

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        full = {"chainid": self.chain.id} if self._v2 else {}
        full.update(params)
        key = self.http.api_key()
        if key:
            full["apikey"] = key
        return full

    def _interpret_list(self, response: requests.Response) -> list:
        check_status(response)
        if response.status_code != 200:
            raise upstream_error("http_4xx", f"HTTP {response.status_code}", retryable=False)
        answer = classify.classify_explorer_body(response.content)
        if answer.warning:
            self.http.warn_once(answer.warning)
        if answer.kind in (classify.ROWS, classify.EMPTY):
            return answer.result
        raise refusal(answer.kind, answer.message, answer.retry_after)

    def _interpret_proxy(self, response: requests.Response) -> Any:
        check_status(response)
        payload, problem = classify.parse_body(response.content)
        if problem:
            raise upstream_error("malformed", problem, retryable=True)
        kind, value = classify.classify_proxy(payload)
        if kind == classify.ROWS:
            return value
        raise refusal(kind, str(value), 1.0 if kind == classify.RATE_LIMITED else None)

    def _get(self, params: dict[str, Any], interpret: Callable[[requests.Response], Any], what: str) -> Any:
        return self.http.call("GET", self.chain.base_url, interpret, params=self._params(params), what=what)

    def _page(self, contract: str, lo: int, hi: int | None, page: int, sort: str = "asc", offset: int = 0) -> list:
        offset = offset or self.offset
        if self.logs:
            params = {"module": "logs", "action": "getLogs", "address": contract, "topic0": TRANSFER_TOPIC,
                      "fromBlock": lo, "toBlock": hi, "page": page, "offset": offset}
        else:
            params = {"module": "account", "action": "tokentx", "contractaddress": contract,
                      "startblock": lo, "endblock": hi, "page": page, "offset": offset, "sort": sort}
            if self.address:
                params["address"] = self.address
            if hi is None:
                del params["startblock"], params["endblock"]
        what = f"{params['module']}/{params['action']} {contract} {lo}-{hi} page {page}"
        return self._get(params, self._interpret_list, what)

    def _normalize(self, rows: list) -> Normalized:
        if self.logs:
            return normalize_logs(self.chain.id, rows)
        return normalize_tokentx(self.chain.id, rows, self._contracts)

    def _block_of(self, row: Any) -> int | None:
        try:
            value = row["blockNumber"]
            return int(value, 16) if self.logs else int(value)
        except (KeyError, TypeError, ValueError):
            return None

    # --- UpstreamSource --------------------------------------------------------------------------

    def head_block(self) -> int:
        result = self._get({"module": "proxy", "action": "eth_blockNumber"}, self._interpret_proxy, "eth_blockNumber")
        try:
            return int(result, 16)
        except (TypeError, ValueError):
            raise upstream_error("malformed", f"eth_blockNumber answered {str(result)[:40]!r}",
                                 retryable=False) from None

    def block_hashes(self, blocks: Sequence[int]) -> dict[int, bytes]:
        hashes = {}
        for number in blocks:
            params = {"module": "proxy", "action": "eth_getBlockByNumber", "tag": hex(number), "boolean": "false"}
            block = self._get(params, self._interpret_proxy, f"eth_getBlockByNumber {number}")
            if isinstance(block, dict) and isinstance(block.get("hash"), str) and len(block["hash"]) == 66:
                hashes[number] = bytes.fromhex(block["hash"][2:])
        return hashes

    def fetch_blocks(self, from_block: int, to_block: int, *, max_calls: int | None = None) -> FetchResult:
        contracts = self.chain.contracts
        # Each contract gets its share of the calls, so one busy contract cannot starve the rest.
        share = None if max_calls is None else max(1, max_calls // len(contracts))
        total, covered, calls = Normalized(), to_block, 0
        for contract in contracts:
            budget = _Budget(share)
            out, contract_covered = self._walk(contract, from_block, to_block, budget)
            calls += budget.used
            total.extend(out)
            covered = min(covered, contract_covered)
        transfers = [t for t in total.transfers if t.block_number <= covered]
        # Stable: within a block tokentx rows keep the explorer's order (their ordinals follow it).
        transfers.sort(key=(lambda t: (t.block_number, t.log_index)) if self.logs else (lambda t: t.block_number))
        return FetchResult(transfers, total.quarantined, total.skipped, covered, calls, total.skipped_reasons)

    def whole_block_page(self, contract: str, lo: int, hi: int | None, *,
                         descending: bool) -> tuple[list[Transfer], int | None]:
        """The API's upstream mode: one tokentx call of `offset` rows over blocks [lo, hi] (hi None: to
        the head), newest first when `descending`, cut to whole blocks.

        Returns the transfers and the inclusive bound where the rest of the range starts (descending:
        its new hi, else its new lo): the block the cut left partial, read again by the next call;
        None when this call reached the end of the range.
        """
        end = hi if hi is not None or lo == 0 else OPEN_END_BLOCK
        rows = self._page(contract, lo, end, 1, sort="desc" if descending else "asc")
        if len(rows) < self.offset:
            return self._ascending(rows, descending), None
        cut = self._block_of(rows[-1])
        if cut is None:
            raise upstream_error("malformed", f"tokentx page for blocks {lo}-{hi} ends in a row without a block",
                       retryable=False, chain=self.chain.name)
        keep = [row for row in rows if self._block_of(row) != cut]
        if keep:
            return self._ascending(keep, descending), cut
        # one block fills the page: read it alone, then go on past it
        whole = self._whole_block(contract, cut, self._page(contract, cut, cut, 1), _Budget(None))
        after = cut - 1 if descending else cut + 1
        return whole.transfers, (after if lo <= after and (hi is None or after <= hi) else None)

    def _ascending(self, rows: list, descending: bool) -> list[Transfer]:
        """Rows of whole blocks -> transfers; ordinals count in the upstream's ascending order."""
        if descending:
            rows.reverse()
        return self._normalize(rows).transfers

    # --- window walking ----------------------------------------------------------------------------

    def _walk(self, contract: str, lo: int, hi: int, budget: _Budget) -> tuple[Normalized, int]:
        """Read [lo, hi] for one contract -> (whole blocks read, last block covered)."""
        out, start, span = Normalized(), lo, hi - lo + 1
        while start <= hi:
            if budget.spent():
                return out, start - 1
            end = min(hi, start + span - 1)
            budget.use()
            try:
                rows = self._page(contract, start, end, 1)
            except QueryTimeout:
                if end == start:
                    raise
                span = max(1, (end - start + 1) // 2)
                log.warning("narrowed window chain=%s: query timeout on %s blocks %d-%d, now %d blocks",
                            self.chain.name, contract, start, end, span)
                continue
            span = min(hi - lo + 1, span * 2)
            if len(rows) < self.offset:
                out.extend(self._normalize(rows))
                start = end + 1
                continue
            keep, tail = self._split_tail(rows, start, end)
            if tail > start:
                out.extend(self._normalize(keep))
                start = tail
            else:
                out.extend(self._whole_block(contract, start, rows, budget))
                start += 1
        return out, hi

    def _split_tail(self, rows: list, start: int, end: int) -> tuple[list, int]:
        """A full page -> (rows of the blocks before its last block, that last block)."""
        cut = len(rows)
        tail = None
        while cut > 0:
            block = self._block_of(rows[cut - 1])
            if block is not None and tail is not None and block != tail:
                break
            tail = tail if block is None else block
            cut -= 1
        if tail is None or not start <= tail <= end:
            raise upstream_error("malformed", f"page for blocks {start}-{end} ends at block {tail}", retryable=False,
                       chain=self.chain.name)
        return rows[:cut], tail

    def _whole_block(self, contract: str, block: int, first: list, budget: _Budget) -> Normalized:
        """All rows of one block that fills pages by itself (pages beyond the budget: never half a block)."""
        rows, page, last = list(first), 1, first
        while len(last) == self.offset:
            if (page + 1) * self.offset > RESULT_WINDOW:
                return self._window_capped(contract, block, rows)
            page += 1
            budget.use()
            try:
                last = self._page(contract, block, block, page)
            except ResultWindowExceeded:
                return self._window_capped(contract, block, rows)
            rows.extend(last)
        return self._normalize(rows)

    def _window_capped(self, contract: str, block: int, rows: list) -> Normalized:
        out = self._normalize(rows)
        reason = (f"block {block} holds more than {len(rows)} transfers of {contract}: the explorer's "
                  f"{RESULT_WINDOW}-result window hides the rest (use kind rpc_logs for this chain)")
        log.error("quarantined chain=%s: %s", self.chain.name, reason)
        raw = {"blockNumber": block, "contractAddress": contract, "rowsRead": len(rows)}
        out.quarantined.append(Quarantined(self.chain.id, reason, raw))
        return out
