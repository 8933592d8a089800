"""What each receiver is sent, and which receivers the [alerts] section builds (no network)."""

from __future__ import annotations

import pytest

from transfer_daemon.config import ConfigError, parse_config
from transfer_daemon.daemon.alert_sinks import (
    AlertmanagerSink,
    EmailSink,
    WebhookSink,
    alert_event,
    alert_secrets,
    alertmanager_payload,
    build_sinks,
    email_message,
    webhook_payload,
)
from transfer_daemon.daemon.alerts import AlertTransition

FIRED = AlertTransition("IngestLag", "ethereum", 1, "firing", 412.0, 300, 1_700_000_000.0, None,
                        "ethereum ingest lag 412 s exceeds 300 s")
RESOLVED = AlertTransition("IngestLag", "ethereum", 1, "resolved", 12.0, 300, 1_700_000_000.0, 1_700_000_600.0,
                           "ethereum ingest lag 12 s is within 300 s")
HALTED = AlertTransition("ChainHalted", "cronos", 25, "firing", True, None, 1_700_000_100.0, None, "cronos halted")
CHAIN = {"id": 1, "name": "ethereum", "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:1",
         "contracts": ["0xdac17f958d2ee523a2206206994597c13d831ec7"]}
TOKEN = "xoxbSECRETwebhookTOKEN0123456789"
HOOK = f"https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/{TOKEN}"


def _alerts(**section):
    return parse_config({"alerts": section, "chains": [CHAIN]}, {}).alerts


def test_webhook_payload_has_one_line_and_the_contract_fields() -> None:
    body = webhook_payload([FIRED])
    assert body["text"] == "[transfer-daemon] FIRING IngestLag ethereum: ethereum ingest lag 412 s exceeds 300 s"
    assert body["alerts"] == [{"name": "IngestLag", "state": "firing", "chain": "ethereum", "chainId": 1,
                               "value": 412.0, "threshold": 300, "startsAt": "2023-11-14T22:13:20Z",
                               "endsAt": None, "summary": "ethereum ingest lag 412 s exceeds 300 s"}]
    two = webhook_payload([RESOLVED, HALTED])
    assert two["text"] == "[transfer-daemon] 2 alert changes: RESOLVED IngestLag ethereum; FIRING ChainHalted cronos"
    assert "\n" not in two["text"]
    assert two["alerts"][0]["endsAt"] == "2023-11-14T22:23:20Z"


def test_alertmanager_payload_is_a_v2_alert_list() -> None:
    firing, resolved = alertmanager_payload([FIRED, RESOLVED])
    assert firing == {"labels": {"alertname": "IngestLag", "chain": "ethereum", "chain_id": "1",
                                 "severity": "warning"},
                      "annotations": {"summary": "ethereum ingest lag 412 s exceeds 300 s"},
                      "startsAt": "2023-11-14T22:13:20Z"}
    assert resolved["endsAt"] == "2023-11-14T22:23:20Z" and resolved["startsAt"] == "2023-11-14T22:13:20Z"
    assert all(isinstance(v, str) for v in firing["labels"].values())
    assert alertmanager_payload([HALTED])[0]["labels"]["severity"] == "critical"


def test_email_subject_and_body() -> None:
    message = email_message(RESOLVED, "daemon@example.com", ["ops@example.com", "oncall@example.org"])
    assert message["Subject"] == "[transfer-daemon] RESOLVED IngestLag ethereum"
    assert message["To"] == "ops@example.com, oncall@example.org"
    assert message["Message-ID"].endswith("@example.com>")
    body = message.get_content()
    assert body.startswith("ethereum ingest lag 12 s is within 300 s\n")
    assert "chain:     ethereum (chain id 1)" in body and "ended:     2023-11-14T22:23:20Z" in body


def test_alert_event_row() -> None:
    event = alert_event(FIRED)
    assert (event.chain_id, event.status) == (1, "alert")
    assert event.message == "firing IngestLag: ethereum ingest lag 412 s exceeds 300 s"
    assert event.detail == {"name": "IngestLag", "state": "firing", "value": 412.0, "threshold": 300,
                            "startsAt": "2023-11-14T22:13:20Z", "endsAt": None}


def test_nothing_configured_builds_no_receiver() -> None:
    assert build_sinks(_alerts(), {}) == []


def test_every_receiver_is_built_from_the_section() -> None:
    alerts = _alerts(webhook_url_env="SLACK_URL", alertmanager_url="http://127.0.0.1:9093/",
                     smtp_url_env="SMTP_URL", email_to=["ops@example.com"], email_from="daemon@example.com")
    sinks = build_sinks(alerts, {"SLACK_URL": HOOK, "SMTP_URL": "smtp://u:pw-1234@127.0.0.1:2525"})
    assert [type(s) for s in sinks] == [WebhookSink, AlertmanagerSink, EmailSink]


@pytest.mark.parametrize(("section", "environ", "key"), [
    ({"webhook_url_env": "SLACK_URL"}, {}, "alerts.webhook_url_env"),
    ({"webhook_url_env": "SLACK_URL"}, {"SLACK_URL": "hooks.slack.com/services/x"}, "alerts.webhook_url_env"),
    ({"smtp_url_env": "SMTP_URL", "email_to": ["ops@example.com"], "email_from": "d@example.com"},
     {"SMTP_URL": "imap://u:pw-1234@mail"}, "alerts.smtp_url_env"),
])
def test_a_variable_without_a_usable_url_names_the_key_not_the_value(section: dict, environ: dict,
                                                                      key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_sinks(_alerts(**section), environ)
    assert info.value.key == key
    assert "pw-1234" not in str(info.value) and "hooks.slack.com" not in str(info.value)


def test_alert_secrets_name_what_the_log_pipeline_must_scrub() -> None:
    alerts = _alerts(webhook_url_env="SLACK_URL", alertmanager_url="http://am:am-pass-9@127.0.0.1:9093",
                     smtp_url_env="SMTP_URL", email_to=["ops@example.com"], email_from="daemon@example.com")
    secrets = alert_secrets(alerts, {"SLACK_URL": HOOK, "SMTP_URL": "smtp://u:pw%2F1234@127.0.0.1:2525"})
    assert {HOOK, TOKEN, "pw/1234", "am-pass-9"} <= secrets


def test_sinks_redact_their_secrets_from_error_text() -> None:
    hook = WebhookSink(HOOK)
    text = f"ConnectionError: HTTPSConnectionPool(host='hooks.slack.com'): Max retries with url: /services/" \
           f"T0AAAAAAA/B0BBBBBBB/{TOKEN} (Caused by ...)"
    assert TOKEN not in hook.redact(text) and "B0BBBBBBB" not in hook.redact(text)
    mail = EmailSink("smtp://alerts:pw-secret-1@127.0.0.1:2525", "d@example.com", ["ops@example.com"])
    assert "pw-secret-1" not in mail.redact("535 auth failed for alerts:pw-secret-1")
