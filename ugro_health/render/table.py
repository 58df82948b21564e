"""The ``check`` table: one row per node that a person reads at a glance.

Pure: builds Rich renderables from a ``ClusterReport``; printing is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.text import Text

from ugro_health.engine.scoring import kernel_log_denied
from ugro_health.model import ClusterReport, NodeReport, Severity
from ugro_health.render.common import (
    DASH,
    STATUS_STYLE,
    counts_line,
    gpu_summary,
    pct,
    printable,
    state_mark,
    status_text,
)
from ugro_health.render.layout import Column, FittedTable, NodeRow

SEVERITY_STYLE = {Severity.CRITICAL: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
MAX_ALERTS_PER_NODE = 3


# Dropped on narrow terminals from the highest rank down.
COLUMNS = (
    Column("NODE"),
    Column("STATUS"),
    Column("SCORE", right=True, drop_rank=2),
    Column("GPUS", drop_rank=1),
    Column("CPU", right=True, drop_rank=5),
    Column("MEM", right=True, drop_rank=4),
    Column("DISK", right=True, drop_rank=3),
)


def check_table(report: ClusterReport) -> RenderableType:
    style = STATUS_STYLE[report.status]
    footer = Text.assemble(
        (report.status.name, style),
        f"  {counts_line(list(report.nodes))} in {report.duration_s:.2f}s",
    )
    table = FittedTable(COLUMNS, [_row(node) for node in report.nodes], footer)
    note = kernel_log_note(report)
    return table if note is None else Group(table, note)


def kernel_log_note(report: ClusterReport) -> Text | None:
    """Once per run, the nodes whose kernel log the probe may not read, with the fix."""
    message = kernel_log_message(n.name for n in report.nodes if kernel_log_denied(n.sample))
    return None if message is None else Text(message, style="dim")


def kernel_log_message(names: Iterable[str]) -> str | None:
    """``note: XID errors are not checked on a, b: ...`` with the fix, or None for no node."""
    denied = [printable(name) for name in names]
    if not denied:
        return None
    return (
        f"note: XID errors are not checked on {', '.join(denied)}: the SSH user may not read "
        "the kernel log. Fix on the node: add the user to the `adm` group (or "
        "`systemd-journal`, for journalctl -k), or set the sysctl kernel.dmesg_restrict=0."
    )


def _row(node: NodeReport) -> NodeRow:
    sample = node.sample
    cells = [
        Text(printable(node.name)),
        Text(status_text(node), style=STATUS_STYLE[node.status]),
        Text(DASH if node.score is None else str(node.score)),
        Text(gpu_summary(node)),
        Text(pct(sample.cpu_util_pct if sample else None)),
        Text(pct(sample.mem_util_pct if sample else None)),
        Text(pct(sample.disk_max_pct if sample else None)),
    ]
    return NodeRow(cells, _alerts(node))


def _alerts(node: NodeReport) -> Text:
    text = Text()
    shown = [a for a in node.alerts if a.severity is not Severity.INFO] or list(node.alerts)
    for alert in shown[:MAX_ALERTS_PER_NODE]:
        if text:
            text.append("\n")
        text.append(printable(alert.message), style=SEVERITY_STYLE[alert.severity])
        text.append(state_mark(alert.state), style="dim")
    if len(shown) > MAX_ALERTS_PER_NODE:
        text.append(f"\n+{len(shown) - MAX_ALERTS_PER_NODE} more")
    return text
