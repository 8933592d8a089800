"""GET /api/openapi.json — OpenAPI 3.0 description of every route and parameter."""

from __future__ import annotations

from flask import Blueprint, Response

from transfer_daemon.api import json_response, params
from transfer_daemon.api.params import DEFAULT_PAGE_SIZE, MAX_BLOCK, MAX_OFFSET, MAX_PAGE_SIZE

bp = Blueprint("openapi", __name__)

ADDRESS = {"type": "string", "pattern": f"^{params.ADDRESS}$"}
NULLABLE_INT = {"type": "integer", "nullable": True}
NULLABLE_STR = {"type": "string", "nullable": True}
INSTANT = {"type": "string", "pattern": f"^(?:{params.INSTANT})$"}
INSTANT_TEXT = ("unix seconds, or an ISO 8601 day of 1970..9999 with an optional time of day (seconds, fraction and"
                " UTC offset optional; without an offset, UTC)")


def _param(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


TRANSFER_PARAMETERS = [
    _param("chainId", {"type": "integer", "minimum": 0, "maximum": MAX_BLOCK, "default": 0},
           "configured chain id (another answers 404); 0 = all chains merged"),
    _param("page", {"type": "integer", "minimum": 1, "maximum": MAX_OFFSET, "default": 1},
           f"page number; page x pageSize <= {MAX_OFFSET}; not with cursor"),
    _param("pageSize", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
           "items per page"),
    _param("cursor", {"type": "string", "pattern": f"^{params.CURSOR}$"},
           "nextCursor of an earlier answer, with the same sort (any other value is refused); not with page"),
    _param("address", ADDRESS, "transfers from or to this address"),
    _param("from", ADDRESS, "sender"),
    _param("to", ADDRESS, "recipient"),
    _param("contract", ADDRESS, "token contract"),
    _param("fromBlock", {"type": "integer", "minimum": 0, "maximum": MAX_BLOCK}, "lowest block, inclusive"),
    _param("toBlock", {"type": "integer", "minimum": 0, "maximum": MAX_BLOCK},
           "highest block, inclusive; not below fromBlock"),
    _param("since", INSTANT, f"earliest timeStamp, inclusive: {INSTANT_TEXT}; a day that exists"),
    _param("until", INSTANT, f"latest timeStamp, inclusive: {INSTANT_TEXT}; a day that exists;"
           " not before since"),
    _param("sort", {"type": "string", "enum": ["desc", "asc"], "default": "desc"},
           "order of timeStamp, block, logIndex"),
]
#: what no parameter's schema can say, each refused with 400 naming the parameter
TRANSFER_RULES = (
    f"Refused with 400 naming the parameter beyond each one's schema: page x pageSize > {MAX_OFFSET}; page with"
    " cursor; a cursor this API did not issue, or issued for the other sort; toBlock < fromBlock; until before"
    " since; a day that does not exist (2023-02-29); an unknown, repeated or empty parameter."
)

FRESHNESS = {
    "lastIngestedAt": NULLABLE_STR, "ingestLagSeconds": NULLABLE_INT, "stale": {"type": "boolean"},
}
ITEM = {
    "type": "object",
    "required": ["chainId", "blockNumber", "timeStamp", "hash", "logIndex", "from", "to", "value", "contractAddress"],
    "properties": {
        "chainId": {"type": "integer"}, "blockNumber": {"type": "integer"}, "timeStamp": {"type": "string"},
        "hash": {"type": "string"}, "logIndex": {"type": "integer"}, "from": ADDRESS, "to": ADDRESS,
        "value": {"type": "string", "pattern": "^[0-9]+$"}, "contractAddress": ADDRESS,
        "blockHash": NULLABLE_STR, "gasUsed": NULLABLE_STR, "gasPrice": NULLABLE_STR, "methodId": NULLABLE_STR,
    },
}
PAGE = {
    "type": "object",
    "required": ["chainId", "items", "page", "pageSize", "nextCursor", "source", *FRESHNESS, "chains"],
    "properties": {
        "chainId": {"type": "integer"}, "items": {"type": "array", "items": ITEM},
        "page": NULLABLE_INT, "pageSize": {"type": "integer"}, "nextCursor": NULLABLE_STR,
        "source": {"type": "string", "enum": ["store", "upstream"]}, **FRESHNESS,
        "chains": {"type": "object", "additionalProperties": {"type": "object", "properties": {**FRESHNESS, "history": {
            "type": "object", "properties": {"completeFrom": NULLABLE_STR, "complete": {"type": "boolean"}}}}}},
    },
}
ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "parameter": {"type": "string"}, "message": {"type": "string"}}}},
}


def _json(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _get(summary: str, responses: dict, parameters: list | None = None, description: str = "") -> dict:
    operation = {"summary": summary, "responses": responses}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
NOT_READY = {**_json("store not ready, or a query ran beyond api.statement_timeout_s", ERROR), "headers": RETRY_AFTER}
SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "transfer-daemon", "version": "1"},
    "paths": {
        "/api/transfers": _get("ERC-20 transfers, one chain or all chains merged", {
            "200": _json("a page", PAGE), "400": _json("invalid parameter", ERROR),
            "404": _json("unknown chain", ERROR), "503": NOT_READY,
        }, TRANSFER_PARAMETERS, TRANSFER_RULES),
        "/api/cache-health": _get("per-chain lag, errors, backfill, worker state; cache hit ratio", {
            "200": _json("status ok or degraded"),
            "503": {**_json("status down: store not ready"), "headers": RETRY_AFTER},
        }),
        "/api/openapi.json": _get("this document", {"200": _json("OpenAPI 3.0")}),
        "/healthz": _get("the API process is up", {"200": _json("ok")}),
        "/readyz": _get("store ready and every chain synced once", {
            "200": _json("ready"), "503": {**_json("not ready"), "headers": RETRY_AFTER},
        }),
        "/metrics": _get("Prometheus metrics of every process", {
            "200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        }),
        "/status": _get("operator status page", {
            "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
            "503": {"description": "store not ready", "content": {"text/html": {"schema": {"type": "string"}}}},
        }),
    },
}


@bp.get("/api/openapi.json")
def openapi_json() -> Response:
    return json_response(SPEC)
