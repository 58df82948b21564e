"""The per-node circuit breaker: lifecycle, backoff, flapping, persistence; on a fake clock."""

from __future__ import annotations

import json
import threading

import pytest

from ugro_health.engine.breaker import (
    Breaker,
    BreakerBoard,
    BreakerPolicy,
    BreakerState,
    Transition,
)
from ugro_health.engine.clock import Clock, FakeClock, SystemClock
from ugro_health.model import Severity

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
POLICY = BreakerPolicy()


def make(policy: BreakerPolicy = POLICY) -> tuple[Breaker, FakeClock]:
    clock = FakeClock(start=1_000_000.0)
    return Breaker(policy, clock, node="gpu1"), clock


def open_breaker(breaker: Breaker, now: float) -> Transition:
    assert breaker.record_failure(now, "timeout") is None
    assert breaker.record_failure(now, "timeout") is None
    transition = breaker.record_failure(now, "refused: connection refused")
    assert transition is not None
    return transition


def fail_trial(breaker: Breaker) -> Transition:
    assert breaker.next_try_at is not None
    at = breaker.next_try_at
    assert breaker.allow(at)
    transition = breaker.record_failure(at, "timeout")
    assert transition is not None
    return transition


def test_three_failures_isolate_the_node() -> None:
    breaker, clock = make()
    now = clock.time()
    assert breaker.allow(now) and breaker.state is CLOSED
    assert breaker.record_failure(now, "timeout") is None
    assert breaker.record_failure(now + 5, "timeout") is None
    assert breaker.consecutive_failures == 2 and breaker.state is CLOSED
    transition = breaker.record_failure(now + 10, "refused: connection refused")
    assert transition == Transition(
        "gpu1", CLOSED, OPEN, now + 10, transition.reason if transition else ""
    )
    assert transition is not None
    assert transition.reason.startswith(
        "node isolated after 3 consecutive failures: refused: connection refused"
    )
    assert transition.kind == "isolated"
    assert transition.to_alert().severity is Severity.CRITICAL
    assert transition.to_alert().code == "node_isolated"
    assert breaker.state is OPEN
    assert breaker.opened_at == now + 10
    assert breaker.next_try_at == now + 10 + 30
    assert breaker.openings == 1
    assert breaker.last_error == "refused: connection refused"


def test_a_success_between_failures_resets_the_count() -> None:
    breaker, clock = make()
    now = clock.time()
    breaker.record_failure(now, "timeout")
    breaker.record_failure(now, "timeout")
    assert breaker.record_success(now) is None
    assert breaker.consecutive_failures == 0
    breaker.record_failure(now, "timeout")
    breaker.record_failure(now, "timeout")
    assert breaker.state is CLOSED


def test_open_refuses_until_exactly_next_try_at_then_allows_one_trial() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    assert breaker.next_try_at is not None
    due = breaker.next_try_at
    assert not breaker.allow(due - 0.001)
    assert breaker.seconds_until_retry(due - 10) == pytest.approx(10)
    assert breaker.state is OPEN
    assert breaker.allow(due)
    assert breaker.state is HALF
    # The trial is in flight: nobody else gets through, however long we ask.
    assert not breaker.allow(due)
    assert not breaker.allow(due + 1)
    assert breaker.seconds_until_retry(due + 1) > 0


def test_successful_trial_closes_with_a_recovered_transition() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    assert breaker.next_try_at is not None
    due = breaker.next_try_at
    assert breaker.allow(due)
    transition = breaker.record_success(due + 0.5)
    assert transition is not None
    assert (transition.old, transition.new, transition.at) == (HALF, CLOSED, due + 0.5)
    assert transition.kind == "recovered"
    assert transition.reason.startswith("node recovered")
    assert transition.to_alert().severity is Severity.INFO
    assert breaker.state is CLOSED and breaker.consecutive_failures == 0
    assert breaker.opened_at is None and breaker.next_try_at is None
    assert breaker.allow(due + 1)


def test_failed_trial_reopens_with_a_doubled_delay() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    transition = fail_trial(breaker)
    assert (transition.old, transition.new, transition.kind) == (HALF, OPEN, "reopened")
    assert breaker.openings == 2
    assert breaker.next_try_at is not None and breaker.opened_at is not None
    assert breaker.next_try_at - breaker.opened_at == 60
    fail_trial(breaker)
    assert breaker.next_try_at - breaker.opened_at == 120


def test_delay_is_capped_at_reset_max() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    delays = []
    for _ in range(40):
        fail_trial(breaker)
        assert breaker.next_try_at is not None and breaker.opened_at is not None
        delays.append(breaker.next_try_at - breaker.opened_at)
    assert delays[:4] == [60, 120, 240, 300]
    assert max(delays) == 300 and delays[-1] == 300
    assert POLICY.reset_delay(10_000) == 300  # no overflow for a node dead for weeks


