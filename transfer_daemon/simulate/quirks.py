"""Quirks of real upstreams, each off by default, each a `SimConfig` knob and a `simulate` option.

`index_lag_blocks = N` (`--index-lag N`). The explorer's account index trails its own node, as
Etherscan's and Blockscout's do for a few seconds after a block: on chains of the explorer kinds,
`account/tokentx` and `logs/getLogs` leave out every row of the newest N blocks — they answer as if
the head were `head - N` — while `module=proxy` (`eth_blockNumber`, `eth_getBlockByNumber`) already
reports those blocks. A row of block b appears once `eth_blockNumber` reports b + N. Rows that are
served are the blocks as of the real head (after any reorg), and `confirmations` counts from it.
JSON-RPC routes never lag. `/_sim/transfers` stays the whole truth up to the real head.

`null_headers_blocks = N` (`--null-headers N`). On `rpc_logs` chains the node behind the JSON-RPC
route answers `eth_getBlockByNumber` with `{"jsonrpc": "2.0", "id": …, "result": null}` for a block
within N of the head (a load-balanced node that has not seen it yet), while `eth_blockNumber` and
`eth_getLogs` already return it; the header appears once the head is N blocks beyond it. A tag
(`latest`, `safe`, …) names that node's own newest block, `head - N`. The explorer's proxy module
never does this.

`poison_every = N` (`--poison-every N`). The k-th poisoned block is block `poison_phase + k * N`
(`poison_phase` drawn from the seed, from the chain's first block on). Each one holds, besides its
normal content, one more transaction (listed by eth_getBlockByNumber like any other) with one ERC-20
`Transfer` — the block's last log — that every row route serves with an out-of-range `logIndex`,
by k % 2:

    route                              k even           k odd
    account/tokentx (a last field      "4294967296"     "-1"
      `logIndex`, which the other
      rows of the etherscan kinds lack)
    logs/getLogs, eth_getLogs          "0x100000000"    "0xffffffffffffffff"  (-1 as uint64)

On tokentx, the poisoned row of an odd k also has a `tokenName` padded with NUL characters to 32
(as a bytes32 name decodes). The poisoned row is never in `/_sim/transfers`; its block's other rows
all are, keyed as without poison (it is the block's last log, so tokentx ordinals do not move).

Separately, and VALID: in every poisoned block the first ERC-20 transfer (lowest log index; none
when the block holds no transfer) is served by tokentx with its `tokenName` NUL-padded to 32
characters; that row is otherwise normal and is in the truth. A client must store it, and must also
be able to keep a raw row holding NUL (Postgres `jsonb` refuses `\\u0000`) when it quarantines.
`GET /_sim/poisoned?chainId=N` lists, per poisoned block, the poisoned row and the valid NUL row's
truth item.

`daily_cap = N` (`--daily-cap N`). Per key (`apikey`, else the client address) and UTC day of the
simulator's clock, the first N explorer calls (any module) that reach the explorer are answered; every
later one gets HTTP 200 `{"status": "0", "message": "NOTOK", "result": "Max daily rate limit reached.
C (100%) of N day/limit"}`, C counting the calls of the day including this one. Calls refused by the
per-second limit or by an injected fault that never reaches the explorer do not count. JSON-RPC has no
cap. `POST /_sim/control` takes `{"daily_cap": N}` and `{"reset_daily_calls": true}`; `advance_blocks`
moves the clock, so also the day (`faults.DailyCap`, `explorer.daily_limited`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from transfer_daemon.simulate.chain import ERC20, POISON, Block, Log, SimChain

#: A poisoned tokentx row's `logIndex`, by k % 2: past a Postgres integer, and negative.
POISON_LOG_INDEX_DEC = ("4294967296", "-1")
#: A poisoned getLogs / eth_getLogs row's `logIndex`, by k % 2: 2**32, and -1 written as a uint64.
POISON_LOG_INDEX_HEX = ("0x100000000", "0xffffffffffffffff")
NUL_NAME_LENGTH = 32


@dataclass(slots=True)
class Served:
    """What one upstream call left out or served because of a quirk (reported at /_sim/stats)."""

    withheld: int = 0  # rows of blocks the explorer index has not reached
    null_headers: int = 0  # existing blocks answered with a null header
    poison_rows: int = 0
    nul_rows: int = 0  # valid rows whose tokenName carries NUL


def poison_variant(chain: SimChain, number: int) -> int:
    """0 or 1 (k % 2) for the k-th poisoned block."""
    ordinal = chain.poison_ordinal(number)
    if ordinal is None:
        raise ValueError(f"block {number} is not poisoned")
    return ordinal % 2


def log_index_hex(chain: SimChain, block: Block, log: Log) -> str:
    return POISON_LOG_INDEX_HEX[poison_variant(chain, block.number)] if log.kind == POISON else hex(log.log_index)


def has_nul_name(chain: SimChain, block: Block, log: Log) -> bool:
    """Whether the tokentx row of `log` carries a NUL-padded tokenName (poisoned or valid)."""
    ordinal = chain.poison_ordinal(block.number)
    if ordinal is None:
        return False
    if log.kind == POISON:
        return ordinal % 2 == 1
    first = next((other for other in block.logs if other.kind == ERC20), None)
    return first is not None and first.log_index == log.log_index


def nul_padded(name: str) -> str:
    return name.ljust(NUL_NAME_LENGTH, "\0")


def tally(chain: SimChain, rows: Iterable[tuple[Block, Log]], served: Served, *, names: bool) -> None:
    """Count the poisoned rows among served `rows`, and (tokentx: `names`) the valid NUL-named ones."""
    if chain.poison_every <= 0:
        return
    for block, log in rows:
        if log.kind == POISON:
            served.poison_rows += 1
        elif names and log.kind == ERC20 and has_nul_name(chain, block, log):
            served.nul_rows += 1


def poisoned_rows(chain: SimChain, first: int, last: int, head: int) -> Iterator[dict]:
    """One entry per poisoned block in [first, last] at `head`: the poisoned row and the valid NUL row."""
    every = chain.poison_every
    if every <= 0:
        return
    low = max(first, chain.first_block)
    for number in range(low + (chain.poison_phase - low) % every, min(last, head) + 1, every):
        block = chain.block(number, head)
        log = block.logs[-1]
        variant = poison_variant(chain, number)
        valid = next(chain.truth(number, number, head), None)
        yield {
            "blockNumber": number, "blockHash": block.hash, "hash": block.txs[log.tx].hash,
            "contractAddress": log.address, "from": log.from_, "to": log.to, "value": str(log.value),
            "tokentxLogIndex": POISON_LOG_INDEX_DEC[variant], "logIndex": POISON_LOG_INDEX_HEX[variant],
            "tokenNameHasNul": variant == 1, "nulTransfer": None if valid is None else valid.to_api(),
        }
