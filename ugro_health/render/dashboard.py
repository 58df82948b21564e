"""The ``watch`` dashboard: a header, a row per node, and the latest alerts.

Pure: ``dashboard(view, width)`` builds a Rich renderable from a ``WatchView`` snapshot; the
caller owns the ``Live`` display. Columns are dropped, least useful first, on narrow terminals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ugro_health.model import Alert, NodeReport, Severity, Status, human_duration
from ugro_health.render.common import DASH, STATUS_STYLE, pct, printable

SEVERITY_STYLE = {Severity.CRITICAL: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


@dataclass(frozen=True, slots=True)
class NodeRow:
    report: NodeReport | None  # None: not polled yet
    breaker: str = "closed"  # closed | open | half_open
    retry_in_s: float | None = None  # when the breaker is open
    age_s: float | None = None  # how old the data is


@dataclass(frozen=True, slots=True)
class TimedAlert:
    at: float
    node: str
    alert: Alert


@dataclass(frozen=True, slots=True)
class WatchView:
    now: float
    rows: Sequence[tuple[str, NodeRow]]
    interval_s: float
    next_poll_in_s: float
    last_cycle_s: float | None
    active_jobs: Sequence[str] = ()
    alerts: Sequence[TimedAlert] = field(default_factory=tuple)


def dashboard(view: WatchView, width: int = 120, max_alerts: int = 8) -> RenderableType:
    ranks = _job_ranks(view)
    parts: list[RenderableType] = [_header(view), _table(view, width), *([ranks] if ranks else [])]
    return Group(*parts, _alerts_panel(view, max_alerts))


def _job_ranks(view: WatchView, max_pids: int = 8) -> Text | None:
    """A line per job and node: the rank processes found (``check --json``'s ``jobs``)."""
    lines = []
    for name, row in view.rows:
        for job in row.report.jobs if row.report is not None else ():
            expected = job.get("ranks_expected")
            pids = [str(p.get("pid")) for p in job.get("ranks") or ()]
            more = f" +{len(pids) - max_pids}" if len(pids) > max_pids else ""
            listed = f" (pids {', '.join(pids[:max_pids])}{more})" if pids else ""
            lines.append(
                f"job {printable(str(job.get('job')))} on {printable(name)}: "
                f"{job.get('ranks_seen')}/{expected if expected is not None else '-'} ranks{listed}"
            )
    return Text("\n".join(lines)) if lines else None


def _header(view: WatchView) -> Text:
    counts = {s: 0 for s in Status}
    unreachable = 0
    for _, row in view.rows:
        if row.report is None:
            continue
        counts[row.report.status] += 1
        unreachable += 1 if row.report.unreachable else 0
    text = Text("ugro-health  ", style="bold")
    for status, word in (
        (Status.OK, "ok"),
        (Status.WARNING, "warning"),
        (Status.CRITICAL, "critical"),
    ):
        text.append(f"{counts[status]} {word}", style=STATUS_STYLE[status])
        text.append(" · ")
    text.append(f"{unreachable} unreachable  ")
    jobs = ", ".join(map(printable, view.active_jobs)) if view.active_jobs else "none"
    text.append(f"jobs: {jobs}  ")
    cycle = DASH if view.last_cycle_s is None else f"{view.last_cycle_s:.2f}s"
    text.append(
        f"every {view.interval_s:.0f}s, next {max(0.0, view.next_poll_in_s):.0f}s, cycle {cycle}"
    )
    return text


# (header, min width at which the column is shown)
_COLUMNS = (
    ("NODE", 0),
    ("STATUS", 0),
    ("SCORE", 0),
    ("GPU UTIL", 0),
    ("GPU MEM", 70),
    ("GPU TEMP", 0),
    ("POWER", 100),
    ("CPU", 60),
    ("MEM", 60),
    ("DISK", 80),
    ("NET", 110),
    ("BREAKER", 90),
    ("AGE", 50),
)


def _table(view: WatchView, width: int) -> Table:
    shown = [(name, i) for i, (name, min_width) in enumerate(_COLUMNS) if width >= min_width]
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for name, _ in shown:
        table.add_column(
            name, justify="left" if name in ("NODE", "STATUS", "BREAKER") else "right", no_wrap=True
        )
    for name, row in view.rows:
        cells = _cells(name, row)
        table.add_row(*(cells[i] for _, i in shown))
    return table


def _cells(name: str, row: NodeRow) -> list[Text]:
    report = row.report
    breaker = row.breaker
    if breaker == "open" and row.retry_in_s is not None:
        breaker = f"open, retry {human_duration(row.retry_in_s)}"
    age = DASH if row.age_s is None else human_duration(row.age_s)
    if report is None:
        return (
            [Text(printable(name)), Text("pending", style="dim")]
            + [Text(DASH)] * 9
            + [Text(breaker), Text(age)]
        )
    status = "UNREACHABLE" if report.unreachable else report.status.name
    values = _metric_cells(report)
    return [
        Text(printable(name)),
        Text(status, style=STATUS_STYLE[report.status]),
        Text(DASH if report.score is None else str(report.score)),
        *values,
        Text(breaker, style="red" if breaker.startswith("open") else ""),
        Text(age, style="yellow" if (row.age_s or 0) > 120 else ""),
    ]


def _metric_cells(report: NodeReport) -> list[Text]:
    sample = report.sample
    if sample is None:
        return [Text(DASH)] * 8
    gpus = sample.gpus
    util = " ".join(pct(g.util_pct) for g in gpus) or DASH
    mem = " ".join(pct(g.mem_pct) for g in gpus) or DASH
    temps = " ".join(DASH if g.temp_c is None else f"{g.temp_c:.0f}°" for g in gpus) or DASH
    watts = [g.power_w for g in gpus if g.power_w is not None]
    power = f"{sum(watts):.0f}W" if watts else DASH
    rx = sum(n.rx_bytes_per_s or 0.0 for n in sample.net)
    tx = sum(n.tx_bytes_per_s or 0.0 for n in sample.net)
    net = f"{_rate(rx)}↓ {_rate(tx)}↑" if sample.net else DASH
    return [
        Text(util),
        Text(mem),
        Text(temps),
        Text(power),
        Text(pct(sample.cpu_util_pct)),
        Text(pct(sample.mem_util_pct)),
        Text(pct(sample.disk_max_pct)),
        Text(net),
    ]


def _rate(bytes_per_s: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if bytes_per_s < 1024 or unit == "G":
            return f"{bytes_per_s:.0f}{unit}"
        bytes_per_s /= 1024
    return DASH


def _alerts_panel(view: WatchView, max_alerts: int) -> Panel:
    lines = Text()
    for timed in list(view.alerts)[-max_alerts:][::-1]:
        if lines:
            lines.append("\n")
        ago = human_duration(view.now - timed.at)
        lines.append(f"{ago:>4} ago  ", style="dim")
        lines.append(f"{printable(timed.node)}: ", style="bold")
        lines.append(printable(timed.alert.message), style=SEVERITY_STYLE[timed.alert.severity])
    if not lines:
        lines.append("no alerts", style="dim")
    return Panel(lines, title="latest alerts", title_align="left", border_style="dim")
