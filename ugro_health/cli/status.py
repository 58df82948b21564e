"""``ugro-health status``: the last known state of every node, from the store, no network."""

from __future__ import annotations

import errno
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import typer

from ugro_health.cli.context import from_typer
from ugro_health.cli.output import console, fail, warn
from ugro_health.config import WatchSettings
from ugro_health.model import JSON_SCHEMA, ErrorKind, Status, worst_status

_ERROR_KINDS = frozenset(k.value for k in ErrorKind)


def status_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the ugro-health/v1 JSON document."),
    stale_after: float | None = typer.Option(
        None,
        "--stale-after",
        min=1,
        metavar="SECONDS",
        help="Data older than this is marked STALE and counts as UNKNOWN in the exit code "
        "(default: watch.stale_after_s, 600).",
    ),
) -> None:
    """Show the last known state of every node (no network); exit with the worst status.

    Exits 3 when nothing has been recorded yet, or when a node's data is stale.

    Example: [bold]ugro-health status --json | jq '.nodes[] | {name, status, age_s}'[/bold]
    """
    from ugro_health.store._fs import StoreError
    from ugro_health.store.state import StateStore

    app = from_typer(ctx)
    try:
        loaded = StateStore(app.state_dir).load(strict=True)
    except StoreError as exc:
        # Not "never polled": the state is there, this user cannot see it.
        denied = exc.reason == os.strerror(errno.EACCES)
        fail(f"{exc}; run status as the user that runs check or watch" if denied else str(exc))
    if loaded.warning:
        warn(loaded.warning)
    # The configuration, when there is a file: its node order and its staleness limit.
    config = app.load_config() if app.config_path is not None else None
    configured = [n.name for n in config.nodes] if config else []
    if stale_after is None:
        stale_after = (config.watch if config else WatchSettings()).stale_after_s
    now = time.time()
    nodes = node_documents(loaded.state, configured, now, stale_after)
    status = worst_status((_effective(n) for n in nodes), default=Status.UNKNOWN)
    if as_json:
        updated = loaded.state.get("updated_at")
        doc = {
            "schema": JSON_SCHEMA,
            "generated_at": datetime.fromtimestamp(now, UTC).isoformat(),
            "updated_at": None
            if updated is None
            else datetime.fromtimestamp(updated, UTC).isoformat(),
            "status": status.label,
            "nodes": nodes,
        }
        print(json.dumps(doc, indent=2))
    elif not nodes:
        console.print(
            f"no state recorded yet in {app.state_dir}: run `ugro-health check` first", markup=False
        )
    else:
        from ugro_health.render.status import status_table

        stale = sum(1 for n in nodes if n["stale"])
        noun = "node" if len(nodes) == 1 else "nodes"
        footer = (
            f"{status.name}  {len(nodes)} {noun}, {stale} stale (older than {stale_after:.0f}s)"
        )
        console.print(status_table(nodes, footer))
    raise typer.Exit(status.exit_code)


def node_documents(
    state: dict[str, Any], configured: list[str], now: float, stale_after: float
) -> list[dict[str, Any]]:
    """Contract-shaped node documents with ``age_s`` and ``stale``, in configuration order.

    Configured nodes never polled appear as UNKNOWN; nodes in the state but no longer
    configured are still shown (after the configured ones) rather than silently hidden.
    """
    stored = state.get("nodes") or {}
    names = configured + sorted(n for n in stored if n not in configured)
    docs = []
    for name in names:
        entry = stored.get(name) or {}
        polled_at = entry.get("polled_at")
        age = None if polled_at is None else max(0.0, now - float(polled_at))
        docs.append(
            {
                "name": name,
                "status": entry.get("status") or "unknown",
                "score": entry.get("score"),
                "reachable": bool(entry.get("reachable")),
                "error": entry.get("error"),
                "error_kind": entry.get("error_kind") or _error_kind(entry.get("error")),
                "metrics": entry.get("metrics") or {},
                "gpus": entry.get("gpus") or [],
                "alerts": entry.get("alerts") or [],
                "summary": entry.get("summary") or {},
                "polled_at": polled_at,
                "last_seen": entry.get("last_seen"),
                "age_s": None if age is None else round(age, 1),
                "stale": age is None or age > stale_after,
                "breaker": entry.get("breaker"),
            }
        )
    return docs


def _error_kind(error: object) -> str | None:
    """The kind from an error's ``kind: message`` text, for state written without the field."""
    if not isinstance(error, str):
        return None
    kind = error.partition(":")[0]
    return kind if kind in _ERROR_KINDS else None


def _effective(node: dict[str, Any]) -> Status:
    """What a node counts for in the exit code: stale knowledge is UNKNOWN unless CRITICAL."""
    try:
        status = Status.parse(node["status"])
    except KeyError:
        status = Status.UNKNOWN
    if node["stale"] and status is not Status.CRITICAL:
        return Status.UNKNOWN
    return status
