"""The ``watch`` dashboard: a header, a row per node, the active alerts and the recent events.

Pure: ``dashboard(view, width)`` builds a Rich renderable from a ``WatchView`` snapshot; the
caller owns the ``Live`` display. Columns are dropped, least useful first, on narrow terminals;
what the BREAKER column said (an isolation, or the longer wait a recent recovery leaves) then
goes on a line of its own under the table. Severities are written as words, not only colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ugro_health.engine.scoring import kernel_log_denied
from ugro_health.model import Alert, NodeReport, Severity, Status, human_duration
from ugro_health.render.common import DASH, STATUS_STYLE, pct, printable, state_mark
from ugro_health.render.table import kernel_log_message

SEVERITY_STYLE = {Severity.CRITICAL: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


@dataclass(frozen=True, slots=True)
class NodeRow:
    report: NodeReport | None  # None: not polled yet
    breaker: str = "closed"  # closed | open | half_open
    retry_in_s: float | None = None  # when the breaker is open
    age_s: float | None = None  # how old the data is
    backoff_s: float | None = None  # closed, but a recent recovery: a new isolation waits this


@dataclass(frozen=True, slots=True)
class TimedAlert:
    at: float
    node: str
    alert: Alert
    kind: str = "raised"  # or "cleared"


@dataclass(frozen=True, slots=True)
class WatchView:
    now: float
    rows: Sequence[tuple[str, NodeRow]]
    interval_s: float | None  # None: not known before the first round (job activity)
    next_poll_in_s: float
    last_cycle_s: float | None
    active_jobs: Sequence[str] = ()
    alerts: Sequence[TimedAlert] = field(default_factory=tuple)  # events, oldest first
    stopping: bool = False  # asked to stop: the poll in flight is finishing
    cluster_alerts: Sequence[Alert] = ()  # standing alerts of no one node (the Slurm guard)
    banner: str | None = None  # a line above the header (`demo`: says it is a simulation)


SLURM_JOB_PREFIX = "slurm:"  # jobs read from squeue (engine.slurm), beside registered ones
JOBS_SHOWN = 6  # job names in the header; a busy Slurm cluster runs hundreds
CLUSTER_LABEL = "cluster"  # where a cluster-level alert's node name would be


BREAKER_COLUMN_WIDTH = 90  # narrower: breakers that are not plainly closed get a note line


def dashboard(view: WatchView, width: int = 120, max_alerts: int = 8) -> RenderableType:
    parts: list[RenderableType] = [_header(view), _table(view, width)]
    if view.banner:
        parts.insert(0, Text(printable(view.banner), style="bold black on yellow"))
    ranks = _job_ranks(view)
    if ranks:
        parts.append(ranks)
    if width < BREAKER_COLUMN_WIDTH:
        parts.extend(_breaker_notes(view))
    denied = (n for n, row in view.rows if row.report and kernel_log_denied(row.report.sample))
    note = kernel_log_message(denied)
    if note is not None:  # a standing fact of the node, not an alert on every poll
        parts.append(Text(note, style="dim"))
    parts.append(_active_panel(view, max_alerts))
    parts.append(_events_panel(view, max_alerts))
    return Group(*parts)


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
    text.append(f"jobs: {jobs_text(view.active_jobs)}  ")
    cycle = DASH if view.last_cycle_s is None else f"{view.last_cycle_s:.2f}s"
    if view.stopping:
        text.append("stopping: finishing the poll in flight", style="bold yellow")
    elif view.interval_s is None:
        text.append("first poll in progress")
    else:
        text.append(
            f"every {view.interval_s:.0f}s, next {max(0.0, view.next_poll_in_s):.0f}s, "
            f"cycle {cycle}"
        )
    return text


def jobs_text(names: Sequence[str], shown: int = JOBS_SHOWN) -> str:
    """``llama, bert; slurm: 4242, 4243 +9 more``: registered jobs by name, then the Slurm
    jobs by id after one mark, at most ``shown`` names in all."""
    if not names:
        return "none"
    ours = [printable(n) for n in names if not n.startswith(SLURM_JOB_PREFIX)]
    slurm = [
        printable(n.removeprefix(SLURM_JOB_PREFIX)) for n in names if n.startswith(SLURM_JOB_PREFIX)
    ]
    listed = ", ".join(ours[:shown])
    room = max(0, shown - len(ours))
    if slurm and room:
        listed += ("; " if listed else "") + "slurm: " + ", ".join(slurm[:room])
    more = len(names) - min(len(ours), shown) - min(len(slurm), room)
    return listed + (f" +{more} more" if more else "")


def node_label(name: str) -> str:
    """A node's name as the events panel shows it; the cluster-level alerts' stand-in
    (``engine.alerting.CLUSTER_NODE``, never a node name: those cannot start with ``@``)
    reads ``cluster``."""
    return CLUSTER_LABEL if name.startswith("@") else printable(name)


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
    ("BREAKER", BREAKER_COLUMN_WIDTH),
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


def _breaker_text(row: NodeRow) -> str:
    if row.breaker == "open" and row.retry_in_s is not None:
        return f"open, retry {human_duration(row.retry_in_s)}"
    if row.breaker == "closed" and row.backoff_s is not None:
        return f"closed, back-off {human_duration(row.backoff_s)}"
    return row.breaker


def _breaker_notes(view: WatchView) -> list[Text]:
    """The BREAKER column's news when the column does not fit: one line per such node."""
    notes = []
    for name, row in view.rows:
        text = _breaker_text(row)
        if text != "closed":
            notes.append(Text(f"breaker {printable(name)}: {text}", style="yellow"))
    return notes


