"""``slurm status`` as text: pure renderables from its JSON document (``cli/slurm.py``).

Three parts, each said even when empty: the nodes ugro-health drained (with Slurm's state of
them now, or one line saying Slurm could not be read), the nodes counting towards a drain or a
resume, and the last actions, newest last. Every string from the state or from Slurm goes
through ``printable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ugro_health.render.common import DASH, printable, utc_stamp
from ugro_health.render.layout import Trimmed


def slurm_status(doc: Mapping[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [_header(doc)]
    if not doc["slurm_read"]:
        parts.append(
            Text(
                f"Slurm could not be read: {printable(doc['slurm_error'])} "
                "(shown: what the state says)",
                style="yellow",
            )
        )
    parts.extend(_drained(doc))
    parts.extend(_counting(doc))
    parts.extend(_actions(doc["actions"]))
    return Trimmed(Group(*parts))


def _header(doc: Mapping[str, Any]) -> Text:
    mode = "drain and resume" if doc["manage"] else "jobs only (slurm.manage: false)"
    if doc["manage"] and doc["dry_run"]:
        mode += " in dry run (slurm.dry_run: nothing is changed)"
    return Text(
        f"Slurm: {mode}; ugro-health may hold {doc['max_drained']} of "
        f"{doc['configured']} nodes drained"
    )


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _now(node: Mapping[str, Any]) -> str:
    """Slurm's state and reason of the node now."""
    if node.get("slurm_known") is False:
        return "not a node Slurm knows"
    if node.get("slurm_state") is None:
        return "?"
    reason = node.get("slurm_reason")
    return printable(f"{node['slurm_state']}: {reason}" if reason else node["slurm_state"])


def _drained(doc: Mapping[str, Any]) -> list[RenderableType]:
    nodes = doc["drained"]
    if not nodes:
        return [Text("\nno node drained by ugro-health")]
    table = _table("NODE", "SLURM NAME", "SINCE", "REASON", "SLURM NOW")
    for node in nodes:
        at = node.get("drained_at")
        table.add_row(
            printable(node["node"]),
            printable(node["slurm_name"]),
            DASH if at is None else utc_stamp(at),
            printable(node.get("reason") or DASH),
            _now(node),
        )
    return [Text(f"\ndrained by ugro-health: {len(nodes)}", style="bold"), table]


def _counting(doc: Mapping[str, Any]) -> list[RenderableType]:
    nodes = doc["counting"]
    if not nodes:
        return [Text("\nno node counting towards a drain or a resume")]
    drain_after, resume_after = doc["drain_after"], doc["resume_after"]
    table = _table("NODE", "BAD", "HEALTHY", "SLURM NOW", "NOTE")
    for node in nodes:
        note = node.get("note") or node.get("reason") or ""
        if node.get("held_off"):
            note = "held off: resumed by hand, drained again once healthy" + (
                f"; {note}" if note else ""
            )
        table.add_row(
            printable(node["node"]),
            f"{node['bad']}/{drain_after}",
            f"{node['good']}/{resume_after}",
            _now(node),
            printable(note or DASH),
        )
    title = (
        f"\ncounting (drained after {drain_after} polls with a draining alert, "
        f"resumed after {resume_after} healthy polls):"
    )
    return [Text(title, style="bold"), table]


def _actions(actions: Sequence[Mapping[str, Any]]) -> list[RenderableType]:
    if not actions:
        return [Text("\nno actions yet")]
    table = _table("AT", "ACTION", "NODE", "WHY")
    for action in actions:
        at = action.get("at")
        why = str(action.get("why") or "")
        if action.get("by"):
            why += f" (by {action['by']})"
        table.add_row(
            utc_stamp(at) if isinstance(at, int | float) else DASH,
            printable(action.get("action") or DASH),
            printable(action.get("node") or DASH),
            printable(why or DASH),
        )
    return [Text(f"\nlast {len(actions)} action(s), newest last:", style="bold"), table]
