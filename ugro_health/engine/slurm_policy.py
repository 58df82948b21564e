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

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ugro_health.config_slurm import SlurmSettings
from ugro_health.integrations.slurm import SlurmNode
from ugro_health.model import Alert, NodeReport, Severity

DRAIN, RESUME, SKIP, RELEASE = "drain", "resume", "skip", "release"
REASON_MAX = 200  # characters of a Slurm reason we write
ACTIONS_KEPT = 100  # the recent actions `slurm status` lists
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
    state: dict[str, Any],
    reports: Iterable[NodeReport],
    settings: SlurmSettings,
    configured: Collection[str] | None = None,
) -> dict[str, Any]:
    """Count this poll into ``state["slurm"]["nodes"]`` (in place); returns that section.
    Given ``configured``, what is kept about any other node (removed from cluster.yaml) is
    dropped: its Slurm state is left as it is."""
    section = slurm_section(state)
    if configured is not None:
        for key in ("nodes", "drained"):
            for name in [n for n in section[key] if n not in configured]:
                del section[key][name]
    nodes = section["nodes"]
    for report in reports:
        if report.sample is None:  # not sampled: no verdict
            continue
        entry = nodes.setdefault(report.name, {"bad": 0, "good": 0})
        alert = draining_alert(report, settings)
        if alert is not None:
            entry.update(bad=count(entry, "bad") + 1, good=0)
            entry["reason"] = drain_reason(alert, settings.reason_prefix)
        else:
            entry.update(bad=0, reason=None)
            healthy = not any(a.severity is Severity.CRITICAL for a in report.alerts)
            entry["good"] = count(entry, "good") + 1 if healthy else 0
            if healthy:
                entry.pop("held_off", None)  # healthy once: an admin's resume is honoured
    return section


def slurm_section(state: dict[str, Any]) -> dict[str, Any]:
    """``state["slurm"]``, made whole: a damaged record (not a mapping) is dropped alone, as the
    state store does with every other section, so a hand-edited file never stops the rules."""
    section = state.get("slurm")
    if not isinstance(section, dict):
        section = state["slurm"] = {}
    for key in ("nodes", "drained"):
        records = section.get(key)
        if not isinstance(records, dict):
            records = section[key] = {}
        for name in [n for n, r in records.items() if not isinstance(r, dict)]:
            del records[name]
    actions = section.get("actions")
    section["actions"] = (
        [a for a in actions if isinstance(a, dict)] if isinstance(actions, list) else []
    )
    return section


def log_action(section: dict[str, Any], **action: Any) -> None:
    """Append one action (``at``, ``node``, ``action``, ``why``...) to the bounded log that
    ``slurm status`` lists."""
    log = section["actions"]
    log.append(action)
    del log[:-ACTIONS_KEPT]


def decide(
    section: Mapping[str, Any],
    slurm: Mapping[str, SlurmNode | None],
    settings: SlurmSettings,
    unreachable: float,
    unknown_why: str = "Slurm's state of the node could not be read",
    acting: Collection[str] | None = None,
) -> Decision:
    """The actions for this poll. ``slurm`` maps every configured node to Slurm's view of it
    (None: unreadable, or not a Slurm node), for the guard's count; only the nodes in
    ``acting`` (those counted this poll; None: all) are acted on, so counts left from an
    earlier run never drain a node nobody polled now. ``unreachable`` is the fraction of the
    polled nodes that could not be reached."""
    prefix = settings.reason_prefix
    counts = section.get("nodes") or {}
    ours = sum(1 for n in slurm.values() if n is not None and n.drained and n.ours(prefix))
    limit = settings.max_drained(len(slurm))
    actions: list[Action] = []
    held: list[str] = []
    for name in sorted(slurm if acting is None else set(acting) & set(slurm)):
        found = counts.get(name)
        entry: Mapping[str, Any] = found if isinstance(found, dict) else {}
        node = slurm[name]
        released = _released(name, node, section, prefix)
        if released is not None:
            actions.append(released)
        if count(entry, "bad") >= settings.drain_after:
            action = _drain(name, node, entry, settings, unreachable, unknown_why)
            if action is not None and action.kind == DRAIN and ours >= limit:
                held.append(name)
                action = Action(
                    SKIP,
                    name,
                    f"not drained: the storm guard allows at most {limit} of the "
                    f"{len(slurm)} configured nodes drained by ugro-health at once",
                )
            if action is not None:
                ours += action.kind == DRAIN
                actions.append(action)
        elif (
            count(entry, "good") >= settings.resume_after
            and node is not None
            and node.drained
            and node.ours(prefix)
        ):
            actions.append(Action(RESUME, name, f"healthy for {entry['good']} polls"))
    return Decision(tuple(actions), _guard_alert(held, ours, limit, len(slurm)))


def count(entry: Mapping[str, Any], key: str) -> int:
    """A poll count kept in the state (0 when missing or damaged)."""
    value = entry.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _drain(
    name: str,
    node: SlurmNode | None,
    entry: Mapping[str, Any],
    settings: SlurmSettings,
    unreachable: float,
    unknown_why: str,
) -> Action | None:
    """The drain of one node whose draining alert held, or why not. A skip's text is stable
    while its cause lasts: it is told once, not at every poll."""
    prefix = settings.reason_prefix
    if node is None:
        return Action(SKIP, name, f"not drained: {unknown_why}")
    if node.ours(prefix) and node.drained:
        return None  # drained already, by us
    if node.out_of_service:
        why = f" with reason {node.reason!r}" if node.reason else ""
        return Action(
            SKIP, name, f"not drained: already out of service in Slurm{why}, left as it is"
        )
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
            f"not drained: more than {settings.unreachable_fraction:.0%} of the polled nodes "
            "are unreachable, the control host's own network is suspect",
        )
    reason = entry.get("reason")
    return Action(DRAIN, name, reason if isinstance(reason, str) else f"{prefix} critical alert")


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
