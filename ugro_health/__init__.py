"""ugro-health: an agentless health monitor for GPU training clusters.

The package is layered (see DESIGN.md): ``model`` and ``probe`` import nothing of ours;
``transport``, ``store`` and ``engine`` never import ``cli`` or ``render``; only ``cli`` imports
typer and only ``transport.ssh*`` imports paramiko. ``track_job`` (the launcher API) is loaded
on first use so that ``import ugro_health`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "track_job"]

if TYPE_CHECKING:
    from ugro_health.launcher import track_job


def __getattr__(name: str) -> Any:
    if name == "track_job":
        from ugro_health.launcher import track_job

        return track_job
    raise AttributeError(f"module 'ugro_health' has no attribute {name!r}")
