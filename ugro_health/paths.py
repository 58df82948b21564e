"""Where the configuration and the state live, per the lookup order in DESIGN.md.

Standard library only; used by the CLI and by anything that needs the state directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def find_config(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The configuration file to load, or None for the built-in default (local machine only).

    Order: ``--config``, ``$UGRO_HEALTH_CONFIG``, ``./cluster.yaml``,
    ``$XDG_CONFIG_HOME/ugro-health/cluster.yaml``. An explicit path is returned even if it does
    not exist, so that the loader reports it rather than silently falling back.
    """
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit).expanduser()
    if env.get("UGRO_HEALTH_CONFIG"):
        return Path(env["UGRO_HEALTH_CONFIG"]).expanduser()
    local = Path("cluster.yaml")
    if local.is_file():
        return local
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    candidate = Path(xdg) / "ugro-health" / "cluster.yaml"
    return candidate if candidate.is_file() else None


def state_dir(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """``--state-dir``, ``$UGRO_HEALTH_STATE_DIR``, ``$STATE_DIRECTORY`` (systemd), then
    ``$XDG_STATE_HOME/ugro-health`` (default ``~/.local/state/ugro-health``)."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit).expanduser()
    if env.get("UGRO_HEALTH_STATE_DIR"):
        return Path(env["UGRO_HEALTH_STATE_DIR"]).expanduser()
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several, colon-separated; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    xdg = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "ugro-health"
