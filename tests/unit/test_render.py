"""Renderers, read back as a person would: a fixed-width, colourless console."""

from __future__ import annotations

import io
import json

from rich.console import Console

from ugro_health.config import Thresholds
from ugro_health.model import (
    JSON_SCHEMA,
    Alert,
    ClusterReport,
    DiskSample,
    ErrorKind,
    GpuSample,
    NodeError,
    NodeReport,
    NodeSample,
    Severity,
    Status,
)
from ugro_health.render.nagios import nagios_line
from ugro_health.render.table import check_table

GIB = 1 << 30


def render(renderable, width: int = 120) -> str:
    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def sample(temp: float = 65.0) -> NodeSample:
    gpus = tuple(
        GpuSample(
            index=i,
            name="NVIDIA H100 80GB HBM3",
            util_pct=90.0 + i,
            temp_c=temp + i,
            mem_used_bytes=10 * GIB,
            mem_total_bytes=80 * GIB,
        )
        for i in range(2)
    )
    return NodeSample(
        cpu_util_pct=12.4, mem_util_pct=41.6, disks=(DiskSample("/", 100, 55),), gpus=gpus
    )


def report() -> ClusterReport:
    ok = NodeReport("gpu-master", Status.OK, 97, 1000.0, 0.02, sample=sample())
    hot = NodeReport(
        "gpu1",
        Status.WARNING,
        74,
        1000.0,
        0.03,
        sample=sample(81.0),
        alerts=(Alert(Severity.WARNING, "gpu_temp_warning", "GPU 1: temperature 82 °C", 82.0, 1),),
    )
    dead = NodeReport(
        "gpu2",
        Status.CRITICAL,
        None,
        1000.0,
        5.0,
        error=NodeError(ErrorKind.REFUSED, "connection refused (127.0.0.1:2222)"),
        alerts=(
            Alert(
                Severity.CRITICAL,
                "node_unreachable",
                "unreachable (refused): connection refused",
                "refused",
            ),
        ),
    )
    return ClusterReport(generated_at=1764363000.0, nodes=(ok, hot, dead), duration_s=5.01)


def test_table_reads_at_a_glance():
    text = render(check_table(report()))
    lines = text.splitlines()
    assert lines[0].split()[:8] == [
        "NODE",
        "STATUS",
        "SCORE",
        "GPUS",
        "CPU",
        "MEM",
        "DISK",
        "ALERTS",
    ]
    master = next(line for line in lines if line.startswith("gpu-master"))
    assert "OK" in master and "97" in master and "2× H100 90% 66°C" in master
    assert "12%" in master and "42%" in master and "55%" in master
    gpu1 = next(line for line in lines if line.startswith("gpu1"))
    assert "WARNING" in gpu1 and "GPU 1: temperature 82 °C" in gpu1
    gpu2 = next(line for line in lines if line.startswith("gpu2"))
    assert "UNREACHABLE" in gpu2 and "connection refused" in gpu2 and "—" in gpu2
    assert "CRITICAL  3 nodes: 1 ok, 1 warning, 1 critical (1 unreachable) in 5.01s" in text


def test_table_fits_narrow_terminal():
    text = render(check_table(report()), width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "gpu-master" in text


def test_json_contract_fields():
    doc = json.loads(json.dumps(report().to_json()))
    assert doc["schema"] == JSON_SCHEMA and doc["status"] == "critical"
    assert doc["generated_at"].startswith("2025-11-28T")
    names = [n["name"] for n in doc["nodes"]]
    assert names == ["gpu-master", "gpu1", "gpu2"]
    for node in doc["nodes"]:
        assert {
            "name",
            "status",
            "score",
            "reachable",
            "error",
            "metrics",
            "gpus",
            "alerts",
        } <= set(node)
    dead = doc["nodes"][2]
    assert dead["reachable"] is False and dead["score"] is None and dead["metrics"] == {}
    assert dead["error"] == "refused: connection refused (127.0.0.1:2222)"
    assert doc["nodes"][1]["alerts"][0] == {
        "severity": "warning",
        "code": "gpu_temp_warning",
        "message": "GPU 1: temperature 82 °C",
        "value": 82.0,
        "gpu": 1,
        "subject": None,  # a mount, interface, job or process where a node can have several
        "state": None,  # its lifecycle state: none judged it here
    }
    assert doc["nodes"][0]["gpus"][1]["temp_c"] == 66.0
    assert doc["nodes"][0]["metrics"]["disks"]["/"]["util_pct"] == 55.0


def test_empty_cluster_is_unknown():
    assert ClusterReport(generated_at=0.0, nodes=()).status is Status.UNKNOWN


def test_nagios_line_has_status_summary_and_perfdata():
    line = nagios_line(report(), Thresholds())
    head, perf = line.split(" | ")
    assert head.startswith(
        "UGRO-HEALTH CRITICAL - 3 nodes: 1 ok, 1 warning, 1 critical (1 unreachable)"
    )
    assert "gpu2: unreachable (refused)" in head and "gpu1: GPU 1: temperature 82 °C" in head
    assert "\n" not in line
    # Plugin range syntax: "70:" alerts below 70 (the score rule), "@80:" at 80 or above (the
    # temperature rule), "0" above 0 (one unreachable node is critical). No invented gpu2 score.
    assert perf.split() == [
        "nodes=3;;;0",
        "duration=5.010s;;;0",
        "unreachable=1;;0;0;3",
        "'gpu-master_score'=97;70:;;0;100",
        "'gpu-master_gpu_temp_max'=66;@80:;@85:",
        "'gpu1_score'=74;70:;;0;100",
        "'gpu1_gpu_temp_max'=82;@80:;@85:",
    ]


def test_nagios_thresholds_follow_configured_limits_without_rounding():
    limits = Thresholds(score_warn=65, gpu_temp_warn_c=82.5, gpu_temp_crit_c=90.0)
    perf = nagios_line(report(), limits).split(" | ")[1].split()
    assert "'gpu1_score'=74;65:;;0;100" in perf
    assert "'gpu1_gpu_temp_max'=82;@82.5:;@90:" in perf


def test_a_node_never_polled_is_unknown_not_unreachable():
    from ugro_health.engine.collect import failed_report
    from ugro_health.render.common import counts_line

    base = report()
    never = failed_report(
        "gpu9", NodeError(ErrorKind.NOT_POLLED, "not polled: the run's time ran out"), 1000.0, 0
    )
    cluster = ClusterReport(1000.0, (*base.nodes, never))
    assert never.status is Status.UNKNOWN and not never.unreachable
    assert counts_line(cluster.nodes).endswith("(1 unreachable)")  # the refused one only
    assert "unreachable=1;;0;0;4" in nagios_line(cluster, Thresholds())
    row = next(line for line in render(check_table(cluster)).splitlines() if "gpu9" in line)
    assert "UNKNOWN" in row and "UNREACHABLE" not in row


def test_an_unreadable_kernel_log_is_said_once_with_its_fix():
    from dataclasses import replace

    base = report()
    denied = {"xid": "dmesg: dmesg: read kernel buffer failed: Operation not permitted"}
    nodes = tuple(
        replace(n, sample=replace(n.sample, errors=denied)) if n.sample is not None else n
        for n in base.nodes
    )
    text = " ".join(render(check_table(replace(base, nodes=nodes)), 100).split())
    assert text.count("XID errors are not checked") == 1
    assert "not checked on gpu-master, gpu1:" in text
    assert "`adm` group" in text and "kernel.dmesg_restrict=0" in text
    assert "not checked" not in render(check_table(base), 100)
