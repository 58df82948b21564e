"""The ``check`` table: one row per node that a person reads at a glance.

Pure: builds Rich renderables from a ``ClusterReport``; printing is the caller's.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ugro_health.model import ClusterReport, NodeReport, Severity
from ugro_health.render.common import DASH, STATUS_STYLE, counts_line, gpu_summary, pct, status_text

SEVERITY_STYLE = {Severity.CRITICAL: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
MAX_ALERTS_PER_NODE = 3


def check_table(report: ClusterReport) -> RenderableType:
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    table.add_column("NODE", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("SCORE", justify="right")
    table.add_column("GPUS", no_wrap=True)
    table.add_column("CPU", justify="right")
    table.add_column("MEM", justify="right")
    table.add_column("DISK", justify="right")
    table.add_column("ALERTS", overflow="fold", ratio=1)
    for node in report.nodes:
        table.add_row(*_row(node))
    style = STATUS_STYLE[report.status]
    footer = Text.assemble(
        (report.status.name, style),
        f"  {counts_line(list(report.nodes))} in {report.duration_s:.2f}s",
    )
    return Group(table, footer)


def _row(node: NodeReport) -> list[RenderableType]:
    sample = node.sample
    return [
        Text(node.name),
        Text(status_text(node), style=STATUS_STYLE[node.status]),
        Text(DASH if node.score is None else str(node.score)),
        Text(gpu_summary(node)),
        Text(pct(sample.cpu_util_pct if sample else None)),
        Text(pct(sample.mem_util_pct if sample else None)),
        Text(pct(sample.disk_max_pct if sample else None)),
        _alerts(node),
    ]


def _alerts(node: NodeReport) -> Text:
    text = Text()
    shown = [a for a in node.alerts if a.severity is not Severity.INFO] or list(node.alerts)
    for alert in shown[:MAX_ALERTS_PER_NODE]:
        if text:
            text.append("\n")
        text.append(alert.message, style=SEVERITY_STYLE[alert.severity])
    if len(shown) > MAX_ALERTS_PER_NODE:
        text.append(f"\n+{len(shown) - MAX_ALERTS_PER_NODE} more")
    return text
