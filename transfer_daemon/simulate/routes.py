"""The simulator's WSGI app and its threaded server.

Upstream routes (`/api`, `/v2/api`, `/rpc/<id>`) go through outage -> injected fault -> rate limit ->
the real answer (for the explorer, the daily cap first); `/_sim/*` routes (truth, poisoned rows,
chains, stats, control) are never faulted or limited.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from transfer_daemon.simulate import explorer, jsonrpc, quirks
from transfer_daemon.simulate.chain import SimChain
from transfer_daemon.simulate.faults import (
    DailyCap,
    FaultInjector,
    Reply,
    SlidingWindowLimiter,
    fault_reply,
    json_bytes,
    outage_reply,
)
from transfer_daemon.simulate.quirks import Served
from transfer_daemon.simulate.settings import SimConfig
from transfer_daemon.simulate.stats import SimStats, redact_key

logger = logging.getLogger(__name__)
_RPC_RATE_LIMITED = {"jsonrpc": "2.0", "id": None, "error": {"code": -32005, "message": "rate limit exceeded"}}
_CONTROL_KEYS = frozenset({"outage", "fault_rate", "fault_types", "rate_limit", "advance_blocks", "daily_cap",
                           "reset_daily_calls"})


class Simulator:
    """All run-time state of one simulated upstream; a WSGI application."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.start_time = config.start_time if config.start_time is not None else time.time()
        self._started = time.monotonic()
        self._clock_offset = 0.0
        self.chains = {spec.chain_id: SimChain(spec, config, self.start_time) for spec in config.chains}
        explorer_chains = [c for c in self.chains.values() if c.spec.kind != "rpc_logs"]
        self.default_explorer_chain = (explorer_chains or list(self.chains.values()))[0]
        self.stats = SimStats()
        self.faults = FaultInjector(config)
        self.explorer_limiter = SlidingWindowLimiter(config.rate_limit)
        self.rpc_limiter = SlidingWindowLimiter(config.rate_limit)
        self.daily_cap = DailyCap(config.daily_cap)

    def now(self) -> float:
        """Simulated wall clock: the configured start plus real elapsed time plus control advances."""
        return self.start_time + (time.monotonic() - self._started) + self._clock_offset

    def head(self, chain: SimChain) -> int:
        return chain.head_at(self.now())

    def index_lag(self, chain: SimChain) -> int:
        """How far the explorer's account/logs index trails the head: explorer kinds only."""
        return 0 if chain.spec.kind == "rpc_logs" else self.config.index_lag_blocks

    def null_headers(self, chain: SimChain) -> int:
        """How many of the newest headers the JSON-RPC node lacks: rpc_logs chains only."""
        return self.config.null_headers_blocks if chain.spec.kind == "rpc_logs" else 0

    def __call__(self, environ: dict, start_response: Callable) -> Iterator[bytes]:
        return self.dispatch(Request(environ))(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        if path in ("/api", "/v2/api"):
            return self._explorer(request, path == "/v2/api")
        if path.startswith("/rpc/"):
            return self._rpc(request, path[len("/rpc/"):])
        route = {"/_sim/transfers": self._truth, "/_sim/poisoned": self._poisoned, "/_sim/chains": self._chains,
                 "/_sim/stats": self._stats, "/_sim/control": self._control}.get(path)
        if route is None:
            return _json({"error": "not found"}, 404)
        return route(request)

    # --- upstream routes ----------------------------------------------------------------------

    def _explorer(self, request: Request, v2: bool) -> Response:
        query = request.args.to_dict()
        key = redact_key(query["apikey"]) if query.get("apikey") else request.remote_addr or "unknown"
        self.stats.count("routes", "explorer")
        self.stats.count("requests", key)

        def real() -> bytes:
            over_cap = self.daily_cap.charge(key, self.now())
            if over_cap is not None:
                self.stats.count("daily_capped", key)
                return json_bytes(explorer.daily_limited(over_cap, self.daily_cap.limit))
            chain = self._explorer_chain(query, v2)
            if chain is None:
                return json_bytes(explorer.notok(explorer.MISSING_CHAIN_ID))
            served = Served()
            body = explorer.answer(chain, self.head(chain), query, index_lag=self.index_lag(chain), served=served)
            self.stats.add_served(chain.id, served)
            return json_bytes(body)

        rate_limited = json_bytes(explorer.rate_limited(self.explorer_limiter.rate))
        return self._upstream(key, self.explorer_limiter, real, Reply(200, rate_limited), rate_limited)

    def _explorer_chain(self, query: dict, v2: bool) -> SimChain | None:
        raw = query.get("chainid", "")
        if not raw:
            return None if v2 else self.default_explorer_chain
        return self.chains.get(int(raw)) if raw.isdigit() else None

    def _rpc(self, request: Request, chain_part: str) -> Response:
        chain = self.chains.get(int(chain_part)) if chain_part.isdigit() else None
        if chain is None:
            return _json({"error": f"unknown chain {chain_part!r}"}, 404)
        if request.method != "POST":
            return _json({"error": "JSON-RPC needs POST"}, 405)
        key = request.path
        self.stats.count("routes", "rpc")
        self.stats.count("requests", key)
        raw = request.get_data()

        def real() -> bytes:
            try:
                payload = json.loads(raw)
            except ValueError:
                return json_bytes(jsonrpc.error_body(None, -32700, "parse error"))
            served = Served()
            body = jsonrpc.answer(chain, self.head(chain), payload, self.config.rpc_range_cap,
                              null_headers=self.null_headers(chain), served=served)
            self.stats.add_served(chain.id, served)
            return json_bytes(body)

        limited = Reply(429, json_bytes(_RPC_RATE_LIMITED), retry_after=1)
        return self._upstream(key, self.rpc_limiter, real, limited, json_bytes(_RPC_RATE_LIMITED))

    def _upstream(self, key: str, limiter: SlidingWindowLimiter, real: Callable[[], bytes], limited: Reply,
                  limited_200_body: bytes) -> Response:
        outage = self.faults.outage
        fault, pick = (None, 0) if outage else self.faults.draw()
        if outage:
            self.stats.count("faults", "outage")
            reply = outage_reply(outage, self.faults.timeout_s)
        elif fault is not None:
            self.stats.count("faults", fault)
            normal = real() if fault in ("timeout", "malformed") else b""
            reply = fault_reply(fault, normal, limited_200_body, self.faults.timeout_s, pick)
        elif not limiter.allow(key, time.monotonic()):
            self.stats.count("rate_limited", key)
            reply = limited
        else:
            reply = Reply(200, real())
        if reply.delay_s:
            time.sleep(reply.delay_s)
        headers = {"Retry-After": str(reply.retry_after)} if reply.retry_after is not None else {}
        return Response(reply.body, reply.status, headers=headers, content_type=reply.content_type)

    # --- simulator routes ---------------------------------------------------------------------

    def _chain_arg(self, request: Request) -> SimChain | None:
        raw = request.args.get("chainId", "")
        return self.chains.get(int(raw)) if raw.isdigit() else None

    def _range_args(self, request: Request) -> tuple[SimChain, int, int, int] | Response:
        """(chain, fromBlock, toBlock, head) from `chainId`, `fromBlock`, `toBlock`, or a 400 answer."""
        chain = self._chain_arg(request)
        if chain is None:
            return _json({"error": "chainId must name a simulated chain", "chains": sorted(self.chains)}, 400)
        head = self.head(chain)
        try:
            return (chain, int(request.args.get("fromBlock", chain.first_block)),
                    int(request.args.get("toBlock", head)), head)
        except ValueError:
            return _json({"error": "fromBlock and toBlock must be integers"}, 400)

    def _truth(self, request: Request) -> Response:
        """The canonical transfers up to the real head, whatever the explorer's index lag."""
        args = self._range_args(request)
        if isinstance(args, Response):
            return args
        chain, first, last, head = args
        return _json_list(transfer.to_api() for transfer in chain.truth(first, last, head))

    def _poisoned(self, request: Request) -> Response:
        """Per poisoned block: the row a client must quarantine and the valid NUL-named row (quirks.py)."""
        args = self._range_args(request)
        if isinstance(args, Response):
            return args
        chain, first, last, head = args
        return _json_list(quirks.poisoned_rows(chain, first, last, head))

    def chain_listing(self) -> dict:
        return {"chains": [
            {"id": chain.id, "kind": chain.spec.kind, "contracts": [token.address for token in chain.tokens],
             "tokens": [token._asdict() for token in chain.tokens], "head": self.head(chain),
             "firstBlock": chain.first_block, "startHead": chain.start_head,
             "logBlockTimestamp": chain.spec.log_block_timestamp, "indexLagBlocks": self.index_lag(chain),
             "nullHeadersBlocks": self.null_headers(chain), "poisonEvery": chain.poison_every,
             "explorerPath": f"/v2/api?chainid={chain.id}", "rpcPath": f"/rpc/{chain.id}"}
            for chain in self.chains.values()
        ]}

    def _chains(self, request: Request) -> Response:
        return _json(self.chain_listing())

    def _stats(self, request: Request) -> Response:
        body = self.stats.snapshot()
        heads = {chain.id: self.head(chain) for chain in self.chains.values()}
        body["heads"] = {str(chain_id): head for chain_id, head in heads.items()}
        body["reorgs"] = {str(chain.id): chain.reorgs(heads[chain.id]) for chain in self.chains.values()}
        body["reorgsTotal"] = sum(body["reorgs"].values())
        body["control"] = self._control_state()
        body["dailyCap"] = self.daily_cap.state()
        return _json(body)

    def _control_state(self) -> dict:
        return {**self.faults.state(), "rate_limit": self.explorer_limiter.rate,
                "clock_offset_s": self._clock_offset, "daily_cap": self.daily_cap.limit}

    def _control(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.control(request.get_json(force=True, silent=False))
            except (ValueError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
        return _json(self._control_state())

    def control(self, changes: dict) -> None:
        """Apply `{"outage", "fault_rate", "fault_types", "rate_limit", "advance_blocks", "daily_cap",
        "reset_daily_calls"}` (any subset); ValueError (nothing changed) on a bad one."""
        _check_control(changes)
        rate_limit = changes.get("rate_limit")
        self.faults.set(rate=changes.get("fault_rate"), types=changes.get("fault_types"), outage=changes.get("outage"))
        if rate_limit is not None:
            self.explorer_limiter.rate = self.rpc_limiter.rate = float(rate_limit)
        self.daily_cap.set(limit=changes.get("daily_cap"), reset=changes.get("reset_daily_calls", False))
        self._clock_offset += changes.get("advance_blocks", 0) * self.config.block_time
        logger.info("simulator control applied %s", changes)


def _check_control(changes: object) -> None:
    if not isinstance(changes, dict):
        raise ValueError("control body must be a JSON object")
    unknown = set(changes) - _CONTROL_KEYS
    if unknown:
        raise ValueError(f"unknown control keys {sorted(unknown)}")
    rate_limit = changes.get("rate_limit")
    if rate_limit is not None and not (isinstance(rate_limit, int | float) and rate_limit >= 0):
        raise ValueError("rate_limit must be a number >= 0")
    for name in ("advance_blocks", "daily_cap"):
        value = changes.get(name, 0)
        if isinstance(value, bool) or not (isinstance(value, int) and value >= 0):
            raise ValueError(f"{name} must be an integer >= 0")
    if not isinstance(changes.get("reset_daily_calls", False), bool):
        raise ValueError("reset_daily_calls must be true or false")


def _json(body: object, status: int = 200) -> Response:
    return Response(json_bytes(body), status, content_type="application/json")


def _json_list(items: Iterator[object]) -> Response:
    """A JSON array streamed item by item (a truth query may cover months of blocks)."""

    def stream() -> Iterator[bytes]:
        yield b"["
        for number, item in enumerate(items):
            yield (b"," if number else b"") + json_bytes(item)
        yield b"]"

    return Response(stream(), 200, content_type="application/json")


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request: clients poll at several calls per second."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def build_app(config: SimConfig) -> Simulator:
    return Simulator(config)


def _make_server(config: SimConfig, host: str, port: int):
    return make_server(host, port, build_app(config), threaded=True, request_handler=_QuietHandler)


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8545,
          ready: Callable[[str, dict], None] | None = None) -> None:
    """Serve until interrupted (SIGINT; SIGTERM is turned into the same)."""
    import signal

    server = _make_server(config, host, port)
    base_url = f"http://{host}:{server.server_port}"

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    logger.info("simulator listening on %s", base_url)
    if ready is not None:
        ready(base_url, server.app.chain_listing())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("simulator stopped on %s", base_url)
    finally:
        server.server_close()


def start_in_thread(config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve in a daemon thread (tests, demo): returns the base URL and a stop function."""
    server = _make_server(config, host, port)
    # A short poll interval so stop() returns promptly (shutdown waits for the next poll).
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="simulator", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://{host}:{server.server_port}", stop
