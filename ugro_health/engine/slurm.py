"""Slurm for one monitor: running jobs in, drain and resume out.

Imports ``engine.slurm_policy`` (the rules), ``engine.jobs``, ``integrations.slurm`` (the
commands), ``store`` and ``model``; never ``cli`` or ``render``. ``SlurmLink.step(reports)``
is one poll's work: count the reports into the state (``tally``), read Slurm's view of every
configured node in one ``scontrol`` call, decide, run the drains and resumes, and record what
was done in ``state["slurm"]``. It returns the events (INFO alerts ``slurm_drained``,
``slurm_resumed``, ``slurm_skipped``, ``slurm_released``) for the caller to attach to the
nodes' reports, so they are logged, recorded in history and notified like any alert.

``check --slurm-act`` calls ``step`` in line. ``watch`` runs it in a background thread
(``start``/``submit``/``stop``) that also reads ``squeue`` every ``jobs_interval``: a hung
Slurm command holds that thread up to its deadline, never the polling. Its events reach the
next cycle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

from ugro_health.config import Config
from ugro_health.engine import slurm_policy as policy
from ugro_health.engine.alerting import CLUSTER_NODE
from ugro_health.engine.events import AlertEvent
from ugro_health.engine.jobs import Job
from ugro_health.integrations.slurm import SlurmClient, SlurmError, SlurmNode
from ugro_health.model import Alert, ClusterReport, NodeReport, Severity
from ugro_health.store._fs import StoreError
from ugro_health.store.state import StateStore

_CODES = {
    policy.DRAIN: "slurm_drained",
    policy.RESUME: "slurm_resumed",
    policy.SKIP: "slurm_skipped",
    policy.RELEASE: "slurm_released",
}


class SlurmLink:
    def __init__(
        self,
        config: Config,
        store: StateStore,
        clock: Callable[[], float] = time.time,
        client: SlurmClient | None = None,
        nodes: Collection[str] | None = None,
    ) -> None:
        self.settings = config.slurm
        self.store = store
        self.clock = clock
        self.client = client or SlurmClient(self.settings)
        # Every configured node is read (the guard counts them all); only ``nodes`` (a
        # `--nodes` selection; None: all) are counted and acted on.
        self.names = {n.name: self.settings.slurm_name(n.name) for n in config.nodes}
        self.acting = set(self.names) if nodes is None else set(nodes) & set(self.names)
        self._ugro = {slurm: ugro for ugro, slurm in self.names.items()}
        self.guard: Alert | None = None  # the storm guard's cluster-level alert, while it holds
        self.stepped = False  # a step has read Slurm: ``guard`` is a verdict, not a default
        self.problems: list[str] = []  # Slurm or store failures since the last take_events()
        self.jobs: list[Job] = []
        self.jobs_changed_at: float | None = None  # when a Slurm job last started or ended
        self.jobs_version = 0  # bumped at each change of the job list
        self._lock = threading.Lock()
        self._events: list[tuple[str, Alert]] = []
        self._held: dict[str, list[Alert]] = {}  # events for nodes not yet reported (news)
        self._guard_shown: Alert | None = None
        self._batches: list[list[NodeReport]] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_jobs_changed: Callable[[], None] | None = None

    # -- one poll's drain and resume ---------------------------------------------------------

    def step(self, reports: Sequence[NodeReport] | Iterable[Sequence[NodeReport]]) -> None:
        """Count ``reports`` (one poll's, or several polls' in order), then act on Slurm."""
        batches = [[r for r in batch if r.name in self.acting] for batch in _batches(reports)]
        try:
            section = self.store.update(lambda s: self._tally(s, batches)).state["slurm"]
        except StoreError as exc:
            self._problem(f"slurm: counts not saved, nothing done: {exc}")
            return
        counted = {r.name for batch in batches for r in batch if r.sample is not None}
        unreachable = _unreachable(batches[-1]) if batches else 0.0
        views, why = self._read_nodes()
        decision = policy.decide(
            section, views, self.settings, unreachable, why or "not a node Slurm knows", counted
        )
        if why is None:  # an unreadable Slurm says nothing about the guard: it stays as it was
            self.guard, self.stepped = decision.guard, True
        done = self._execute(decision.actions)
        told: list[policy.Action] = []
        try:
            self.store.update(lambda s: told.extend(self._note(s, done, counted)))
        except StoreError as exc:
            self._problem(f"slurm: actions done but not recorded: {exc}")
            # Even so, what was done in Slurm is reported.
            told = [a for a in done if a.kind != policy.SKIP]
        self._emit(told)

    def _tally(self, state: dict[str, Any], batches: list[list[NodeReport]]) -> None:
        for batch in batches:
            policy.tally(state, batch, self.settings, configured=self.names)

    def _read_nodes(self) -> tuple[dict[str, SlurmNode | None], str | None]:
        """Slurm's view of every configured node, and why one is None (None: read fine)."""
        try:
            seen = self.client.nodes(self.names.values())
        except SlurmError as exc:
            self._problem(f"slurm: {exc}")
            return dict.fromkeys(self.names), f"Slurm's state could not be read ({exc})"
        return {ugro: seen.get(slurm) for ugro, slurm in self.names.items()}, None

    def _execute(self, actions: Sequence[policy.Action]) -> list[policy.Action]:
        """Run the drains and resumes; after a failed command, Slurm is not asked again in
        this step (the rest are skipped, and retried at the next)."""
        done: list[policy.Action] = []
        failed: str | None = None
        for action in actions:
            if action.kind not in (policy.DRAIN, policy.RESUME):
                done.append(action)
                continue
            verb = "drain" if action.kind == policy.DRAIN else "resume"
            undone = "not drained" if action.kind == policy.DRAIN else "not resumed"
            if failed is not None:
                done.append(policy.Action(policy.SKIP, action.node, f"{undone}: {failed}"))
                continue
            if self.settings.dry_run:  # said once, like any skip, not at every poll
                what = f"drain ({action.why})" if action.kind == policy.DRAIN else "resume"
                done.append(policy.Action(policy.SKIP, action.node, f"dry run: would {what}"))
                continue
            slurm_name = self.names[action.node]
            try:
                if action.kind == policy.DRAIN:
                    self.client.drain(slurm_name, action.why)
                else:
                    self.client.resume(slurm_name)
            except SlurmError as exc:
                failed = f"scontrol {verb} failed ({exc})"
                self._problem(f"slurm: {failed}")
                done.append(policy.Action(policy.SKIP, action.node, f"{undone}: {failed}"))
                continue
            done.append(action)
        return done

    def _note(
        self, state: dict[str, Any], done: Sequence[policy.Action], counted: Collection[str]
    ) -> list[policy.Action]:
        """Record the actions in the state; return the events worth telling (a skip only when
        its reason changed: the same refusal every poll would drown the rest). A counted node
        not skipped this time forgets its last skip."""
        section = policy.slurm_section(state)
        now = self.clock()
        skipped = {a.node for a in done if a.kind == policy.SKIP}
        for name in set(counted) - skipped:
            entry = section["nodes"].get(name)
            if entry is not None:
                entry.pop("note", None)
        told: list[policy.Action] = []
        for action in done:
            entry = section["nodes"].setdefault(action.node, {"bad": 0, "good": 0})
            if action.kind == policy.SKIP:
                if entry.get("note") == action.why:
                    continue
                entry["note"] = action.why
            elif action.kind == policy.DRAIN:
                section["drained"][action.node] = {
                    "at": now,
                    "reason": action.why,
                    "slurm_name": self.names[action.node],
                }
            elif action.kind in (policy.RESUME, policy.RELEASE):
                record = section["drained"].pop(action.node, None)
                if action.kind == policy.RELEASE and policy.RESUMED_BY_HAND in action.why:
                    entry["held_off"] = True
                if record is not None:
                    action = replace(action, why=f"{action.why}; drained {_ago(now, record)}")
            told.append(action)
            policy.log_action(section, at=now, node=action.node, action=action.kind, why=action.why)
        return told

    def _emit(self, told: Sequence[policy.Action]) -> None:
        events = []
        for action in told:
            code = _CODES[action.kind]
            if action.kind == policy.DRAIN:
                text = f"drained in Slurm: {action.why}"
            elif action.kind == policy.RESUME:
                text = f"resumed in Slurm: {action.why}"
            else:
                text = action.why
            events.append((action.node, Alert(Severity.INFO, code, text, subject="slurm")))
        with self._lock:
            self._events.extend(events)

    def _problem(self, line: str) -> None:
        with self._lock:
            if line not in self.problems:
                self.problems.append(line)

    def news(
        self, report: ClusterReport, now: float
    ) -> tuple[ClusterReport, list[AlertEvent], list[str]]:
        """``report`` with the events since the last call on their nodes (so history, the
        lifecycle and the channels see them; a node not in this poll gets its own at its next),
        the events, the guard's change as a cluster-level event, and the problems."""
        taken, problems = self.take_events()
        for name, alert in taken:
            if name in self.acting:
                self._held.setdefault(name, []).append(alert)
        events: list[AlertEvent] = []
        nodes = []
        for node in report.nodes:
            held = self._held.pop(node.name, None) if node.polled else None
            if held:
                node = replace(node, alerts=(*node.alerts, *held))
                events.extend(AlertEvent(now, node.name, a, "raised") for a in held)
            nodes.append(node)
        guard = self.guard
        before, self._guard_shown = self._guard_shown, guard
        if guard is not None and (before is None or before.message != guard.message):
            events.append(AlertEvent(now, CLUSTER_NODE, guard, "raised"))
        elif guard is None and before is not None:
            events.append(AlertEvent(now, CLUSTER_NODE, before, "cleared"))
        return replace(report, nodes=tuple(nodes)), events, problems

    def take_events(self) -> tuple[list[tuple[str, Alert]], list[str]]:
        """The events and problems since the last call (any thread)."""
        with self._lock:
            events, self._events = self._events, []
            problems, self.problems = self.problems, []
        return events, problems

    # -- running jobs ------------------------------------------------------------------------

    def read_jobs(self, timeout: float | None = None) -> list[Job]:
        """Running Slurm jobs on configured nodes, as jobs (raises ``SlurmError``)."""
        jobs = []
        for job in self.client.running_jobs(timeout):
            nodes = tuple(self._ugro[n] for n in job.nodes if n in self._ugro)
            if not nodes:
                continue
            started = job.started_at if job.started_at is not None else self.clock()
            jobs.append(Job(f"slurm:{job.job_id}", nodes, started, source="slurm"))
        return sorted(jobs, key=lambda j: j.name)

    def refresh_jobs(self) -> bool:
        """Re-read the running jobs; True when the list changed. A failed read keeps the last
        known list (an unreadable squeue is not the end of every job)."""
        try:
            jobs = self.read_jobs()
        except SlurmError as exc:
            self._problem(f"slurm: {exc}")
            return False
        with self._lock:
            changed = [j.name for j in jobs] != [j.name for j in self.jobs]
            self.jobs = jobs
            if changed:
                self.jobs_changed_at = self.clock()
                self.jobs_version += 1
        return changed

    # -- the background thread (watch) -------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="ugro-slurm", daemon=True)
        self._thread.start()

    def submit(self, reports: Sequence[NodeReport]) -> None:
        """Queue one poll's reports for the background step (``manage`` only)."""
        if not self.settings.manage:
            return
        with self._lock:
            self._batches.append(list(reports))
            del self._batches[:-64]  # a thread stuck on Slurm: keep the latest polls
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, killing a Slurm command it is waiting on."""
        self._stopping.set()
        self._wake.set()
        self.client.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        next_jobs = 0.0
        while not self._stopping.is_set():
            try:
                next_jobs = self._pass(next_jobs)
            except Exception as exc:  # a bug or a damaged state must not end Slurm's thread
                self._problem(f"slurm: internal error, retried: {type(exc).__name__}: {exc}")
            wait = next_jobs - time.monotonic() if self.settings.jobs else None
            if self._wake.wait(None if wait is None else max(0.0, wait)):
                self._wake.clear()

    def _pass(self, next_jobs: float) -> float:
        if self.settings.jobs and time.monotonic() >= next_jobs:
            next_jobs = time.monotonic() + self.settings.jobs_interval_s
            if self.refresh_jobs() and self.on_jobs_changed is not None:
                self.on_jobs_changed()
        with self._lock:
            batches, self._batches = self._batches, []
        if batches and not self._stopping.is_set():
            self.step(batches)
        return next_jobs


def read_jobs_or_warn(
    slurm: SlurmLink, warn: Callable[[str], None], timeout: float | None = None
) -> list[Job]:
    """The running Slurm jobs (``check``, ``jobs list``); Slurm not answering is said, and
    means none."""
    try:
        return slurm.read_jobs(timeout)
    except SlurmError as exc:
        warn(f"slurm: running jobs unknown: {exc}")
        return []


def check_step(
    slurm: SlurmLink, report: ClusterReport, warn: Callable[[str], None]
) -> tuple[ClusterReport, list[Alert] | None]:
    """``check --slurm-act``: drain and resume after this poll, in line; the actions go on
    their nodes as INFO alerts, and the guard's verdict (None: Slurm unread) is returned."""
    slurm.step([n for n in report.nodes if n.polled])
    report, _, problems = slurm.news(report, report.generated_at)
    for problem in problems:
        warn(problem)
    if slurm.guard is not None:
        warn(f"CRITICAL {slurm.guard.message}")
    if not slurm.stepped:
        return report, None
    return report, [slurm.guard] if slurm.guard is not None else []


def _batches(reports: Any) -> list[list[NodeReport]]:
    items = list(reports)
    if items and isinstance(items[0], NodeReport):
        return [items]
    return [list(batch) for batch in items]


def _unreachable(reports: Sequence[NodeReport]) -> float:
    polled = [r for r in reports if r.polled]
    return sum(1 for r in polled if r.unreachable) / len(polled) if polled else 0.0


def _ago(now: float, record: Any) -> str:
    at = record.get("at") if isinstance(record, dict) else None
    if not isinstance(at, int | float):
        return "earlier"
    minutes = max(0.0, now - at) / 60
    return f"{minutes:.0f} min ago" if minutes < 120 else f"{minutes / 60:.1f} h ago"