def test_default_policy_gets_a_recovered_node_back_within_five_minutes() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    for _ in range(10):
        fail_trial(breaker)
    # The node comes back right after a failed trial: the worst case.
    assert breaker.opened_at is not None
    back_at = breaker.opened_at + 0.001
    t = back_at
    while not breaker.allow(t):
        t += 1
    assert t - back_at <= 300
    assert breaker.record_success(t) is not None


def test_failure_while_open_keeps_the_wait() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    due = breaker.next_try_at
    assert breaker.record_failure(clock.time() + 1, "late answer: timeout") is None
    assert breaker.next_try_at == due and breaker.openings == 1
    assert breaker.last_error == "late answer: timeout"


def test_success_while_open_closes() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    transition = breaker.record_success(clock.time() + 1)
    assert transition is not None and (transition.old, transition.new) == (OPEN, CLOSED)


def test_lost_trial_is_given_up_after_trial_timeout() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    assert breaker.next_try_at is not None
    due = breaker.next_try_at
    assert breaker.allow(due)
    assert not breaker.allow(due + POLICY.trial_timeout_s - 1)
    assert breaker.allow(due + POLICY.trial_timeout_s)


def test_flapping_node_keeps_its_backoff_until_stable() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    fail_trial(breaker)
    assert breaker.next_try_at is not None
    recovered_at = breaker.next_try_at
    assert breaker.allow(recovered_at)
    breaker.record_success(recovered_at)
    assert breaker.openings == 2
    # Fails again a minute later: the third opening waits 120 s, not 30 s.
    breaker.record_success(recovered_at + 30)
    open_breaker(breaker, recovered_at + 60)
    assert breaker.openings == 3
    assert breaker.next_try_at == recovered_at + 60 + 120
    # This time it stays up for stable_s: the backoff is forgotten.
    back = breaker.next_try_at
    assert breaker.allow(back)
    breaker.record_success(back)
    breaker.record_success(back + POLICY.stable_s - 1)
    assert breaker.openings == 3
    breaker.record_success(back + POLICY.stable_s)
    assert breaker.openings == 0
    open_breaker(breaker, back + POLICY.stable_s + 5)
    assert breaker.next_try_at == back + POLICY.stable_s + 5 + 30


def test_clock_stepped_back_past_the_opening_allows_a_trial() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    assert breaker.allow(clock.time() - 3600)


def test_default_clock_is_used_when_now_is_omitted() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure(reason="timeout")
    assert breaker.state is OPEN
    assert not breaker.allow()
    clock.sleep(30)
    assert breaker.allow()


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(failure_threshold=0)
    with pytest.raises(ValueError):
        BreakerPolicy(reset_base_s=600, reset_max_s=300)
    with pytest.raises(ValueError):
        BreakerPolicy(backoff=0.5)


# -- persistence ------------------------------------------------------------------------------


def test_round_trip_of_an_open_breaker_through_json() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    fail_trial(breaker)
    assert breaker.opened_at is not None
    clock.advance(breaker.opened_at + 1 - clock.time())  # the restart, a second later
    data = json.loads(json.dumps(breaker.to_json()))
    assert set(data) >= {"state", "failures", "opened_at", "next_try_at", "openings", "last_error"}
    assert data["state"] == "open"
    restored = Breaker.from_json(data, POLICY, clock, "gpu1")
    assert restored.to_json() == breaker.to_json()
    assert restored.state is OPEN
    assert not restored.allow(clock.time())
    assert restored.next_try_at is not None
    assert restored.allow(restored.next_try_at)


def test_round_trip_keeps_failure_count_and_flap_memory() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    assert breaker.next_try_at is not None
    due = breaker.next_try_at
    assert breaker.allow(due)
    breaker.record_success(due)
    breaker.record_failure(due + 5, "timeout")
    clock.advance(due + 6 - clock.time())
    restored = Breaker.from_json(breaker.to_json(), POLICY, clock)
    assert restored.state is CLOSED
    assert restored.consecutive_failures == 1 and restored.openings == 1
    assert restored.to_json() == breaker.to_json()


def test_half_open_comes_back_open_and_due() -> None:
    breaker, clock = make()
    open_breaker(breaker, clock.time())
    assert breaker.next_try_at is not None
    clock.advance(breaker.next_try_at - clock.time())
    assert breaker.allow(clock.time())
    restored = Breaker.from_json(breaker.to_json(), POLICY, clock)
    assert restored.state is OPEN
    assert restored.allow(clock.time())


