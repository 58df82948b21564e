"""``ugro-health status``: the last known state of every node, from the store, no network.

It shows the configured nodes, as ``check`` polls them, so the two agree on the exit code. Nodes
the store still holds but the configuration no longer names (recorded under another
``--config``, or the built-in local node of a first run) are shown only with ``--all``, marked
and left out of the exit code; ``--prune`` removes them from the store.
"""

from __future__ import annotations

import errno
import json
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from ugro_health.cli.context import from_typer
from ugro_health.cli.output import console, err_console, fail, warn
from ugro_health.model import JSON_SCHEMA, ErrorKind, Status, worst_status

if TYPE_CHECKING:
    from ugro_health.engine.breaker import BreakerPolicy
    from ugro_health.store.state import StateStore

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
    show_all: bool = typer.Option(
        False,
        "--all",
        "-a",
        help="Also show nodes the store holds but the configuration does not name (marked, "
        "not counted in the exit code).",
    ),
    prune: bool = typer.Option(
        False, "--prune", help="Remove nodes the configuration does not name from the store."
    ),
) -> None:
    """Show the last known state of every node (no network); exit with the worst status.

    Exits 3 when nothing has been recorded yet, or when a node's data is stale. Only the
    configured nodes count, as in check.

    Example: [bold]ugro-health status --json | jq '.nodes[] | {name, status, age_s}'[/bold]
    """
    from ugro_health.engine.record import breaker_policy
    from ugro_health.store._fs import StoreError
    from ugro_health.store.state import StateStore

    app = from_typer(ctx)
    # The configuration (the built-in one without a file): its nodes, order and staleness limit.
    config = app.load_config()
    configured = [n.name for n in config.nodes]
    store = StateStore(app.state_dir)
    if prune:
        _prune(store, configured)
    try:
        loaded = store.load(strict=True)
    except StoreError as exc:
        # Not "never polled": the state is there, this user cannot see it.
        denied = exc.reason == os.strerror(errno.EACCES)
        fail(f"{exc}; run status as the user that runs check or watch" if denied else str(exc))
    if loaded.warning:
        warn(loaded.warning)
    if stale_after is None:
        stale_after = config.watch.stale_after_s
    now = time.time()
    every = node_documents(loaded.state, configured, now, stale_after, breaker_policy(config))
    nodes = [n for n in every if n["configured"] or show_all]
    hidden = len(every) - len(nodes)
    status = worst_status((_effective(n) for n in nodes if n["configured"]), default=Status.UNKNOWN)
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

        stale = sum(1 for n in nodes if n["stale"] and n["configured"])
        noun = "node" if len(configured) == 1 else "nodes"
        footer = (
            f"{status.name}  {len(configured)} {noun}, {stale} stale "
            f"(older than {stale_after:.0f}s)"
        )
        if hidden:
            footer += f"; {hidden} more in the store, not configured (--all shows, --prune removes)"
        console.print(status_table(nodes, footer))
    raise typer.Exit(status.exit_code)


def _prune(store: StateStore, configured: list[str]) -> None:
    """Remove from the state store every node the configuration does not name."""
    from ugro_health.store._fs import StoreError

    removed: list[str] = []

    def drop(state: dict[str, Any]) -> None:
        nodes = state.get("nodes") or {}
        removed.extend(sorted(name for name in nodes if name not in configured))
        for name in removed:
            del nodes[name]

    try:
        store.update(drop)
    except StoreError as exc:
        fail(str(exc))
    names = ", ".join(removed) if removed else "none"
    err_console.print(f"ugro-health: removed from the store: {names}", markup=False)


def node_documents(
    state: dict[str, Any],
    configured: list[str],
    now: float,
    stale_after: float,
    policy: BreakerPolicy | None = None,
) -> list[dict[str, Any]]:
    """Contract-shaped node documents with ``age_s``, ``stale``, ``configured`` and
    ``breaker_note``, in configuration order.

    Configured nodes never polled appear as UNKNOWN; nodes in the state but no longer
    configured come after them with ``configured: false`` (the caller hides them or not).
    """
    from ugro_health.engine.breaker import BreakerPolicy, describe_saved

    policy = policy or BreakerPolicy()
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
                "breaker_note": describe_saved(entry.get("breaker"), policy, now),
                "configured": name in configured,
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
