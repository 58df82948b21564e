"""Adaptive polling for ``watch``: how often to poll, which nodes are due, when to wake next.

Imports ``engine.clock`` and ``model`` only; no I/O, no sleeping. The loop asks
``due_nodes()``, polls them (through the breakers), reports ``cycle_done()``, then waits
``seconds_until_next()``. Every ``now`` defaults to ``clock.time()``; all times are wall-clock
epoch seconds, the same base as job activity in the state store.

Cadence: a cycle polls every node; the next starts ``interval`` after the previous one was
*scheduled* to start (not after it finished), so the loop does not drift. A cycle that runs
longer than the interval delays the next one to its end: cycles never overlap, and missed
slots are dropped rather than made up in a burst. A start later than a quarter interval past
its slot (a suspended laptop, a forward clock step) re-anchors the cadence on that start.
Between cycles, WARNING and CRITICAL nodes are re-polled every ``problem_interval_s``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from ugro_health.engine.clock import Clock
from ugro_health.model import Status

PROBLEM_STATUSES = frozenset({Status.WARNING, Status.CRITICAL})
LATE_FRACTION = 0.25  # of the interval: a later start re-anchors the cadence
DURATIONS_KEPT = 100


@dataclass(frozen=True, slots=True)
class PollPolicy:
    active_interval_s: float = 5.0  # a job is running
    recent_interval_s: float = 10.0  # job activity within recent_window_s
    recent_window_s: float = 1800.0
    warm_interval_s: float = 20.0  # job activity within warm_window_s
    warm_window_s: float = 7200.0
    idle_interval_s: float = 40.0
    max_interval_s: float = 60.0  # the adaptive interval is never longer
    problem_interval_s: float = 5.0  # WARNING/CRITICAL nodes, between cycles
    fixed_interval_s: float | None = None  # `watch --interval`: used as given, no adapting

    def __post_init__(self) -> None:
        for name in (
            "active_interval_s",
            "recent_interval_s",
            "warm_interval_s",
            "idle_interval_s",
            "max_interval_s",
            "problem_interval_s",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        fixed = self.fixed_interval_s
        if fixed is not None and not (math.isfinite(fixed) and fixed > 0):
            raise ValueError("fixed_interval_s must be a positive number of seconds")


def choose_interval(
    policy: PollPolicy, now: float, active_jobs: int, last_job_activity: float | None
) -> float:
    """Seconds between cycles for this job activity (windows include their end)."""
    if policy.fixed_interval_s is not None:
        return policy.fixed_interval_s
    if active_jobs > 0:
        interval = policy.active_interval_s
    elif last_job_activity is None:
        interval = policy.idle_interval_s
    else:
        age = max(0.0, now - last_job_activity)  # activity "in the future": clock skew, recent
        if age <= policy.recent_window_s:
            interval = policy.recent_interval_s
        elif age <= policy.warm_window_s:
            interval = policy.warm_interval_s
        else:
            interval = policy.idle_interval_s
    return min(interval, policy.max_interval_s)


@dataclass(frozen=True, slots=True)
class _Round:
    full: bool  # a whole cycle, or problem nodes between cycles
    scheduled: float  # when it was due
    nodes: tuple[str, ...]


class Scheduler:
    def __init__(self, policy: PollPolicy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self._active_jobs = 0
        self._last_activity: float | None = None
        self._interval = choose_interval(policy, clock.time(), 0, None)
        self._anchor: float | None = None  # scheduled start of the last cycle
        self._next_cycle_at: float | None = None  # None: the first cycle is due at once
        self._node_due: dict[str, float] = {}  # earliest re-poll of each node polled so far
        self._problems: tuple[str, ...] = ()  # WARNING/CRITICAL nodes as last told
        self._round: _Round | None = None
        self._durations: deque[float] = deque(maxlen=DURATIONS_KEPT)
        self.cycles = 0
        self.overruns = 0  # cycles that took longer than their interval

    # -- reading --------------------------------------------------------------------------
    @property
    def interval(self) -> float:
        return self._interval

    @property
    def last_cycle_s(self) -> float | None:
        return self._durations[-1] if self._durations else None

    @property
    def mean_cycle_s(self) -> float | None:
        return sum(self._durations) / len(self._durations) if self._durations else None

    @property
    def cycle_durations(self) -> tuple[float, ...]:
        return tuple(self._durations)

    @property
    def in_flight(self) -> bool:
        return self._round is not None

    def next_wake(self, now: float | None = None) -> float:
        """When something is next due: the next cycle, or a problem node's re-poll."""
        now = self._now(now)
        self._check_clock(now)
        if self._next_cycle_at is None:
            return now
        wake = self._next_cycle_at
        for name in self._problems:
            due = self._node_due.get(name, now)
            if self._worth_repoll(due):
                wake = min(wake, due)
        return wake

    def seconds_until_next(self, now: float | None = None) -> float:
        now = self._now(now)
        return max(0.0, self.next_wake(now) - now)

    # -- driving --------------------------------------------------------------------------
    def set_activity(
        self, active_jobs: int, last_job_activity: float | None, now: float | None = None
    ) -> float:
        """Tell the scheduler about job activity; returns the new interval.

        A shorter interval takes effect at once: the next cycle moves up to the last cycle's
        start plus the new interval (or now, if that has passed). A longer one applies from the
        next cycle on, so the wait already promised is never lengthened.
        """
        now = self._now(now)
        self._active_jobs, self._last_activity = active_jobs, last_job_activity
        self._interval = choose_interval(self.policy, now, active_jobs, last_job_activity)
        if self._next_cycle_at is not None and self._anchor is not None:
            sooner = min(self._next_cycle_at, self._anchor + self._interval)
            self._next_cycle_at = max(sooner, now) if sooner < self._next_cycle_at else sooner
        return self._interval

    def due_nodes(self, now: float | None, node_statuses: Mapping[str, Status]) -> list[str]:
        """Nodes to poll now, in ``node_statuses`` order; starts a round for ``cycle_done``.

        ``node_statuses`` names every monitored node with its last known status. At a cycle
        boundary that is all of them; between cycles, the WARNING/CRITICAL nodes whose re-poll
        is due and nodes never polled yet. Empty while a round is still in flight.
        """
        now = self._now(now)
        if self._round is not None:
            return []
        self._check_clock(now)
        self._problems = tuple(n for n, s in node_statuses.items() if s in PROBLEM_STATUSES)
        if self._next_cycle_at is None or now >= self._next_cycle_at:
            scheduled = now if self._next_cycle_at is None else self._next_cycle_at
            nodes = tuple(node_statuses)
            if not nodes:  # nothing to poll: keep the cadence without a round
                self._anchor, self._next_cycle_at = scheduled, scheduled + self._interval
                return []
            self._round = _Round(True, scheduled, nodes)
            return list(nodes)
        nodes = tuple(n for n, s in node_statuses.items() if self._repoll_due(n, s, now))
        if nodes:
            self._round = _Round(False, now, nodes)
        return list(nodes)

    def cycle_done(
        self,
        started: float,
        finished: float,
        node_statuses: Mapping[str, Status] | None = None,
    ) -> float:
        """Close the round ``due_nodes`` started; returns the next wake-up time.

        ``node_statuses``, when given, are the statuses after this round: a node that has just
        turned CRITICAL is then re-polled before the next cycle.
        """
        finished = max(finished, started)
        if node_statuses is not None:
            self._problems = tuple(n for n, s in node_statuses.items() if s in PROBLEM_STATUSES)
        current, self._round = self._round, None
        if current is None:
            return self.next_wake(finished)
        repoll = max(started + self.policy.problem_interval_s, finished)
        for name in current.nodes:
            self._node_due[name] = repoll
        if current.full:
            self._finish_cycle(current.scheduled, started, finished)
        return self.next_wake(finished)

    def _finish_cycle(self, scheduled: float, started: float, finished: float) -> None:
        interval = self._interval
        late = started - scheduled > LATE_FRACTION * interval
        anchor = started if late else scheduled
        duration = finished - started
        self._durations.append(duration)
        self.cycles += 1
        if duration > interval:
            self.overruns += 1
        # Re-evaluate the tier: time passing moves "recent" activity to "warm", then "idle".
        self._interval = choose_interval(
            self.policy, finished, self._active_jobs, self._last_activity
        )
        self._anchor = anchor
        self._next_cycle_at = max(anchor + self._interval, finished)

    def forget(self, names: set[str]) -> None:
        """Drop per-node state of nodes no longer monitored, or never reached in their round
        (they are then due at once, as a node never polled)."""
        for name in names:
            self._node_due.pop(name, None)

    # -- internals ------------------------------------------------------------------------
    def _now(self, now: float | None) -> float:
        return self.clock.time() if now is None else now

    def _repoll_due(self, name: str, status: Status, now: float) -> bool:
        due = self._node_due.get(name)
        if due is None:  # never polled: a node added since the last cycle
            return True
        return status in PROBLEM_STATUSES and due <= now and self._worth_repoll(due)

    def _worth_repoll(self, due: float) -> bool:
        """A re-poll between cycles, unless the cycle comes first or close behind."""
        if self.policy.problem_interval_s >= self._interval or self._next_cycle_at is None:
            return False
        return due < self._next_cycle_at - self.policy.problem_interval_s / 2

    def _check_clock(self, now: float) -> None:
        """Undo waits that only a wall clock stepped backwards can explain."""
        if self._next_cycle_at is not None and self._next_cycle_at > now + self._interval:
            self._next_cycle_at = now
            self._anchor = now - self._interval
        limit = now + self.policy.problem_interval_s
        for name, due in self._node_due.items():
            if due > limit:
                self._node_due[name] = now
