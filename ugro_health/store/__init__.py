"""The store: sample history (JSON lines) and cluster state (state.json) under the state dir.

May import ``model`` and the standard library; never ``cli``, ``render`` or ``engine``.
The API returns data; commands print it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ugro_health.store._fs import StoreError, one_line
from ugro_health.store.history import (
    HistoryStore,
    ReadStats,
    record_from_json,
    record_from_report,
)
from ugro_health.store.state import Loaded, StateStore
from ugro_health.store.summary import (
    METRICS,
    NodeSummary,
    parse_duration,
    sparkline,
    summarize,
)

__all__ = [
    "METRICS",
    "HistoryStore",
    "Loaded",
    "NodeSummary",
    "ReadStats",
    "StateStore",
    "StoreError",
    "parse_duration",
    "record_cycle",
    "record_from_json",
    "record_from_report",
    "sparkline",
    "summarize",
]


def record_cycle(
    history: HistoryStore | None, state: StateStore, records: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Append one poll's records to history (unless ``None``) and merge them into the state.

    Failures come back as one-line messages for the command to print (history and state failing
    for one reason, a full or read-only disk, are one line); it still reports the cluster's
    health and exits with its status.
    """
    problems, errors = [], []
    if history is not None:
        try:
            history.append(records)
        except StoreError as exc:
            errors.append(exc)
    try:
        loaded = state.record_cycle(records)
        if loaded.warning:
            problems.append(loaded.warning)
    except StoreError as exc:
        errors.append(exc)
    return ([one_line(errors, state.directory)] if errors else []) + problems
