"""``ugro-health watch``: the live dashboard on a terminal, one log line per cycle otherwise."""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

import typer

from ugro_health.cli.context import (
    from_typer,
    parse_shard_option,
    select_nodes,
    shard_nodes,
    shard_option,
)
from ugro_health.cli.export import LISTEN_HELP, listen_address, serve_metrics
from ugro_health.cli.node_completion import nodes_glob_option
from ugro_health.cli.output import console

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ugro_health.engine.monitor import AlertEvent, CycleResult, Monitor
    from ugro_health.model import NodeReport
    from ugro_health.notify.deliver import Deliverer
    from ugro_health.render.dashboard import NodeRow, WatchView


def watch_command(
    ctx: typer.Context,
    nodes: str | None = nodes_glob_option("Only nodes matching these comma-separated globs."),
    interval: float | None = typer.Option(
        None,
        "--interval",
        "-i",
        min=1.0,
        metavar="SECONDS",
        help="Poll at this fixed interval instead of adapting to job activity.",
    ),
    headless: bool = typer.Option(
        False,
        "--headless",
        help="Log one line per cycle and per alert (the default on a non-TTY).",
    ),
    metrics_listen: str | None = typer.Option(
        None, "--metrics-listen", metavar="[HOST:]PORT", help=LISTEN_HELP
    ),
    shard: str | None = shard_option(),
) -> None:
    """Monitor continuously; SIGINT or SIGTERM stops cleanly (exit 0).

    Example: [bold]ugro-health watch --nodes 'gpu*'[/bold]  or, under systemd,
    [bold]ugro-health watch --headless --metrics-listen 9835[/bold]
    """
    from ugro_health.cli.output import warn
    from ugro_health.engine.runs import build_monitor

    address = listen_address(metrics_listen)
    part = parse_shard_option(shard)
    app = from_typer(ctx)
    config = app.load_config()
    selected = shard_nodes(select_nodes(config, nodes), part)
    monitor = build_monitor(config, selected, app.state_dir, interval, warn=warn)
    transports = monitor.transports
    _install_signal_handlers(monitor)
    server = serve_metrics(monitor, address, None if part is None else part.label)
    logging = headless or not console.is_terminal
    deliverer = _start_delivery(monitor, app.state_dir, logging)
    try:
        if logging:
            _run_headless(monitor, "" if part is None else f" (shard {part.label})")
        else:
            _run_dashboard(monitor)
    finally:
        transports.close()
        if server is not None:
            server.close()
        if deliverer is not None:
            deliverer.stop()
    raise typer.Exit(0)


def _start_delivery(monitor: Monitor, state_dir: Path, logging: bool) -> Deliverer | None:
    """Delivery threads beside the loop (a cycle that queues a notification wakes them);
    a failed delivery is logged once per new error when logging, shown by `notify status`."""
    settings = monitor.config.notify
    if not settings.channels:
        return None
    from ugro_health.notify.deliver import Deliverer
    from ugro_health.render.common import printable

    def on_error(channel: str, error: str) -> None:
        if logging:
            _log(printable(f"{_stamp(time.time())} NOTIFY {channel}: {error} (kept, retried)"))

    deliverer = Deliverer(state_dir, settings, on_error=on_error)
    monitor.on_queued = deliverer.kick
    deliverer.start()
    return deliverer


def _install_signal_handlers(monitor: Monitor) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        monitor.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _stamp(at: float) -> str:
    from ugro_health.render.common import utc_stamp

    return utc_stamp(at)


_LOG_LOCK = threading.Lock()  # `demo` narrates from its story thread beside the loop


def _log(line: str) -> None:
    with _LOG_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def cycle_line(monitor: Monitor, result: CycleResult) -> str:
    """``2026-11-28T21:30:00Z cycle 12: polled 3 in 0.21s; 2 ok, 1 critical; ...``."""
    from ugro_health.render.common import counts_line, printable

    reports = list(monitor.view.reports.values())
    skipped = f", {len(result.skipped)} isolated" if result.skipped else ""
    jobs = ", ".join(map(printable, monitor.view.active_jobs)) or "none"
    return (
        f"{_stamp(result.at)} cycle {monitor.view.cycles}: polled {len(result.polled)}"
        f"{skipped} in {result.duration_s:.2f}s; {counts_line(reports)}; jobs: {jobs}; "
        f"next in {monitor.scheduler.seconds_until_next(result.at):.0f}s"
    )


def event_line(event: AlertEvent) -> str:
    """``2026-11-28T21:30:00Z ALERT CRITICAL gpu1 gpu_temp_critical: GPU 0: ...``, one line
    whatever the node sent (its text is made printable)."""
    from ugro_health.render.common import printable

    word = "ALERT" if event.kind == "raised" else "CLEARED"
    severity = event.alert.severity.value.upper()
    return printable(
        f"{_stamp(event.at)} {word} {severity} {event.node} {event.alert.code}: "
        f"{event.alert.message}"
    )


