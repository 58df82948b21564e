"""The data every layer passes around: samples, alerts, statuses and reports.

Imports only ``answer_limits`` (a leaf: the bounds and ranges an answer is read with). Everything
here is a frozen dataclass; ``None`` stands for a value that was not available (never 0 or -1).
``from_probe`` is the single place where the probe's JSON document (see ``probe.py``) is turned
into typed values, bounded and range-checked, and ``to_json`` the single place where a report
becomes the public ``--json`` contract (DESIGN.md): add fields there, never rename them.
"""

from __future__ import annotations

import enum
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ugro_health.answer_limits import (
    ANSWER_LIMITS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    Notes,
    cut,
    in_range,
    reading,
)

JSON_SCHEMA = "ugro-health/v1"


class Status(enum.Enum):
    """A node's or the cluster's state, valued by its monitoring-plugins exit code.

    Example::

        if report.status is ugro_health.Status.CRITICAL:
            sys.exit(report.status.exit_code)  # 2, as `ugro-health check` exits
    """

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def exit_code(self) -> int:
        return self.value

    @classmethod
    def parse(cls, text: str) -> Status:
        return cls[text.upper()]


# Worst-of ordering, explicit rather than by exit code: UNKNOWN (we could not tell) ranks above
# WARNING (we know something is off) and below CRITICAL (we know it is broken).
_STATUS_RANK = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


def worst_status(statuses: Iterable[Status], default: Status = Status.OK) -> Status:
    """The most severe status of ``statuses`` (``default`` when there are none)."""
    worst: Status | None = None
    for status in statuses:
        if worst is None or _STATUS_RANK[status] > _STATUS_RANK[worst]:
            worst = status
    return default if worst is None else worst


class Severity(enum.Enum):
    """An alert's severity. INFO alerts are news, not trouble: they leave a node OK.

    Example::

        worst = [a for a in node.alerts if a.severity is ugro_health.Severity.CRITICAL]
    """

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def status(self) -> Status:
        return {
            Severity.INFO: Status.OK,
            Severity.WARNING: Status.WARNING,
            Severity.CRITICAL: Status.CRITICAL,
        }[self]


class ErrorKind(enum.Enum):
    """Why a node could not be sampled, classified for the operator."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    DNS = "dns"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    HOST_KEY_UNKNOWN = "host_key_unknown"
    HOST_KEY_CHANGED = "host_key_changed"
    SSH_ERROR = "ssh_error"
    PROBE_FAILED = "probe_failed"
    PROBE_INVALID = "probe_invalid"
    SKIPPED = "skipped"  # watch: isolated by its circuit breaker
    NOT_POLLED = "not_polled"  # the run's time ran out before the node's turn in the pool


@dataclass(frozen=True, slots=True)
class NodeError:
    kind: ErrorKind
    message: str
    # A timeout that came when the deadline it was given ran out (not a phase's own limit):
    # with a deadline the run cut short, it says nothing about the node.
    at_deadline: bool = False

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One finding on a node: a stable ``code`` to match on, a ``message`` for a person.

    Example::

        for alert in node.alerts:
            print(alert.severity.value, alert.code, alert.message)
    """

    severity: Severity
    code: str  # stable, machine-matchable, e.g. "gpu_temp_critical"
    message: str  # for a person
    value: float | str | None = None  # the measured value that raised it
    gpu: int | None = None  # GPU index when the alert is about one GPU
    # What else it is about when a node can have several (a mount, an interface, a job, a
    # process): with ``code`` and ``gpu``, it tells one alert from another across polls.
    subject: str | None = None
    # Its place in the alert lifecycle (engine.lifecycle): pending, firing, flapping or
    # silenced; None where nobody judged it (a --no-record check, an ignored code).
    state: str | None = None

    @property
    def key(self) -> tuple[str, int | None, str | None]:
        """The same alert from poll to poll, whatever its measured value does."""
        return (self.code, self.gpu, self.subject)

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "value": self.value,
            "gpu": self.gpu,
            "subject": self.subject,
            "state": self.state,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            severity=Severity(data["severity"]),
            code=str(data["code"]),
            message=str(data["message"]),
            value=data.get("value"),
            gpu=data.get("gpu"),
            subject=data.get("subject"),
            state=data.get("state"),
        )


