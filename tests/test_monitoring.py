"""The shipped Prometheus rules (etc/prometheus/alerts.yml) and Grafana dashboard
(etc/grafana/transfer-daemon.json) read only metrics the daemon exports, and are well formed;
with `promtool` on PATH the rules and every panel query are also checked and the rules unit-tested."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from transfer_daemon import metrics

ETC = Path(__file__).resolve().parent.parent / "etc"
RULES = ETC / "prometheus" / "alerts.yml"
RULES_TEST = ETC / "prometheus" / "alerts_test.yml"
DASHBOARD = ETC / "grafana" / "transfer-daemon.json"
_NAME = re.compile(r"\btransfers_[a-z_]+\b")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    """Every sample name /metrics can show."""
    names = set()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def panel_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def unknown_metrics(expr: str) -> list[str]:
    named = _NAME.findall(expr)
    return ["(none)"] if not named else [name for name in named if name not in exported()]


def test_each_rule_names_exported_metrics_and_says_what_fires() -> None:
    found = rules()
    assert {"IngestLag", "IngestErrors", "WorkerFatal"} <= {rule["alert"] for rule in found}
    for rule in found:
        assert unknown_metrics(rule["expr"]) == [], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
    by_name = {rule["alert"]: rule for rule in found}
    assert by_name["IngestLag"]["for"] == "1m" and "> 300" in by_name["IngestLag"]["expr"]
    assert "transfers_job_failures_total[1m]" in by_name["IngestErrors"]["expr"]


def test_each_dashboard_query_names_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels) > 0
    for panel in panels:
        assert panel["type"] and panel["title"] and set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"] and len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert unknown_metrics(target["expr"]) == [], (panel["title"], target["expr"])
    assert {"datasource", "chain"} <= {v["name"] for v in dashboard["templating"]["list"]}
    shown = {name for expr in panel_queries() for name in _NAME.findall(expr)}
    assert {"transfers_ingest_lag_seconds", "transfers_rows_ingested_total", "transfers_upstream_requests_total",
            "transfers_api_request_seconds_bucket", "transfers_api_request_seconds_count"} <= shown


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH: the rules and queries are not checked by "
                    "Prometheus itself here (install the prometheus package for it)")
def test_promtool_accepts_the_rules_and_every_panel_query(tmp_path: Path) -> None:
    promtool("check", "rules", RULES)
    promtool("test", "rules", RULES_TEST)
    # each panel query as a recording rule: promtool parses it (the chain variable as "every chain")
    recorded = [{"record": f"dashboard:query_{n}", "expr": expr.replace("$chain", ".*")}
                for n, expr in enumerate(panel_queries())]
    queries = tmp_path / "queries.yml"
    queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    promtool("check", "rules", queries)


def promtool(*args: object) -> None:
    done = subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
