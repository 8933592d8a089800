"""parse_transfer_args: every parameter's happy path and the refusals that name it."""

from __future__ import annotations

import pytest

from transfer_daemon.api.params import ParameterError, parse_transfer_args

IDS = (1, 25)


def parse(**kwargs):
    return parse_transfer_args(list(kwargs.items()), IDS)


def refused(items: list[tuple[str, str]]) -> ParameterError:
    with pytest.raises(ParameterError) as caught:
        parse_transfer_args(items, IDS)
    return caught.value


def test_defaults_are_the_aggregate_page_one_newest_first():
    parsed = parse_transfer_args([], IDS)
    assert (parsed.chain_id, parsed.page, parsed.query.page_size, parsed.query.sort) == (0, 1, 25, "desc")
    assert parsed.query.chain_ids == IDS
    assert parsed.is_first_page


def test_every_filter_is_converted():
    parsed = parse(chainId="25", page="3", pageSize="100", sort="asc", address="0x" + "AB" * 20,
                   **{"from": "0x" + "01" * 20, "to": "0x" + "02" * 20}, contract="0x" + "03" * 20,
                   fromBlock="5", toBlock="9", since="2024-05-01T00:00:00Z", until="1714608000")
    q = parsed.query
    assert parsed.chain_id == 25 and q.chain_ids == (25,) and q.page == 3 and q.page_size == 100
    assert q.address == bytes.fromhex("ab" * 20)
    assert (q.from_address, q.to_address, q.contract) == (b"\x01" * 20, b"\x02" * 20, b"\x03" * 20)
    assert (q.from_block, q.to_block, q.since, q.until) == (5, 9, 1714521600, 1714608000)
    assert not parsed.is_first_page


@pytest.mark.parametrize("raw,expected", [
    ("2024-05-01T00:00:00Z", 1714521600),
    ("2024-05-01T02:00:00+02:00", 1714521600),
    ("2024-05-01", 1714521600),
    ("2024-05-01T00:00:00", 1714521600),
    ("0", 0),
    ("2024-05-01 00:00:00z", 1714521600),
    ("2024-05-01T00:00", 1714521600),
    ("1970-01-01T00:00:00+01:00", -3600),  # before any stored row: kept, the store reads it as 0
    ("999999999999", 999_999_999_999),
])
def test_instants_accept_iso_8601_and_unix_seconds(raw, expected):
    assert parse(since=raw).query.since == expected == parse(until=raw).query.until


def test_a_fraction_of_a_second_rounds_towards_the_inside_of_the_window():
    assert parse(since="2024-05-01T00:00:00.25Z").query.since == 1714521601
    assert parse(until="2024-05-01T00:00:00.25Z").query.until == 1714521600
    assert parse(since="2024-05-01T00:00:00.000Z").query.since == 1714521600


@pytest.mark.parametrize("raw", ["2023-02-29", "2024-04-31", "2024-05-01T24:00:00Z", "2024-05-01T00:00:00+0200",
                                 "20240501T000000", "1969-12-31", "2024-W18-3", "1234567890123", "2024-05-01T00"])
def test_instants_outside_the_documented_forms_are_refused(raw):
    assert refused([("since", raw)]).name == "since"


@pytest.mark.parametrize("items,name", [
    ([("page", "0")], "page"),
    ([("page", "-1")], "page"),
    ([("page", "1.5")], "page"),
    ([("page", "99999999999999999999999999")], "page"),
    ([("page", "401")], "page"),  # 401 x 25 > 10,000: deep pages use the cursor
    ([("pageSize", "0")], "pageSize"),
    ([("pageSize", "101")], "pageSize"),
    ([("pageSize", "ten")], "pageSize"),
    ([("chainId", "-1")], "chainId"),
    ([("chainId", "1; DROP TABLE transfers")], "chainId"),
    ([("chainId", "١")], "chainId"),  # Arabic-Indic digit: isdigit() but not ASCII
    ([("sort", "DESC")], "sort"),
    ([("address", "0x1234")], "address"),
    ([("from", "0x" + "zz" * 20)], "from"),
    ([("to", "' OR 1=1 --")], "to"),
    ([("contract", "0x" + "aa" * 21)], "contract"),
    ([("fromBlock", "10"), ("toBlock", "9")], "toBlock"),
    ([("fromBlock", str(2**63))], "fromBlock"),
    ([("since", "yesterday")], "since"),
    ([("since", "2024-13-01")], "since"),
    ([("until", "9" * 30)], "until"),
    ([("since", "2024-05-02"), ("until", "2024-05-01")], "until"),
    ([("page", "1"), ("cursor", "abc")], "cursor"),
    ([("cursor", "not-a-cursor")], "cursor"),
    ([("cursor", "x" * 10_000)], "cursor"),
    ([("cursor", "A" * 46)], "cursor"),  # the shape of a cursor, without its check
    ([("page", "1"), ("page", "2")], "page"),
    ([("pagesize", "10")], "pagesize"),
    ([("chainId", "")], "chainId"),
    ([("address", "0x" + "aa" * 20 + "\x00")], "address"),
])
def test_malformed_or_out_of_range_parameters_are_refused_by_name(items, name):
    assert refused(items).name == name


def test_unknown_parameter_names_are_truncated_in_the_error():
    assert refused([("x" * 10_000, "1")]).name == "x" * 64


def test_unknown_chain_passes_parsing_for_the_caller_to_answer_404():
    assert parse(chainId="999").query.chain_ids == (999,)