MAX_DURATION_S = 10 * 365 * 86400.0  # the longest --since, --ttl or ttl_s accepted


def human_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3.5h``, ``2.1d``: an age or a delay for people."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def as_float(value: Any) -> float | None:
    """``value`` as a float if it is a finite JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _num(data: Mapping[str, Any], key: str) -> float | None:
    return in_range(key, as_float(data.get(key)))


def _int(data: Mapping[str, Any], key: str) -> int | None:
    number = _num(data, key)
    return None if number is None else int(number)


def _items(
    data: Mapping[str, Any], key: str, limit: str | None = None, kind: type = dict
) -> list[Any]:
    """The ``kind`` entries of list ``data[key]``, of its first ``ANSWER_LIMITS[limit or key]``."""
    value = data.get(key)
    if not isinstance(value, list):
        return []
    most = ANSWER_LIMITS[limit or key]
    if len(value) > most:
        cut(limit or key, len(value), most)
        value = value[:most]
    return [item for item in value if isinstance(item, kind)]


def _dict(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _errors(doc: Mapping[str, Any]) -> dict[str, str]:
    """The probe's ``errors``, at most ANSWER_LIMITS["errors"] of them, as printable text."""
    errors = _dict(doc, "errors")
    most = ANSWER_LIMITS["errors"]
    out = {
        _clip(str(k)): _clip(str(v), MAX_TEXT_CHARS)
        for k, v in itertools.islice(errors.items(), most)
    }
    if len(errors) > most:
        cut("errors", len(errors), most)
    return out


def _clip(text: str, most: int = MAX_NAME_CHARS) -> str:
    """``text`` printable and at most ``most`` characters long (an escape may lengthen it)."""
    if len(text) > most:
        text = text[: most - 1] + "…"
    text = printable(text)
    return text if len(text) <= most else text[: most - 1] + "…"


# What a terminal or a log reader would act on rather than show: C0 and C1 controls (ESC starts
# escape sequences, CR and LF break lines), DEL, Unicode line separators and bidi overrides.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` safe to print on one line: control characters become ``\\xNN`` escapes.

    For every string that came from a node (messages, GPU names, names from the store): nodes are
    not trusted to keep escape sequences and line breaks out of the operator's terminal and logs.
    Applied when a probe answer is read, and again by the renderers (the store may hold older
    records). Rich markup is not a concern: renderers put such text in ``Text``, never markup.
    """
    text = str(text)
    if text.isprintable():  # the usual case, in C: no control, separator or format character
        return text
    return _UNPRINTABLE.sub(_escape, text)


def _processes(doc: Mapping[str, Any], key: str) -> tuple[dict[str, Any], ...]:
    """Matched processes and their descendants: pid, parent pid, command line (and pattern)."""
    return tuple(
        {
            "pid": _int(p, "pid"),
            "ppid": _int(p, "ppid"),
            "cmdline": _str(p, "cmdline", MAX_TEXT_CHARS),
            **({"pattern": _str(p, "pattern")} if key == "matched_processes" else {}),
        }
        for p in _items(doc, key)
    )


def _throttle(data: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Throttle reasons; None (unknown) stays apart from an empty list (none active)."""
    if not isinstance(data.get("throttle_reasons"), list):
        return None
    return tuple(_clip(r) for r in _items(data, "throttle_reasons", "gpus[].throttle_reasons", str))