def _run_headless(monitor: Monitor, shard: str = "") -> None:
    from ugro_health.render.common import printable

    shown: list[str] = []  # the store problems logged last: a full disk is said once
    noted: set[str] = set()  # nodes whose unreadable kernel log was said (once per node)

    def on_cycle(result: CycleResult) -> None:
        # Events carry the cycle's start time, its summary the end: log them in that order.
        for event in result.events:
            _log(event_line(event))
        _log(cycle_line(monitor, result))
        if result.store_problems != shown:
            for problem in result.store_problems:
                _log(printable(f"{_stamp(result.at)} STORE {problem}"))
            if not result.store_problems and any(_is_write_failure(p) for p in shown):
                _log(f"{_stamp(result.at)} STORE recorded again")
            shown[:] = result.store_problems
        _note_kernel_log(monitor, result.at, noted)
        for problem in result.slurm_problems:
            _log(printable(f"{_stamp(result.at)} SLURM {problem.removeprefix('slurm: ')}"))

    _log(
        f"{_stamp(time.time())} watching {len(monitor.nodes)} node(s){shard}; "
        f"state in {monitor.store.directory}"
    )
    monitor.run(on_cycle=on_cycle, tick_s=1.0)
    _log(f"{_stamp(time.time())} stopped after {monitor.view.cycles} cycle(s)")


def _note_kernel_log(monitor: Monitor, at: float, noted: set[str]) -> None:
    """Say once per node that its kernel log is unreadable (XIDs unchecked), with the fix."""
    from ugro_health.engine.scoring import kernel_log_denied
    from ugro_health.render.table import kernel_log_message

    reports = monitor.view.reports
    new = [n for n, r in reports.items() if n not in noted and kernel_log_denied(r.sample)]
    message = kernel_log_message(new)
    if message is not None:
        noted.update(new)
        _log(f"{_stamp(at)} NOTE {message.removeprefix('note: ')}")


def _is_write_failure(problem: str) -> bool:
    """``history not recorded: ...``, ``state not saved: ...``: not a one-off note (a repair)."""
    return problem.partition(":")[0].endswith(("not recorded", "not saved"))


def _run_dashboard(monitor: Monitor, banner: Callable[[], str] | None = None) -> None:
    from rich.console import RenderableType
    from rich.live import Live

    from ugro_health.render.dashboard import dashboard

    def view() -> RenderableType:
        return dashboard(watch_view(monitor, None if banner is None else banner()), console.width)

    # Redrawn every second by Live's own thread as well: after Ctrl-C the main thread waits
    # for the poll in flight, and the header must say "stopping" meanwhile.
    with Live(
        console=console,
        get_renderable=view,
        auto_refresh=True,
        refresh_per_second=1,
        screen=False,
        transient=False,
    ) as live:

        def refresh(*_: object) -> None:
            live.refresh()

        monitor.on_progress = refresh  # a node answered mid-round: draw it now
        monitor.run(on_cycle=refresh, on_tick=refresh, tick_s=1.0)


def watch_view(monitor: Monitor, banner: str | None = None) -> WatchView:
    """Snapshot the monitor for the dashboard renderer (also from Live's refresh thread, so
    the monitor's containers are copied before they are iterated); ``banner`` goes above it."""
    from ugro_health.render.dashboard import TimedAlert, WatchView

    now = time.time()
    reports, partial = dict(monitor.view.reports), dict(monitor.view.partial)
    rows = [
        (name, _node_row(monitor, name, reports.get(name) or partial.get(name), now))
        for name in monitor.nodes
    ]
    events = tuple(monitor.view.events)
    alerts = [TimedAlert(e.at, e.node, e.alert, e.kind) for e in events]
    first = monitor.view.cycles == 0 and monitor.scheduler.policy.fixed_interval_s is None
    guard = None if monitor.slurm is None else monitor.slurm.guard
    return WatchView(
        now=now,
        rows=rows,
        interval_s=None if first else monitor.scheduler.interval,
        next_poll_in_s=monitor.scheduler.seconds_until_next(now),
        last_cycle_s=monitor.scheduler.last_cycle_s,
        active_jobs=list(monitor.view.active_jobs),
        alerts=alerts,
        stopping=monitor.stop_event.is_set(),
        cluster_alerts=() if guard is None else (guard,),
        banner=banner,
    )


def _node_row(monitor: Monitor, name: str, report: NodeReport | None, now: float) -> NodeRow:
    from ugro_health.render.dashboard import NodeRow

    breaker = monitor.breakers.get(name)
    if breaker is None:
        return NodeRow(report, age_s=None if report is None else now - report.polled_at)
    state = breaker.state.value
    retry = breaker.seconds_until_retry(now) if state == "open" else None
    age = None if report is None else now - report.polled_at
    return NodeRow(report, state, retry, age, breaker.backoff_s())
