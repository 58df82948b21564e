"""A real Prometheus scrapes ``watch --metrics-listen`` over the sshd rig; the shipped alert rules
and every query of the shipped Grafana dashboard are evaluated against what it stored.

The cluster: ``gpu1`` answers with the recorded H100 (one GPU where two are expected, and hot
for this test's thresholds), ``cpu1`` answers without GPUs, ``gone`` refuses connections and is
isolated by its breaker after one failure.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import CALM_THRESHOLDS, spawn_cli
from prom_server import PrometheusServer, gpu_python
from prom_tools import assert_clean, require
from sshd_rig import SshdRig, free_port

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "prometheus" / "ugro-health.rules.yml"
DASHBOARD = CONTRIB / "grafana" / "ugro-health-dashboard.json"
# Alerts whose condition this cluster meets, so their expressions must return data now.
FIRING = {"UgroHealthNodeDown", "UgroHealthNodeIsolated", "UgroHealthGpuCritical",
          "UgroHealthGpuCountLow"}  # fmt: skip


def write_cluster(rig: SshdRig, path: Path) -> None:
    hot = CALM_THRESHOLDS.replace("{", "{gpu_temp_warn_c: 40, gpu_temp_crit_c: 50, ", 1)
    nodes = [
        f"  - name: gpu1\n    port: {rig.nodes['node1'].port}\n    gpus: 2\n"
        f"    python: {gpu_python(rig, 'gpu1')}",
        f"  - name: cpu1\n    port: {rig.nodes['node2'].port}",
        f"  - name: gone\n    port: {rig.refused_port}",
    ]
    path.write_text(
        hot
        + f"defaults:\n  host: 127.0.0.1\n  user: {rig.user}\n  identity_file: {rig.key}\n"
        + "  python: /usr/bin/python3\n  transport: ssh\n"
        + "ssh:\n  connect_timeout: 5\n  command_timeout: 15\n  ssh_config: ''\n"
        + f"  known_hosts: {rig.known_hosts}\n"
        + "watch:\n  failure_threshold: 1\n  reset_base_s: 3600\n  reset_max_s: 3600\n"
        + "nodes:\n"
        + "\n".join(nodes)
        + "\n"
    )


def prometheus_config(target: str) -> dict[str, Any]:
    """The shipped scrape example, pointed at the test's watch and sped up."""
    config = yaml.safe_load((CONTRIB / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    (job,) = config["scrape_configs"]
    job["scrape_interval"] = "1s"
    job["static_configs"] = [{"targets": [target]}]
    return config


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def stack(sshd_rig: SshdRig, tmp_path: Path) -> Iterator[tuple[PrometheusServer, int]]:
    binary = require("prometheus")
    write_cluster(sshd_rig, tmp_path / "cluster.yaml")
    port = free_port()
    watch = spawn_cli(
        "watch", "--headless", "--interval", "1", "--metrics-listen", f"127.0.0.1:{port}",
        cwd=tmp_path,
    )  # fmt: skip
    server = None
    try:
        server = PrometheusServer(binary, prometheus_config(f"127.0.0.1:{port}"), tmp_path)
        yield server, port
    finally:
        if server is not None:
            server.close()
        watch.send_signal(signal.SIGTERM)
        try:
            _, err = watch.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            watch.kill()
            raise
    assert watch.returncode == 0, err


def dashboard_exprs() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p["targets"]]


def as_grafana_would(expr: str) -> str:
    """The template variables at "All" (their allValue ``.*``)."""
    return expr.replace("$node", ".*").replace("$gpu", ".*")


def test_prometheus_scrapes_watch_and_every_rule_and_panel_has_data(
    stack: tuple[PrometheusServer, int],
):
    prom, port = stack
    wait_for(
        lambda: (
            len(prom.query("ugro_health_node_up")) == 3
            and prom.query('ugro_health_node_breaker_state{state="open"} == 1')
            and prom.query("ugro_health_gpu_info")
            and prom.query('ALERTS{alertstate="pending"}')
        ),
        120,
        "three nodes, an open breaker, a GPU and pending alerts in Prometheus",
    )
    # Each node's reachability and score; the refusing node is down, without a score.
    assert prom.by_node("ugro_health_node_up") == {"gpu1": 1.0, "cpu1": 1.0, "gone": 0.0}
    scores = prom.by_node("ugro_health_node_score")
    assert set(scores) == {"gpu1", "cpu1"} and all(0 <= s <= 100 for s in scores.values())
    assert prom.by_node("ugro_health_node_error") == {"gone": 1.0}  # refused, then skipped
    assert prom.by_node('up{job="ugro-health"}') == {"": 1.0}  # the exporter, not the nodes
    (gpu,) = prom.query("ugro_health_gpu_info")
    assert gpu["metric"]["name"] == "NVIDIA H100 80GB HBM3" and gpu["metric"]["node"] == "gpu1"
    # What Prometheus scraped passes promtool's lint: a GPU node, an isolated one, alerts.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        assert_clean(answer.read())

    # The rules loaded healthy; each expression runs; the ones this cluster meets return data,
    # and every metric the others read exists.
    groups = prom.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(yaml.safe_load(RULES.read_text())["groups"][0]["rules"])
    for rule in rules:
        assert rule["health"] == "ok", rule
        result = prom.query(rule["query"])
        assert bool(result) == (rule["name"] in FIRING), (rule["name"], result)
        for metric in set(re.findall(r"\b(ugro_health_\w+|up)\b", rule["query"])):
            assert prom.query(metric), (rule["name"], metric)
    pending = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]}
    assert pending == FIRING

    # Every panel query of the dashboard returns data; its template variables have values.
    for title, expr in dashboard_exprs():
        assert prom.query(as_grafana_would(expr)), (title, expr)
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    for variable in (v for v in variables if v["type"] == "query"):
        selector, label = re.fullmatch(
            r"label_values\((.+), (\w+)\)", variable["query"]["query"]
        ).groups()  # type: ignore[union-attr]
        found = prom.api(f"label/{label}/values", **{"match[]": as_grafana_would(selector)})
        assert found, variable["name"]
    assert set(prom.api("label/node/values", **{"match[]": "ugro_health_node_status"})) == {
        "gpu1", "cpu1", "gone"
    }  # fmt: skip
