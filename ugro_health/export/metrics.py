"""The metric families: built fresh from a ``Snapshot`` of the latest reports at every scrape.

Imports ``model`` and prometheus-client only. Naming follows Prometheus' practice: one
``ugro_health_`` prefix, base units in the name (``_bytes``, ``_celsius``, ``_watts``,
``_seconds``), ratios 0-1, ``_total`` only on counters, metadata in ``_info`` gauges. The node is
a ``node`` label (Prometheus' own ``up`` describes the exporter, not the nodes), a GPU its index
in ``gpu``. Labels stay bounded: no message, process name or other free text that changes from
poll to poll. A value the node did not report (``None``) is left out, never exported as 0.

A family is built from what is in the snapshot alone, so a node dropped from the configuration
disappears at the next scrape instead of lingering, as it would with client-side gauges.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ugro_health.export.text import NO_LABELS, Family, LabelSet, render, to_client_families
from ugro_health.model import GpuSample, NodeReport, NodeSample, Status

PREFIX = "ugro_health_"
NODE = ("node",)
GPU = ("node", "gpu")
NODE_INFO = (*NODE, "hostname", "kernel", "driver_version", "cuda_version")
GPU_INFO = (*GPU, "name", "uuid", "pci_bus_id", "driver_version", "cuda_version")
ALERT = (*NODE, "code", "severity", "gpu", "subject")
STATUSES = tuple(s.label for s in Status)
BREAKER_STATES = ("closed", "open", "half_open")


@dataclass(frozen=True, slots=True)
class CycleStats:
    """The poller's own figures: for ``watch`` its running totals, for ``check`` the one run."""

    duration_s: float | None = None  # the last cycle's
    finished_at: float | None = None  # seconds since the epoch
    cycles: int | None = None  # None: not a running poller (check), no counters exported
    overruns: int | None = None  # cycles that took longer than their interval


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one scrape exports; taken by the front from state it already holds."""

    reports: Sequence[NodeReport]
    expected_gpus: Mapping[str, int] = field(default_factory=dict)  # node -> configured count
    breakers: Mapping[str, str] = field(default_factory=dict)  # node -> BreakerState value
    active_jobs: int | None = None
    cycle: CycleStats = field(default_factory=CycleStats)
    shard: str | None = None  # ``1/4`` under ``--shard``: a label on the poller's own families


def _pct(value: float | None) -> float | None:
    return None if value is None else value / 100.0


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


Getter = Callable[[Any], float | int | None]

# (name without prefix, help, value from a NodeSample)
NODE_GAUGES: tuple[tuple[str, str, Callable[[NodeSample], float | int | None]], ...] = (
    ("node_cpu_utilization_ratio", "CPU busy time over the probe's window, 0-1.",
     lambda s: _pct(s.cpu_util_pct)),
    ("node_cpu_cores", "Logical CPUs.", lambda s: s.cpu_cores),
    ("node_load1", "1-minute load average.", lambda s: s.load1),
    ("node_load5", "5-minute load average.", lambda s: s.load5),
    ("node_load15", "15-minute load average.", lambda s: s.load15),
    ("node_memory_used_bytes", "Memory in use.", lambda s: s.mem_used_bytes),
    ("node_memory_total_bytes", "Physical memory.", lambda s: s.mem_total_bytes),
    ("node_swap_used_bytes", "Swap in use.", lambda s: s.swap_used_bytes),
    ("node_swap_total_bytes", "Swap space.", lambda s: s.swap_total_bytes),
    ("node_zombie_processes", "Processes exited but not reaped.", lambda s: s.zombie_count),
    ("node_uptime_seconds", "Time since the node booted.", lambda s: s.uptime_s),
    ("node_gpus", "GPUs the node reported.", lambda s: len(s.gpus)),
)  # fmt: skip

# (name without prefix, help, value from a GpuSample)
GPU_GAUGES: tuple[tuple[str, str, Callable[[GpuSample], float | int | None]], ...] = (
    ("gpu_utilization_ratio", "GPU busy time, 0-1.", lambda g: _pct(g.util_pct)),
    ("gpu_memory_controller_utilization_ratio", "Memory controller busy time, 0-1.",
     lambda g: _pct(g.mem_util_pct)),
    ("gpu_memory_used_bytes", "Frame buffer memory in use.", lambda g: g.mem_used_bytes),
    ("gpu_memory_total_bytes", "Frame buffer memory.", lambda g: g.mem_total_bytes),
    ("gpu_temperature_celsius", "GPU core temperature.", lambda g: g.temp_c),
    ("gpu_power_watts", "Power draw.", lambda g: g.power_w),
    ("gpu_power_limit_watts", "Enforced power limit.", lambda g: g.power_limit_w),
    ("gpu_ecc_uncorrected_errors", "Uncorrected ECC errors since the driver loaded.",
     lambda g: g.ecc_uncorrected_volatile),
    ("gpu_ecc_corrected_errors", "Corrected ECC errors since the driver loaded.",
     lambda g: g.ecc_corrected_volatile),
    ("gpu_retired_pages_pending", "1 when retired pages wait for a reset.",
     lambda g: _flag(g.retired_pages_pending)),
    ("gpu_remapped_rows_pending", "Row remappings waiting for a reset.",
     lambda g: g.remapped_rows_pending),
    ("gpu_remapped_rows_failed", "Row remappings that failed.", lambda g: g.remapped_rows_failed),
    ("gpu_pcie_link_width", "Current PCIe link width (lanes).", lambda g: g.pcie_width),
    ("gpu_pcie_link_width_max", "Maximum PCIe link width (lanes).", lambda g: g.pcie_width_max),
    ("gpu_pcie_link_generation", "Current PCIe generation.", lambda g: g.pcie_gen),
    ("gpu_pcie_link_generation_max", "Maximum PCIe generation.", lambda g: g.pcie_gen_max),
    ("gpu_nvlink_active_links", "NVLink links up.", lambda g: g.nvlink_active),
    ("gpu_nvlink_links", "NVLink links present.", lambda g: g.nvlink_total),
    ("gpu_processes", "Processes holding GPU memory.", lambda g: len(g.processes)),
)  # fmt: skip


class Families:
    """Every family of one scrape, filled node by node (``text``: as exposition lines)."""

    def __init__(self, text: bool = True) -> None:
        self.text = text

        def _gauge(name: str, documentation: str, labels: Sequence[str]) -> Family:
            return Family(PREFIX + name, documentation, labels, text=text)

        self.up = _gauge("node_up", "1 when the last poll reached the node, 0 when not.", NODE)
        self.score = _gauge("node_score", "Health score of the last poll, 0-100.", NODE)
        self.status = _gauge(
            "node_status", "1 for the node's current status, 0 for the others.", (*NODE, "status")
        )
        self.polled = _gauge(
            "node_last_poll_timestamp_seconds", "When the node was last polled.", NODE
        )
        self.duration = _gauge("node_poll_duration_seconds", "How long the last poll took.", NODE)
        self.error = _gauge(
            "node_error", "1 with the kind of failure when the node was not sampled.",
            (*NODE, "kind"),
        )  # fmt: skip
        self.breaker = _gauge(
            "node_breaker_state",
            "1 for the node's circuit breaker state, 0 for the others (watch only).",
            (*NODE, "state"),
        )
        self.skew = _gauge(
            "node_clock_skew_seconds", "Node clock minus the control host's clock.", NODE
        )
        self.expected = _gauge("node_gpus_expected", "GPUs the configuration expects.", NODE)
        self.info = _gauge("node_info", "Node metadata (always 1).", NODE_INFO)
        self.node_gauges = [_gauge(n, h, NODE) for n, h, _ in NODE_GAUGES]
        disk = (*NODE, "mount")
        self.disk_used = _gauge("node_disk_used_bytes", "Bytes used on the mount.", disk)
        self.disk_avail = _gauge(
            "node_disk_avail_bytes", "Bytes available to unprivileged users.", disk
        )
        self.disk_total = _gauge("node_disk_total_bytes", "Size of the mount.", disk)
        self.disk_ratio = _gauge(
            "node_disk_utilization_ratio", "Used share of the mount, as df computes it.", disk
        )
        self.gpu_gauges = [_gauge(n, h, GPU) for n, h, _ in GPU_GAUGES]
        self._gpu_pairs = [
            (f.sample_name, f.samples.append, g[2])
            for f, g in zip(self.gpu_gauges, GPU_GAUGES, strict=True)
        ]
        self.throttle = _gauge(
            "gpu_throttle_reason", "1 for each clock throttle reason active.", (*GPU, "reason")
        )
        self.gpu_info = _gauge("gpu_info", "GPU metadata (always 1).", GPU_INFO)
        self.alert = _gauge("alert", "1 per active alert on a node.", ALERT)

    def all(self) -> list[Family]:
        return [
            *(self.up, self.score, self.status, self.polled, self.duration, self.error),
            *(self.breaker, self.skew, self.expected, self.info, *self.node_gauges),
            *(self.disk_used, self.disk_avail, self.disk_total, self.disk_ratio),
            *(*self.gpu_gauges, self.throttle, self.gpu_info, self.alert),
        ]

    def add_node(self, report: NodeReport, snapshot: Snapshot) -> None:
        node = report.name
        key = LabelSet(NODE, (node,))
        if report.polled:
            self.up.add(key, 1.0 if report.reachable else 0.0)
        for label in STATUSES:
            value = 1.0 if report.status.label == label else 0.0
            self.status.add(LabelSet(self.status.label_names, (node, label)), value)
        if report.score is not None:
            self.score.add(key, report.score)
        self.polled.add(key, report.polled_at)
        self.duration.add(key, report.duration_s)
        if report.error is not None:
            self.error.add(LabelSet(self.error.label_names, (node, report.error.kind.value)), 1)
        state = snapshot.breakers.get(node)
        if state is not None:
            for label in BREAKER_STATES:
                labels = LabelSet(self.breaker.label_names, (node, label))
                self.breaker.add(labels, 1.0 if state == label else 0.0)
        expected = snapshot.expected_gpus.get(node)
        if expected is not None:
            self.expected.add(key, expected)
        for alert in report.alerts:
            gpu = "" if alert.gpu is None else str(alert.gpu)
            values = (node, alert.code, alert.severity.value, gpu, alert.subject or "")
            self.alert.add(LabelSet(ALERT, values), 1.0)
        if report.clock_skew_s is not None:
            self.skew.add(key, report.clock_skew_s)
        if report.sample is not None:
            self._add_sample(key, report.sample)

    def _add_sample(self, key: LabelSet, sample: NodeSample) -> None:
        node = key.values[0]
        for family, (_, _, value_of) in zip(self.node_gauges, NODE_GAUGES, strict=True):
            value = value_of(sample)
            if value is not None:
                family.add(key, value)
        versions = (sample.driver_version or "", sample.cuda_version or "")
        self.info.add(LabelSet(NODE_INFO, (node, sample.hostname or "", sample.kernel or "",
                                           *versions)), 1.0)  # fmt: skip
        for disk in sample.disks:
            labels = LabelSet(self.disk_used.label_names, (node, disk.mount))
            for family, value in (
                (self.disk_used, disk.used_bytes),
                (self.disk_avail, disk.avail_bytes),
                (self.disk_total, disk.total_bytes),
                (self.disk_ratio, _pct(disk.util_pct)),
            ):
                if value is not None:
                    family.add(labels, value)
        for gpu in sample.gpus:
            self._add_gpu(node, gpu, versions)

    def _add_gpu(self, node: str, gpu: GpuSample, versions: tuple[str, str]) -> None:
        index = str(gpu.index)
        labels = LabelSet(GPU, (node, index))
        if self.text:  # the hot loop of a large scrape (a thousand GPUs x 19 gauges), inlined
            text = labels.text
            for name, append, value_of in self._gpu_pairs:
                value = value_of(gpu)
                if value is not None:
                    append(f"{name}{text} {float(value)!r}\n")
        else:
            for family, (_, _, value_of) in zip(self.gpu_gauges, GPU_GAUGES, strict=True):
                value = value_of(gpu)
                if value is not None:
                    family.add(labels, value)
        for reason in gpu.throttle_reasons or ():
            self.throttle.add(LabelSet(self.throttle.label_names, (node, index, reason)), 1.0)
        identity = (gpu.name or "", gpu.uuid or "", gpu.pci_bus_id or "")
        self.gpu_info.add(LabelSet(GPU_INFO, (node, index, *identity, *versions)), 1.0)


def exporter_families(snapshot: Snapshot, errors: int | None, text: bool) -> list[Family]:
    """The cluster's and the poller's own families."""
    from ugro_health import __version__

    # Under --shard, every family of the process itself carries its shard: each shard's
    # series stay apart in one Prometheus, and a shard that stopped shows as its own gap.
    extra, values = (("shard",), (snapshot.shard,)) if snapshot.shard else ((), ())
    own = LabelSet(extra, values) if extra else NO_LABELS
    build_labels = ("version", "python", *extra)
    build = Family(PREFIX + "build_info", "ugro-health's version (always 1).", build_labels,
                   text=text)  # fmt: skip
    build.add(LabelSet(build_labels, (__version__, platform.python_version(), *values)), 1.0)
    out = [build]
    cycle = snapshot.cycle
    gauges = (
        ("active_jobs", "Training jobs marked active (jobs start).", snapshot.active_jobs),
        ("cycle_duration_seconds", "How long the last poll cycle took.", cycle.duration_s),
        ("last_cycle_timestamp_seconds", "When the last poll cycle ended.", cycle.finished_at),
    )
    counters = (
        ("cycles", "Poll cycles completed since watch started.", cycle.cycles),
        ("cycle_overruns", "Poll cycles that took longer than their interval.", cycle.overruns),
        ("exporter_errors", "Nodes whose metrics could not be built at a scrape.", errors),
    )
    for kind, table in (("gauge", gauges), ("counter", counters)):
        for name, documentation, value in table:
            if value is not None:
                family = Family(PREFIX + name, documentation, extra, kind, text)
                family.add(own, value)
                out.append(family)
    return out


class SnapshotCollector(Collector):
    """A prometheus-client custom collector: ``collect()`` asks ``source`` for the snapshot of
    the moment and builds every family from it (no state of its own but an error count).
    ``exposition()`` writes the same families through the fast renderer (``text.render``)."""

    def __init__(self, source: Callable[[], Snapshot], counts_errors: bool = True) -> None:
        self.source = source
        # A one-off textfile has no running total to report: None leaves the counter out.
        self.errors: int | None = 0 if counts_errors else None

    def families(self, text: bool = True) -> list[Family]:
        snapshot = self.source()
        families = Families(text)
        for report in snapshot.reports:
            try:
                families.add_node(report, snapshot)
            except (TypeError, ValueError):
                # A value that is not a number: that node's remaining series are left out of
                # this scrape and counted; the other nodes are exported.
                if self.errors is not None:
                    self.errors += 1
        return [*exporter_families(snapshot, self.errors, text), *families.all()]

    def collect(self) -> Iterator[Metric]:
        return to_client_families(self.families(text=False))

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names vary with the snapshot: nothing to check at registration

    def exposition(self) -> bytes:
        """The text exposition (format 0.0.4), as ``/metrics`` serves it."""
        return render(self.families())


def client_exposition(collector: Collector) -> bytes:
    """The text exposition written by prometheus-client's own encoder (for the textfile, where
    speed does not matter and the reference encoder is the safer writer)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
