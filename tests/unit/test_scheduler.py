"""Adaptive polling: interval tiers, problem re-polls, cadence without drift, overlap or bursts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise

import pytest

from ugro_health.engine.clock import FakeClock
from ugro_health.engine.scheduler import PollPolicy, Scheduler, choose_interval
from ugro_health.model import Status

T0 = 1_700_000_000.0
POLICY = PollPolicy()
OK, WARN, CRIT, UNKNOWN = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN


@dataclass
class Poll:
    start: float
    end: float
    nodes: tuple[str, ...]
    full: bool


def drive(
    sched: Scheduler,
    clock: FakeClock,
    statuses: Mapping[str, Status],
    until: float,
    duration: Callable[[int], float] = lambda k: 0.5,
    wake: threading.Event | None = None,
) -> list[Poll]:
    """The watch loop in miniature: poll what is due, report it, sleep until the next."""
    polls: list[Poll] = []
    idle_spins = 0
    while clock.time() < until:
        start = clock.time()
        nodes = sched.due_nodes(start, statuses)
        if nodes:
            cycles = sched.cycles
            clock.advance(duration(len(polls)))
            sched.cycle_done(start, clock.time(), statuses)
            polls.append(Poll(start, clock.time(), tuple(nodes), sched.cycles > cycles))
            idle_spins = 0
        wait = sched.seconds_until_next(clock.time())
        idle_spins = idle_spins + 1 if wait == 0 and not nodes else 0
        assert idle_spins < 3, "the loop spins without polling"
        if wake is None:
            clock.sleep(wait)
        elif clock.wait(wake, wait):
            wake.clear()
    return polls


def poll_once(sched: Scheduler, clock: FakeClock, statuses: Mapping[str, Status]) -> list[str]:
    """One round of the loop without the wait that follows it."""
    start = clock.time()
    nodes = sched.due_nodes(start, statuses)
    clock.advance(0.5)
    sched.cycle_done(start, clock.time(), statuses)
    return nodes


def cycles(polls: list[Poll]) -> list[Poll]:
    return [p for p in polls if p.full]


def make(policy: PollPolicy = POLICY) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock(start=T0)
    return Scheduler(policy, clock), clock


# -- choose_interval ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "age", "expected"),
    [
        (1, None, 5),
        (3, 99_999, 5),
        (0, None, 40),
        (0, 0, 10),
        (0, -30, 10),  # activity stamped "in the future" by a skewed clock: recent
        (0, 1800, 10),
        (0, 1800.001, 20),
        (0, 7200, 20),
        (0, 7200.001, 40),
        (0, 10**7, 40),
    ],
)
def test_interval_tiers_at_their_boundaries(
    active: int, age: float | None, expected: float
) -> None:
    last = None if age is None else T0 - age
    assert choose_interval(POLICY, T0, active, last) == expected


def test_interval_is_never_above_the_maximum() -> None:
    slow = PollPolicy(recent_interval_s=90, warm_interval_s=200, idle_interval_s=600)
    for active, last in [(0, T0), (0, T0 - 3600), (0, None), (0, T0 - 10**6)]:
        assert choose_interval(slow, T0, active, last) == 60
    assert choose_interval(slow, T0, 1, T0) == 5


def test_fixed_interval_overrides_the_tiers() -> None:
    fixed = PollPolicy(fixed_interval_s=15)
    for active, last in [(2, T0), (0, T0), (0, T0 - 3600), (0, None)]:
        assert choose_interval(fixed, T0, active, last) == 15
    # An explicit --interval is the user's choice, beyond max_interval_s too.
    assert choose_interval(PollPolicy(fixed_interval_s=120), T0, 0, None) == 120


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        PollPolicy(active_interval_s=0)
    with pytest.raises(ValueError):
        PollPolicy(fixed_interval_s=-5)
    with pytest.raises(ValueError):
        PollPolicy(max_interval_s=float("inf"))


# -- cadence -----------------------------------------------------------------------------------


def test_no_drift_over_a_thousand_fast_cycles() -> None:
    sched, clock = make(PollPolicy(fixed_interval_s=5))
    polls = drive(sched, clock, {"a": OK, "b": OK}, until=T0 + 5000, duration=lambda k: 0.7)
    starts = [p.start for p in cycles(polls)]
    assert len(starts) == 1000
    assert starts == [T0 + 5 * k for k in range(1000)]
    assert sched.cycles == 1000
    assert sched.last_cycle_s == pytest.approx(0.7)
    assert sched.mean_cycle_s == pytest.approx(0.7)
    assert len(sched.cycle_durations) == 100  # bounded


def test_slow_cycles_delay_the_next_but_never_overlap_or_burst() -> None:
    sched, clock = make(PollPolicy(fixed_interval_s=5))
    polls = cycles(drive(sched, clock, {"a": OK}, until=T0 + 100, duration=lambda k: 7.0))
    for before, after in pairwise(polls):
        assert after.start >= before.end  # no overlap
        assert after.start == before.end  # a slow cycle delays the next to its end, no more
    assert len(polls) == 15  # 100 s / 7 s: nothing made up afterwards
    assert sched.overruns == len(polls)


def test_one_slow_cycle_re_anchors_instead_of_catching_up() -> None:
    sched, clock = make(PollPolicy(fixed_interval_s=5))
    polls = cycles(
        drive(sched, clock, {"a": OK}, T0 + 60, duration=lambda k: 12.0 if k == 2 else 0.5)
    )
    starts = [p.start - T0 for p in polls]
    # 0, 5, 10 (takes 12 s, ends at 22), then 22, 27, ... : no burst at 22 to make up 15 and 20.
    assert starts[:6] == [0, 5, 10, 22, 27, 32]
    gaps = [b - a for a, b in pairwise(starts)]
    assert min(gaps) == 5


def test_a_cycle_that_starts_late_is_not_followed_by_a_burst() -> None:
    sched, clock = make(PollPolicy(fixed_interval_s=10))
    assert poll_once(sched, clock, {"a": OK}) == ["a"]
    clock.advance(3600)  # the process was stopped (SIGSTOP, a suspended laptop)
    polls = cycles(drive(sched, clock, {"a": OK}, until=clock.time() + 30))
    starts = [p.start for p in polls]
    assert [b - a for a, b in pairwise(starts)] == [10, 10]


def test_wall_clock_stepped_back_does_not_stall_the_loop() -> None:
    sched, clock = make(PollPolicy(fixed_interval_s=10))
    assert poll_once(sched, clock, {"a": OK}) == ["a"]
    clock.step_wall(-3600)
    assert sched.seconds_until_next(clock.time()) == 0
    polls = cycles(drive(sched, clock, {"a": OK}, until=clock.time() + 25))
    assert [p.start - polls[0].start for p in polls] == [0, 10, 20]


def test_interval_tier_changes_as_activity_ages() -> None:
    sched, clock = make()
    sched.set_activity(0, T0)
    assert sched.interval == 10
    polls = cycles(drive(sched, clock, {"a": OK}, until=T0 + 1900))
    gaps = {round(b.start - a.start) for a, b in pairwise(polls)}
    assert gaps == {10, 20}
    assert sched.interval == 20


# -- job activity ------------------------------------------------------------------------------


def test_a_job_started_mid_idle_shortens_the_wait() -> None:
    sched, clock = make()
    assert poll_once(sched, clock, {"a": OK}) == ["a"]  # idle: the next cycle at T0 + 40
    assert sched.next_wake(clock.time()) == T0 + 40
    clock.advance(1.5)  # t = 2 after the cycle's start
    assert sched.set_activity(1, clock.time()) == 5
    assert sched.next_wake(clock.time()) == T0 + 5  # the last cycle's start + the new interval
    # Later than that already: due at once, and then every 5 s from there.
    sched, clock = make()
    assert poll_once(sched, clock, {"a": OK}) == ["a"]
    clock.advance(11.5)
    sched.set_activity(1, clock.time())
    assert sched.seconds_until_next(clock.time()) == 0
    polls = cycles(drive(sched, clock, {"a": OK}, until=clock.time() + 12))
    assert [p.start - polls[0].start for p in polls] == [0, 5, 10]
    assert polls[0].start == T0 + 12


def test_job_start_mid_wait_wakes_the_loop() -> None:
    sched, clock = make()
    wake = threading.Event()

    def job_started() -> None:  # what the loop does when the jobs file changes
        sched.set_activity(1, clock.time())
        wake.set()

    clock.call_at(T0 + 17, job_started)
    polls = cycles(drive(sched, clock, {"a": OK}, until=T0 + 30, wake=wake))
    # The wait that began after the idle cycle at 0 was for 40 s; the job cut it to 17.
    assert [p.start - T0 for p in polls] == [0, 17, 22, 27]


def test_a_job_finishing_does_not_lengthen_the_promised_wait() -> None:
    sched, clock = make()
    sched.set_activity(1, T0)
    assert poll_once(sched, clock, {"a": OK}) == ["a"]
    assert sched.next_wake(clock.time()) == T0 + 5
    assert sched.set_activity(0, clock.time()) == 10
    assert sched.next_wake(clock.time()) == T0 + 5
    polls = cycles(drive(sched, clock, {"a": OK}, until=T0 + 30))
    assert [p.start - T0 for p in polls] == [5, 15, 25]


# -- nodes -------------------------------------------------------------------------------------


def test_problem_nodes_are_re_polled_between_cycles() -> None:
    sched, clock = make()  # idle: 40 s cycles
    statuses = {"a": OK, "b": CRIT, "c": WARN, "d": UNKNOWN}
    polls = drive(sched, clock, statuses, until=T0 + 81)
    full = [p.start - T0 for p in polls if p.full]
    assert full == [0, 40, 80]
    assert all(p.nodes == ("a", "b", "c", "d") for p in polls if p.full)
    between = [(p.start - T0, p.nodes) for p in polls if not p.full]
    assert between == [
        (t, ("b", "c")) for t in (5, 10, 15, 20, 25, 30, 35, 45, 50, 55, 60, 65, 70, 75)
    ]


def test_node_that_turns_critical_is_re_polled_before_the_next_cycle() -> None:
    sched, _ = make()
    assert sched.due_nodes(T0, {"a": OK, "b": OK}) == ["a", "b"]
    sched.cycle_done(T0, T0 + 1, {"a": OK, "b": CRIT})
    assert sched.next_wake(T0 + 1) == T0 + 5
    assert sched.due_nodes(T0 + 5, {"a": OK, "b": CRIT}) == ["b"]
    sched.cycle_done(T0 + 5, T0 + 6, {"a": OK, "b": OK})
    assert sched.next_wake(T0 + 6) == T0 + 40


def test_no_extra_polls_when_the_cycle_is_already_as_fast() -> None:
    sched, clock = make()
    sched.set_activity(2, T0)  # 5 s cycles, the same as problem_interval_s
    polls = drive(sched, clock, {"a": CRIT, "b": OK}, until=T0 + 30)
    assert all(p.full for p in polls)
    assert [p.start - T0 for p in polls] == [0, 5, 10, 15, 20, 25]


def test_a_node_added_between_cycles_is_polled_at_once() -> None:
    sched, clock = make()
    assert poll_once(sched, clock, {"a": OK}) == ["a"]
    assert sched.due_nodes(T0 + 2, {"a": OK, "new": OK}) == ["new"]
    sched.cycle_done(T0 + 2, T0 + 3)
    assert sched.due_nodes(T0 + 4, {"a": OK, "new": OK}) == []


def test_rounds_never_overlap() -> None:
    sched, _ = make()
    assert sched.due_nodes(T0, {"a": OK, "b": CRIT}) == ["a", "b"]
    assert sched.in_flight
    assert sched.due_nodes(T0 + 100, {"a": OK, "b": CRIT}) == []
    sched.cycle_done(T0, T0 + 100)
    assert not sched.in_flight
    assert sched.due_nodes(T0 + 100, {"a": OK, "b": CRIT}) == ["a", "b"]


def test_no_nodes_does_not_spin() -> None:
    sched, clock = make()
    assert sched.due_nodes(T0, {}) == []
    assert sched.seconds_until_next(T0) == 40
    assert drive(sched, clock, {}, until=T0 + 200) == []
