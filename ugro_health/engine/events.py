"""What the watch loop tells its front about alerts: one event per alert raised or cleared.

Imports only ``model``; shared by ``engine.monitor`` and ``engine.slurm`` (whose actions and
storm guard are events too).
"""

from __future__ import annotations

from dataclasses import dataclass

from ugro_health.model import Alert


@dataclass(frozen=True, slots=True)
class AlertEvent:
    at: float
    node: str
    alert: Alert
    kind: str  # "raised", "cleared"