def _cells(name: str, row: NodeRow) -> list[Text]:
    report = row.report
    breaker = _breaker_text(row)
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
    util = _gpu_cell([g.util_pct for g in gpus], "%")
    mem = _gpu_cell([g.mem_pct for g in gpus], "%")
    temps = _gpu_cell([g.temp_c for g in gpus], "°")
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


GPUS_LISTED = 4  # up to this many GPUs a cell lists each; more (8 per node) would not fit


def _gpu_cell(values: Sequence[float | None], unit: str) -> str:
    """``97% 96%``: one value per GPU; for more than ``GPUS_LISTED`` GPUs, the range
    ``62–94°`` (lowest–highest), which still shows the one GPU out of line."""
    if not values:
        return DASH
    if len(values) <= GPUS_LISTED:
        return " ".join(DASH if v is None else f"{v:.0f}{unit}" for v in values)
    known = [v for v in values if v is not None]
    if not known:
        return DASH
    low, high = f"{min(known):.0f}", f"{max(known):.0f}"
    return f"{high}{unit}" if low == high else f"{low}–{high}{unit}"


def _rate(bytes_per_s: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if bytes_per_s < 1024 or unit == "G":
            return f"{bytes_per_s:.0f}{unit}"
        bytes_per_s /= 1024
    return DASH


def _severity(alert: Alert) -> Text:
    word = alert.severity.value.upper()
    return Text(f"{word:<8} ", style=SEVERITY_STYLE[alert.severity])


def _active_panel(view: WatchView, max_alerts: int) -> Panel:
    """What is wrong now: the alerts of each node's latest report, worst first."""
    order = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
    active = [
        (name, alert)
        for name, row in view.rows
        if row.report is not None
        for alert in row.report.alerts
        if alert.severity is not Severity.INFO
    ]
    active.sort(key=lambda item: order[item[1].severity])
    # A cluster-level alert (the Slurm drain guard) first: it holds back every node's drain.
    active[:0] = [(CLUSTER_LABEL, alert) for alert in view.cluster_alerts]
    lines = Text()
    for name, alert in active[:max_alerts]:
        if lines:
            lines.append("\n")
        lines.append_text(_severity(alert))
        lines.append(f"{printable(name)}: ", style="bold")
        lines.append(printable(alert.message))
        lines.append(state_mark(alert.state), style="dim")
    if len(active) > max_alerts:
        lines.append(f"\n+{len(active) - max_alerts} more")
    if not lines:
        lines.append("no active alerts", style="dim")
    return Panel(lines, title="active alerts", title_align="left", border_style="dim")


def _events_panel(view: WatchView, max_alerts: int) -> Panel:
    """What happened: alerts raised and cleared, newest first; cleared ones say so."""
    lines = Text()
    for timed in list(view.alerts)[-max_alerts:][::-1]:
        if lines:
            lines.append("\n")
        ago = human_duration(view.now - timed.at)
        lines.append(f"{ago:>4} ago  ", style="dim")
        lines.append_text(_severity(timed.alert))
        lines.append(f"{node_label(timed.node)}: ", style="bold")
        if timed.kind == "cleared":
            lines.append("cleared: ", style="green")
            lines.append(printable(timed.alert.message), style="dim")
        else:
            lines.append(printable(timed.alert.message))
    if not lines:
        lines.append("no alerts", style="dim")
    return Panel(lines, title="recent events", title_align="left", border_style="dim")