def _str(data: Mapping[str, Any], key: str, most: int = MAX_NAME_CHARS) -> str | None:
    value = data.get(key)
    return _clip(value, most) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    name: str | None
    used_memory_bytes: int | None
    alive: bool | None = None  # False: holds GPU memory but no such process exists

    @classmethod
    def from_probe(cls, data: Mapping[str, Any]) -> GpuProcess:
        alive = data.get("alive")
        return cls(
            pid=_int(data, "pid") or 0,
            name=_str(data, "name"),
            used_memory_bytes=_int(data, "used_memory_bytes"),
            alive=alive if isinstance(alive, bool) else None,
        )


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: int
    name: str | None = None
    uuid: str | None = None
    util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    temp_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_corrected_volatile: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_pending: int | None = None
    remapped_rows_failed: int | None = None
    throttle_reasons: tuple[str, ...] | None = ()  # None: unknown (N/A on the node)
    pcie_gen: int | None = None
    pcie_gen_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    nvlink_active: int | None = None
    nvlink_total: int | None = None
    processes: tuple[GpuProcess, ...] = ()
    pci_bus_id: str | None = None  # e.g. "00000000:17:00.0", as the driver names the device

    @property
    def mem_pct(self) -> float | None:
        if self.mem_used_bytes is None or not self.mem_total_bytes:
            return None
        return 100.0 * self.mem_used_bytes / self.mem_total_bytes

    @classmethod
    def from_probe(cls, data: Mapping[str, Any]) -> GpuSample:
        pending = data.get("retired_pages_pending")
        return cls(
            index=_int(data, "index") or 0,
            name=_str(data, "name"),
            uuid=_str(data, "uuid"),
            util_pct=_num(data, "util_pct"),
            mem_util_pct=_num(data, "mem_util_pct"),
            mem_used_bytes=_int(data, "mem_used_bytes"),
            mem_total_bytes=_int(data, "mem_total_bytes"),
            temp_c=_num(data, "temp_c"),
            power_w=_num(data, "power_w"),
            power_limit_w=_num(data, "power_limit_w"),
            ecc_uncorrected_volatile=_int(data, "ecc_uncorrected_volatile"),
            ecc_corrected_volatile=_int(data, "ecc_corrected_volatile"),
            retired_pages_pending=pending if isinstance(pending, bool) else None,
            remapped_rows_pending=_int(data, "remapped_rows_pending"),
            remapped_rows_failed=_int(data, "remapped_rows_failed"),
            throttle_reasons=_throttle(data),
            pcie_gen=_int(data, "pcie_gen"),
            pcie_gen_max=_int(data, "pcie_gen_max"),
            pcie_width=_int(data, "pcie_width"),
            pcie_width_max=_int(data, "pcie_width_max"),
            nvlink_active=_int(data, "nvlink_active"),
            nvlink_total=_int(data, "nvlink_total"),
            processes=tuple(
                GpuProcess.from_probe(p) for p in _items(data, "processes", "gpus[].processes")
            ),
            pci_bus_id=_str(data, "pci_bus_id"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "util_pct": self.util_pct,
            "mem_util_pct": self.mem_util_pct,
            "mem_used_bytes": self.mem_used_bytes,
            "mem_total_bytes": self.mem_total_bytes,
            "mem_pct": _round(self.mem_pct),
            "temp_c": self.temp_c,
            "power_w": self.power_w,
            "power_limit_w": self.power_limit_w,
            "ecc_uncorrected_volatile": self.ecc_uncorrected_volatile,
            "ecc_corrected_volatile": self.ecc_corrected_volatile,
            "retired_pages_pending": self.retired_pages_pending,
            "remapped_rows_pending": self.remapped_rows_pending,
            "remapped_rows_failed": self.remapped_rows_failed,
            "throttle_reasons": (
                None if self.throttle_reasons is None else list(self.throttle_reasons)
            ),
            "pcie_gen": self.pcie_gen,
            "pcie_gen_max": self.pcie_gen_max,
            "pcie_width": self.pcie_width,
            "pcie_width_max": self.pcie_width_max,
            "nvlink_active": self.nvlink_active,
            "nvlink_total": self.nvlink_total,
            "processes": [
                {
                    "pid": p.pid,
                    "name": p.name,
                    "used_memory_bytes": p.used_memory_bytes,
                    "alive": p.alive,
                }
                for p in self.processes
            ],
            "pci_bus_id": self.pci_bus_id,
        }


@dataclass(frozen=True, slots=True)
class DiskSample:
    mount: str
    total_bytes: int | None = None
    used_bytes: int | None = None
    error: str | None = None  # e.g. "timeout after 2.0s" for a hung mount
    avail_bytes: int | None = None  # available to unprivileged users (f_bavail)
    mounted: bool | None = None  # False: the configured path is not a mount point

    @property
    def util_pct(self) -> float | None:
        """Use as ``df`` computes it: used / (used + available to users), in whole percent
        rounded up, so reserved blocks count as unavailable. Samples recorded before
        ``avail_bytes`` existed fall back to used / total."""
        if self.used_bytes is None:
            return None
        if self.avail_bytes is None:
            return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes else None
        usable = self.used_bytes + self.avail_bytes
        if usable <= 0:
            return None
        return float(-(-100 * self.used_bytes // usable))  # integer ceiling, as df rounds


@dataclass(frozen=True, slots=True)
class NetSample:
    iface: str
    rx_bytes_per_s: float | None = None
    tx_bytes_per_s: float | None = None
    rx_errors_per_s: float | None = None
    tx_errors_per_s: float | None = None
    rx_errors: int | None = None
    tx_errors: int | None = None


@dataclass(frozen=True, slots=True)
class XidEvent:
    xid: int
    message: str
    gpu: str | None = None  # PCI bus id as the kernel printed it
    kernel_time_s: float | None = None  # the kernel log's timestamp: seconds since boot

    def age_s(self, uptime_s: float | None) -> float | None:
        """How long ago the event was logged, None when the log line carried no timestamp."""
        if self.kernel_time_s is None or uptime_s is None:
            return None
        return max(0.0, uptime_s - self.kernel_time_s)


@dataclass(frozen=True, slots=True)
class NodeSample:
    """What the probe saw on one node at one moment."""

    hostname: str | None = None
    time: float | None = None  # the node's clock, seconds since the epoch
    kernel: str | None = None
    uptime_s: float | None = None
    python: str | None = None
    cpu_util_pct: float | None = None
    cpu_cores: int | None = None
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    mem_total_bytes: int | None = None
    mem_used_bytes: int | None = None
    mem_util_pct: float | None = None
    swap_total_bytes: int | None = None
    swap_used_bytes: int | None = None
    swap_util_pct: float | None = None
    disks: tuple[DiskSample, ...] = ()
    net: tuple[NetSample, ...] = ()
    process_count: int | None = None
    zombie_count: int | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    gpu_source: str | None = None  # "nvml", "nvidia-smi" or None when no GPU stack
    gpus: tuple[GpuSample, ...] = ()
    xids: tuple[XidEvent, ...] = ()
    matched_processes: tuple[dict[str, Any], ...] = ()
    # Sub-checks that failed or timed out on the node: {"disk:/mnt/nfs": "timeout after 2.0s"}
    errors: Mapping[str, str] = field(default_factory=dict)
    cpu_window_s: float | None = None  # the span cpu_util_pct was measured over
    # Processes below a matched one, not matched themselves (a launcher's workers), with ppid
    matched_descendants: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_probe(cls, doc: Mapping[str, Any]) -> NodeSample:
        """Build a sample from the probe's JSON document; unknown keys are ignored.

        Bounded (ANSWER_LIMITS, MAX_TEXT_CHARS) and range-checked (FIELD_RANGES): what was cut
        or dropped is said under ``errors["answer:limits"]`` and ``errors["answer:ranges"]``.
        """
        notes = Notes()
        with reading(notes):
            sample = cls._read(doc)
        noted = notes.errors()
        return replace(sample, errors={**sample.errors, **noted}) if noted else sample

    @classmethod
    def _read(cls, doc: Mapping[str, Any]) -> NodeSample:
        cpu = _dict(doc, "cpu")
        mem = _dict(doc, "memory")
        procs = _dict(doc, "processes")
        gpu_info = _dict(doc, "gpu_info")
        return cls(
            hostname=_str(doc, "hostname"),
            time=_num(doc, "time"),
            kernel=_str(doc, "kernel"),
            uptime_s=_num(doc, "uptime_s"),
            python=_str(doc, "python"),
            cpu_util_pct=_num(cpu, "util_pct"),
            cpu_cores=_int(cpu, "cores"),
            load1=_num(cpu, "load1"),
            load5=_num(cpu, "load5"),
            load15=_num(cpu, "load15"),
            mem_total_bytes=_int(mem, "total_bytes"),
            mem_used_bytes=_int(mem, "used_bytes"),
            mem_util_pct=_num(mem, "util_pct"),
            swap_total_bytes=_int(mem, "swap_total_bytes"),
            swap_used_bytes=_int(mem, "swap_used_bytes"),
            swap_util_pct=_num(mem, "swap_util_pct"),
            disks=tuple(
                DiskSample(
                    mount=_clip(str(d.get("mount"))),
                    total_bytes=_int(d, "total_bytes"),
                    used_bytes=_int(d, "used_bytes"),
                    error=_str(d, "error", MAX_TEXT_CHARS),
                    avail_bytes=_int(d, "avail_bytes"),
                    mounted=d["mounted"] if isinstance(d.get("mounted"), bool) else None,
                )
                for d in _items(doc, "disks")
            ),
            net=tuple(
                NetSample(
                    iface=_clip(str(n.get("iface"))),
                    rx_bytes_per_s=_num(n, "rx_bytes_per_s"),
                    tx_bytes_per_s=_num(n, "tx_bytes_per_s"),
                    rx_errors_per_s=_num(n, "rx_errors_per_s"),
                    tx_errors_per_s=_num(n, "tx_errors_per_s"),
                    rx_errors=_int(n, "rx_errors"),
                    tx_errors=_int(n, "tx_errors"),
                )
                for n in _items(doc, "network")
            ),
            process_count=_int(procs, "count"),
            zombie_count=_int(procs, "zombies"),
            driver_version=_str(gpu_info, "driver_version"),
            cuda_version=_str(gpu_info, "cuda_version"),
            gpu_source=_str(gpu_info, "source"),
            gpus=tuple(GpuSample.from_probe(g) for g in _items(doc, "gpus")),
            xids=tuple(
                XidEvent(
                    xid=_int(x, "xid") or 0,
                    message=_clip(str(x.get("message", "")), MAX_TEXT_CHARS),
                    gpu=_str(x, "gpu"),
                    kernel_time_s=_num(x, "kernel_time_s"),
                )
                for x in _items(doc, "xids")
            ),
            matched_processes=_processes(doc, "matched_processes"),
            errors=_errors(doc),
            cpu_window_s=_num(cpu, "window_s"),
            matched_descendants=_processes(doc, "matched_descendants"),
        )

    def metrics(self, clock_skew_s: float | None = None) -> dict[str, Any]:
        """The flat ``metrics`` object of the JSON contract."""
        out: dict[str, Any] = {
            "cpu_util_pct": self.cpu_util_pct,
            "cpu_window_s": self.cpu_window_s,
            "cpu_cores": self.cpu_cores,
            "load1": self.load1,
            "load5": self.load5,
            "load15": self.load15,
            "mem_util_pct": self.mem_util_pct,
            "mem_used_bytes": self.mem_used_bytes,
            "mem_total_bytes": self.mem_total_bytes,
            "swap_util_pct": self.swap_util_pct,
            "process_count": self.process_count,
            "zombie_count": self.zombie_count,
            "uptime_s": self.uptime_s,
            "kernel": self.kernel,
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "clock_skew_s": clock_skew_s,
            "disks": {
                d.mount: {
                    "util_pct": _round(d.util_pct),
                    "used_bytes": d.used_bytes,
                    "total_bytes": d.total_bytes,
                    "error": d.error,
                    "avail_bytes": d.avail_bytes,
                    "mounted": d.mounted,
                }
                for d in self.disks
            },
            "net": {
                n.iface: {
                    "rx_bytes_per_s": n.rx_bytes_per_s,
                    "tx_bytes_per_s": n.tx_bytes_per_s,
                    "rx_errors_per_s": n.rx_errors_per_s,
                    "tx_errors_per_s": n.tx_errors_per_s,
                }
                for n in self.net
            },
            "xids": [
                {
                    "xid": x.xid,
                    "message": x.message,
                    "gpu": x.gpu,
                    "kernel_time_s": x.kernel_time_s,
                    "age_s": _round(x.age_s(self.uptime_s)),
                }
                for x in self.xids
            ],
            "probe_errors": dict(self.errors),
        }
        return out

    @property
    def disk_max_pct(self) -> float | None:
        values = [d.util_pct for d in self.disks if d.util_pct is not None]
        return max(values) if values else None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class NodeReport:
    """One node's result for one poll: a sample and its judgement, or the reason there is none.

    Example::

        for node in report.nodes:
            print(node.name, node.status.label, node.score, node.error)
    """

    name: str
    status: Status
    score: int | None  # 0-100; None when the node could not be sampled
    polled_at: float  # control-host clock, seconds since the epoch
    duration_s: float
    sample: NodeSample | None = None
    alerts: tuple[Alert, ...] = ()
    error: NodeError | None = None
    clock_skew_s: float | None = None  # node clock minus control-host clock
    jobs: tuple[dict[str, Any], ...] = ()  # rank processes found per job on this node

    @property
    def reachable(self) -> bool:
        return self.sample is not None

    @property
    def polled(self) -> bool:
        """False when the node was never tried (its result says nothing about the node)."""
        return self.error is None or self.error.kind is not ErrorKind.NOT_POLLED

    @property
    def unreachable(self) -> bool:
        """Tried (or isolated after failures) and not sampled; a node never tried is not."""
        return not self.reachable and self.polled

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.label,
            "score": self.score,
            "reachable": self.reachable,
            "error": str(self.error) if self.error else None,
            "error_kind": self.error.kind.value if self.error else None,
            "polled_at": self.polled_at,
            "duration_s": round(self.duration_s, 4),
            "metrics": self.sample.metrics(self.clock_skew_s) if self.sample else {},
            "gpus": [g.to_json() for g in self.sample.gpus] if self.sample else [],
            "alerts": [a.to_json() for a in self.alerts],
            "jobs": list(self.jobs),
        }


@dataclass(frozen=True, slots=True)
class ClusterReport:
    """Every node's report from one run; ``to_json()`` is ``check --json``'s document.

    Example::

        report = ugro_health.check()
        print(json.dumps(report.to_json(), indent=2))
    """

    generated_at: float
    nodes: tuple[NodeReport, ...]
    duration_s: float = 0.0

    @property
    def status(self) -> Status:
        # An empty selection is not "all fine": nothing was checked.
        return worst_status((n.status for n in self.nodes), default=Status.UNKNOWN)

    def to_json(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {
            "schema": JSON_SCHEMA,
            "generated_at": datetime.fromtimestamp(self.generated_at, UTC).isoformat(),
            "status": self.status.label,
            "duration_s": round(self.duration_s, 4),
            "nodes": [n.to_json() for n in self.nodes],
        }
