"""What the watch loop tells its front about alerts: one event per alert raised or cleared.

Imports only ``model``; shared by ``engine.monitor`` and ``engine.slurm`` (whose actions and
storm guard are events too).
"""

from __future__ import annotations

from dataclasses import dataclass

from ugro_health.model import Alert


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert raised on a node, or cleared (``kind``), as the watch loop saw it change.

    Example::

        def on_alert(event: ugro_health.AlertEvent) -> None:
            if event.kind == "raised" and event.alert.severity.value == "critical":
                page(f"{event.node}: {event.alert.code}: {event.alert.message}")
    """

    at: float
    node: str
    alert: Alert
    kind: str  # "raised", "cleared"
