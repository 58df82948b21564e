"""Write a poll's result to the store: history lines and the cluster state.

A store failure (full disk, read-only directory) never hides the cluster's health: it comes
back as a one-line problem for the caller to print, and the command still reports and exits
with the cluster's status.
"""

from __future__ import annotations

from pathlib import Path

from ugro_health.config import Config
from ugro_health.model import ClusterReport


def record_report(state_dir: Path, config: Config, report: ClusterReport) -> list[str]:
    """Append ``report`` to history and state; returns the problems met (empty when fine)."""
    return []
