"""Write a poll's result to the store: history lines and the cluster state.

A store failure (full disk, read-only directory) never hides the cluster's health: it comes
back as a one-line problem for the caller to print, and the command still reports and exits
with the cluster's status.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ugro_health.config import Config
from ugro_health.engine.clock import Clock, SystemClock
from ugro_health.model import ClusterReport
from ugro_health.store._fs import StoreError, one_line
from ugro_health.store.history import HistoryStore, record_from_report
from ugro_health.store.state import StateStore


def history_store(state_dir: Path, config: Config, clock: Clock | None = None) -> HistoryStore:
    if clock is None or isinstance(clock, SystemClock):
        return HistoryStore(
            state_dir,
            retention_s=config.history_retention_h * 3600.0,
            max_bytes=int(config.history_max_mb * 1024 * 1024),
        )
    # A virtual clock (tests): its monotonic time is the real time that passed.
    return HistoryStore(
        state_dir,
        retention_s=config.history_retention_h * 3600.0,
        max_bytes=int(config.history_max_mb * 1024 * 1024),
        clock=clock.time,
        elapsed=lambda: ("virtual", clock.monotonic()),
    )


class Recorder:
    """Records poll results; ``watch`` keeps one so retention checks stay cheap."""

    def __init__(self, state_dir: Path, config: Config, clock: Clock | None = None) -> None:
        self.history = history_store(state_dir, config, clock)
        self.state = StateStore(state_dir, clock=(clock or SystemClock()).time)

    def record(
        self, report: ClusterReport, also: Callable[[dict[str, Any]], None] | None = None
    ) -> list[str]:
        """Append ``report`` to history and state (``also`` changes the state in the same
        write); returns the problems met (empty when fine)."""
        problems: list[str] = []
        errors: list[StoreError] = []
        # A node never tried (the run's time ran out first) is not a failed poll: its history
        # and last known state stay as they were.
        records = [record_from_report(node) for node in report.nodes if node.polled]
        try:
            self.history.append(records)
        except StoreError as exc:
            errors.append(exc)
        try:
            loaded = self.state.record_cycle(records, now=report.generated_at, also=also)
            if loaded.warning:
                problems.append(loaded.warning)
        except StoreError as exc:
            errors.append(exc)
        # A full or read-only disk fails both alike: one line, as the README promises.
        return ([one_line(errors, self.state.directory)] if errors else []) + problems


def record_report(state_dir: Path, config: Config, report: ClusterReport) -> list[str]:
    """Record one report (``check``): history line per node, then the cluster state."""
    return Recorder(state_dir, config).record(report)
