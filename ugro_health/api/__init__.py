"""The public Python API over the engine: configuration, ``check``, ``HealthMonitor``, events.

Everything here is re-exported from ``ugro_health`` (lazily: ``import ugro_health`` loads
none of it). Built on the CLI's own runs (``engine.runs``); nothing here imports ``cli`` or
``render``, and anyio only for the async entry points.
"""

from __future__ import annotations

from ugro_health.api.check import check
from ugro_health.api.config import load_config, make_config
from ugro_health.api.events import (
    AlertEvent,
    BreakerEvent,
    ClusterState,
    CycleEvent,
    JobEvent,
    MonitorEvent,
    NodeState,
)
from ugro_health.api.monitor import HealthMonitor, MonitorStats

__all__ = [
    "AlertEvent",
    "BreakerEvent",
    "ClusterState",
    "CycleEvent",
    "HealthMonitor",
    "JobEvent",
    "MonitorEvent",
    "MonitorStats",
    "NodeState",
    "check",
    "load_config",
    "make_config",
]
