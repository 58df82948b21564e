"""A node's answer is read within documented limits: long lists are cut and said so, impossible
values read as null and said so, and whatever a node sends, its report stays small."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ugro_health.answer_limits import (
    ANSWER_LIMITS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    RECORD_MAX_BYTES,
)
from ugro_health.config import Config, NodeConfig, Thresholds
from ugro_health.engine.collect import poll_node
from ugro_health.engine.scoring import MAX_ALERTS_PER_NODE, judge
from ugro_health.model import NodeSample, Severity, Status

NODE = NodeConfig(name="gpu1", gpus=1)


class Answering:
    """A transport that answers ``doc`` (what the SSH transport would have decoded)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def run_probe(self, node: NodeConfig, request: dict[str, Any], deadline: float) -> Any:
        return self.doc

    def forget(self, node_name: str) -> None: ...

    def close(self) -> None: ...


def report_for(doc: dict[str, Any]) -> Any:
    return poll_node(Config(nodes=(NODE,)), NODE, Answering(doc), time.monotonic() + 10)


def gpu(index: int = 0, **fields: Any) -> dict[str, Any]:
    return {"index": index, "name": "NVIDIA H100", "temp_c": 40.0, "util_pct": 50.0, **fields}


def test_sixty_thousand_failing_disks_give_a_bounded_number_of_alerts() -> None:
    disks = [{"mount": f"/m{i}", "error": "timeout after 3.0s"} for i in range(60_000)]
    report = report_for({"ok": True, "gpus": [gpu()], "disks": disks})
    assert len(report.alerts) <= MAX_ALERTS_PER_NODE
    assert len(report.sample.disks) == ANSWER_LIMITS["disks"]
    codes = {a.code for a in report.alerts}
    assert {"probe_truncated", "alerts_truncated", "disk_check_failed"} <= codes
    truncated = next(a for a in report.alerts if a.code == "probe_truncated")
    assert "60000 disks (kept 256)" in truncated.message
    assert report.status is Status.WARNING


def test_the_most_severe_alerts_are_kept_when_they_are_cut() -> None:
    disks = [{"mount": f"/m{i}", "error": "hung"} for i in range(200)]
    report = report_for({"ok": True, "gpus": [gpu(ecc_uncorrected_volatile=3)], "disks": disks})
    assert report.alerts[0].code == "gpu_ecc_uncorrected"
    assert report.status is Status.CRITICAL


def test_a_hostile_answer_at_every_limit_makes_a_bounded_record() -> None:
    # Every list ten times its limit, every text forty times MAX_TEXT_CHARS, escapes included.
    text = "\x1b" * (MAX_TEXT_CHARS * 40)
    procs = [{"pid": i, "name": text, "used_memory_bytes": 1} for i in range(640)]
    gpus = [
        gpu(i, name=text, uuid=text, throttle_reasons=[text] * 160, processes=procs)
        for i in range(320)
    ]
    doc = {
        "ok": True,
        "hostname": text,
        "kernel": text,
        "gpus": gpus,
        "disks": [{"mount": f"{i}{text}", "total_bytes": 1, "error": text} for i in range(2560)],
        "network": [{"iface": f"{i}{text}", "rx_errors_per_s": 9} for i in range(2560)],
        "xids": [{"xid": 79, "message": text} for _ in range(640)],
        "matched_processes": [{"pid": 1, "cmdline": text, "pattern": text}] * 2560,
        "errors": {f"e{i}": text for i in range(640)},
    }
    report = report_for(doc)
    assert report.sample is not None
    assert len(report.sample.gpus) == ANSWER_LIMITS["gpus"]
    assert all(len(g.processes) == ANSWER_LIMITS["gpus[].processes"] for g in report.sample.gpus)
    assert len(report.sample.errors) <= ANSWER_LIMITS["errors"] + 2
    assert len(report.sample.hostname or "") == MAX_NAME_CHARS
    assert len(report.sample.xids[0].message) == MAX_TEXT_CHARS
    assert len(report.alerts) <= MAX_ALERTS_PER_NODE
    record = json.dumps(report.to_json())
    assert len(record) <= RECORD_MAX_BYTES, len(record)
    assert "\x1b" not in record


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"temp_c": -273.0}, "temp_c"),
        ({"util_pct": 1e9}, "util_pct"),
        ({"mem_used_bytes": -5}, "mem_used_bytes"),
        ({"power_w": -1.0}, "power_w"),
        ({"nvlink_active": 1000}, "nvlink_active"),
    ],
)
def test_an_impossible_gpu_value_is_null_and_noted(fields: dict[str, Any], field: str) -> None:
    report = report_for({"ok": True, "gpus": [gpu(**fields)]})
    assert getattr(report.sample.gpus[0], field) is None
    (note,) = [a for a in report.alerts if a.code == "probe_out_of_range"]
    assert note.severity is Severity.INFO
    assert f"{field}=" in note.message
    assert report.sample.gpus[0].name == "NVIDIA H100"  # the rest of the GPU is kept


def test_impossible_host_values_are_null_and_scored_as_missing() -> None:
    sample = NodeSample.from_probe(
        {
            "cpu": {"util_pct": 250.0, "cores": 0, "load1": -3.0},
            "memory": {"total_bytes": -1, "used_bytes": 10, "util_pct": 1e9},
            "disks": [{"mount": "/", "total_bytes": 100, "used_bytes": -100}],
        }
    )
    assert (sample.cpu_util_pct, sample.cpu_cores, sample.load1) == (None, None, None)
    assert (sample.mem_total_bytes, sample.mem_used_bytes, sample.mem_util_pct) == (None, 10, None)
    assert sample.disks[0].used_bytes is None
    assert sample.errors["answer:ranges"].startswith("6 value(s) outside physical ranges")
    verdict = judge(sample, NodeConfig(name="cpu1"), Thresholds())
    assert {a.code for a in verdict.alerts} == {"probe_out_of_range"}
    assert verdict.status is Status.OK


def test_an_ordinary_answer_is_read_whole_and_without_notes() -> None:
    doc = {
        "gpus": [gpu(i, temp_c=-10.0, util_pct=100.0, pcie_width=16) for i in range(8)],
        "cpu": {"util_pct": 0.0, "cores": 256, "load1": 900.0},
        "time": time.time(),
        "xids": [{"xid": 79, "message": "NVRM: Xid 79", "kernel_time_s": 12.5}] * 20,
        "errors": {"xid": "dmesg: permission denied"},
    }
    sample = NodeSample.from_probe(doc)
    assert len(sample.gpus) == 8 and len(sample.xids) == 20
    assert sample.gpus[7].temp_c == -10.0 and sample.cpu_cores == 256
    assert sample.errors == {"xid": "dmesg: permission denied"}
