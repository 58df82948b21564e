"""Snapshots for the collector: from a running ``Monitor`` (watch) or one ``ClusterReport``
(check).

Imports ``model``, ``config`` and ``export.metrics``; the monitor only as a type. Called from the
server's thread at each scrape, so it copies the monitor's containers before iterating them (the
poll thread replaces entries meanwhile) and never calls into the poll itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ugro_health.config import NodeConfig
from ugro_health.export.metrics import CycleStats, Snapshot
from ugro_health.model import ClusterReport

if TYPE_CHECKING:
    from ugro_health.engine.breaker import Breaker
    from ugro_health.engine.monitor import Monitor


def _expected(nodes: Iterable[NodeConfig]) -> dict[str, int]:
    return {node.name: node.gpus for node in nodes if node.gpus is not None}


def monitor_snapshot(monitor: Monitor, shard: str | None = None) -> Snapshot:
    """The monitor's latest report per configured node, its breakers and its own figures
    (``shard``: the ``1/4`` of ``--shard``, labelling those figures)."""
    reports = dict(monitor.view.reports)
    breakers = {name: b.state.value for name, b in _breakers(monitor).items()}
    scheduler = monitor.scheduler
    ordered = [reports[name] for name in monitor.nodes if name in reports]
    finished = max((r.polled_at + r.duration_s for r in ordered if r.polled), default=None)
    return Snapshot(
        reports=ordered,
        expected_gpus=_expected(monitor.nodes.values()),
        breakers={name: state for name, state in breakers.items() if name in monitor.nodes},
        active_jobs=len(monitor.view.active_jobs),
        cycle=CycleStats(
            duration_s=scheduler.last_cycle_s,
            finished_at=finished if monitor.view.cycles else None,
            cycles=monitor.view.cycles,
            overruns=scheduler.overruns,
        ),
        shard=shard,
    )


def _breakers(monitor: Monitor) -> dict[str, Breaker]:
    """The board copied: the poll thread may add a breaker while a scrape iterates it."""
    for _ in range(10):
        try:
            return dict(monitor.breakers)
        except RuntimeError:  # "dictionary changed size during iteration": take it again
            continue
    return {}


def report_snapshot(
    nodes: Iterable[NodeConfig],
    report: ClusterReport,
    active_jobs: int | None = None,
    shard: str | None = None,
) -> Snapshot:
    """One ``check`` run: its reports and duration, without running totals."""
    return Snapshot(
        reports=report.nodes,
        expected_gpus=_expected(nodes),
        active_jobs=active_jobs,
        cycle=CycleStats(duration_s=report.duration_s, finished_at=time.time()),
        shard=shard,
    )