@pytest.mark.parametrize(
    "data",
    [
        None,
        "open",
        [],
        {},
        {"state": "bogus", "failures": "x", "openings": -4, "last_error": 7},
        {"state": "open"},
        {"state": "open", "next_try_at": "soon"},
        {"state": "open", "next_try_at": float("nan")},
        {"state": "open", "next_try_at": True},
        {"state": 3, "failures": None, "opened_at": {}, "next_try_at": []},
    ],
)
def test_garbage_falls_back_to_closed(data: object) -> None:
    clock = FakeClock(start=1_000_000.0)
    breaker = Breaker.from_json(data, POLICY, clock, "gpu1")
    assert breaker.state is CLOSED
    assert breaker.allow(clock.time())
    assert isinstance(breaker.consecutive_failures, int) and breaker.consecutive_failures >= 0
    assert breaker.openings >= 0
    json.dumps(breaker.to_json())


def test_an_absurd_wait_is_cut_to_the_policy_maximum() -> None:
    clock = FakeClock(start=1_000_000.0)
    now = clock.time()
    data = {"state": "open", "opened_at": now, "next_try_at": now + 10**9, "openings": 2}
    breaker = Breaker.from_json(data, POLICY, clock)
    assert breaker.state is OPEN
    assert breaker.seconds_until_retry(now) == 300
    # Opened in the "future" (wall clock stepped back since): still at most reset_max_s.
    data = {"state": "open", "opened_at": now + 10**6, "next_try_at": now + 10**6 + 30}
    breaker = Breaker.from_json(data, POLICY, clock)
    assert breaker.openings == 1
    assert breaker.seconds_until_retry(now) <= 300


def test_missing_opened_at_is_inferred() -> None:
    clock = FakeClock(start=1_000_000.0)
    data = {"state": "open", "next_try_at": clock.time() + 10, "openings": 1}
    breaker = Breaker.from_json(data, POLICY, clock)
    assert breaker.opened_at == clock.time() + 10 - 30
    assert breaker.seconds_until_retry(clock.time()) == 10


def test_long_error_is_truncated() -> None:
    breaker, clock = make()
    breaker.record_failure(clock.time(), "x" * 10_000)
    assert breaker.last_error is not None and len(breaker.last_error) <= 500


# -- board -------------------------------------------------------------------------------------


def test_board_splits_allowed_and_skipped_with_retry_in() -> None:
    clock = FakeClock(start=1_000_000.0)
    board = BreakerBoard(POLICY, clock)
    now = clock.time()
    for _ in range(3):
        board.record_failure("gpu2", now, "timeout")
    allowed, skipped = board.allow_nodes(["gpu1", "gpu2", "gpu3"], now + 10)
    assert allowed == ["gpu1", "gpu3"]
    assert skipped == {"gpu2": 20}
    allowed, skipped = board.allow_nodes(["gpu1", "gpu2", "gpu3"], now + 30)
    assert allowed == ["gpu1", "gpu2", "gpu3"] and skipped == {}
    assert board["gpu2"].state is HALF


def test_board_round_trip_and_retain() -> None:
    clock = FakeClock(start=1_000_000.0)
    board = BreakerBoard(POLICY, clock)
    for _ in range(3):
        board.record_failure("gpu2", None, "timeout")
    board.record_success("gpu1")
    data = json.loads(json.dumps(board.to_json()))
    restored = BreakerBoard.from_json({**data, 7: {}, "": {}}, POLICY, clock)
    assert set(restored) == {"gpu1", "gpu2"}
    assert restored["gpu2"].state is OPEN and restored["gpu2"].node == "gpu2"
    restored.retain(["gpu1"])
    assert list(restored) == ["gpu1"] and len(restored) == 1
    assert BreakerBoard.from_json("garbage", POLICY, clock).to_json() == {}


def test_fake_clock_wait_returns_when_a_callback_sets_the_event() -> None:
    clock = FakeClock(start=100.0)
    stop = threading.Event()
    clock.call_at(130.0, stop.set)
    assert clock.wait(stop, 60) is True
    assert clock.time() == 130.0 and clock.sleeps == [30.0]
    assert clock.wait(stop, 60) is True and clock.time() == 130.0
    with pytest.raises(ValueError):
        clock.sleep(-1)


def test_both_clocks_satisfy_the_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), FakeClock()]
    done = threading.Event()
    done.set()
    for clock in clocks:
        before = clock.monotonic()
        assert clock.wait(done, 5) is True  # already set: returns at once
        assert clock.monotonic() - before < 1
        assert clock.time() > 1_000_000_000
