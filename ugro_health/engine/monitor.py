"""The ``watch`` loop: schedule, poll through the breakers, judge, record, and tell the front.

Imports ``engine``, ``store``, ``transport`` (through ``collect.Transports``) and ``model``;
never ``cli`` or ``render``. The front (dashboard or log lines) gets a ``CycleResult`` after
every round and a ``tick`` while waiting, through callbacks; it never drives the loop.

Each round: reload job activity from the state store (a ``jobs start`` from another shell is
seen within one cycle), ask the scheduler which nodes are due, let the breakers skip isolated
nodes, poll the rest, feed successes and failures back to the breakers (their transitions become
alerts: CRITICAL when isolated, INFO when recovered), expire finished jobs, record history and
state (breakers included, so they survive a restart), then wait for the next wake-up or a stop.

A breaker changed in the state store by someone else (``breaker reset NODE``, or a ``check``
that reached the node) carries a ``breaker_override`` stamp; the loop adopts a newer one at its
next look at the store (within a tick) and polls that node at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ugro_health.config import Config, NodeConfig
from ugro_health.engine import jobs as joblib
from ugro_health.engine.alerting import Alerting
from ugro_health.engine.breaker import BreakerBoard, BreakerPolicy, BreakerState
from ugro_health.engine.clock import Clock, SystemClock
from ugro_health.engine.collect import Transports, collect_cluster, failed_report
from ugro_health.engine.events import AlertEvent
from ugro_health.engine.lifecycle import with_states
from ugro_health.engine.record import Recorder
from ugro_health.engine.scheduler import PollPolicy, Scheduler
from ugro_health.engine.slurm import SlurmLink
from ugro_health.model import (
    Alert,
    ClusterReport,
    ErrorKind,
    NodeError,
    NodeReport,
    Severity,
    Status,
    as_float,
    worst_status,
)
from ugro_health.store.state import StateStore

ALERTS_KEPT = 200  # the dashboard's alert panel; bounded so a long run stays flat
QUIET = frozenset({"probe_partial"})  # alert codes not reported as events


@dataclass(slots=True)
class CycleResult:
    at: float
    duration_s: float
    polled: tuple[str, ...]
    skipped: dict[str, float]  # node -> seconds until its breaker allows a trial
    events: list[AlertEvent]
    store_problems: list[str]
    slurm_problems: list[str] = field(default_factory=list)  # Slurm commands that failed


@dataclass
class MonitorState:
    """What the front displays: the latest report per node and the recent alert events."""

    reports: dict[str, NodeReport] = field(default_factory=dict)
    # This round's answers so far, so the front can draw a node as soon as it answers.
    partial: dict[str, NodeReport] = field(default_factory=dict)
    events: deque[AlertEvent] = field(default_factory=lambda: deque(maxlen=ALERTS_KEPT))
    active_jobs: list[str] = field(default_factory=list)
    cycles: int = 0


class Monitor:
    def __init__(
        self,
        config: Config,
        nodes: Sequence[NodeConfig],
        store: StateStore,
        transports: Transports,
        poll_policy: PollPolicy | None = None,
        breaker_policy: BreakerPolicy | None = None,
        clock: Clock | None = None,
        alerting: Alerting | None = None,
        slurm: SlurmLink | None = None,
    ) -> None:
        self.config = config
        self.nodes = {n.name: n for n in nodes}
        self.store = store
        self.transports = transports
        self.clock = clock or SystemClock()
        self.scheduler = Scheduler(poll_policy or PollPolicy(), self.clock)
        saved = self.store.load().state
        self.breakers = self._restore_breakers(saved, breaker_policy or BreakerPolicy())
        self._overrides_seen = {name: _override(saved, name)[0] for name in self.nodes}
        self.on_progress: Callable[[], None] | None = None  # the front's redraw, any thread
        self.view = MonitorState()
        self.recorder = Recorder(store.directory, config, self.clock)
        # The alert lifecycle, judged in the cycle's state write; on_queued wakes the
        # delivery threads (cli.watch) when that write queued notifications.
        self.alerting = alerting or Alerting(store.directory, config, self.clock.time)
        self.on_queued: Callable[[], None] | None = None
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()
        self.cancelled = threading.Event()  # cancel(): the round in flight is abandoned
        self._poll_now: set[str] = set()  # poll_now(), from any thread
        self._poll_now_lock = threading.Lock()
        self._jobs: list[joblib.Job] = []
        self._last_activity: float | None = None
        self._state_stamp: int | None = None
        self._jobs_known = False  # the first look at the jobs is not news
        self._pending: list[AlertEvent] = []  # job news seen while waiting
        # Slurm (config.slurm.enabled): its running jobs count as job activity, and its
        # background step drains and resumes; its events reach the node's next report.
        self.slurm = slurm
        self._slurm_seen = -1  # the Slurm job list's version last merged
        if slurm is not None:
            slurm.on_jobs_changed = self.wake_event.set
        self._show_restored_isolation()

    def _show_restored_isolation(self) -> None:
        """Nodes still isolated by a breaker restored from the state: their alert goes in the
        panel, which would otherwise say "no alerts" beside a node shown unreachable."""
        now = self.clock.time()
        for name, breaker in self.breakers.items():
            if breaker.state is BreakerState.CLOSED:
                continue
            why = breaker.last_error or "repeated failures"
            alert = Alert(Severity.CRITICAL, "node_isolated", f"isolated before this start ({why})")
            self.view.events.append(AlertEvent(breaker.opened_at or now, name, alert, "raised"))

    def _restore_breakers(self, state: dict[str, Any], policy: BreakerPolicy) -> BreakerBoard:
        saved = {
            name: entry.get("breaker")
            for name, entry in (state.get("nodes") or {}).items()
            if name in self.nodes and isinstance(entry, dict) and entry.get("breaker")
        }
        return BreakerBoard.from_json(saved, policy, self.clock)

    # -- the loop ---------------------------------------------------------------------------

    def run(
        self,
        on_cycle: Callable[[CycleResult], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        tick_s: float = 1.0,
        max_cycles: int | None = None,
    ) -> None:
        """Poll until ``stop()`` (or ``max_cycles`` rounds); the current round always finishes."""
        if self.slurm is not None:
            self.slurm.start()
        try:
            self._loop(on_cycle, on_tick, tick_s, max_cycles)
        finally:
            if self.slurm is not None:
                self.slurm.stop()

    def _loop(
        self,
        on_cycle: Callable[[CycleResult], None] | None,
        on_tick: Callable[[], None] | None,
        tick_s: float,
        max_cycles: int | None,
    ) -> None:
        rounds = 0
        while not self.stop_event.is_set():
            result = self.run_once()
            if result is not None:
                rounds += 1
                if on_cycle is not None:
                    on_cycle(result)
                if max_cycles is not None and rounds >= max_cycles:
                    break
            self._wait(on_tick, tick_s)

    def _wait(self, on_tick: Callable[[], None] | None, tick_s: float) -> None:
        while not self.stop_event.is_set():
            now = self.clock.time()
            remaining = self.scheduler.seconds_until_next(now)
            # Wake when an isolated node's breaker allows its trial, not every re-poll tick.
            retries = [
                r for r in (b.seconds_until_retry(now) for b in self.breakers.values()) if r > 0
            ]
            remaining = min([remaining, *retries])
            if remaining <= 0:
                return
            if self.clock.wait(self.wake_event, min(remaining, tick_s)):
                self.wake_event.clear()
                return
            self._refresh_jobs(self.clock.time())  # a job started elsewhere shortens the wait
            if on_tick is not None:
                on_tick()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake_event.set()

    def poll_now(self, names: Iterable[str]) -> None:
        """Poll ``names`` at the next wake-up and wake the loop now (any thread): a job just
        started on them has its ranks checked at once, not an interval later."""
        with self._poll_now_lock:
            self._poll_now.update(n for n in names if n in self.nodes)
        self.wake_event.set()

    def cancel(self) -> None:
        """Stop without finishing the round in flight: once the caller closes the transports
        (which ends the polls at once), the round returns unjudged and unrecorded, since its
        failures would be the closed sessions', not the nodes'."""
        self.cancelled.set()
        self.stop()

    def run_once(self) -> CycleResult | None:
        """One round if any node is due; None when nothing was due yet."""
        now = self.clock.time()
        self._refresh_jobs(now)
        with self._poll_now_lock:
            asked, self._poll_now = self._poll_now, set()
        self.scheduler.forget(asked)
        due = self.scheduler.due_nodes(now, self._statuses(now))
        if not due:
            return None
        allowed, skipped = self.breakers.allow_nodes(due, now)
        started = self.clock.time()
        if not allowed:  # every due node is isolated: nothing to poll or record
            for name in skipped:
                self.view.reports[name] = self._isolated_report(name, now)
            self.scheduler.cycle_done(started, started, self._statuses(started))
            return None
        self.view.partial = {}
        report = collect_cluster(
            self.config,
            [self.nodes[name] for name in allowed],
            self.transports,
            jobs=self._jobs,
            clock=self.clock.time,
            on_report=self._answered,
        )
        self.view.partial = {}
        if self.cancelled.is_set():
            return None
        events, self._pending = self._pending, []
        events.extend(self._absorb(report, skipped, started))
        events.extend(self._expire_jobs(report, started))
        report, slurm_events, slurm_problems = self._slurm_news(report, started)
        events.extend(slurm_events)
        # Breakers and the alert lifecycle go into the same state.json write as the records.
        problems = self._record(self._with_skipped(report, skipped))
        finished = self.clock.time()
        self.scheduler.cycle_done(started, finished, self._statuses(finished))
        # A node whose turn never came (the round ran out of time) is due again at once.
        self.scheduler.forget({node.name for node in report.nodes if not node.polled})
        self.view.cycles += 1
        return CycleResult(
            finished, finished - started, tuple(allowed), skipped, events, problems, slurm_problems
        )

    # -- pieces of a round ------------------------------------------------------------------

    def _record(self, report: ClusterReport) -> list[str]:
        # No verdict on the cluster-level alerts until Slurm has been read once.
        cluster = None
        if self.slurm is not None and self.slurm.stepped:
            cluster = [self.slurm.guard] if self.slurm.guard is not None else []
        judge = self.alerting.change(report.nodes, report.generated_at, cluster)

        def also(state: dict[str, Any]) -> None:
            self._put_breakers(state)
            judge(state)

        problems = self.recorder.record(report, also)
        for name, states in self.alerting.outcome.states.items():
            shown = self.view.reports.get(name)
            if shown is not None:
                self.view.reports[name] = with_states(shown, states)
        problems.extend(self.alerting.warnings)
        if self.alerting.dropped:
            problems.append(f"outbox full: {self.alerting.dropped} oldest notification(s) dropped")
        if self.alerting.queued and self.on_queued is not None:
            self.on_queued()
        if self.slurm is not None:
            self.slurm.submit([node for node in report.nodes if node.polled])
        return problems

    def _answered(self, node: NodeReport) -> None:
        """A node answered mid-round (a poll thread): show it now if nothing was shown yet."""
        if node.name not in self.view.reports:
            self.view.partial[node.name] = node
            if self.on_progress is not None:
                self.on_progress()

    def _statuses(self, now: float) -> dict[str, Status]:
        """Each node's status as the scheduler should see it.

        An isolated node waiting for its breaker is not a problem to re-poll (UNKNOWN) until
        its trial is due; then it is CRITICAL again and re-polled at the problem interval.
        """
        out = {}
        for name in self.nodes:
            report = self.view.reports.get(name)
            breaker = self.breakers.get(name)
            if report is None or (breaker is not None and breaker.seconds_until_retry(now) > 0):
                out[name] = Status.UNKNOWN
            else:
                out[name] = report.status
        return out

    def _absorb(
        self, report: ClusterReport, skipped: dict[str, float], now: float
    ) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for node in report.nodes:
            if not node.polled:  # its turn never came: no verdict either way (re-polled soon)
                self.view.reports.setdefault(node.name, node)
                continue
            if node.error is None:
                transition = self.breakers.record_success(node.name, now)
            else:
                transition = self.breakers.record_failure(node.name, now, str(node.error))
                if self.breakers[node.name].state is BreakerState.OPEN:
                    self.transports.forget(node.name)
            if transition is not None:
                node = _with_alert(node, transition.to_alert())
            events.extend(self._diff(node, now))
            self.view.reports[node.name] = node
        for name in skipped:
            self.view.reports[name] = self._isolated_report(name, now)
        return events

    def _isolated_report(self, name: str, now: float) -> NodeReport:
        breaker = self.breakers[name]
        why = breaker.last_error or "repeated failures"
        # No countdown in the text: it is stored, and read back by `status` long after.
        error = NodeError(ErrorKind.SKIPPED, f"isolated by its circuit breaker ({why})")
        previous = self.view.reports.get(name)
        report = failed_report(name, error, now, self.clock.monotonic())
        if previous is not None:
            report = replace(report, polled_at=previous.polled_at)
        return report

    def _diff(self, node: NodeReport, now: float) -> list[AlertEvent]:
        """Alerts new since this node's last report, and those that cleared."""
        previous = self.view.reports.get(node.name)
        # A sub-check that cannot run (dmesg needs privileges on most nodes) is a standing
        # condition, visible in check/status; as a stream of events it would drown the rest.
        before = {a.key: a for a in previous.alerts if a.code not in QUIET} if previous else {}
        after = {a.key: a for a in node.alerts if a.code not in QUIET}
        events = [
            AlertEvent(now, node.name, a, "raised") for c, a in after.items() if c not in before
        ]
        events += [
            AlertEvent(now, node.name, a, "cleared")
            for c, a in before.items()
            if c not in after and a.severity is not Severity.INFO
        ]
        self.view.events.extend(events)
        return events

    def _refresh_jobs(self, now: float) -> None:
        """Reload job activity when state.json changed (a stat per tick, a parse per change)."""
        try:
            stamp = self.store.path.stat().st_mtime_ns
        except OSError:
            stamp = None
        unchanged = stamp is not None and stamp == self._state_stamp
        unchanged = unchanged and (
            self.slurm is None or self.slurm.jobs_version == self._slurm_seen
        )
        # A job whose TTL just ran out changes nothing on disk: reload, which finishes it.
        if unchanged and not any(job.over_by(now) for job in self._jobs):
            self.scheduler.set_activity(len(self._jobs), self._last_activity, now)
            return
        self._state_stamp = stamp
        state = self.store.load().state
        self._adopt_overrides(state, now)
        self._last_activity = joblib.last_activity(state)
        jobs = joblib.active_jobs(state)
        if self.slurm is not None:
            self._slurm_seen = self.slurm.jobs_version
            jobs.extend(self.slurm.jobs)
            changed = self.slurm.jobs_changed_at
            if changed is not None and (self._last_activity or 0.0) < changed:
                self._last_activity = changed
        names = sorted(j.name for j in jobs)
        if self._jobs_known:
            self._job_news(jobs, set(self.view.active_jobs), now)
        self._jobs_known = True
        self._jobs = jobs
        self.view.active_jobs = names
        self.scheduler.set_activity(len(jobs), self._last_activity, now)

    def _adopt_overrides(self, state: dict[str, Any], now: float) -> None:
        """Breakers reset by hand or closed by a ``check`` since the last look: adopt them."""
        for name in self.nodes:
            at, by = _override(state, name)
            if at is None or at <= (self._overrides_seen.get(name) or float("-inf")):
                continue
            self._overrides_seen[name] = at
            breaker = self.breakers.get(name)
            if breaker is None or (by != "reset" and breaker.state is BreakerState.CLOSED):
                continue
            was = breaker.state
            if by == "reset":
                self.breakers.reset(name)
                why = f"breaker reset by hand (was {was.value}); polled again"
            else:
                self.breakers.record_success(name, now)
                why = "node recovered: a check reached it; polled again"
            alert = Alert(Severity.INFO, "node_recovered", why, "closed")
            self._pending.append(AlertEvent(now, name, alert, "raised"))
            self.view.events.append(self._pending[-1])
            self.scheduler.forget({name})
            self.wake_event.set()

    def _job_news(self, jobs: list[joblib.Job], before: set[str], now: float) -> None:
        """INFO events for jobs started or finished since the last look (by anyone)."""
        current = {j.name: j for j in jobs}
        news = []
        for name in sorted(set(current) - before):
            job = current[name]
            alert = Alert(
                Severity.INFO, "job_started", f"job {name} started on {', '.join(job.nodes)}", name
            )
            news.append(AlertEvent(now, job.nodes[0], alert, "raised"))
        for name in sorted(before - set(current)):
            alert = Alert(Severity.INFO, "job_finished", f"job {name} finished", name)
            news.append(AlertEvent(now, "-", alert, "raised"))
        self._pending.extend(news)
        self.view.events.extend(news)

    def _expire_jobs(self, report: ClusterReport, now: float) -> list[AlertEvent]:
        if not self._jobs:
            return []
        counts = {
            node.name: joblib.matched_counts(node.sample, self._jobs)
            for node in report.nodes
            if node.sample is not None
        }
        try:
            expired = joblib.expire_jobs(self.store, now, counts)
        except OSError:
            return []
        events = []
        gone = {job.name for job in expired}
        self._jobs = [j for j in self._jobs if j.name not in gone]
        self.view.active_jobs = [n for n in self.view.active_jobs if n not in gone]
        for job in expired:
            alert = Alert(
                Severity.INFO,
                "job_finished",
                f"job {job.name} marked finished ({job.finish_reason})",
                job.name,
            )
            events.append(AlertEvent(now, job.nodes[0], alert, "raised"))
            self.view.events.append(events[-1])
        return events

    def _slurm_news(
        self, report: ClusterReport, now: float
    ) -> tuple[ClusterReport, list[AlertEvent], list[str]]:
        """What the Slurm step did since the last round (``SlurmLink.news``)."""
        if self.slurm is None:
            return report, [], []
        report, events, problems = self.slurm.news(report, now)
        changed = {e.node for e in events}
        for node in report.nodes:
            if node.name in changed:
                self.view.reports[node.name] = node
        self.view.events.extend(events)
        return report, events, problems

    def _with_skipped(self, report: ClusterReport, skipped: dict[str, float]) -> ClusterReport:
        extra = tuple(self.view.reports[name] for name in skipped)
        return replace(report, nodes=report.nodes + extra)

    def _put_breakers(self, state: dict[str, Any]) -> None:
        nodes = state.setdefault("nodes", {})
        for name, entry in self.breakers.to_json().items():
            nodes.setdefault(name, {})["breaker"] = entry


def _override(state: dict[str, Any], name: str) -> tuple[float | None, str | None]:
    """A node's ``breaker_override`` stamp in the state: (when, by whom), or (None, None)."""
    entry = (state.get("nodes") or {}).get(name)
    note = entry.get("breaker_override") if isinstance(entry, dict) else None
    if not isinstance(note, dict):
        return None, None
    by = note.get("by")
    return as_float(note.get("at")), by if isinstance(by, str) else None


def _with_alert(node: NodeReport, alert: Alert) -> NodeReport:
    alerts = (*node.alerts, alert)
    return replace(node, alerts=alerts, status=worst_status(a.severity.status for a in alerts))
