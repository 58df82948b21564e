"""Shared by the end-to-end notification tests: a cluster.yaml writer, the CLI run, the outbox.

Every test runs the real entry point in a subprocess (``cli_helpers``) with its own home, so
its state directory is ``<home>/state/ugro-health`` and its outboxes are under ``outbox/``.
The local node's only mount can be a symlink to ``/`` (healthy) or a plain directory (not a
mount point: ``mount_missing``, CRITICAL), so a test turns an alert on and off without sshd.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cli_helpers import CALM_THRESHOLDS, run_cli
from http_receiver import HttpReceiver

CALM: dict[str, Any] = yaml.safe_load(CALM_THRESHOLDS)["thresholds"]
DISK_CRIT = {**CALM, "disk_warn_pct": 1, "disk_crit_pct": 1}  # every test machine's / is fuller
DISK_WARN = {**CALM, "disk_warn_pct": 1}


def state_dir(home: Path) -> Path:
    return home / "state" / "ugro-health"


def write_cluster(
    home: Path,
    channels: list[dict[str, Any]],
    *,
    thresholds: dict[str, Any] | None = None,
    nodes: list[dict[str, Any]] | None = None,
    alerts: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    **notify: Any,
) -> None:
    """``home/cluster.yaml`` (JSON is YAML): one local node unless ``nodes`` are given."""
    doc: dict[str, Any] = {
        "thresholds": thresholds or CALM,
        "nodes": nodes or [{"name": "local1", "transport": "local"}],
        "alerts": {"resolve_after": 2, **(alerts or {})},
        "notify": {"cluster": "e2e", "check_wait": 20, **notify, "channels": channels},
        **(extra or {}),
    }
    (home / "cluster.yaml").write_text(json.dumps(doc, indent=1))


def hook(receiver: HttpReceiver, **keys: Any) -> dict[str, Any]:
    return {"name": "hook", "type": "webhook", "url": receiver.url("/hook"), **keys}


def check(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``ugro-health check`` run once (as cron would), its exit code checked."""
    result = run_cli("check", *args, cwd=home, env=env, timeout=timeout)
    assert result.returncode in (0, 1, 2), result.stderr
    return result


def check_states(home: Path, *args: str) -> dict[str, str | None]:
    """``check --json``: each alert's lifecycle state, by ``node/code``."""
    result = check(home, "--json", *args)
    doc = json.loads(result.stdout)
    return {f"{n['name']}/{a['code']}": a["state"] for n in doc["nodes"] for a in n["alerts"]}


def outbox(home: Path, channel: str = "hook") -> dict[str, Any]:
    path = state_dir(home) / "outbox" / f"{channel}.json"
    return json.loads(path.read_text()) if path.exists() else {"entries": [], "dropped": 0}


def queued_ids(home: Path, channel: str = "hook") -> list[str]:
    return [e["n"]["id"] for e in outbox(home, channel)["entries"]]


def wait_due(home: Path, channel: str = "hook", timeout: float = 30.0) -> None:
    """Sleep until the head of the outbox may be retried (its backoff or Retry-After)."""
    entries = outbox(home, channel)["entries"]
    if entries:
        wait = entries[0]["next_try"] - time.time()
        assert wait < timeout, f"retry not due for {wait:.1f}s"
        time.sleep(max(0.0, wait) + 0.2)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def told(receiver: HttpReceiver) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """What the webhook delivered: per notification, its id and (node, code, state) per alert."""
    out = []
    for request in receiver.delivered():
        doc = request.json()
        out.append((doc["id"], [(a["node"], a["code"], a["state"]) for a in doc["alerts"]]))
    return out


def alert_states(receiver: HttpReceiver) -> list[list[str]]:
    return [[state for _node, _code, state in alerts] for _id, alerts in told(receiver)]


def make_mount(home: Path, healthy: bool, name: str = "scratch") -> str:
    """A local node's mount: a symlink to ``/`` (a mount point) or a plain directory."""
    mount = home / name
    if mount.is_symlink():
        mount.unlink()
    elif mount.is_dir():
        mount.rmdir()
    if healthy:
        mount.symlink_to("/")
    else:
        mount.mkdir()
    return str(mount)
