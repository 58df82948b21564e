"""Write a poll's result to the store: history lines and the cluster state.

A store failure (full disk, read-only directory) never hides the cluster's health: it comes
back as a one-line problem for the caller to print, and the command still reports and exits
with the cluster's status.

A node that ``check`` reached counts as a successful trial for its circuit breaker: a breaker
left open by a stopped ``watch`` is closed in the state, and a running ``watch`` adopts that
(``breaker_override``, read by ``engine.monitor``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ugro_health.config import Config
from ugro_health.engine.breaker import Breaker, BreakerPolicy, BreakerState
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


def record_report(
    state_dir: Path,
    config: Config,
    report: ClusterReport,
    also: Callable[[dict[str, Any]], None] | None = None,
) -> list[str]:
    """Record one report (``check``): history line per node, then the cluster state, closing
    the breakers of the nodes that answered (and ``also``, the alert lifecycle's change)."""
    closer = close_answered_breakers(report, breaker_policy(config))

    def change(state: dict[str, Any]) -> None:
        closer(state)
        if also is not None:
            also(state)

    return Recorder(state_dir, config).record(report, change)


def breaker_policy(config: Config) -> BreakerPolicy:
    """The breakers' policy from ``watch:`` (``watch`` and ``check`` judge alike)."""
    w = config.watch
    return BreakerPolicy(
        failure_threshold=w.failure_threshold,
        reset_base_s=w.reset_base_s,
        reset_max_s=w.reset_max_s,
    )


def override_breaker(entry: dict[str, Any], breaker: Breaker, at: float, by: str) -> None:
    """Store ``breaker`` in a node's state ``entry`` with a note that a running ``watch``
    picks up: ``by`` is ``check`` (a successful poll) or ``reset`` (by hand)."""
    entry["breaker"] = breaker.to_json()
    entry["breaker_override"] = {"at": at, "by": by}


def close_answered_breakers(
    report: ClusterReport, policy: BreakerPolicy
) -> Callable[[dict[str, Any]], None]:
    """A state change: every node of ``report`` that answered closes its stored breaker."""
    answered = [n.name for n in report.nodes if n.polled and n.error is None]

    def close(state: dict[str, Any]) -> None:
        nodes = state.get("nodes") or {}
        for name in answered:
            entry = nodes.get(name)
            if not isinstance(entry, dict) or not isinstance(entry.get("breaker"), dict):
                continue
            breaker = Breaker.from_json(entry["breaker"], policy, SystemClock(), name)
            if breaker.state is BreakerState.CLOSED:
                continue
            breaker.record_success(report.generated_at)
            override_breaker(entry, breaker, report.generated_at, "check")

    return close


def reset_breakers(
    store: StateStore, names: list[str], policy: BreakerPolicy, now: float
) -> dict[str, str]:
    """Reset the stored breakers of ``names`` (by hand: forget failures and openings); a
    running ``watch`` adopts it at its next look. Returns each node's breaker state before.

    Raises ``StoreError`` when the state cannot be written.
    """
    before: dict[str, str] = {}

    def reset(state: dict[str, Any]) -> None:
        nodes = state.setdefault("nodes", {})
        for name in names:
            entry = nodes.setdefault(name, {})
            old = Breaker.from_json(entry.get("breaker"), policy, SystemClock(), name)
            before[name] = old.state.value + (
                f", {old.openings} opening(s)" if old.openings else ""
            )
            override_breaker(entry, Breaker(policy, SystemClock(), name), now, "reset")

    store.update(reset)
    return before
