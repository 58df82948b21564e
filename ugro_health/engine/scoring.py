"""Judge one node's sample: alerts with stable codes, a 0-100 score, and a status.

Pure functions over ``model`` and ``config`` values; no I/O. The status is the worst alert's;
the score summarises how healthy the node is (weighted GPU, system, network and process
components) so that operators can sort and trend nodes. Hard failures (an uncorrected ECC error,
a failed row remap, a missing GPU, a fatal XID) are CRITICAL whatever the score.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ugro_health.config import NodeConfig, Thresholds
from ugro_health.model import (
    Alert,
    ErrorKind,
    GpuSample,
    NodeError,
    NodeSample,
    Severity,
    Status,
    XidEvent,
    human_duration,
    worst_status,
)

WEIGHTS = {"gpu": 0.45, "system": 0.30, "network": 0.10, "process": 0.15}

THERMAL_THROTTLE = ("hw_thermal_slowdown", "sw_thermal_slowdown")
HW_THROTTLE = ("hw_slowdown", "hw_power_brake_slowdown")

CRIT, WARN, INFO = Severity.CRITICAL, Severity.WARNING, Severity.INFO

# The most alerts one node's verdict holds (the last of them says how many more there were):
# with an answer's lists bounded (model.ANSWER_LIMITS) a node could still raise hundreds.
MAX_ALERTS_PER_NODE = 64
_SEVERITY_ORDER = {CRIT: 0, WARN: 1, INFO: 2}


@dataclass(frozen=True, slots=True)
class Verdict:
    score: int
    alerts: tuple[Alert, ...]
    status: Status
    components: dict[str, float]


def judge(
    sample: NodeSample,
    node: NodeConfig,
    limits: Thresholds,
    clock_skew_s: float | None = None,
    clock_skew_error_s: float = 0.0,
) -> Verdict:
    """Score ``sample`` of ``node`` against ``limits`` and list its alerts. The clock skew is
    known within ``clock_skew_error_s`` (half the round trip): only what it surely exceeds
    alerts."""
    gpu_alerts, gpu_score = _judge_gpus(sample, node, limits)
    sys_alerts, sys_score = _judge_system(sample, limits, clock_skew_s, clock_skew_error_s)
    net_alerts, net_score = _judge_network(sample, limits)
    proc_alerts, proc_score = _judge_processes(sample, limits)
    components = {
        "gpu": gpu_score,
        "system": sys_score,
        "network": net_score,
        "process": proc_score,
    }
    score = round(sum(WEIGHTS[k] * v for k, v in components.items()))
    # What was cut from the answer comes first: it survives the cap on alerts.
    alerts = [*_answer_alerts(sample), *gpu_alerts, *sys_alerts, *net_alerts, *proc_alerts]
    if score < limits.score_critical and not any(a.severity is CRIT for a in alerts):
        message = f"health score {score} is below {limits.score_critical}"
        alerts.append(Alert(CRIT, "score_critical", message, score))
    if score < limits.score_warn and not any(a.severity is not INFO for a in alerts):
        alerts.append(
            Alert(WARN, "score_low", f"health score {score} is below {limits.score_warn}", score)
        )
    alerts = _capped(alerts)
    status = worst_status(a.severity.status for a in alerts)
    return Verdict(max(0, min(100, score)), tuple(alerts), status, components)


def _capped(alerts: list[Alert]) -> list[Alert]:
    """At most MAX_ALERTS_PER_NODE alerts, the most severe kept (the status is unchanged)."""
    if len(alerts) <= MAX_ALERTS_PER_NODE:
        return alerts
    kept = sorted(alerts, key=lambda a: _SEVERITY_ORDER[a.severity])[: MAX_ALERTS_PER_NODE - 1]
    more = len(alerts) - len(kept)
    message = f"{more} more alerts not shown (at most {MAX_ALERTS_PER_NODE} per node)"
    return [*kept, Alert(WARN, "alerts_truncated", message, more)]


# --- GPUs ----------------------------------------------------------------------------------


def _judge_gpus(
    sample: NodeSample, node: NodeConfig, limits: Thresholds
) -> tuple[list[Alert], float]:
    alerts: list[Alert] = []
    seen = len(sample.gpus)
    if node.gpus is not None and seen < node.gpus:
        why = (
            sample.errors.get("gpu") or sample.errors.get("nvidia-smi") or sample.errors.get("nvml")
        )
        reason = f" ({why})" if why else ""
        alerts.append(
            Alert(
                CRIT, "gpu_count_low", f"{seen} of {node.gpus} expected GPUs visible{reason}", seen
            )
        )
    alerts.extend(_judge_xids(sample, limits))
    healths = []
    for gpu in sample.gpus:
        gpu_alerts, health = _judge_gpu(gpu, limits, node.nvlinks)
        alerts.extend(gpu_alerts)
        healths.append(health)
    if not healths:
        score = 0.0 if node.gpus else 100.0
    else:
        # The worst GPU matters more than the average: one sick GPU stalls a whole job.
        score = 0.5 * min(healths) + 0.5 * sum(healths) / len(healths)
    if node.gpus and seen < node.gpus:
        score *= seen / node.gpus
    if any(a.code == "gpu_xid_fatal" for a in alerts):
        score = min(score, 20.0)
    return alerts, score


def _judge_xids(sample: NodeSample, limits: Thresholds) -> list[Alert]:
    """Recent XIDs alert (fatal ones CRITICAL); those older than the window are INFO only, so a
    fault fixed hours ago does not keep the node CRITICAL until its next reboot."""
    recent: list[XidEvent] = []
    old: list[XidEvent] = []
    old_ages: list[float] = []
    for event in sample.xids:
        age = event.age_s(sample.uptime_s)
        if age is not None and age > limits.xid_window_s:
            old.append(event)
            old_ages.append(age)
        else:
            recent.append(event)
    fatal = [x for x in recent if x.xid in limits.xid_critical]
    other = [x for x in recent if x.xid not in limits.xid_critical]
    alerts = []
    if fatal:
        alerts.append(
            Alert(
                CRIT,
                "gpu_xid_fatal",
                f"fatal XID {_codes(fatal)}: {fatal[-1].message[:160]}",
                fatal[-1].xid,
            )
        )
    if other:
        alerts.append(
            Alert(WARN, "gpu_xid", f"XID {_codes(other)} in the kernel log", other[-1].xid)
        )
    if old:
        alerts.append(
            Alert(
                INFO,
                "gpu_xid_old",
                f"XID {_codes(old)} last logged {human_duration(min(old_ages))} ago,"
                " outside thresholds.xid_window_s",
                old[-1].xid,
            )
        )
    return alerts


def _codes(events: list[XidEvent]) -> str:
    return ", ".join(sorted({str(x.xid) for x in events}, key=int))


def _judge_gpu(
    gpu: GpuSample, limits: Thresholds, nvlinks: int | None = None
) -> tuple[list[Alert], float]:
    alerts: list[Alert] = []
    health = 100.0
    tag = f"GPU {gpu.index}"

    def add(
        severity: Severity,
        code: str,
        message: str,
        value: float | str | None,
        cost: float,
        subject: str | None = None,
    ) -> None:
        nonlocal health
        alerts.append(Alert(severity, code, f"{tag}: {message}", value, gpu.index, subject))
        health -= cost

    if gpu.temp_c is not None:
        if gpu.temp_c >= limits.gpu_temp_crit_c:
            add(CRIT, "gpu_temp_critical", f"temperature {gpu.temp_c:.0f} °C", gpu.temp_c, 60)
        elif gpu.temp_c >= limits.gpu_temp_warn_c:
            add(WARN, "gpu_temp_warning", f"temperature {gpu.temp_c:.0f} °C", gpu.temp_c, 30)
        else:
            # Gentle slope below the warning line so hot-but-fine GPUs rank below cool ones.
            health -= max(0.0, gpu.temp_c - (limits.gpu_temp_warn_c - 15)) * 0.5
    if gpu.ecc_uncorrected_volatile:
        n = gpu.ecc_uncorrected_volatile
        add(CRIT, "gpu_ecc_uncorrected", f"{n} uncorrected ECC errors", n, 100)
    if gpu.remapped_rows_failed:
        add(
            CRIT,
            "gpu_remap_failed",
            "row remapping failed: replace the GPU",
            gpu.remapped_rows_failed,
            100,
        )
    if gpu.remapped_rows_pending:
        add(
            WARN,
            "gpu_remap_pending",
            "row remap pending: reset the GPU when idle",
            gpu.remapped_rows_pending,
            20,
        )
    if gpu.retired_pages_pending:
        add(
            WARN,
            "gpu_retired_pages_pending",
            "retired pages pending: reset the GPU when idle",
            "pending",
            20,
        )
    _judge_throttle(gpu, add)
    _judge_links(gpu, add)
    _judge_nvlink(gpu, nvlinks, add)
    for proc in gpu.processes:
        if proc.alive is False:
            add(
                WARN,
                "gpu_zombie_holder",
                f"process {proc.pid} holds GPU memory but no longer exists",
                proc.pid,
                15,
                subject=str(proc.pid),
            )
    return alerts, max(0.0, health)


def _judge_throttle(gpu: GpuSample, add: _Add) -> None:
    reasons = gpu.throttle_reasons or ()  # None: unknown on this GPU, nothing to judge
    thermal = [r for r in reasons if r in THERMAL_THROTTLE]
    hardware = [r for r in reasons if r in HW_THROTTLE]
    if thermal:
        add(
            WARN,
            "gpu_throttle_thermal",
            f"clocks throttled ({', '.join(thermal)})",
            ",".join(thermal),
            25,
        )
    if hardware:
        add(
            WARN,
            "gpu_throttle_hw",
            f"clocks throttled ({', '.join(hardware)})",
            ",".join(hardware),
            25,
        )


def _judge_links(gpu: GpuSample, add: _Add) -> None:
    # Link *generation* drops at idle to save power; a narrower *width* is a real fault.
    if gpu.pcie_width is not None and gpu.pcie_width_max and gpu.pcie_width < gpu.pcie_width_max:
        add(
            WARN,
            "gpu_pcie_degraded",
            f"PCIe link x{gpu.pcie_width} of x{gpu.pcie_width_max}",
            gpu.pcie_width,
            20,
        )


# The signature of the local ``add`` closures above.
_Add = Callable[[Severity, str, str, float | str | None, float], None]


def _judge_nvlink(gpu: GpuSample, expected: int | None, add: _Add) -> None:
    """Some links down is a fault. All down reads the same as a PCIe GPU without a bridge,
    so it alerts only where the node's ``nvlinks:`` says how many links to expect."""
    active, total = gpu.nvlink_active, gpu.nvlink_total
    if active is None:
        return
    if expected is not None and active < expected:
        add(WARN, "gpu_nvlink_down", f"{active} of {expected} expected NVLinks active", active, 30)
    elif total and 0 < active < total:  # some links trained, others not: always a fault
        add(WARN, "gpu_nvlink_down", f"{total - active} of {total} NVLinks down", active, 30)


