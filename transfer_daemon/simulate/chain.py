"""Deterministic synthetic chains: every block is a pure function of (seed, chain, height, fork generation).

No clock and no I/O here: callers pass `head`. Nothing is materialized for the whole history; blocks
are generated on demand from a per-block PRNG and kept in an LRU cache, so a history of millions of
transfers costs only what is read.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

from transfer_daemon.model import TRANSFER_TOPIC, UINT256_MAX, Transfer
from transfer_daemon.simulate.settings import ChainSpec, SimConfig

#: keccak256("Approval(address,address,uint256)"): the unrelated event mixed into the logs.
APPROVAL_TOPIC = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
#: Chains "started" a few years ago, so block numbers and timestamps look real.
GENESIS_BASE = 1_600_000_000
METHODS = (
    ("0xa9059cbb", "transfer(address _to, uint256 _value)"),
    ("0x23b872dd", "transferFrom(address _from, address _to, uint256 _value)"),
    ("0x38ed1739", "swapExactTokensForTokens(uint256 amountIn, uint256 amountOutMin, address[] path, "
                   "address to, uint256 deadline)"),
)
#: Log kinds. POISON is an ERC-20-shaped Transfer that the upstream serves with an out-of-range
#: `logIndex` (see simulate/quirks.py): served on every row route, never in the truth.
ERC20, ERC721, OTHER, POISON = 0, 1, 2, 3
TRANSFER_ROWS = frozenset((ERC20, POISON))  # what account/tokentx serves
_HOLDERS = 100
_TX_SIZES = (1, 1, 1, 1, 2, 2, 3)  # transfers per transaction


class Token(NamedTuple):
    address: str
    name: str
    symbol: str
    decimals: int


class Tx(NamedTuple):
    index: int  # transactionIndex in the block
    hash: str
    sender: str
    nonce: int
    gas: int
    gas_price: int
    gas_used: int
    cumulative_gas_used: int
    method: int  # index into METHODS


class Log(NamedTuple):
    log_index: int
    tx: int  # position in Block.txs
    kind: int  # ERC20 | ERC721 | OTHER | POISON
    address: str
    from_: str  # topic1
    to: str  # topic2
    value: int  # data for ERC20/Approval; topic3 (token id) for ERC721


class Block(NamedTuple):
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    txs: tuple[Tx, ...]
    logs: tuple[Log, ...]


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


class SimChain:
    """One synthetic chain. `head` is always handed in; see `head_at` for the clock mapping."""

    def __init__(self, spec: ChainSpec, config: SimConfig, start_time: float) -> None:
        self.spec = spec
        self.id = spec.chain_id
        self.seed = config.seed
        self.block_time_ms = max(1, round(config.block_time * 1000))
        self.genesis_time = GENESIS_BASE - int.from_bytes(_digest(self.seed, self.id, "genesis")[:4]) % 31_536_000
        self.start_head = self.head_at(start_time)
        history_blocks = int(config.history_days * 86_400_000) // self.block_time_ms
        self.first_block = max(1, self.start_head - history_blocks)
        self.reorg_every = config.reorg_every
        self.reorg_depth = config.reorg_depth
        self.poison_every = config.poison_every
        self.poison_phase = int.from_bytes(_digest(self.seed, self.id, "poison")[:4]) % max(1, config.poison_every)
        self.tokens = self._make_tokens()
        self.token_by_address = {token.address: token for token in self.tokens}
        self.holders = tuple("0x" + _digest(self.seed, self.id, "holder", i)[:20].hex() for i in range(_HOLDERS))
        self.holder_set = frozenset(self.holders)
        self._rate = config.transfers_per_block
        self._exp_neg_rate = math.exp(-self._rate)
        self._cached_block = lru_cache(maxsize=config.block_cache_size)(self._generate)

    def _make_tokens(self) -> tuple[Token, ...]:
        count = 1 + _digest(self.seed, self.id, "tokens")[0] % 3
        return tuple(
            Token("0x" + _digest(self.seed, self.id, "token", i)[:20].hex(), f"Sim Token {self.id}.{i}",
                  f"SIM{i}", (18, 6, 8)[i])
            for i in range(count)
        )

    # --- clock and forks ----------------------------------------------------------------------

    def head_at(self, now: float) -> int:
        return max(0, int((now - self.genesis_time) * 1000) // self.block_time_ms)

    def timestamp(self, number: int) -> int:
        return self.genesis_time + number * self.block_time_ms // 1000

    def fork_generation(self, number: int, head: int) -> int:
        """How many reorgs (event k at head start_head + k*every, rewriting its last `depth` blocks) hit `number`."""
        every = self.reorg_every
        if every <= 0 or number > head:
            return 0
        rel = number - self.start_head
        first_event = max(1, -(-rel // every))
        last_event = min((rel + self.reorg_depth - 1) // every, (head - self.start_head) // every)
        return max(0, last_event - first_event + 1)

    def reorgs(self, head: int) -> int:
        if self.reorg_every <= 0 or head <= self.start_head:
            return 0
        return (head - self.start_head) // self.reorg_every

    def poison_ordinal(self, number: int) -> int | None:
        """k when `number` is the k-th poisoned block (blocks poison_phase + k * poison_every), else None."""
        if self.poison_every <= 0 or number < self.first_block:
            return None
        ordinal, rest = divmod(number - self.poison_phase, self.poison_every)
        return ordinal if rest == 0 else None

    def block_hash(self, number: int, generation: int) -> str:
        return "0x" + _digest(self.seed, self.id, number, generation).hex()

    # --- blocks --------------------------------------------------------------------------------

    def block(self, number: int, head: int) -> Block | None:
        if number < 0 or number > head:
            return None
        return self._cached_block(number, self.fork_generation(number, head),
                                  self.fork_generation(number - 1, head))

    def blocks(self, first: int, last: int, head: int, descending: bool = False) -> Iterator[Block]:
        """Blocks in [first, last] that exist at `head`, from `first_block` on (older blocks hold no logs)."""
        low, high = max(first, self.first_block), min(last, head)
        heights = range(high, low - 1, -1) if descending else range(low, high + 1)
        for number in heights:
            yield self.block(number, head)

    def _generate(self, number: int, generation: int, parent_generation: int) -> Block:
        block_hash = self.block_hash(number, generation)
        parent_hash = self.block_hash(number - 1, parent_generation)
        if number < self.first_block:
            return Block(number, block_hash, parent_hash, self.timestamp(number), (), ())
        rng = _Rng(int(block_hash[2:34], 16))
        txs: list[Tx] = []
        logs: list[Log] = []
        remaining = self._transfer_count(rng)
        tx_index = rng.below(4)
        cumulative = 21_000 + rng.below(379_000)
        while remaining > 0:
            size = min(remaining, _TX_SIZES[rng.below(len(_TX_SIZES))])
            remaining -= size
            cumulative = self._add_transfer_tx(rng, txs, logs, tx_index, cumulative, size)
            tx_index += 1 + rng.below(3)
        if rng.random() < 0.08:
            self._add_lookalike_tx(rng, txs, logs, tx_index, cumulative)
        if self.poison_ordinal(number) is not None:
            # A PRNG of its own, so switching poison on changes nothing else in the block.
            self._add_poison_tx(_Rng(int(block_hash[34:], 16)), txs, logs)
        return Block(number, block_hash, parent_hash, self.timestamp(number), tuple(txs), tuple(logs))

    def _transfer_count(self, rng: _Rng) -> int:
        """Poisson(rate), deterministic from the block's PRNG (normal approximation when large)."""
        if self._rate > 30:
            return max(0, round(rng.gauss(self._rate, math.sqrt(self._rate))))
        count, product = 0, rng.random()
        while product > self._exp_neg_rate:
            count += 1
            product *= rng.random()
        return count

    def _new_tx(self, rng: _Rng, index: int, cumulative: int, method: int) -> Tx:
        gas_used = 30_000 + rng.below(150_000)
        return Tx(index, f"0x{rng.getrandbits(256):064x}", self.holders[rng.below(_HOLDERS)],
                  rng.below(10_000), gas_used * 3 // 2, 1_000_000_000 + rng.below(60_000_000_000),
                  gas_used, cumulative + gas_used, method)

    def _add_transfer_tx(self, rng: _Rng, txs: list[Tx], logs: list[Log], index: int,
                         cumulative: int, size: int) -> int:
        """A transaction with `size` ERC-20 transfers: mixed tokens, identical pairs, self-transfers."""
        tx = self._new_tx(rng, index, cumulative, rng.below(3) if size > 1 else rng.below(2))
        position = len(txs)
        txs.append(tx)
        previous: Log | None = None
        for _ in range(size):
            if previous is not None and rng.random() < 0.25:
                address, sender, receiver, value = previous.address, previous.from_, previous.to, previous.value
            else:
                keep_token = previous is not None and rng.random() < 0.6
                address = previous.address if keep_token else self.tokens[rng.below(len(self.tokens))].address
                sender = tx.sender if rng.random() < 0.6 else self.holders[rng.below(_HOLDERS)]
                receiver = sender if rng.random() < 0.03 else self.holders[rng.below(_HOLDERS)]
                value = _value(rng)
            if rng.random() < 0.1:
                spender = self.holders[rng.below(_HOLDERS)]
                logs.append(Log(len(logs), position, OTHER, address, sender, spender, _value(rng)))
            previous = Log(len(logs), position, ERC20, address, sender, receiver, value)
            logs.append(previous)
        return tx.cumulative_gas_used

    def _add_lookalike_tx(self, rng: _Rng, txs: list[Tx], logs: list[Log], index: int,
                          cumulative: int) -> None:
        """An ERC-721-shaped Transfer (4 topics) from a token address: clients must skip it."""
        tx = self._new_tx(rng, index, cumulative, 1)
        txs.append(tx)
        address = self.tokens[rng.below(len(self.tokens))].address
        receiver = self.holders[rng.below(_HOLDERS)]
        logs.append(Log(len(logs), len(txs) - 1, ERC721, address, tx.sender, receiver, rng.below(10_000)))

    def _add_poison_tx(self, rng: _Rng, txs: list[Tx], logs: list[Log]) -> None:
        """One more transfer transaction, after everything else in the block: its log is the last one, so
        clients that key tokentx rows by their ordinal within (block, contract) see no sibling shifted."""
        index = txs[-1].index + 1 + rng.below(3) if txs else rng.below(4)
        cumulative = txs[-1].cumulative_gas_used if txs else 21_000 + rng.below(379_000)
        tx = self._new_tx(rng, index, cumulative, rng.below(2))
        txs.append(tx)
        address = self.tokens[rng.below(len(self.tokens))].address
        logs.append(Log(len(logs), len(txs) - 1, POISON, address, tx.sender, self.holders[rng.below(_HOLDERS)],
                        _value(rng)))

    # --- transfers -----------------------------------------------------------------------------

    def token_transfers(self, first: int, last: int, head: int, *, contract: str | None = None,
                        address: str | None = None, descending: bool = False) -> Iterator[tuple[Block, Log]]:
        """ERC-20 transfer logs in [first, last] (tokentx rows, poisoned ones included), optionally one token
        and/or one party."""
        if (contract is not None and contract not in self.token_by_address) or (
                address is not None and address not in self.holder_set):
            return
        for block in self.blocks(first, last, head, descending):
            for log in reversed(block.logs) if descending else block.logs:
                if log.kind in TRANSFER_ROWS and (contract is None or log.address == contract) and (
                        address is None or address == log.from_ or address == log.to):
                    yield block, log

    def truth(self, first: int, last: int, head: int) -> Iterator[Transfer]:
        """The canonical transfers, keyed the way the product keys this chain's kind (see model.Transfer).

        Poisoned rows are not transfers a correct client stores, so they are never here."""
        by_ordinal = self.spec.kind == "etherscan"
        for block in self.blocks(first, last, head):
            seen: dict[str, int] = {}
            for log in block.logs:
                if log.kind != ERC20:
                    continue
                tx = block.txs[log.tx]
                log_index = log.log_index
                if by_ordinal:
                    log_index = seen.get(log.address, 0)
                    seen[log.address] = log_index + 1
                yield Transfer(
                    self.id, block.number, block.timestamp, bytes.fromhex(tx.hash[2:]), log_index,
                    bytes.fromhex(log.from_[2:]), bytes.fromhex(log.to[2:]), log.value,
                    bytes.fromhex(log.address[2:]), bytes.fromhex(block.hash[2:]), tx.gas_used, tx.gas_price,
                    METHODS[tx.method][0],
                )

    def topics(self, log: Log) -> list[str]:
        topic0 = APPROVAL_TOPIC if log.kind == OTHER else TRANSFER_TOPIC
        topics = [topic0, _address_topic(log.from_), _address_topic(log.to)]
        if log.kind == ERC721:
            topics.append(f"0x{log.value:064x}")
        return topics

    @staticmethod
    def data(log: Log) -> str:
        return "0x" if log.kind == ERC721 else f"0x{log.value:064x}"


class _Rng(random.Random):
    def below(self, bound: int) -> int:
        """Like randrange(bound), several times faster (bounds here stay far below 2**53)."""
        return int(self.random() * bound)


def _address_topic(address: str) -> str:
    return "0x000000000000000000000000" + address[2:]


def _value(rng: _Rng) -> int:
    """Mostly ordinary amounts over many magnitudes; 0 and 2**256-1 now and then."""
    draw = rng.random()
    if draw < 0.02:
        return 0
    if draw < 0.03:
        return UINT256_MAX
    return 1 + rng.getrandbits(80) % (10 ** (1 + rng.below(24)) - 1)
