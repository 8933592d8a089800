"""No input produces a 5xx or a trace: a table of hostile inputs, then schemathesis in-process."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

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


def test_hostile_paths_and_methods_are_json(app):
    client = app.test_client()
    for method, path in [("GET", "/api/transfers/%00"), ("PUT", "/metrics"), ("GET", "/" + "a" * 5000),
                         ("GET", "/api/../etc/passwd"), ("PATCH", "/status")]:
        response = client.open(path, method=method)
        assert response.status_code in (404, 405) and response.is_json, path[:40]


def test_empty_pairs_are_the_default_listing(app):
    client = app.test_client()
    assert client.get("/api/transfers?&&&").get_json()["items"] == client.get("/api/transfers").get_json()["items"]


def test_openapi_contract_holds_for_generated_requests(app):
    """schemathesis in-process over WSGI: every operation, 100 examples each, all checks."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert "GET /api/transfers" in {op.label for op in operations}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            # An opaque cursor, an impossible date or fromBlock > toBlock are schema-valid strings
            # and integers the API rightly refuses: every other check applies.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