# --- system, network, processes ------------------------------------------------------------


def _ramp(value: float | None, warn: float, crit: float) -> float:
    """Penalty 0 below ``warn - 20``, rising to 50 at ``crit`` and 100 at 100 %."""
    if value is None:
        return 0.0
    start = warn - 20
    if value <= start:
        return 0.0
    if value <= crit:
        return 50.0 * (value - start) / max(crit - start, 1e-9)
    return 50.0 + 50.0 * (value - crit) / max(100 - crit, 1e-9)


def _level(
    value: float | None, warn: float, crit: float, code: str, label: str, subject: str | None = None
) -> Iterable[Alert]:
    if value is None:
        return
    if value >= crit:
        yield Alert(
            CRIT, f"{code}_critical", f"{label} {value:.0f} %", round(value, 1), None, subject
        )
    elif value >= warn:
        yield Alert(
            WARN, f"{code}_warning", f"{label} {value:.0f} %", round(value, 1), None, subject
        )


def _judge_system(
    sample: NodeSample,
    limits: Thresholds,
    clock_skew_s: float | None,
    clock_skew_error_s: float = 0.0,
) -> tuple[list[Alert], float]:
    alerts = list(
        _level(
            sample.mem_util_pct, limits.mem_warn_pct, limits.mem_crit_pct, "mem", "memory in use"
        )
    )
    penalty = _ramp(sample.mem_util_pct, limits.mem_warn_pct, limits.mem_crit_pct)
    for disk in sample.disks:
        if disk.mounted is False:
            # Jobs writing there fill the parent file system (often /) or fail: page.
            alerts.append(
                Alert(
                    CRIT,
                    "mount_missing",
                    f"{disk.mount} is not mounted (not a mount point on the node)",
                    disk.mount,
                    subject=disk.mount,
                )
            )
            penalty += 50
            continue
        if disk.error:
            alerts.append(
                Alert(
                    WARN,
                    "disk_check_failed",
                    f"{disk.mount}: {disk.error}",
                    disk.mount,
                    subject=disk.mount,
                )
            )
            penalty += 25
            continue
        alerts.extend(
            _level(
                disk.util_pct,
                limits.disk_warn_pct,
                limits.disk_crit_pct,
                "disk",
                f"{disk.mount} full",
                disk.mount,
            )
        )
        penalty = max(penalty, _ramp(disk.util_pct, limits.disk_warn_pct, limits.disk_crit_pct))
    if sample.swap_util_pct is not None and sample.swap_util_pct >= limits.swap_warn_pct:
        alerts.append(
            Alert(
                WARN,
                "swap_warning",
                f"swap {sample.swap_util_pct:.0f} % used",
                round(sample.swap_util_pct, 1),
            )
        )
        penalty += 15
    if sample.load1 is not None and sample.cpu_cores:
        per_core = sample.load1 / sample.cpu_cores
        if per_core >= limits.load_warn_per_core:
            alerts.append(
                Alert(
                    WARN,
                    "load_high",
                    f"load {sample.load1:.1f} on {sample.cpu_cores} cores",
                    round(sample.load1, 2),
                )
            )
            penalty += 15
    skew_error = clock_skew_error_s
    if clock_skew_s is not None and abs(clock_skew_s) - skew_error >= limits.clock_skew_warn_s:
        alerts.append(
            Alert(
                WARN,
                "clock_skew",
                f"clock off by {clock_skew_s:+.1f} s from the control host",
                round(clock_skew_s, 2),
            )
        )
        penalty += 10
    return alerts, max(0.0, 100.0 - penalty)


