"""contrib/prometheus and contrib/grafana: the rules pass their promtool unit tests, the scrape
example is a valid configuration, and the dashboard is importable and provisionable as shipped.

Their queries are run against a real Prometheus in
``tests/integration/test_prometheus_export.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml
from prom_tools import promtool

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
PROMETHEUS = CONTRIB / "prometheus"
GRAFANA = CONTRIB / "grafana"
ALERTS = {
    "UgroHealthNodeDown", "UgroHealthNodeIsolated", "UgroHealthGpuCritical",
    "UgroHealthGpuCountLow", "UgroHealthScoreLow", "UgroHealthExporterStale",
    "UgroHealthExporterDown",
}  # fmt: skip


def test_alert_rules_pass_their_promtool_unit_tests():
    result = promtool("test", "rules", "ugro-health.rules.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_rule_is_unit_tested_firing():
    rules = yaml.safe_load((PROMETHEUS / "ugro-health.rules.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert names == ALERTS
    tests = yaml.safe_load((PROMETHEUS / "ugro-health.rules.test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == ALERTS


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path):
    # The unit tests can fail: the same tests against a rule with its threshold moved.
    for name in ("ugro-health.rules.yml", "ugro-health.rules.test.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    rules = tmp_path / "ugro-health.rules.yml"
    rules.write_text(
        rules.read_text().replace("ugro_health_node_score < 50", "ugro_health_node_score < 30")
    )
    result = promtool("test", "rules", "ugro-health.rules.test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "UgroHealthScoreLow" in result.stdout + result.stderr


def test_scrape_example_is_a_valid_configuration():
    result = promtool("check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9835"]  # the documented default


def test_dashboard_has_a_fixed_uid_node_and_gpu_variables_and_the_panels_asked_for():
    doc = json.loads((GRAFANA / "ugro-health-dashboard.json").read_text())
    assert doc["uid"] == "ugro-health-cluster"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert {"node", "gpu", "datasource"} <= set(variables)
    assert all(variables[n]["multi"] and variables[n]["includeAll"] for n in ("node", "gpu"))
    exprs = " ".join(t["expr"] for p in doc["panels"] for t in p["targets"])
    for metric in (
        "ugro_health_node_status", "ugro_health_node_score", "ugro_health_gpu_temperature_celsius",
        "ugro_health_gpu_utilization_ratio", "ugro_health_alert", "ugro_health_node_breaker_state",
        "ugro_health_node_poll_duration_seconds",
    ):  # fmt: skip
        assert metric in exprs
    # Every panel query honours the node filter (or is about the poller as a whole).
    for panel in doc["panels"]:
        for target in panel["targets"]:
            assert "$node" in target["expr"] or "cycle" in target["expr"], panel["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" for p in doc["panels"])
    assert all(re.fullmatch(r"[A-Z]", t["refId"]) for p in doc["panels"] for t in p["targets"])


def test_provisioning_file_names_a_file_provider():
    doc = yaml.safe_load((GRAFANA / "provisioning" / "ugro-health.yaml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
