"""What `history` shows: metric extraction, per-node summaries, trends, sparklines, durations.

Pure functions over plain dicts (the ``NodeReport.to_json`` layout and history records); no I/O
and nothing of ours but ``model.as_float``. Everything here streams: a summary keeps O(width)
numbers per node whatever the number of records it is fed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ugro_health.model import MAX_DURATION_S, as_float

Report = Mapping[str, Any]


def _metric(report: Report, key: str) -> float | None:
    return as_float((report.get("metrics") or {}).get(key))


def _gpu_values(report: Report, key: str) -> list[float]:
    out = []
    for gpu in report.get("gpus") or ():
        value = gpu.get(key) if isinstance(gpu, Mapping) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append(float(value))
    return out


def _disk_max(report: Report) -> float | None:
    disks = (report.get("metrics") or {}).get("disks") or {}
    values = [
        float(d["util_pct"])
        for d in disks.values()
        if isinstance(d, Mapping) and isinstance(d.get("util_pct"), int | float)
    ]
    return max(values) if values else None


def _reduce(fn: Callable[[list[float]], float], key: str) -> Callable[[Report], float | None]:
    def extract(report: Report) -> float | None:
        values = _gpu_values(report, key)
        return fn(values) if values else None

    return extract


def _score(report: Report) -> float | None:
    return as_float(report.get("score"))


class Metric(NamedTuple):
    label: str
    unit: str
    extract: Callable[[Report], float | None]  # from the NodeReport.to_json layout


METRICS: dict[str, Metric] = {
    "score": Metric("health score", "", _score),
    "cpu": Metric("CPU utilisation", "%", lambda r: _metric(r, "cpu_util_pct")),
    "mem": Metric("memory utilisation", "%", lambda r: _metric(r, "mem_util_pct")),
    "disk": Metric("fullest disk", "%", _disk_max),
    "load": Metric("load average (1 min)", "", lambda r: _metric(r, "load1")),
    "gpu_temp": Metric("hottest GPU", "°C", _reduce(max, "temp_c")),
    "gpu_util": Metric("mean GPU utilisation", "%", _reduce(lambda v: sum(v) / len(v), "util_pct")),
    "gpu_mem": Metric("fullest GPU memory", "%", _reduce(max, "mem_pct")),
    "power": Metric("GPU power (sum)", "W", _reduce(sum, "power_w")),
}


def summary_of(report: Report) -> dict[str, Any]:
    """The small head stored first in every history record, so `history` need not parse the rest.

    Holds status, score, reachability (``skipped`` when a breaker kept the node from being
    polled), every metric of ``METRICS`` and the alerts as ``"severity:code"`` strings.
    """
    head: dict[str, Any] = {
        "status": report.get("status"),
        "reachable": bool(report.get("reachable")),
    }
    if report.get("error_kind") == "skipped":
        head["skipped"] = True  # not polled: its breaker was open (not a failed poll)
    for name, metric in METRICS.items():
        value = metric.extract(report)
        head[name] = None if value is None else round(value, 2)
    head["alerts"] = [
        f"{a.get('severity')}:{a.get('code')}"
        for a in report.get("alerts") or ()
        if isinstance(a, Mapping)
    ]
    return head


def metric_value(record: Mapping[str, Any], metric: str) -> float | None:
    """``metric`` of a history record: from its summary head, else from the full fields."""
    head = record.get("summary")
    if isinstance(head, Mapping) and metric in head:
        return as_float(head[metric])
    return METRICS[metric].extract(record)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"6h"``, ``"1d"``, ``"1w"``, ``"1h30m"`` -> seconds (positive)."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit s, m, h, d or w (e.g. 30m, 6h, 1d)"
        )
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be more than zero")
    if seconds > MAX_DURATION_S:  # 1e400w is inf; centuries overflow dates and timestamps
        raise ValueError(f"invalid duration {text!r}: at most 10 years")
    return seconds


BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(
    values: Sequence[float | None],
    width: int | None = None,
    lo: float | None = None,
    hi: float | None = None,
) -> str:
    """One character per value (averaged down to ``width``); a gap (None) is a space."""
    if width is not None and len(values) > width > 0:
        values = downsample(values, width)
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    lo = min(known) if lo is None else lo
    hi = max(known) if hi is None else hi
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif hi <= lo:
            out.append(BLOCKS[len(BLOCKS) // 2 - 1])
        else:
            ratio = min(max((v - lo) / (hi - lo), 0.0), 1.0)
            out.append(BLOCKS[min(int(ratio * len(BLOCKS)), len(BLOCKS) - 1)])
    return "".join(out)


def downsample(values: Sequence[float | None], width: int) -> list[float | None]:
    """Average ``values`` into ``width`` consecutive chunks (None where a chunk has no value)."""
    out: list[float | None] = []
    n = len(values)
    for i in range(width):
        chunk = [v for v in values[i * n // width : (i + 1) * n // width] if v is not None]
        out.append(sum(chunk) / len(chunk) if chunk else None)
    return out


@dataclass(frozen=True, slots=True)
class Trend:
    slope_per_h: float | None  # least-squares slope, metric units per hour
    change: float | None  # fitted change over the observed span
    direction: str  # "up", "down", "flat" (|change| < 2% of the scale) or "unknown"


@dataclass(slots=True)
class NodeSummary:
    """One node's history for one metric over a window (see ``summarize``)."""

    node: str
    metric: str
    samples: int = 0  # records seen for the node
    skipped: int = 0  # of which not polled (isolated by its breaker): not failed polls
    reachable: int = 0  # of which the node answered
    count: int = 0  # records that carried a value for the metric
    min: float | None = None
    max: float | None = None
    last: float | None = None
    first_t: float | None = None
    last_t: float | None = None
    series: list[float | None] = field(default_factory=list)  # bucket means, oldest first
    alerts_by_severity: dict[str, int] = field(default_factory=dict)  # samples carrying one
    alerts_by_code: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    _sums: list[float] = field(default_factory=lambda: [0.0] * 5)  # n, Σt, Σv, Σtt, Σtv
    _buckets: list[list[float]] = field(default_factory=list)
    _last_seen_t: float = -math.inf

    @property
    def mean(self) -> float | None:
        n, _, sv, _, _ = self._sums
        return sv / n if n else None

    @property
    def availability(self) -> float | None:
        """Successful polls over polls made: cycles a breaker skipped are not polls."""
        polled = self.samples - self.skipped
        return self.reachable / polled if polled else None

    @property
    def trend(self) -> Trend:
        n, st, sv, stt, stv = self._sums
        denom = n * stt - st * st
        if n < 2 or denom <= 0 or self.first_t is None or self.last_t is None:
            return Trend(None, None, "unknown")
        slope = (n * stv - st * sv) / denom  # per second
        change = slope * (self.last_t - self.first_t)
        scale = max(abs(self.max or 0.0), abs(self.min or 0.0), 1.0)
        direction = "flat" if abs(change) < 0.02 * scale else ("up" if change > 0 else "down")
        return Trend(slope * 3600, change, direction)

    def to_json(self) -> dict[str, Any]:
        trend = self.trend
        metric = METRICS[self.metric]
        return {
            "node": self.node,
            "metric": self.metric,
            "label": metric.label,
            "unit": metric.unit,
            "samples": self.samples,
            "skipped": self.skipped,
            "count": self.count,
            "availability": self.availability,
            "min": self.min,
            "mean": self.mean,
            "max": self.max,
            "last": self.last,
            "first_t": self.first_t,
            "last_t": self.last_t,
            "trend": {
                "slope_per_h": trend.slope_per_h,
                "change": trend.change,
                "direction": trend.direction,
            },
            "series": self.series,
            "alerts": {"by_severity": self.alerts_by_severity, "by_code": self.alerts_by_code},
            "statuses": self.statuses,
        }


