"""``ugro-health slurm``: what ugro-health drained in Slurm, and resuming a node by hand.

``status`` reads the state (``state["slurm"]``, written by ``engine.slurm``) and asks Slurm,
with its deadline, for the current state of the nodes it lists; Slurm not answering is said in
one line and the state is still shown. ``resume`` follows the engine's rule: only a node whose
Slurm reason starts with ``slurm.reason_prefix``, unless ``--force``; the state change is one
``StateStore.update``, so a ``watch`` running meanwhile sees all of it or none.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from ugro_health.cli.context import from_typer
from ugro_health.cli.node_completion import complete_node
from ugro_health.cli.output import console, fail, warn

if TYPE_CHECKING:
    from ugro_health.config import Config
    from ugro_health.integrations.slurm import SlurmNode

app = typer.Typer(
    help="Slurm: what ugro-health drained, and resuming a node by hand.\n\n"
    "Example: [bold]ugro-health slurm status[/bold]",
    no_args_is_help=True,
)

ACTIONS_SHOWN = 20  # the last actions `slurm status` lists


def _slurm_config(ctx: typer.Context) -> Config:
    config = from_typer(ctx).load_config()
    if not config.slurm.enabled:
        where = config.source or "the built-in configuration"
        fail(f"Slurm is not enabled in {where} (set slurm.enabled: true)")
    return config


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """The nodes ugro-health drained (with Slurm's state of them now), the nodes counting
    towards a drain or a resume, and the last actions.

    Example: [bold]ugro-health slurm status --json[/bold]
    """
    from ugro_health.store.state import StateStore

    config = _slurm_config(ctx)
    loaded = StateStore(from_typer(ctx).state_dir).load()
    if loaded.warning:
        warn(loaded.warning)
    from ugro_health.engine.slurm_policy import slurm_section

    doc = _status_doc(config, slurm_section(loaded.state), time.time())
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    from ugro_health.render.slurm import slurm_status

    console.print(slurm_status(doc))


def _status_doc(config: Config, section: dict[str, Any], now: float) -> dict[str, Any]:
    """``slurm status --json``: the state's view (a whole section: ``slurm_section``), with
    Slurm's (read now) beside it."""
    from ugro_health.integrations.slurm import SlurmClient, SlurmError

    settings = config.slurm
    drained = section["drained"]
    counting = _counting(section["nodes"], drained)
    names = {n: _slurm_name(config, n, drained) for n in (*drained, *counting)}
    error: str | None = None
    views: dict[str, SlurmNode] = {}
    try:
        views = SlurmClient(settings).nodes(names.values())
    except SlurmError as exc:
        error = str(exc)
    return {
        "schema": "ugro-health/v1",
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "dry_run": settings.dry_run,
        "manage": settings.manage,
        "slurm_read": error is None,
        "slurm_error": error,
        "max_drained": settings.max_drained(len(config.nodes)),
        "configured": len(config.nodes),
        "drained": [_drained_doc(n, drained[n], names[n], views, error) for n in sorted(drained)],
        "counting": [
            {**counting[n], **_live(views.get(names[n]), error)} for n in sorted(counting)
        ],
        "drain_after": settings.drain_after,
        "resume_after": settings.resume_after,
        "actions": _actions(section["actions"])[-ACTIONS_SHOWN:],
    }


def _counting(nodes: dict[str, Any], drained: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The nodes on their way to a drain or a resume, or held back from one (a note)."""
    from ugro_health.engine.slurm_policy import count

    out = {}
    for name, entry in nodes.items():
        bad, good = count(entry, "bad"), count(entry, "good")
        if bad or entry.get("note") or entry.get("held_off") or name in drained:
            out[name] = {
                "node": name,
                "bad": bad,
                "good": good,
                "reason": entry.get("reason"),
                "note": entry.get("note"),
                "held_off": bool(entry.get("held_off")),
            }
    return out


def _slurm_name(config: Config, node: str, drained: dict[str, Any]) -> str:
    recorded = (drained.get(node) or {}).get("slurm_name")
    return recorded if isinstance(recorded, str) and recorded else config.slurm.slurm_name(node)


def _live(view: SlurmNode | None, error: str | None) -> dict[str, Any]:
    """Slurm's state and reason of a node now: None for both when unread or unknown."""
    if view is None:
        return {"slurm_state": None, "slurm_reason": None, "slurm_known": None if error else False}
    return {"slurm_state": view.state, "slurm_reason": view.reason, "slurm_known": True}


def _drained_doc(
    name: str,
    record: dict[str, Any],
    slurm_name: str,
    views: dict[str, SlurmNode],
    error: str | None,
) -> dict[str, Any]:
    at = record.get("at")
    return {
        "node": name,
        "slurm_name": slurm_name,
        "drained_at": at if isinstance(at, int | float) else None,
        "reason": record.get("reason"),
        **_live(views.get(slurm_name), error),
    }


def _actions(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("at", "node", "action", "why", "by")
    return [{k: a.get(k) for k in keys if k in a} for a in log]


@app.command("resume")
def resume(
    ctx: typer.Context,
    node: str = typer.Argument(
        ..., metavar="NODE", help="The node (its ugro-health name).", autocompletion=complete_node
    ),
    force: bool = typer.Option(
        False, "--force", help="Resume it even if its Slurm reason is not ugro-health's."
    ),
) -> None:
    """Resume one drained node in Slurm by hand (exit 3 if Slurm's reason for it is not
    ugro-health's, unless --force). watch does not drain it again before it has been
    healthy once.

    Example: [bold]ugro-health slurm resume gpu01[/bold]
    """
    from ugro_health.integrations.slurm import SlurmClient, SlurmError
    from ugro_health.render.common import printable

    config = _slurm_config(ctx)
    settings = config.slurm
    known = [n.name for n in config.nodes]
    if node not in known:
        listed = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
        fail(f"no node named {node!r} (configured: {listed})")
    slurm_name = settings.slurm_name(node)
    client = SlurmClient(settings)
    try:
        view = client.nodes([slurm_name]).get(slurm_name)
    except SlurmError as exc:
        fail(f"{node} not resumed: Slurm's state of it could not be read: {exc}")
    if view is None:
        fail(f"{node} not resumed: Slurm does not know a node named {slurm_name!r}")
    reason = f", reason {view.reason!r}" if view.reason else ", no reason"
    said = f"{node} (Slurm {slurm_name}, {view.state}{reason})"
    if not (view.drained or "DOWN" in view.flags):
        fail(f"{said} is not drained or down in Slurm: nothing to resume")
    if not view.ours(settings.reason_prefix) and not force:
        fail(
            f"{said}: the reason does not start with {settings.reason_prefix!r}, so "
            "someone else drained it; not resumed (--force resumes it anyway)"
        )
    if settings.dry_run:
        console.print(
            printable(f"dry run (slurm.dry_run): would resume {said}"), markup=False, soft_wrap=True
        )
        return
    try:
        client.resume(slurm_name)
    except SlurmError as exc:
        fail(f"{node} not resumed: {exc}")
    _note_resumed(ctx, node)
    console.print(printable(f"resumed {said}"), markup=False, soft_wrap=True)


def _note_resumed(ctx: typer.Context, node: str) -> None:
    """Forget the drain, log the action and hold watch off re-draining the node, in one write.

    A failed write is a warning, not a failure: the node is resumed, and ``watch`` treats a
    drained node it finds resumed the same way (released, held off)."""
    from ugro_health.engine.slurm_policy import log_action, slurm_section
    from ugro_health.store._fs import StoreError
    from ugro_health.store.state import StateStore

    now = time.time()
    user = os.environ.get("SUDO_USER") or getpass.getuser()

    def change(state: dict[str, Any]) -> None:
        section = slurm_section(state)
        section["drained"].pop(node, None)
        entry = section["nodes"].setdefault(node, {"bad": 0, "good": 0})
        entry["held_off"] = True
        entry.pop("note", None)
        log_action(section, at=now, node=node, action="resume", why="resumed by hand", by=user)

    store = StateStore(from_typer(ctx).state_dir)
    try:
        store.update(change)
    except StoreError as exc:
        warn(f"{node} resumed in Slurm, but the state was not updated: {exc}")
        return
    if store.last_warning:
        warn(store.last_warning)
