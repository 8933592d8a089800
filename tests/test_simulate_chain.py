"""The synthetic chain model alone: determinism, content variety, keys, forks, laziness."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from transfer_daemon.model import UINT256_MAX, Transfer
from transfer_daemon.simulate.chain import ERC20, ERC721, OTHER, SimChain
from transfer_daemon.simulate.settings import ChainSpec, SimConfig, parse_chains

START = 1_780_000_000.0


def _chain(kind: str = "etherscan", **overrides) -> SimChain:
    config = SimConfig(chains=(ChainSpec(1, kind),), start_time=START, **overrides)
    return SimChain(config.chains[0], config, START)


def test_same_seed_same_chain_other_seed_other_chain() -> None:
    one, two, other = _chain(), _chain(), _chain(seed=2)
    head = one.start_head
    assert list(one.truth(head - 300, head, head)) == list(two.truth(head - 300, head, head))
    assert one.block(head, head) == two.block(head, head)
    assert one.block(head, head).hash != other.block(head, head).hash
    hashes = [[t.tx_hash for t in chain.truth(head - 50, head, head)] for chain in (one, other)]
    assert hashes[0] != hashes[1]


def test_head_follows_the_clock_and_timestamps_match() -> None:
    chain = _chain(block_time=12)
    head = chain.head_at(START)
    assert chain.head_at(START + 120) == head + 10
    assert chain.timestamp(head) <= START < chain.timestamp(head + 1)
    assert chain.block(head + 1, head) is None
    assert chain.block(head, head).parent_hash == chain.block(head - 1, head).hash


def test_history_starts_history_days_before_start() -> None:
    chain = _chain(history_days=1, block_time=12)
    assert chain.start_head - chain.first_block == 7200
    assert chain.block(chain.first_block - 1, chain.start_head).logs == ()
    assert list(chain.truth(0, chain.first_block - 1, chain.start_head)) == []


def test_blocks_hold_the_awkward_cases_clients_must_handle() -> None:
    chain = _chain(transfers_per_block=3)
    head = chain.start_head
    blocks = list(chain.blocks(head - 3000, head, head))
    logs = [log for block in blocks for log in block.logs]
    kinds = Counter(log.kind for log in logs)
    assert kinds[ERC20] > 5000 and kinds[ERC721] > 50 and kinds[OTHER] > 200
    transfers = [log for log in logs if log.kind == ERC20]
    assert any(log.value == 0 for log in transfers)
    assert any(log.value == UINT256_MAX for log in transfers)
    assert any(log.from_ == log.to for log in transfers)
    pairs = Counter((block.number, log.tx, log.address, log.from_, log.to, log.value)
                    for block in blocks for log in block.logs if log.kind == ERC20)
    assert max(pairs.values()) >= 2, "identical transfers inside one transaction"
    assert all(len(chain.topics(log)) == 4 for log in logs if log.kind == ERC721)
    assert 1 <= len(chain.tokens) <= 3


def test_tokentx_truth_keys_by_ordinal_within_block_and_contract() -> None:
    chain = _chain("etherscan", transfers_per_block=3)
    head = chain.start_head
    truth = list(chain.truth(head - 500, head, head))
    by_key: dict[tuple[int, bytes], list[Transfer]] = {}
    for transfer in truth:
        by_key.setdefault((transfer.block_number, transfer.contract_address), []).append(transfer)
    assert all([t.log_index for t in rows] == list(range(len(rows))) for rows in by_key.values())
    assert any(len({t.tx_hash for t in rows}) > 1 for rows in by_key.values())  # spans transactions
    same = Counter((t.tx_hash, t.from_address, t.to_address, t.value, t.contract_address) for t in truth)
    assert max(same.values()) >= 2  # identical transfers inside one transaction stay two rows
    assert len({(t.block_number, t.log_index, t.contract_address) for t in truth}) == len(truth)


def test_log_kinds_key_by_the_real_log_index() -> None:
    chain = _chain("rpc_logs")
    head = chain.start_head
    for number in range(head - 100, head + 1):
        block = chain.block(number, head)
        expected = [log.log_index for log in block.logs if log.kind == ERC20]
        assert [t.log_index for t in chain.truth(number, number, head)] == expected
        assert [log.log_index for log in block.logs] == list(range(len(block.logs)))


@pytest.mark.parametrize(("every", "depth"), [(10, 3), (4, 6)])
def test_reorgs_rewrite_the_last_blocks_at_each_event(every: int, depth: int) -> None:
    chain = _chain(reorg_every=every, reorg_depth=depth)
    start = chain.start_head
    event_head = start + every
    before = {n: chain.block(n, event_head - 1).hash for n in range(start, event_head)}
    after = {n: chain.block(n, event_head).hash for n in range(start, event_head)}
    rewritten = {n for n in before if before[n] != after[n]}
    assert rewritten == set(range(event_head - depth + 1, event_head)) & set(before)
    assert chain.reorgs(event_head - 1) == 0 and chain.reorgs(event_head) == 1
    assert chain.block(event_head + 1, event_head + 1).parent_hash == chain.block(event_head, event_head + 1).hash
    first_changed = event_head - depth + 1
    old_truth = [t.tx_hash for t in chain.truth(first_changed, event_head - 1, event_head - 1)]
    new_truth = [t.tx_hash for t in chain.truth(first_changed, event_head - 1, event_head)]
    assert old_truth != new_truth


def test_a_million_transfer_history_costs_nothing_until_read() -> None:
    began = time.perf_counter()
    chain = _chain(history_days=365, block_time=12, transfers_per_block=2)
    assert (chain.start_head - chain.first_block) * 2 > 1_000_000
    head = chain.start_head
    assert len(list(chain.truth(head - 100, head, head))) > 50
    assert time.perf_counter() - began < 1.0


def test_unknown_contract_or_address_answers_at_once() -> None:
    chain = _chain(history_days=365)
    head = chain.start_head
    began = time.perf_counter()
    assert list(chain.token_transfers(0, head, head, contract="0x" + "ab" * 20)) == []
    assert list(chain.token_transfers(0, head, head, address="0x" + "ab" * 20)) == []
    assert time.perf_counter() - began < 0.1


def test_parse_chains() -> None:
    assert parse_chains("1:etherscan,25:rpc_logs") == (
        ChainSpec(1, "etherscan", True), ChainSpec(25, "rpc_logs", False))
    assert parse_chains("25:rpc_logs:ts, 5:etherscan_logs:nots") == (
        ChainSpec(25, "rpc_logs", True), ChainSpec(5, "etherscan_logs", False))
    for bad in ("1", "x:etherscan", "1:other", "1:rpc_logs:maybe"):
        with pytest.raises(ValueError):
            parse_chains(bad)
    with pytest.raises(ValueError):
        SimConfig(chains=parse_chains("1:etherscan,1:rpc_logs"))
