"""Formatting helpers shared by the renderers: pure functions from values to short strings."""

from __future__ import annotations

from ugro_health.model import NodeReport, Status, printable

STATUS_STYLE = {
    Status.OK: "green",
    Status.WARNING: "yellow",
    Status.CRITICAL: "bold red",
    Status.UNKNOWN: "magenta",
}
DASH = "—"


def pct(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f}%"


def status_text(report: NodeReport) -> str:
    if not report.reachable:
        return (
            "UNREACHABLE"
            if report.alerts and report.alerts[0].code == "node_unreachable"
            else (report.status.name)
        )
    return report.status.name


def gpu_summary(report: NodeReport) -> str:
    """``8× H100 util 97% 71°C`` (max temperature, mean utilisation)."""
    if report.sample is None:
        return DASH
    gpus = report.sample.gpus
    if not gpus:
        return "none"
    names = {printable((g.name or "GPU").replace("NVIDIA ", "").split(" ")[0]) for g in gpus}
    utils = [g.util_pct for g in gpus if g.util_pct is not None]
    temps = [g.temp_c for g in gpus if g.temp_c is not None]
    parts = [f"{len(gpus)}× {'/'.join(sorted(names))}"]
    if utils:
        parts.append(f"{sum(utils) / len(utils):.0f}%")
    if temps:
        parts.append(f"{max(temps):.0f}°C")
    return " ".join(parts)


def counts_line(reports: tuple[NodeReport, ...] | list[NodeReport]) -> str:
    """``3 nodes: 1 ok, 1 warning, 1 critical (1 unreachable)``."""
    counts = {s: 0 for s in Status}
    for report in reports:
        counts[report.status] += 1
    parts = [f"{n} {s.label}" for s, n in counts.items() if n]
    unreachable = sum(1 for r in reports if r.unreachable)
    tail = f" ({unreachable} unreachable)" if unreachable else ""
    noun = "node" if len(reports) == 1 else "nodes"
    return f"{len(reports)} {noun}: {', '.join(parts) or 'none'}{tail}"


# How a lifecycle state reads after an alert's message; firing (the ordinary case) is unmarked.
_STATE_MARKS = {"silenced": " (silenced)", "flapping": " (flapping)", "pending": " (pending)"}


def state_mark(state: object) -> str:
    """`` (silenced)``, `` (flapping)`` or `` (pending)`` after an alert; else nothing."""
    return _STATE_MARKS.get(state, "") if isinstance(state, str) else ""


def utc_stamp(at: float) -> str:
    """``2026-11-28T21:30:00Z``: how log lines and tables print a moment."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
