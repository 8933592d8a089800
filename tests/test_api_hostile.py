"""No input produces a 5xx or a trace: a table of hostile inputs, well-formed values at the ends of
their ranges, then schemathesis in-process against /api/openapi.json."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation import GenerationMode

from tests.api_support import make_config, migrated, transfer, write
from transfer_daemon.api import create_app

HOSTILE = [
    "page=" + "9" * 400, "page=-1", "pageSize=-5", "pageSize=1e3", "page=0x10", "chainId=" + "9" * 50,
    "chainId=1%20OR%201=1", "chainId=1;SELECT%20pg_sleep(10)", "address=0x'%20OR%20''='",
    "from=" + quote("0x" + "é" * 40), "to=" + quote("\u202e" * 42), "contract=%00" * 3,
    "cursor=" + "A" * 10_000, "cursor=%00%01%02", "cursor=" + quote("{\"a\": 1}"), "cursor=eyJ4IjoxfQ",
    "cursor=" + quote("\U0001f4a9" * 50), "since=" + quote("2024-05-01T00:00:00+99:00"), "since=-1",
    "until=" + "1" * 40, "since=%ff%fe", "fromBlock=1e9", "toBlock=" + "9" * 30, "sort=desc%00",
    "page=1&page=1", "chainId=1&chainId=1", "x=" + "y" * 10_000, "%00=1", "=1", "chainId",
    "page", quote("chainId") + "=" + quote("٣"), "pageSize=%20100", "pageSize=100%20", "page=+1",
    "since=" + quote("2024-02-30"), "until=" + quote("99999-01-01"), "since=" + quote("0001-01-01T00:00:00Z"),
]


@pytest.fixture
def app(make_database, tmp_path):
    url = migrated(make_database())
    write(url, 1, [transfer(1, n) for n in range(10)])
    write(url, 25, [transfer(25, n) for n in range(10)])
    application = create_app(make_config(tmp_path), url)
    yield application
    application.extensions["transfer_daemon"].close()


def test_hostile_query_strings_are_refused_cleanly(app):
    client = app.test_client()
    for query in HOSTILE:
        response = client.get(f"/api/transfers?{query}")
        assert response.status_code in (400, 404), (query[:80], response.status_code)
        body = response.get_data(as_text=True)
        assert response.is_json and "Traceback" not in body and len(body) < 2000, query[:80]
        if response.status_code == 400:
            assert response.get_json()["error"]["code"] == "invalid_parameter"


ADDRESS = "0x" + "11" * 20
#: well-formed values at the ends of their ranges, alone and with an address (the address index keys
#: time as int4): each is answered
EDGES = [
    "until=2200-01-01T00:00:00Z", "since=2106-02-07T06:28:16Z", "until=2106-02-07T06:28:15Z",
    "since=9999-12-31T23:59:59.999999999-23:59", "since=1970-01-01T00:00:00%2B23:59", "until=999999999999",
    "since=0&until=999999999999", "since=1970-01-01", "until=9999-12-31", "since=2024-02-29t12:00z",
    "fromBlock=9223372036854775807", "fromBlock=0&toBlock=9223372036854775807", "toBlock=0",
    "page=100&pageSize=100", "page=10000&pageSize=1", "sort=asc&since=999999999999",
]


def test_every_well_formed_value_is_answered(app):
    client = app.test_client()
    for edge in EDGES:
        for query in (edge, f"{edge}&address={ADDRESS}", f"{edge}&chainId=25&from={ADDRESS}&to={ADDRESS}"):
            response = client.get(f"/api/transfers?{query}")
            assert response.status_code == 200, (query, response.status_code, response.get_data(as_text=True))
    assert client.get("/api/transfers?chainId=9223372036854775807").status_code == 404


def test_hostile_paths_and_methods_are_json(app):
    client = app.test_client()
    for method, path in [("GET", "/api/transfers/%00"), ("PUT", "/metrics"), ("GET", "/" + "a" * 5000),
                         ("GET", "/api/../etc/passwd"), ("PATCH", "/status")]:
        response = client.open(path, method=method)
        assert response.status_code in (404, 405) and response.is_json, path[:40]


def test_empty_pairs_are_the_default_listing(app):
    client = app.test_client()
    assert client.get("/api/transfers?&&&").get_json()["items"] == client.get("/api/transfers").get_json()["items"]


#: what no schema can say (openapi.TRANSFER_RULES): (parameter, the start of the message) of the only
#: 400s a schema-valid request may get
RULES = {
    ("page", "page x pageSize must be"), ("cursor", "give either page or cursor"),
    ("cursor", "not a cursor this API returned"), ("cursor", "this cursor continues"),
    ("toBlock", "must be >= fromBlock"), ("until", "must not be before since"),
}


def _refused_only_by_a_rule(response) -> bool:
    error = response.json()["error"]
    rule = (error["parameter"], error["message"])
    return any(rule[0] == name and rule[1].startswith(start) for name, start in RULES) or (
        rule[0] in ("since", "until") and rule[1].endswith("is not a day of the calendar"))


def _checked(operation, mode: GenerationMode, examples: int):
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        if mode is GenerationMode.POSITIVE and response.status_code == 400:
            assert _refused_only_by_a_rule(response), (case.query, response.text)

    return check


def test_openapi_describes_exactly_what_is_accepted(app):
    """schemathesis in-process over WSGI, every operation, all checks: requests the document allows
    are answered (or refused only by a rule it states in words), requests it forbids are refused."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert "GET /api/transfers" in {op.label for op in operations}
    for operation in operations:
        _checked(operation, GenerationMode.POSITIVE, 150)()
        if operation.label == "GET /api/transfers":  # the others take nothing to get wrong
            _checked(operation, GenerationMode.NEGATIVE, 100)()
