"""The collector's metrics: built from recorded GPU outputs, read back and linted by promtool."""

from __future__ import annotations

from dataclasses import replace

from export_fixtures import cluster_reports, recorded_node
from prom_tools import assert_clean
from prometheus_client.parser import text_string_to_metric_families

from ugro_health.export.metrics import CycleStats, Snapshot, SnapshotCollector, client_exposition
from ugro_health.model import Alert, NodeReport, Severity, Status


def snapshot(**changes: object) -> Snapshot:
    base = Snapshot(
        reports=cluster_reports(now=1_796_000_000.0),
        expected_gpus={"a100": 8, "ada": 1, "t4": 1, "down": 8},
        breakers={"a100": "closed", "ada": "closed", "t4": "closed", "isolated": "open"},
        active_jobs=1,
        cycle=CycleStats(duration_s=5.2, finished_at=1_796_000_005.0, cycles=12, overruns=1),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def exposition(collector: SnapshotCollector) -> bytes:
    """What /metrics serves (the fast renderer), checked against prometheus-client's own
    encoder on the same families: the same metrics, types, help, samples and values."""
    fast = collector.exposition()
    reference = client_exposition(collector)
    assert parsed(fast) == parsed(reference)
    return fast


def parsed(text: bytes) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    return [
        (f.name, f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text.decode())
    ]


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict, metric: str, **labels: str) -> float:
    return found[(metric, frozenset(labels.items()))]


def names(found: dict) -> set[str]:
    return {name for name, _ in found}


def test_a_cluster_with_gpus_unreachable_nodes_and_alerts_passes_promtool():
    collector = SnapshotCollector(lambda: snapshot())
    text = exposition(collector)
    assert_clean(text)
    assert_clean(client_exposition(collector))  # the textfile's encoder
    found = samples(text)
    # The recorded T4: 40 °C, 26.78 W of 70 W, 1032 MiB of 15360 MiB, PCIe x8 of x16.
    t4 = {"node": "t4", "gpu": "0"}
    assert value(found, "ugro_health_gpu_temperature_celsius", **t4) == 40.0
    assert value(found, "ugro_health_gpu_power_watts", **t4) == 26.78
    assert value(found, "ugro_health_gpu_power_limit_watts", **t4) == 70.0
    assert value(found, "ugro_health_gpu_memory_total_bytes", **t4) == 16_106_127_360
    assert value(found, "ugro_health_gpu_pcie_link_width", **t4) == 8
    assert value(found, "ugro_health_gpu_pcie_link_width_max", **t4) == 16
    info = {
        **t4,
        "name": "Tesla T4",
        "uuid": "GPU-d37e67a5-91dd-3774-a5cb-99096249601a",
        "pci_bus_id": "00000000:00:1E.0",
        "driver_version": "515.105.01",
        "cuda_version": "11.7",
    }
    assert value(found, "ugro_health_gpu_info", **info) == 1
    # Ratios are 0-1, not percent.
    assert value(found, "ugro_health_node_cpu_utilization_ratio", node="a100") == 0.375
    assert 0 <= value(found, "ugro_health_node_disk_utilization_ratio", node="a100", mount="/") <= 1
    # Reached or not, per node; Prometheus' own `up` is left to Prometheus.
    assert value(found, "ugro_health_node_up", node="a100") == 1
    assert value(found, "ugro_health_node_up", node="down") == 0
    assert value(found, "ugro_health_node_error", node="down", kind="refused") == 1
    assert value(found, "ugro_health_node_status", node="down", status="critical") == 1
    assert value(found, "ugro_health_node_status", node="down", status="ok") == 0
    assert value(found, "ugro_health_node_breaker_state", node="isolated", state="open") == 1
    assert ("ugro_health_node_score", frozenset({("node", "down")})) not in found  # None: absent
    hot = {"node": "a100", "code": "gpu_temp_critical", "severity": "critical", "gpu": "0"}
    assert value(found, "ugro_health_alert", **hot, subject="") == 1
    assert value(found, "ugro_health_alert", node="a100", code="disk_error",
                 severity="warning", gpu="", subject="/mnt/nfs") == 1  # fmt: skip
    assert value(found, "ugro_health_cycles_total") == 12
    assert value(found, "ugro_health_node_gpus_expected", node="down") == 8
    assert "ugro_health_build_info" in names(found)
    # No free text in labels: the alert's message and process names are not exported.
    assert "temperature 91" not in text.decode() and "Xorg" not in text.decode()


def test_throttle_reasons_are_one_series_each_and_metadata_is_info():
    node = recorded_node("t4", "smi_tesla_t4_515_q.xml")
    gpu = replace(node.gpus[0], throttle_reasons=("sw_power_cap", "hw_slowdown"))
    report = NodeReport("t4", Status.OK, 100, 1.0, 0.1, replace(node, gpus=(gpu,)))
    found = samples(exposition(SnapshotCollector(lambda: Snapshot([report]))))
    reasons = {
        dict(labels)["reason"]
        for name, labels in found
        if name == "ugro_health_gpu_throttle_reason"
    }
    assert reasons == {"sw_power_cap", "hw_slowdown"}
    assert value(found, "ugro_health_node_info", node="t4", hostname="t4",
                 kernel="6.8.0-45-generic", driver_version="515.105.01",
                 cuda_version="11.7") == 1  # fmt: skip


def test_a_node_removed_from_the_configuration_disappears_at_the_next_scrape():
    current = snapshot()
    collector = SnapshotCollector(lambda: current)
    assert "a100" in exposition(collector).decode()
    current = snapshot(reports=[r for r in current.reports if r.name != "a100"])
    after = exposition(collector).decode()
    assert 'node="a100"' not in after and 'node="ada"' in after


def test_hostile_text_from_a_node_stays_one_label_value():
    evil = 'bad"name\\\nugro_health_node_up{node="forged"} 1'
    node = replace(recorded_node("t4", "smi_tesla_t4_515_q.xml"), hostname=evil)
    alert = Alert(Severity.WARNING, "disk_full", "full", subject=evil)
    report = NodeReport("t4", Status.WARNING, 80, 1.0, 0.1, node, (alert,))
    text = exposition(SnapshotCollector(lambda: Snapshot([report])))
    assert_clean(text)
    found = samples(text)
    assert ("ugro_health_node_up", frozenset({("node", "forged")})) not in found
    alerts = [dict(labels) for name, labels in found if name == "ugro_health_alert"]
    assert [a["subject"] for a in alerts] == [evil]


def test_a_check_textfile_has_no_running_totals():
    one_off = snapshot(cycle=CycleStats(duration_s=1.5, finished_at=2.0), breakers={})
    text = exposition(SnapshotCollector(lambda: one_off, counts_errors=False))
    assert_clean(text)
    found = names(samples(text))
    assert not {n for n in found if n.endswith("_total")}
    assert {
        "ugro_health_cycle_duration_seconds",
        "ugro_health_last_cycle_timestamp_seconds",
    } <= found
    assert "ugro_health_node_breaker_state" not in found


def test_a_report_the_exposition_cannot_carry_is_counted_and_the_others_exported():
    reports = cluster_reports(now=1.0)
    broken = replace(reports[1], score="not a number")  # type: ignore[arg-type]
    collector = SnapshotCollector(lambda: Snapshot([reports[0], broken, reports[2]]))
    found = samples(collector.exposition())
    assert value(found, "ugro_health_exporter_errors_total") == 1
    assert value(found, "ugro_health_node_up", node="t4") == 1
