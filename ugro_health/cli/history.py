"""``ugro-health history``: what happened, per node and metric, over a window of the store."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import typer

from ugro_health.cli.context import from_typer
from ugro_health.cli.node_completion import complete_metric, complete_node
from ugro_health.cli.output import console, fail, warn

if TYPE_CHECKING:
    from ugro_health.store.history import HistoryStore


def history_command(
    ctx: typer.Context,
    node: str | None = typer.Argument(
        None,
        metavar="NODE",
        help="One node (default: every node in the store).",
        autocompletion=complete_node,
    ),
    since: str = typer.Option(
        "1h", "--since", "-s", metavar="DURATION", help="Window to look back over: 30m, 6h, 1d, 1w."
    ),
    metric: str = typer.Option(
        "score",
        "--metric",
        "-m",
        metavar="NAME",
        help="score, cpu, mem, disk, load, gpu_temp, gpu_util, gpu_mem, power.",
        autocompletion=complete_metric,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the samples and summaries as JSON."),
) -> None:
    """Min / mean / max / last, trend, sparkline, availability and alerts per node.

    Example: [bold]ugro-health history gpu1 --since 6h --metric gpu_temp[/bold]
    """
    from ugro_health.store._fs import StoreError
    from ugro_health.store.history import HistoryStore, ReadStats
    from ugro_health.store.summary import METRICS, parse_duration, summarize

    app = from_typer(ctx)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        fail(f"--since: {exc}")
    if metric not in METRICS:
        fail(f"--metric: unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    end = time.time()
    start = end - window
    store = HistoryStore(app.state_dir)
    stats = ReadStats()
    nodes = {node} if node else None
    points = store.iter_points(since=start, until=end, nodes=nodes, stats=stats)
    try:
        summaries = summarize(points, metric, start=start, end=end)
    except StoreError as exc:
        fail(str(exc))
    if stats.message():
        warn(str(stats.message()))
    if node and node not in summaries:
        _unknown_node(app, node, since)
    ordered = [summaries[name].to_json() for name in sorted(summaries)]
    if as_json:
        _print_json(store, start, end, nodes, metric, ordered)
        return
    if not ordered:
        console.print(f"no history in the last {since} in {app.state_dir}", markup=False)
        return
    from ugro_health.render.status import history_table

    label = METRICS[metric].label
    console.print(history_table(ordered, f"{label}, last {since}", console.width))


def _unknown_node(app: object, node: str, since: str) -> None:
    from ugro_health.cli.context import AppContext

    assert isinstance(app, AppContext)
    if app.config_path is not None:
        names = [n.name for n in app.load_config().nodes]
        if node not in names:
            fail(f"unknown node {node!r} (configured: {', '.join(names[:8])})")
    console.print(f"no history for {node} in the last {since}", markup=False)
    raise typer.Exit(0)


def _print_json(
    store: HistoryStore,
    start: float,
    end: float,
    nodes: set[str] | None,
    metric: str,
    summaries: list[dict[str, Any]],
) -> None:
    """One JSON document, the samples streamed so memory stays flat whatever the window."""
    from ugro_health.store.history import ReadStats

    head = {
        "schema": "ugro-health/v1",
        "since": start,
        "until": end,
        "metric": metric,
        "summaries": summaries,
    }
    out = sys.stdout
    out.write(json.dumps(head)[:-1] + ', "samples": [')
    for i, record in enumerate(
        store.iter_records(since=start, until=end, nodes=nodes, stats=ReadStats())
    ):
        out.write(("," if i else "") + "\n" + json.dumps(record))
    out.write("\n]}\n")
