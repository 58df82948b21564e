"""The Prometheus options of ``watch`` (``--metrics-listen``) and ``check`` (``--textfile``):
parse, start or write, and turn an ``ExportError`` into the one-line exit 3."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ugro_health.cli.output import fail

if TYPE_CHECKING:
    from ugro_health.config import NodeConfig
    from ugro_health.engine.monitor import Monitor
    from ugro_health.export.serve import ListenAddress, MetricsServer
    from ugro_health.model import ClusterReport

LISTEN_HELP = (
    "Serve Prometheus metrics on http://[HOST:]PORT/metrics (host 127.0.0.1 and port 9835 "
    "unless given; 0.0.0.0 for every interface)."
)
TEXTFILE_HELP = (
    "Also write the Prometheus metrics to DIR/ugro_health.prom (atomically), for "
    "node_exporter's textfile collector."
)


def listen_address(text: str | None) -> ListenAddress | None:
    """``--metrics-listen`` parsed before any work, or the one-line error."""
    if text is None:
        return None
    from ugro_health.export.serve import ExportError, parse_listen

    try:
        return parse_listen(text)
    except ExportError as exc:
        fail(str(exc))


def serve_metrics(
    monitor: Monitor, address: ListenAddress | None, shard: str | None = None
) -> MetricsServer | None:
    """Start ``/metrics`` over ``monitor``'s latest reports (None without the option);
    ``shard`` (``1/4``) labels the process' own figures."""
    if address is None:
        return None
    from ugro_health.export.metrics import SnapshotCollector
    from ugro_health.export.serve import ExportError, MetricsServer
    from ugro_health.export.sources import monitor_snapshot

    try:
        server = MetricsServer(SnapshotCollector(lambda: monitor_snapshot(monitor, shard)), address)
    except ExportError as exc:
        fail(str(exc))
    stamp = datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stdout.write(f"{stamp} metrics on http://{server.address}/metrics\n")
    sys.stdout.flush()
    return server


def textfile_dir(text: str | None) -> Path | None:
    """``--textfile DIR`` checked before the poll, or the one-line error."""
    if text is None:
        return None
    directory = Path(text).expanduser()
    from ugro_health.export.serve import ExportError, check_textfile_dir

    try:
        check_textfile_dir(directory)
    except ExportError as exc:
        fail(str(exc))
    return directory


def write_metrics_textfile(
    directory: Path,
    nodes: list[NodeConfig],
    report: ClusterReport,
    active_jobs: int,
    shard: tuple[int, int] | None = None,
) -> str | None:
    """Write the textfile for ``report`` (under ``--shard``, the shard's own file); the
    problem as one line when it could not be."""
    from ugro_health.export.metrics import SnapshotCollector
    from ugro_health.export.serve import ExportError, textfile_name, write_textfile
    from ugro_health.export.sources import report_snapshot

    label = None if shard is None else f"{shard[0]}/{shard[1]}"
    snapshot = report_snapshot(nodes, report, active_jobs, label)
    collector = SnapshotCollector(lambda: snapshot, counts_errors=False)
    try:
        write_textfile(directory, collector, textfile_name(shard))
    except ExportError as exc:
        return str(exc)
    return None
