"""A cluster for the export tests built from real recorded GPU outputs (no GPU here).

GPUs come from the ``nvidia-smi -q -x`` recordings in ``tests/fixtures/probe`` (A100 SXM4 with
MIG, RTX 4000 Ada with remapped rows, Tesla T4 with throttle reasons) read by the probe's own
parser, then by ``GpuSample.from_probe`` as a real answer is.
"""

from __future__ import annotations

import time
from pathlib import Path

from ugro_health import probe
from ugro_health.model import (
    Alert,
    DiskSample,
    ErrorKind,
    GpuSample,
    NodeError,
    NodeReport,
    NodeSample,
    Severity,
    Status,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"
RECORDINGS = ("smi_a100_sxm4_mig_535_q.xml", "smi_rtx4000_ada_595_q.xml", "smi_tesla_t4_515_q.xml")


def recorded_node(name: str, recording: str, copies: int = 1, **changes: object) -> NodeSample:
    """A node whose GPUs are ``copies`` of the recording's (indexes renumbered)."""
    doc = probe.parse_smi_xml((FIXTURES / recording).read_text())
    gpus = []
    for _ in range(copies):
        for gpu in doc["gpus"]:
            gpus.append(GpuSample.from_probe({**gpu, "index": len(gpus)}))
    return NodeSample(
        hostname=name,
        kernel="6.8.0-45-generic",
        cpu_util_pct=37.5,
        cpu_cores=64,
        load1=12.0,
        load5=11.0,
        load15=10.5,
        mem_total_bytes=1_081_101_176_832,
        mem_used_bytes=412_316_860_416,
        mem_util_pct=38.1,
        swap_total_bytes=0,
        swap_used_bytes=0,
        disks=(
            DiskSample("/", 1_967_317_549_056, 503_316_480_000, avail_bytes=1_363_888_128_000),
            DiskSample("/mnt/nfs", error="timeout after 2.0s"),
        ),
        zombie_count=0,
        driver_version=doc.get("driver_version"),
        cuda_version=doc.get("cuda_version"),
        gpu_source="nvidia-smi",
        gpus=tuple(gpus),
        **changes,  # type: ignore[arg-type]
    )


def cluster_reports(now: float | None = None) -> list[NodeReport]:
    """Three GPU nodes (one with a GPU alert), an unreachable node and an isolated one."""
    now = time.time() if now is None else now
    hot = Alert(Severity.CRITICAL, "gpu_temp_critical", "temperature 91 °C", 91.0, gpu=0)
    nfs = Alert(Severity.WARNING, "disk_error", "timeout after 2.0s", None, subject="/mnt/nfs")
    return [
        NodeReport("a100", Status.CRITICAL, 40, now, 0.21, recorded_node("a100", RECORDINGS[0]),
                   (hot, nfs), clock_skew_s=0.004),
        NodeReport("ada", Status.OK, 100, now, 0.18, recorded_node("ada", RECORDINGS[1])),
        NodeReport("t4", Status.OK, 100, now, 0.30, recorded_node("t4", RECORDINGS[2])),
        NodeReport("down", Status.CRITICAL, None, now, 5.0, None,
                   (Alert(Severity.CRITICAL, "node_unreachable", "connection refused"),),
                   NodeError(ErrorKind.REFUSED, "connection refused")),
        NodeReport("isolated", Status.CRITICAL, None, now - 60, 0.0, None, (),
                   NodeError(ErrorKind.SKIPPED, "isolated by its circuit breaker")),
    ]  # fmt: skip
