"""ugro-health: an agentless health monitor for GPU training clusters.

The Python API (see docs/api.md): ``load_config`` / ``make_config``, ``check``, ``HealthMonitor``
with its events, and ``track_job`` for launchers::

    import ugro_health

    report = ugro_health.check("cluster.yaml")
    print(report.status.label, [(n.name, n.score) for n in report.nodes])

The package is layered (see DESIGN.md): ``model`` and ``probe`` import nothing of ours;
``transport``, ``store`` and ``engine`` never import ``cli`` or ``render``; only ``cli`` imports
typer and only ``transport.ssh*`` imports paramiko. Every public name is loaded on first use, so
that ``import ugro_health`` stays cheap (no paramiko, Rich, Typer or anyio).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "track_job": "ugro_health.launcher",
    "JobError": "ugro_health.engine.jobs",
    "load_config": "ugro_health.api.config",
    "make_config": "ugro_health.api.config",
    "check": "ugro_health.api.check",
    "HealthMonitor": "ugro_health.api.monitor",
    "MonitorStats": "ugro_health.api.monitor",
    "AlertEvent": "ugro_health.engine.monitor",
    "BreakerEvent": "ugro_health.api.events",
    "ClusterState": "ugro_health.api.events",
    "CycleEvent": "ugro_health.api.events",
    "JobEvent": "ugro_health.api.events",
    "MonitorEvent": "ugro_health.api.events",
    "NodeState": "ugro_health.api.events",
    "Config": "ugro_health.config",
    "ConfigError": "ugro_health.config_yaml",
    "Alert": "ugro_health.model",
    "ClusterReport": "ugro_health.model",
    "NodeReport": "ugro_health.model",
    "Severity": "ugro_health.model",
    "Status": "ugro_health.model",
}

__all__ = [
    "Alert",
    "AlertEvent",
    "BreakerEvent",
    "ClusterReport",
    "ClusterState",
    "Config",
    "ConfigError",
    "CycleEvent",
    "HealthMonitor",
    "JobError",
    "JobEvent",
    "MonitorEvent",
    "MonitorStats",
    "NodeReport",
    "NodeState",
    "Severity",
    "Status",
    "__version__",
    "check",
    "load_config",
    "make_config",
    "track_job",
]

if TYPE_CHECKING:
    from ugro_health.api.check import check
    from ugro_health.api.config import load_config, make_config
    from ugro_health.api.events import (
        BreakerEvent,
        ClusterState,
        CycleEvent,
        JobEvent,
        MonitorEvent,
        NodeState,
    )
    from ugro_health.api.monitor import HealthMonitor, MonitorStats
    from ugro_health.config import Config
    from ugro_health.config_yaml import ConfigError
    from ugro_health.engine.jobs import JobError
    from ugro_health.engine.monitor import AlertEvent
    from ugro_health.launcher import track_job
    from ugro_health.model import Alert, ClusterReport, NodeReport, Severity, Status


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ugro_health' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
