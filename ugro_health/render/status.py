"""The ``status`` table and the ``history`` report: pure renderables from stored data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from ugro_health.model import Status, as_float, human_duration
from ugro_health.render.common import DASH, STATUS_STYLE, pct, printable, state_mark
from ugro_health.render.layout import Column, FittedTable, NodeRow, Trimmed
from ugro_health.store.summary import sparkline

# Dropped on narrow terminals from the highest rank down; AGE (and STALE) is what status is for.
STATUS_COLUMNS = (
    Column("NODE"),
    Column("STATUS"),
    Column("SCORE", right=True, drop_rank=2),
    Column("GPU TEMP", right=True, drop_rank=1),
    Column("GPU UTIL", right=True, drop_rank=3),
    Column("CPU", right=True, drop_rank=6),
    Column("MEM", right=True, drop_rank=5),
    Column("DISK", right=True, drop_rank=4),
    Column("AGE", right=True),
)


def status_table(nodes: Sequence[Mapping[str, Any]], footer: str) -> RenderableType:
    """``nodes``: ``status`` JSON node documents (with ``age_s`` and ``stale``)."""
    return FittedTable(STATUS_COLUMNS, [_status_row(n) for n in nodes], Text(footer))


def _status_row(node: Mapping[str, Any]) -> NodeRow:
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
    alerts = [
        printable(a.get("message", "")) + state_mark(a.get("state"))
        for a in node.get("alerts") or ()
        if a.get("severity") != "info"
    ]
    # Said first: a stored error or alert about an isolation is as old as the data.
    notes = [printable(note)] if (note := node.get("breaker_note")) else []
    if node.get("configured") is False:
        notes.insert(0, "not configured: not counted in the exit code (--prune removes it)")
    score = node.get("score")
    cells = [
        Text(printable(node.get("name"))),
        Text(label, style=STATUS_STYLE[status]),
        Text(DASH if score is None else printable(score)),
        Text(DASH if temp is None else f"{temp:.0f}°C"),
        Text(pct(as_float(summary.get("gpu_util")))),
        Text(pct(as_float(summary.get("cpu")))),
        Text(pct(as_float(summary.get("mem")))),
        Text(pct(as_float(summary.get("disk")))),
        age_text,
    ]
    more = [f"+{len(alerts) - 3} more"] if len(alerts) > 3 else []
    return NodeRow(cells, Text("\n".join(notes + alerts[:3] + more)))


def history_table(
    summaries: Sequence[Mapping[str, Any]], title: str, width: int = 120
) -> RenderableType:
    """``summaries``: ``NodeSummary.to_json()`` documents for one metric."""
    spark = max(8, min(40, width - 75))
    table = Table(
        box=None,
        pad_edge=False,
        header_style="bold",
        title=Text(printable(title)),
        title_justify="left",
    )
    for name in ("NODE", "MIN", "MEAN", "MAX", "LAST", "TREND", "", "UP", "ALERTS"):
        table.add_column(
            name,
            justify="left" if name in ("NODE", "", "ALERTS") else "right",
            no_wrap=name != "ALERTS",
        )
    for s in summaries:
        table.add_row(*_history_row(s, spark))
    return Trimmed(table)


_ARROW = {"up": "↗", "down": "↘", "flat": "→", "unknown": "?"}


def _history_row(s: Mapping[str, Any], spark: int) -> list[Text]:
    unit = s.get("unit") or ""

    def fmt(value: Any) -> str:
        number = as_float(value)
        return DASH if number is None else f"{number:.1f}{printable(unit)}"

    trend = s.get("trend") or {}
    change = as_float(trend.get("change"))
    arrow = _ARROW.get(trend.get("direction", "unknown"), "?")
    trend_text = arrow if change is None else f"{arrow} {change:+.1f}"
    availability = as_float(s.get("availability"))
    by_code = (s.get("alerts") or {}).get("by_code") or {}
    alerts = ", ".join(f"{code}×{n}" for code, n in sorted(by_code.items(), key=lambda i: -i[1]))
    # Plain strings in a Rich table are read as markup: every cell is a Text, and names and
    # codes read back from the history files are made printable.
    return [
        Text(printable(s.get("node"))),
        Text(fmt(s.get("min"))),
        Text(fmt(s.get("mean"))),
        Text(fmt(s.get("max"))),
        Text(fmt(s.get("last"))),
        Text(trend_text),
        Text(sparkline(s.get("series") or [], spark), style="cyan"),
        Text(DASH if availability is None else f"{100 * availability:.1f}%"),
        Text(printable(alerts) or DASH),
    ]
