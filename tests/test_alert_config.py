"""The [alerts] section: defaults, and every bad value refused naming its key."""

from __future__ import annotations

import pytest

from transfer_daemon.config import ConfigError, parse_config, settings_reference

CHAIN = {
    "id": 1, "name": "ethereum", "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:8545/rpc/1",
    "contracts": ["0xdac17f958d2ee523a2206206994597c13d831ec7"],
}
MAIL = {"smtp_url_env": "TRANSFERS_SMTP_URL", "email_from": "daemon@example.com", "email_to": ["ops@example.com"]}


def _parse(alerts: dict):
    return parse_config({"alerts": alerts, "chains": [CHAIN]}, {}).alerts


def test_defaults_send_nowhere() -> None:
    alerts = parse_config({"chains": [CHAIN]}, {}).alerts
    assert (alerts.lag_threshold_s, alerts.errors_per_min, alerts.evaluate_interval_s) == (300, 5, 15.0)
    assert (alerts.webhook_url_env, alerts.alertmanager_url, alerts.smtp_url_env) == ("", "", "")
    assert alerts.email_to == () and alerts.email_from == ""


def test_a_full_section_loads() -> None:
    alerts = _parse({**MAIL, "lag_threshold_s": 600, "errors_per_min": 0, "webhook_url_env": "SLACK_WEBHOOK_URL",
                     "alertmanager_url": "http://127.0.0.1:9093", "email_to": ["a@example.com", "b@example.org"]})
    assert alerts.lag_threshold_s == 600 and alerts.errors_per_min == 0
    assert alerts.email_to == ("a@example.com", "b@example.org")


BAD = [
    ({"lag_threshold_s": 0}, "alerts.lag_threshold_s"),
    ({"lag_threshold_s": "soon"}, "alerts.lag_threshold_s"),
    ({"errors_per_min": -1}, "alerts.errors_per_min"),
    ({"evaluate_interval_s": 0}, "alerts.evaluate_interval_s"),
    ({"webhook_url_env": "https://hooks.slack.com/services/T0/B0/x"}, "alerts.webhook_url_env"),
    ({"alertmanager_url": "alertmanager:9093"}, "alerts.alertmanager_url"),
    ({"smtp_url_env": "smtp://u:p@mail:25"}, "alerts.smtp_url_env"),
    ({**MAIL, "email_to": "ops@example.com"}, "alerts.email_to"),
    ({**MAIL, "email_to": ["not an address"]}, "alerts.email_to[0]"),
    ({**MAIL, "email_to": ["ops@example.com", "ops"]}, "alerts.email_to[1]"),
    ({**MAIL, "email_to": ["ops@example.com", 7]}, "alerts.email_to[1]"),
    ({**MAIL, "email_from": "daemon"}, "alerts.email_from"),
    ({**MAIL, "email_from": ""}, "alerts.email_from"),
    ({**MAIL, "smtp_url_env": ""}, "alerts.smtp_url_env"),
    ({"smtp_url_env": "TRANSFERS_SMTP_URL", "email_from": "daemon@example.com"}, "alerts.email_to"),
    ({"pager": "yes"}, "alerts.pager"),
]


@pytest.mark.parametrize(("alerts", "key"), BAD)
def test_bad_values_name_the_key(alerts: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(alerts)
    assert info.value.key == key
    assert key in str(info.value)


def test_every_alerts_setting_is_declared_once_for_the_reference() -> None:
    keys = [key for key, *_ in settings_reference() if key.startswith("alerts.")]
    assert keys == ["alerts.lag_threshold_s", "alerts.errors_per_min", "alerts.evaluate_interval_s",
                    "alerts.webhook_url_env", "alerts.alertmanager_url", "alerts.smtp_url_env",
                    "alerts.email_to", "alerts.email_from"]
