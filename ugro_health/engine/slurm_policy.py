"""When to drain and resume a node in Slurm: pure rules over the state document.

Imports ``model``, ``config_slurm`` and ``integrations.slurm`` (its ``SlurmNode`` value only).
``tally()`` runs inside the state write of each poll: per node it counts consecutive polls with
a draining alert (``bad``) and consecutive healthy polls (``good``) in ``state["slurm"]["nodes"]``,
so a cron ``check --slurm-act`` every few minutes counts as ``watch`` does. A node not sampled
this poll gives no verdict: its counts stay as they were. ``decide()`` turns the counts and
Slurm's view of the nodes into actions, applying every rule that keeps it safe:

- drain only a node Slurm shows in service; one drained, down or in maintenance for another
  reason is left alone, its reason kept;
- resume only a node whose reason still starts with our prefix: never one someone else drained;
- a node whose Slurm state could not be read is not touched;
- never more than ``max_drained`` nodes drained by ugro-health (the storm guard), and no drain
  at all while most polled nodes are unreachable (the control host's own network is suspect);
- a node ugro-health drained that someone resumed by hand is not drained again until it has
  been healthy once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ugro_health.config_slurm import SlurmSettings
from ugro_health.integrations.slurm import SlurmNode
from ugro_health.model import Alert, NodeReport, Severity

DRAIN, RESUME, SKIP, RELEASE = "drain", "resume", "skip", "release"
REASON_MAX = 200  # characters of a Slurm reason we write
RESUMED_BY_HAND = "resumed outside ugro-health"


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # drain | resume | skip | release
    node: str  # ugro name
    why: str  # drain: the Slurm reason; others: for a person


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...]
    guard: Alert | None  # the cluster-level CRITICAL while the storm guard holds drains back


def draining_alert(report: NodeReport, settings: SlurmSettings) -> Alert | None:
    """The CRITICAL alert that would drain this node (the first by code), or None."""
    found = [
        a for a in report.alerts if a.severity is Severity.CRITICAL and settings.drains(a.code)
    ]
    return min(found, key=lambda a: (a.code, a.gpu or -1)) if found else None


def drain_reason(alert: Alert, prefix: str) -> str:
    """``ugro-health: gpu_xid_fatal GPU 3: Xid 79 ...``, one line, bounded."""
    text = " ".join(f"{prefix} {alert.code} {alert.message}".split())
    return text[:REASON_MAX]


def tally(
    state: dict[str, Any], reports: Iterable[NodeReport], settings: SlurmSettings
) -> dict[str, Any]:
    """Count this poll into ``state["slurm"]["nodes"]`` (in place); returns that section."""
    section = slurm_section(state)
    nodes = section["nodes"]
    for report in reports:
        if report.sample is None:  # not sampled: no verdict
            continue
        entry = nodes.setdefault(report.name, {"bad": 0, "good": 0})
        alert = draining_alert(report, settings)
        if alert is not None:
            entry.update(bad=int(entry.get("bad") or 0) + 1, good=0)
            entry["reason"] = drain_reason(alert, settings.reason_prefix)
        else:
            entry.update(bad=0, reason=None)
            healthy = not any(a.severity is Severity.CRITICAL for a in report.alerts)
            entry["good"] = int(entry.get("good") or 0) + 1 if healthy else 0
            if healthy:
                entry.pop("held_off", None)  # healthy once: an admin's resume is honoured
    return section


def slurm_section(state: dict[str, Any]) -> dict[str, Any]:
    section = state.get("slurm")
    if not isinstance(section, dict):
        section = state["slurm"] = {}
    for key in ("nodes", "drained"):
        if not isinstance(section.get(key), dict):
            section[key] = {}
    return section


def decide(
    section: Mapping[str, Any],
    slurm: Mapping[str, SlurmNode | None],
    settings: SlurmSettings,
    unreachable: float,
    unknown_why: str = "Slurm's state of the node could not be read",
) -> Decision:
    """The actions for this poll. ``slurm`` maps every configured node to Slurm's view of it
    (None: unreadable, or not a Slurm node); ``unreachable`` is the fraction of the polled
    nodes that could not be reached."""
    prefix = settings.reason_prefix
    counts = section.get("nodes") or {}
    ours = sum(1 for n in slurm.values() if n is not None and n.drained and n.ours(prefix))
    limit = settings.max_drained(len(slurm))
    actions: list[Action] = []
    held: list[str] = []
    for name in sorted(slurm):
        entry = counts.get(name) or {}
        node = slurm[name]
        released = _released(name, node, section, prefix)
        if released is not None:
            actions.append(released)
        if int(entry.get("bad") or 0) >= settings.drain_after:
            action = _drain(name, node, entry, settings, unreachable, unknown_why)
            if action is not None and action.kind == DRAIN and ours >= limit:
                held.append(name)
                action = Action(
                    SKIP,
                    name,
                    f"not drained: {ours} of {len(slurm)} nodes "
                    f"already drained by ugro-health (the guard allows {limit})",
                )
            if action is not None:
                ours += action.kind == DRAIN
                actions.append(action)
        elif (
            int(entry.get("good") or 0) >= settings.resume_after
            and node is not None
            and node.drained
            and node.ours(prefix)
        ):
            actions.append(Action(RESUME, name, f"healthy for {entry['good']} polls"))
    return Decision(tuple(actions), _guard_alert(held, ours, limit, len(slurm)))


def _drain(
    name: str,
    node: SlurmNode | None,
    entry: Mapping[str, Any],
    settings: SlurmSettings,
    unreachable: float,
    unknown_why: str,
) -> Action | None:
    prefix = settings.reason_prefix
    if node is None:
        return Action(SKIP, name, f"not drained: {unknown_why}")
    if node.ours(prefix) and node.drained:
        return None  # drained already, by us
    if node.out_of_service:
        why = f"; reason {node.reason!r}" if node.reason else ""
        return Action(SKIP, name, f"not drained: already {node.state} in Slurm{why}, left as it is")
    if entry.get("held_off"):
        return Action(
            SKIP,
            name,
            "not drained again: resumed by hand after ugro-health drained "
            "it; drained again once it has been healthy",
        )
    if unreachable > settings.unreachable_fraction:
        return Action(
            SKIP,
            name,
            f"not drained: {unreachable:.0%} of the polled nodes are "
            "unreachable, the control host's own network is suspect",
        )
    return Action(DRAIN, name, str(entry.get("reason") or f"{prefix} critical alert"))


def _released(
    name: str, node: SlurmNode | None, section: Mapping[str, Any], prefix: str
) -> Action | None:
    """A node ugro-health drained that someone else took over or resumed: no longer ours."""
    record = (section.get("drained") or {}).get(name)
    if record is None or node is None or (node.drained and node.ours(prefix)):
        return None
    if node.drained or node.out_of_service:
        return Action(
            RELEASE,
            name,
            f"now {node.state} with reason {node.reason!r}: "
            "taken over by someone else, ugro-health will not resume it",
        )
    return Action(RELEASE, name, f"{RESUMED_BY_HAND} (now {node.state})")


def _guard_alert(held: list[str], ours: int, limit: int, configured: int) -> Alert | None:
    if not held:
        return None
    return Alert(
        Severity.CRITICAL,
        "slurm_drain_guard",
        f"drain storm guard: {ours} of {configured} nodes drained by ugro-health (at most "
        f"{limit}); not draining {', '.join(held)}",
        len(held),
    )
