"""The ``status`` table and the ``history`` report: pure renderables from stored data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ugro_health.model import Status, as_float, human_duration
from ugro_health.render.common import DASH, STATUS_STYLE, pct
from ugro_health.store.summary import sparkline


def status_table(nodes: Sequence[Mapping[str, Any]], footer: str) -> RenderableType:
    """``nodes``: ``status`` JSON node documents (with ``age_s`` and ``stale``)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("NODE", "STATUS", "SCORE", "GPU TEMP", "GPU UTIL", "CPU", "MEM", "DISK", "AGE"):
        table.add_column(
            name, justify="left" if name in ("NODE", "STATUS") else "right", no_wrap=True
        )
    table.add_column("ALERTS", ratio=1, overflow="fold")
    for node in nodes:
        table.add_row(*_status_row(node))
    return Group(table, Text(footer))


def _status_row(node: Mapping[str, Any]) -> list[RenderableType]:
    status = Status.parse(node.get("status") or "unknown")
    summary = node.get("summary") or {}
    label = status.name if node.get("reachable", True) else "UNREACHABLE"
    if node.get("polled_at") is None:
        label = "NEVER POLLED"
    age = node.get("age_s")
    age_text = Text(DASH if age is None else human_duration(age))
    if node.get("stale"):
        age_text = Text(f"{age_text.plain} STALE", style="bold yellow")
    temp = as_float(summary.get("gpu_temp"))
    alerts = [a.get("message", "") for a in node.get("alerts") or () if a.get("severity") != "info"]
    score = node.get("score")
    return [
        Text(str(node.get("name"))),
        Text(label, style=STATUS_STYLE[status]),
        Text(DASH if score is None else str(score)),
        Text(DASH if temp is None else f"{temp:.0f}°C"),
        Text(pct(as_float(summary.get("gpu_util")))),
        Text(pct(as_float(summary.get("cpu")))),
        Text(pct(as_float(summary.get("mem")))),
        Text(pct(as_float(summary.get("disk")))),
        age_text,
        Text("\n".join(alerts[:3]) + (f"\n+{len(alerts) - 3} more" if len(alerts) > 3 else "")),
    ]


def history_table(
    summaries: Sequence[Mapping[str, Any]], title: str, width: int = 120
) -> RenderableType:
    """``summaries``: ``NodeSummary.to_json()`` documents for one metric."""
    spark = max(8, min(40, width - 75))
    table = Table(box=None, pad_edge=False, header_style="bold", title=title, title_justify="left")
    for name in ("NODE", "MIN", "MEAN", "MAX", "LAST", "TREND", "", "UP", "ALERTS"):
        table.add_column(
            name,
            justify="left" if name in ("NODE", "", "ALERTS") else "right",
            no_wrap=name != "ALERTS",
        )
    for s in summaries:
        table.add_row(*_history_row(s, spark))
    return table


_ARROW = {"up": "↗", "down": "↘", "flat": "→", "unknown": "?"}


def _history_row(s: Mapping[str, Any], spark: int) -> list[str | Text]:
    unit = s.get("unit") or ""

    def fmt(value: Any) -> str:
        number = as_float(value)
        return DASH if number is None else f"{number:.1f}{unit}"

    trend = s.get("trend") or {}
    change = as_float(trend.get("change"))
    arrow = _ARROW.get(trend.get("direction", "unknown"), "?")
    trend_text = arrow if change is None else f"{arrow} {change:+.1f}"
    availability = as_float(s.get("availability"))
    by_code = (s.get("alerts") or {}).get("by_code") or {}
    alerts = ", ".join(f"{code}×{n}" for code, n in sorted(by_code.items(), key=lambda i: -i[1]))
    return [
        str(s.get("node")),
        fmt(s.get("min")),
        fmt(s.get("mean")),
        fmt(s.get("max")),
        fmt(s.get("last")),
        trend_text,
        Text(sparkline(s.get("series") or [], spark), style="cyan"),
        DASH if availability is None else f"{100 * availability:.1f}%",
        alerts or DASH,
    ]