def _judge_network(sample: NodeSample, limits: Thresholds) -> tuple[list[Alert], float]:
    alerts = []
    penalty = 0.0
    for net in sample.net:
        rate = (net.rx_errors_per_s or 0.0) + (net.tx_errors_per_s or 0.0)
        if rate >= limits.net_errors_warn_per_s:
            alerts.append(
                Alert(
                    WARN,
                    "net_errors",
                    f"{net.iface}: {rate:.1f} errors/s",
                    round(rate, 2),
                    subject=net.iface,
                )
            )
            penalty += 30
    return alerts, max(0.0, 100.0 - penalty)


def _judge_processes(sample: NodeSample, limits: Thresholds) -> tuple[list[Alert], float]:
    alerts = []
    penalty = 0.0
    zombies = sample.zombie_count
    if zombies is not None and zombies >= limits.zombie_warn:
        alerts.append(Alert(WARN, "zombies_high", f"{zombies} zombie processes", zombies))
        penalty += 30
    elif zombies:
        penalty += min(20.0, zombies)
    # A kernel log this user may not read is a standing fact of the node, said once with its
    # fix (check's footnote: kernel_log_denied), not an alert on every poll.
    other = {
        k: v
        for k, v in sample.errors.items()
        if not k.startswith(("disk:", "answer:")) and not (k == "xid" and _denied(v))
    }
    if other:
        first = next(iter(other.items()))
        alerts.append(
            Alert(
                INFO,
                "probe_partial",
                f"{len(other)} sub-check(s) failed, e.g. {first[0]}: {first[1]}",
                len(other),
            )
        )
    return alerts, max(0.0, 100.0 - penalty)


