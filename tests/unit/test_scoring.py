"""Scoring and alerts: thresholds, hard failures, and the score's ordering of node health."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ugro_health.config import NodeConfig, Thresholds
from ugro_health.engine.scoring import error_alert, judge
from ugro_health.model import (
    DiskSample,
    ErrorKind,
    GpuProcess,
    GpuSample,
    NetSample,
    NodeError,
    NodeSample,
    Severity,
    Status,
    XidEvent,
)

LIMITS = Thresholds()
NODE = NodeConfig(name="gpu1", gpus=2)
GIB = 1 << 30


def gpu(index: int = 0, **kw) -> GpuSample:
    base = dict(
        index=index,
        name="NVIDIA H100 80GB HBM3",
        util_pct=95.0,
        temp_c=60.0,
        mem_used_bytes=40 * GIB,
        mem_total_bytes=80 * GIB,
        power_w=500.0,
        power_limit_w=700.0,
        ecc_uncorrected_volatile=0,
        remapped_rows_failed=0,
        remapped_rows_pending=0,
        pcie_gen=5,
        pcie_gen_max=5,
        pcie_width=16,
        pcie_width_max=16,
    )
    base.update(kw)
    return GpuSample(**base)


def healthy(**kw) -> NodeSample:
    base = dict(
        cpu_util_pct=30.0,
        cpu_cores=32,
        load1=8.0,
        mem_util_pct=40.0,
        swap_util_pct=0.0,
        disks=(DiskSample("/", total_bytes=100, used_bytes=50),),
        net=(NetSample("eth0", rx_errors_per_s=0.0, tx_errors_per_s=0.0),),
        process_count=300,
        zombie_count=0,
        gpus=(gpu(0), gpu(1)),
    )
    base.update(kw)
    return NodeSample(**base)


def codes(verdict) -> dict[str, Severity]:
    return {a.code: a.severity for a in verdict.alerts}


def test_healthy_node_is_ok_and_scores_high():
    verdict = judge(healthy(), NODE, LIMITS, clock_skew_s=0.1)
    assert verdict.status is Status.OK
    assert verdict.alerts == ()
    assert verdict.score >= 95


@pytest.mark.parametrize(
    ("temp", "code", "status"),
    [
        (79.9, None, Status.OK),
        (80.0, "gpu_temp_warning", Status.WARNING),
        (85.0, "gpu_temp_critical", Status.CRITICAL),
        (92.0, "gpu_temp_critical", Status.CRITICAL),
    ],
)
def test_gpu_temperature_thresholds(temp, code, status):
    verdict = judge(healthy(gpus=(gpu(0), gpu(1, temp_c=temp))), NODE, LIMITS)
    assert verdict.status is status
    if code:
        alert = next(a for a in verdict.alerts if a.code == code)
        assert alert.gpu == 1 and alert.value == temp and "GPU 1" in alert.message


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"ecc_uncorrected_volatile": 1}, "gpu_ecc_uncorrected"),
        ({"remapped_rows_failed": 1}, "gpu_remap_failed"),
    ],
)
def test_hard_gpu_faults_are_critical_even_when_all_else_is_perfect(change, code):
    verdict = judge(healthy(gpus=(gpu(0), gpu(1, **change))), NODE, LIMITS)
    assert codes(verdict)[code] is Severity.CRITICAL
    assert verdict.status is Status.CRITICAL


def test_missing_gpu_is_critical_and_names_the_probe_error():
    sample = healthy(gpus=(gpu(0),), errors={"nvidia-smi": "timeout after 3.0s"})
    verdict = judge(sample, NODE, LIMITS)
    alert = next(a for a in verdict.alerts if a.code == "gpu_count_low")
    assert alert.severity is Severity.CRITICAL
    assert "1 of 2" in alert.message and "timeout after 3.0s" in alert.message
    assert verdict.score < judge(healthy(), NODE, LIMITS).score - 20


def test_no_expected_count_means_no_gpu_alert_on_cpu_node():
    verdict = judge(healthy(gpus=()), NodeConfig(name="cpu1"), LIMITS)
    assert verdict.status is Status.OK and verdict.score >= 95


def test_xid_fatal_list_is_configurable():
    sample = healthy(
        xids=(XidEvent(79, "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus."),)
    )
    assert codes(judge(sample, NODE, LIMITS))["gpu_xid_fatal"] is Severity.CRITICAL
    relaxed = replace(LIMITS, xid_critical=(48,))
    assert codes(judge(sample, NODE, relaxed)) == {"gpu_xid": Severity.WARNING}


def test_xids_older_than_the_window_are_info_only():
    fallen = "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus."
    app = "NVRM: Xid (PCI:0000:3b:00): 13, Graphics SM Warp Exception"
    day = 86400.0
    old_fatal = XidEvent(79, fallen, kernel_time_s=100.0)
    recent_app = XidEvent(13, app, kernel_time_s=3 * day - 60)
    sample = healthy(uptime_s=3 * day, xids=(old_fatal, recent_app))
    verdict = judge(sample, NODE, LIMITS)
    assert codes(verdict) == {"gpu_xid_old": Severity.INFO, "gpu_xid": Severity.WARNING}
    (old,) = [a for a in verdict.alerts if a.code == "gpu_xid_old"]
    assert old.message.startswith("XID 79 last logged 3.0d ago")
    assert verdict.status is Status.WARNING
    # the same fatal event inside a wider window is CRITICAL again
    wide = judge(sample, NODE, replace(LIMITS, xid_window_s=4 * day))
    assert codes(wide)["gpu_xid_fatal"] is Severity.CRITICAL
    # a line without a timestamp (ctime output) cannot be aged: it always counts
    undated = healthy(uptime_s=3 * day, xids=(XidEvent(79, fallen),))
    assert codes(judge(undated, NODE, LIMITS))["gpu_xid_fatal"] is Severity.CRITICAL


@pytest.mark.parametrize(
    ("kw", "code", "severity"),
    [
        ({"mem_util_pct": 91.0}, "mem_warning", Severity.WARNING),
        ({"mem_util_pct": 97.0}, "mem_critical", Severity.CRITICAL),
        ({"disks": (DiskSample("/", 100, 96),)}, "disk_critical", Severity.CRITICAL),
        ({"disks": (DiskSample("/", 100, 90),)}, "disk_warning", Severity.WARNING),
        (
            {"disks": (DiskSample("/mnt/nfs", error="timeout after 3.0s"),)},
            "disk_check_failed",
            Severity.WARNING,
        ),
        ({"swap_util_pct": 60.0}, "swap_warning", Severity.WARNING),
        ({"load1": 70.0}, "load_high", Severity.WARNING),
        ({"zombie_count": 25}, "zombies_high", Severity.WARNING),
        ({"net": (NetSample("ib0", rx_errors_per_s=5.0),)}, "net_errors", Severity.WARNING),
        ({"errors": {"xid": "dmesg: timeout after 3s"}}, "probe_partial", Severity.INFO),
    ],
)
def test_system_alerts(kw, code, severity):
    verdict = judge(healthy(**kw), NODE, LIMITS)
    assert codes(verdict).get(code) is severity


def test_an_unreadable_kernel_log_is_no_alert_but_a_fact_of_the_node():
    from ugro_health.engine.scoring import kernel_log_denied

    error = (
        "dmesg: dmesg: read kernel buffer failed: Operation not permitted; journalctl: Hint: "
        "You are currently not seeing messages from other users and the system."
    )
    sample = healthy(errors={"xid": error})
    verdict = judge(sample, NODE, LIMITS)
    assert verdict.alerts == () and verdict.status is Status.OK
    assert kernel_log_denied(sample) and not kernel_log_denied(healthy())


def test_info_alert_leaves_node_ok():
    verdict = judge(healthy(errors={"xid": "no permission"}), NODE, LIMITS)
    assert verdict.status is Status.OK


def test_throttle_pcie_nvlink_and_zombie_holder():
    sick = gpu(
        1,
        throttle_reasons=("hw_thermal_slowdown", "sw_power_cap"),
        pcie_width=8,
        nvlink_active=16,
        nvlink_total=18,
        processes=(GpuProcess(pid=4242, name="python", used_memory_bytes=GIB, alive=False),),
    )
    verdict = judge(healthy(gpus=(gpu(0), sick)), NODE, LIMITS)
    found = codes(verdict)
    for code in (
        "gpu_throttle_thermal",
        "gpu_pcie_degraded",
        "gpu_nvlink_down",
        "gpu_zombie_holder",
    ):
        assert found[code] is Severity.WARNING
    assert "sw_power_cap" not in str(verdict.alerts)  # power capping is normal operation


@pytest.mark.parametrize(
    ("active", "total", "expected", "alert"),
    [
        (18, 18, None, None),
        (16, 18, None, "2 of 18 NVLinks down"),
        (0, 12, None, None),  # all down reads like a PCIe GPU without a bridge
        (0, None, None, None),  # nvidia-smi: "all links are inActive", count unknown
        (0, None, 18, "0 of 18 expected NVLinks active"),
        (0, 12, 12, "0 of 12 expected NVLinks active"),
        (18, 18, 18, None),
        (16, 18, 0, "2 of 18 NVLinks down"),  # a partial loss alerts whatever is expected
        (16, 18, 12, "2 of 18 NVLinks down"),
        (None, None, 18, None),  # unknown (no NVLink data): not a fault by itself
    ],
)
def test_nvlink_down(
    active: int | None, total: int | None, expected: int | None, alert: str | None
):
    node = replace(NODE, nvlinks=expected)
    sample = healthy(gpus=(gpu(0, nvlink_active=active, nvlink_total=total), gpu(1)))
    found = [a for a in judge(sample, node, LIMITS).alerts if a.code == "gpu_nvlink_down"]
    assert [a.message for a in found] == ([f"GPU 0: {alert}"] if alert else [])
    assert all(a.severity is Severity.WARNING for a in found)


def test_pcie_generation_drop_at_idle_is_not_an_alert():
    verdict = judge(healthy(gpus=(gpu(0, pcie_gen=1, util_pct=0.0), gpu(1))), NODE, LIMITS)
    assert verdict.status is Status.OK


def test_clock_skew():
    assert "clock_skew" in codes(judge(healthy(), NODE, LIMITS, clock_skew_s=-5.0))
    assert "clock_skew" not in codes(judge(healthy(), NODE, LIMITS, clock_skew_s=0.5))


def test_score_orders_nodes_by_health():
    fine = judge(healthy(), NODE, LIMITS).score
    warm = judge(healthy(gpus=(gpu(0, temp_c=78.0), gpu(1, temp_c=78.0))), NODE, LIMITS).score
    hot = judge(healthy(gpus=(gpu(0, temp_c=86.0), gpu(1))), NODE, LIMITS).score
    full = judge(healthy(mem_util_pct=99.0, disks=(DiskSample("/", 100, 99),)), NODE, LIMITS).score
    assert fine > warm > hot
    assert fine > full
    assert all(0 <= s <= 100 for s in (fine, warm, hot, full))


def test_missing_values_are_not_penalised_or_invented():
    verdict = judge(NodeSample(gpus=(GpuSample(index=0),)), NodeConfig(name="x", gpus=1), LIMITS)
    assert verdict.status is Status.OK
    assert verdict.alerts == ()


def test_error_alerts_distinguish_unreachable_from_probe_failure():
    assert (
        error_alert(NodeError(ErrorKind.REFUSED, "connection refused")).code == "node_unreachable"
    )
    alert = error_alert(NodeError(ErrorKind.PROBE_INVALID, "garbage"))
    assert alert.code == "probe_invalid" and alert.severity is Severity.CRITICAL


def test_a_score_below_score_critical_makes_the_node_critical():
    # Two hot GPUs (warnings only) pull the score down; the critical level turns it CRITICAL.
    sample = healthy(gpus=(gpu(0, temp_c=82.0), gpu(1, temp_c=82.0)), mem_util_pct=92.0)
    plain = judge(sample, NODE, LIMITS)
    assert plain.status is Status.WARNING and "score_critical" not in codes(plain)
    limits = replace(LIMITS, score_critical=plain.score + 1, score_warn=plain.score + 1)
    verdict = judge(sample, NODE, limits)
    assert codes(verdict)["score_critical"] is Severity.CRITICAL
    assert verdict.status is Status.CRITICAL
    assert "score_low" not in codes(verdict)  # one alert for the score, the worse one


def test_score_critical_at_its_default_never_alerts():
    broken = healthy(gpus=(gpu(0, temp_c=99.0, ecc_uncorrected_volatile=5),), mem_util_pct=99.0)
    assert "score_critical" not in codes(judge(broken, NODE, LIMITS))