def summarize(
    records: Iterable[Mapping[str, Any]],
    metric: str,
    *,
    start: float,
    end: float,
    width: int = 60,
) -> dict[str, NodeSummary]:
    """Per node: min/mean/max/last, trend, a ``width``-point series, availability and alert counts.

    ``records`` are history records (full or summary-only) with ``t`` in [start, end]; the series
    has one bucket per ``(end - start) / width`` seconds. Memory is O(nodes x width).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    span = max(end - start, 1e-9)
    out: dict[str, NodeSummary] = {}
    for record in records:
        node, t = record.get("node"), record.get("t")
        if not isinstance(node, str) or not isinstance(t, int | float):
            continue
        summary = out.get(node)
        if summary is None:
            summary = out[node] = NodeSummary(node, metric)
            summary._buckets = [[0.0, 0.0] for _ in range(width)]
        index = min(max(int((t - start) / span * width), 0), width - 1)
        _add(summary, record, float(t), float(t) - start, metric_value(record, metric), index)
    for summary in out.values():
        summary.series = [s / c if c else None for s, c in summary._buckets]
    return out


def _add(
    s: NodeSummary,
    record: Mapping[str, Any],
    abs_t: float,
    t: float,  # relative to the window's start, for a numerically sound regression
    value: float | None,
    index: int,
) -> None:
    head = record.get("summary")
    head = head if isinstance(head, Mapping) else record
    s.samples += 1
    if head.get("skipped") is True or (
        head is record and record.get("error_kind") == "skipped"  # a record without a head
    ):
        s.skipped += 1
    elif head.get("reachable"):
        s.reachable += 1
    status = str(head.get("status"))
    s.statuses[status] = s.statuses.get(status, 0) + 1
    for alert in _alert_keys(record, head):
        severity, _, code = alert.partition(":")
        s.alerts_by_severity[severity] = s.alerts_by_severity.get(severity, 0) + 1
        s.alerts_by_code[code] = s.alerts_by_code.get(code, 0) + 1
    if value is None:
        return
    s.count += 1
    s.min = value if s.min is None else min(s.min, value)
    s.max = value if s.max is None else max(s.max, value)
    if abs_t >= s._last_seen_t:
        s.last, s.last_t, s._last_seen_t = value, abs_t, abs_t
    if s.first_t is None or abs_t < s.first_t:
        s.first_t = abs_t
    sums = s._sums
    sums[0] += 1
    sums[1] += t
    sums[2] += value
    sums[3] += t * t
    sums[4] += t * value
    bucket = s._buckets[index]
    bucket[0] += value
    bucket[1] += 1


def _alert_keys(record: Mapping[str, Any], head: Mapping[str, Any]) -> list[str]:
    alerts = head.get("alerts")
    if alerts and isinstance(alerts[0], str):
        return list(alerts)
    return [
        f"{a.get('severity')}:{a.get('code')}"
        for a in record.get("alerts") or ()
        if isinstance(a, Mapping)
    ]