# How dmesg (util-linux, busybox) and journalctl say that this user may not read the kernel log.
_DENIED = (
    "Operation not permitted",
    "Permission denied",
    "insufficient permissions",
    "not seeing messages",
)


def _denied(error: str) -> bool:
    return any(hint in error for hint in _DENIED)


def kernel_log_denied(sample: NodeSample | None) -> bool:
    """The probe could not read the node's kernel log for lack of rights (XIDs unchecked)."""
    error = sample.errors.get("xid") if sample is not None else None
    return error is not None and _denied(error)


def _answer_alerts(sample: NodeSample) -> Iterable[Alert]:
    """What ``NodeSample.from_probe`` cut or dropped from the answer (model.ANSWER_LIMITS)."""
    cut = sample.errors.get("answer:limits")
    if cut:
        yield Alert(WARN, "probe_truncated", cut, "answer:limits")
    dropped = sample.errors.get("answer:ranges")
    if dropped:
        yield Alert(INFO, "probe_out_of_range", dropped, "answer:ranges")


def error_alert(error: NodeError) -> Alert:
    """The alert for a node that yielded no sample: CRITICAL, but WARNING for a node that was
    never tried (its status is UNKNOWN)."""
    if error.kind is ErrorKind.NOT_POLLED:
        return Alert(WARN, "node_not_polled", error.message, error.kind.value)
    if error.kind in (ErrorKind.PROBE_FAILED, ErrorKind.PROBE_INVALID):
        return Alert(
            CRIT,
            error.kind.value,
            f"reached, but the probe failed: {error.message}",
            error.kind.value,
        )
    return Alert(
        CRIT,
        "node_unreachable",
        f"unreachable ({error.kind.value}): {error.message}",
        error.kind.value,
    )
