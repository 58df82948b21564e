"""What a ``HealthMonitor`` tells its handlers and its event stream, built from the engine's
``CycleResult`` after each round (on the monitor's thread; handlers run elsewhere).

Frozen slotted dataclasses, told apart by type (``isinstance`` or ``match``): ``CycleEvent``,
``AlertEvent`` (the engine's own: ``kind`` is ``raised`` or ``cleared``), ``BreakerEvent``,
``JobEvent`` and ``ClusterState``, the hook for an external cluster-state manager: every
node's status, score, alerts and breaker after each round. Imports ``engine.monitor`` and
``model`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ugro_health.engine.monitor import AlertEvent, CycleResult, Monitor
from ugro_health.model import Alert, ClusterReport, Status

__all__ = [
    "AlertEvent",
    "BreakerEvent",
    "ClusterState",
    "CycleEvent",
    "JobEvent",
    "MonitorEvent",
    "NodeState",
]

JOB_CODES = frozenset({"job_started", "job_finished"})


@dataclass(frozen=True, slots=True)
class CycleEvent:
    """One finished round: the report the CLI would render (every node's latest, so nodes not
    due this round keep their last report), which nodes were polled and which were isolated.

    Example::

        def on_cycle(event: ugro_health.CycleEvent) -> None:
            print(event.number, event.report.status.label, json.dumps(event.report.to_json()))
    """

    at: float
    number: int
    report: ClusterReport
    polled: tuple[str, ...]
    isolated: tuple[str, ...]
    duration_s: float
    store_problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """A node's circuit breaker changed state: ``closed``, ``open`` (isolated) or ``half_open``.

    Example::

        def on_breaker(event: ugro_health.BreakerEvent) -> None:
            if event.state == "open":
                scheduler.cordon(event.node)
    """

    at: float
    node: str
    state: str
    previous: str
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A training job started or finished (by anyone: this API, ``track_job``, ``jobs``, or
    expiry when its processes are gone or its TTL ran out), as the monitor saw it.

    Example::

        def on_job(event: ugro_health.JobEvent) -> None:
            print(event.change, event.job, event.message)
    """

    at: float
    job: str
    change: str  # "started" or "finished"
    message: str
    node: str | None = None


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node as the monitor last saw it; ``breaker`` is ``closed``, ``open`` or
    ``half_open``; ``score`` is None for a node that could not be sampled.

    Example::

        critical = [n.name for n in state.nodes if n.status is ugro_health.Status.CRITICAL]
    """

    name: str
    status: Status
    score: int | None
    reachable: bool
    alerts: tuple[Alert, ...]
    breaker: str
    polled_at: float | None


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Every node's state after a round, for an external cluster-state manager (``on_state``).

    Example::

        def on_state(state: ugro_health.ClusterState) -> None:
            for node in state.nodes:
                manager.update(node.name, health=node.score, ok=node.status.label == "ok")
    """

    at: float
    nodes: tuple[NodeState, ...]
    active_jobs: tuple[str, ...]

    def node(self, name: str) -> NodeState:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


MonitorEvent = CycleEvent | AlertEvent | BreakerEvent | JobEvent | ClusterState


def cycle_events(
    monitor: Monitor, result: CycleResult, breakers_before: dict[str, str]
) -> list[MonitorEvent]:
    """The events of one round in the order handlers get them: alerts, jobs, breakers, then
    the cycle and the state. ``breakers_before`` (node -> state) is updated in place."""
    events: list[MonitorEvent] = []
    for event in result.events:
        if event.alert.code in JOB_CODES:
            events.append(_job_event(event))
        else:
            events.append(event)
    for name, breaker in monitor.breakers.items():
        state = breaker.state.value
        before = breakers_before.get(name, "closed")
        if state != before:
            events.append(BreakerEvent(result.at, name, state, before, breaker.last_error))
        breakers_before[name] = state
    reports = tuple(monitor.view.reports[n] for n in monitor.nodes if n in monitor.view.reports)
    started = result.at - result.duration_s
    report = ClusterReport(generated_at=started, nodes=reports, duration_s=result.duration_s)
    events.append(
        CycleEvent(
            at=result.at,
            number=monitor.view.cycles,
            report=report,
            polled=result.polled,
            isolated=tuple(result.skipped),
            duration_s=result.duration_s,
            store_problems=tuple(result.store_problems),
        )
    )
    events.append(cluster_state(monitor, result.at))
    return events


def cluster_state(monitor: Monitor, at: float) -> ClusterState:
    nodes = []
    for name in monitor.nodes:
        report = monitor.view.reports.get(name)
        breaker = monitor.breakers.get(name)
        nodes.append(
            NodeState(
                name=name,
                status=Status.UNKNOWN if report is None else report.status,
                score=None if report is None else report.score,
                reachable=report is not None and report.reachable,
                alerts=() if report is None else report.alerts,
                breaker="closed" if breaker is None else breaker.state.value,
                polled_at=None if report is None else report.polled_at,
            )
        )
    return ClusterState(at, tuple(nodes), tuple(monitor.view.active_jobs))


def _job_event(event: AlertEvent) -> JobEvent:
    change = "started" if event.alert.code == "job_started" else "finished"
    job = str(event.alert.value) if event.alert.value is not None else ""
    node = None if event.node == "-" else event.node
    return JobEvent(event.at, job, change, event.alert.message, node)
