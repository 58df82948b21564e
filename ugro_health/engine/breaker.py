"""Per-node circuit breaker: stop polling a node that keeps failing, retry it with backoff.

Imports ``engine.clock`` and ``model`` only; no I/O. A pure state machine that ``watch`` drives:
ask ``allow()`` before polling a node, then report the outcome with ``record_success()`` or
``record_failure()``. A failure is a poll that yielded no sample (unreachable, timeout, probe
crash), not a node that answered with bad health. Changes of state that a person should hear
about come back as ``Transition`` values for the caller to turn into alerts (``to_alert``).

Times are wall-clock epoch seconds (``Clock.time``) so that ``to_json`` / ``from_json`` carry an
open breaker across a restart of ``watch`` (state.json, one "breaker" entry per node).

Backoff and flapping: each opening waits ``reset_base_s * backoff ** (openings - 1)``, capped at
``reset_max_s`` (defaults 30, 60, 120, 240, 300, 300 ... s: a node that comes back is polled
again within 5 minutes). A recovery does not forget the openings at once: a node that flaps
(recovers, fails again a minute later) keeps its longer delay. Only once it has stayed closed
for ``stable_s`` does the next success reset ``openings`` to 0. ``reset()`` forgets everything
at once (``ugro-health breaker reset NODE``: an operator who fixed the node says so).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ugro_health.engine.clock import Clock
from ugro_health.model import Alert, Severity, human_duration

MAX_ERROR_CHARS = 500  # last_error is for a person; a probe's traceback is not kept whole


class BreakerState(enum.Enum):
    CLOSED = "closed"  # polled normally
    OPEN = "open"  # isolated: not polled until next_try_at
    HALF_OPEN = "half_open"  # one trial poll in flight


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 3  # consecutive failures that open the breaker
    reset_base_s: float = 30.0  # wait after the first opening
    reset_max_s: float = 300.0  # the longest wait, whatever the number of openings
    backoff: float = 2.0  # each further opening multiplies the wait by this
    stable_s: float = 600.0  # closed this long: the next success forgets past openings
    trial_timeout_s: float = 120.0  # a trial never reported back is given up after this

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not 0 < self.reset_base_s <= self.reset_max_s:
            raise ValueError("need 0 < reset_base_s <= reset_max_s")
        if self.backoff < 1:
            raise ValueError("backoff must be at least 1")
        if self.stable_s < 0 or self.trial_timeout_s <= 0:
            raise ValueError("stable_s must be >= 0 and trial_timeout_s > 0")

    def reset_delay(self, openings: int) -> float:
        """Seconds an open breaker waits before its trial, after ``openings`` openings."""
        exponent = max(0, openings - 1)
        # Compare in log space: backoff ** exponent overflows for a long-dead node.
        if exponent * math.log(self.backoff) >= math.log(self.reset_max_s / self.reset_base_s):
            return self.reset_max_s
        return min(self.reset_max_s, self.reset_base_s * self.backoff**exponent)


@dataclass(frozen=True, slots=True)
class Transition:
    node: str
    old: BreakerState
    new: BreakerState
    at: float  # epoch seconds
    reason: str

    @property
    def kind(self) -> str:
        """One of isolated, recovered, reopened: the three changes worth an alert."""
        if self.new is BreakerState.CLOSED:
            return "recovered"
        if self.old is BreakerState.CLOSED:
            return "isolated"
        return "reopened"

    def to_alert(self) -> Alert:
        """The alert for this change: CRITICAL when isolated or reopened, INFO when recovered."""
        severity = Severity.INFO if self.kind == "recovered" else Severity.CRITICAL
        return Alert(severity, f"node_{self.kind}", self.reason, self.new.value)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


class Breaker:
    """One node's breaker. Every ``now`` defaults to ``clock.time()``."""

    def __init__(self, policy: BreakerPolicy, clock: Clock, node: str = "") -> None:
        self.policy = policy
        self.clock = clock
        self.node = node
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._openings = 0
        self._opened_at: float | None = None
        self._next_try_at: float | None = None
        self._closed_at: float | None = None  # last recovery; None: never opened since reset
        self._trial_at: float | None = None
        self._last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def opened_at(self) -> float | None:
        return self._opened_at

    @property
    def next_try_at(self) -> float | None:
        return self._next_try_at

    @property
    def openings(self) -> int:
        return self._openings

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def closed_at(self) -> float | None:
        """The last recovery, while past openings still count (None: none to remember)."""
        return self._closed_at

    def backoff_s(self) -> float | None:
        """The wait a new isolation would get when it is longer than the first one (a recent
        recovery is remembered); None while the next isolation would wait the base time."""
        if self._state is not BreakerState.CLOSED or self._openings == 0:
            return None
        return self.policy.reset_delay(self._openings + 1)

    def reset(self) -> None:
        """Back to a new breaker: CLOSED, no failures, no openings remembered."""
        self._state = BreakerState.CLOSED
        self._failures = self._openings = 0
        self._opened_at = self._next_try_at = self._closed_at = self._trial_at = None
        self._last_error = None

    def seconds_until_retry(self, now: float | None = None) -> float:
        """0 when a poll would be allowed now; else how long until the next trial."""
        now = self.clock.time() if now is None else now
        if self._state is BreakerState.CLOSED:
            return 0.0
        if self._state is BreakerState.HALF_OPEN:
            assert self._trial_at is not None
            return max(0.0, self._trial_at + self.policy.trial_timeout_s - now)
        assert self._next_try_at is not None and self._opened_at is not None
        if now < self._opened_at:  # the wall clock stepped back past the opening
            return 0.0
        return max(0.0, self._next_try_at - now)

    def allow(self, now: float | None = None) -> bool:
        """May the node be polled now? An OPEN breaker that is due lets exactly one trial by."""
        now = self.clock.time() if now is None else now
        if self._state is BreakerState.CLOSED:
            return True
        if self.seconds_until_retry(now) > 0:
            return False
        # OPEN and due, or HALF_OPEN whose trial was never reported: (another) single trial.
        # The state goes last: the dashboard reads breakers from another thread.
        self._trial_at = now
        self._state = BreakerState.HALF_OPEN
        return True

    def record_success(self, now: float | None = None) -> Transition | None:
        now = self.clock.time() if now is None else now
        self._failures = 0
        if self._state is BreakerState.CLOSED:
            if self._closed_at is not None and now - self._closed_at >= self.policy.stable_s:
                self._openings = 0
                self._closed_at = None
            return None
        # HALF_OPEN (the trial) or OPEN (a poll made anyway): the node answered, so it is back.
        old = self._state
        self._state = BreakerState.CLOSED
        self._closed_at = now
        self._opened_at = self._next_try_at = self._trial_at = None
        why = "node recovered: answering again, polled normally"
        return Transition(self.node, old, BreakerState.CLOSED, now, why)

    def record_failure(self, now: float | None = None, reason: str = "") -> Transition | None:
        now = self.clock.time() if now is None else now
        self._failures += 1
        reason = reason or "unknown error"
        self._last_error = reason[:MAX_ERROR_CHARS]
        if self._state is BreakerState.CLOSED:
            if self._failures < self.policy.failure_threshold:
                return None
            delay = self._open(now)
            why = (
                f"node isolated after {self._failures} consecutive failures: {reason}; "
                f"retry in {human_duration(delay)}"
            )
            return Transition(self.node, BreakerState.CLOSED, BreakerState.OPEN, now, why)
        if self._state is BreakerState.HALF_OPEN:
            delay = self._open(now)
            why = f"trial poll failed: {reason}; retry in {human_duration(delay)}"
            return Transition(self.node, BreakerState.HALF_OPEN, BreakerState.OPEN, now, why)
        return None  # OPEN already (a poll that was in flight when it opened): keep the wait

    def _open(self, now: float) -> float:
        self._openings += 1
        delay = self.policy.reset_delay(self._openings)
        # In this order: the dashboard's thread reads a breaker while it changes.
        self._opened_at = now
        self._next_try_at = now + delay
        self._state = BreakerState.OPEN
        self._trial_at = self._closed_at = None
        return delay

    # -- persistence ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "state": self._state.value,
            "failures": self._failures,
            "opened_at": self._opened_at,
            "next_try_at": self._next_try_at,
            "openings": self._openings,
            "last_error": self._last_error,
            "closed_at": self._closed_at,
        }

    @classmethod
    def from_json(cls, data: Any, policy: BreakerPolicy, clock: Clock, node: str = "") -> Breaker:
        """Rebuild a breaker from ``to_json`` output; anything unusable falls back to CLOSED.

        A HALF_OPEN breaker comes back OPEN and due (its trial died with the old process). A
        wait longer than the policy allows now (garbage, a changed policy, a clock stepped back)
        is cut to ``reset_max_s`` from now.
        """
        breaker = cls(policy, clock, node)
        if not isinstance(data, Mapping):
            return breaker
        breaker._failures = _count(data.get("failures"))
        breaker._openings = _count(data.get("openings"))
        error = data.get("last_error")
        breaker._last_error = error[:MAX_ERROR_CHARS] if isinstance(error, str) else None
        now = clock.time()
        state = data.get("state")
        next_try = _finite(data.get("next_try_at"))
        if state not in ("open", "half_open") or next_try is None:
            if breaker._openings:  # count the stable period from the recovery, or from now
                closed = _finite(data.get("closed_at"))
                breaker._closed_at = now if closed is None else min(closed, now)
            return breaker
        breaker._openings = max(1, breaker._openings)
        opened = _finite(data.get("opened_at"))
        if opened is None or opened > next_try:
            opened = next_try - policy.reset_delay(breaker._openings)
        next_try = min(next_try, opened + policy.reset_max_s, now + policy.reset_max_s)
        breaker._state = BreakerState.OPEN
        breaker._opened_at = min(opened, now)
        breaker._next_try_at = next_try
        return breaker


class BreakerBoard(Mapping[str, Breaker]):
    """Node name -> Breaker, created on first use; the unit ``watch`` persists."""

    def __init__(self, policy: BreakerPolicy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self._breakers: dict[str, Breaker] = {}

    def __getitem__(self, node: str) -> Breaker:
        return self._breakers[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._breakers)

    def __len__(self) -> int:
        return len(self._breakers)

    def get_or_create(self, node: str) -> Breaker:
        breaker = self._breakers.get(node)
        if breaker is None:
            breaker = self._breakers[node] = Breaker(self.policy, self.clock, node)
        return breaker

    def allow_nodes(
        self, names: Iterable[str], now: float | None = None
    ) -> tuple[list[str], dict[str, float]]:
        """Split ``names`` into those to poll now and those skipped, with seconds to retry."""
        now = self.clock.time() if now is None else now
        allowed: list[str] = []
        skipped: dict[str, float] = {}
        for name in names:
            breaker = self.get_or_create(name)
            if breaker.allow(now):
                allowed.append(name)
            else:
                skipped[name] = breaker.seconds_until_retry(now)
        return allowed, skipped

    def record_success(self, node: str, now: float | None = None) -> Transition | None:
        return self.get_or_create(node).record_success(now)

    def record_failure(
        self, node: str, now: float | None = None, reason: str = ""
    ) -> Transition | None:
        return self.get_or_create(node).record_failure(now, reason)

    def reset(self, node: str) -> None:
        self.get_or_create(node).reset()

    def retain(self, names: Iterable[str]) -> None:
        """Forget breakers of nodes no longer monitored."""
        keep = set(names)
        self._breakers = {n: b for n, b in self._breakers.items() if n in keep}

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {name: breaker.to_json() for name, breaker in self._breakers.items()}

    @classmethod
    def from_json(cls, data: Any, policy: BreakerPolicy, clock: Clock) -> BreakerBoard:
        """Rebuild from ``{node: breaker entry}``; entries that are not usable are dropped."""
        board = cls(policy, clock)
        if isinstance(data, Mapping):
            for name, entry in data.items():
                if isinstance(name, str) and name:
                    board._breakers[name] = Breaker.from_json(entry, policy, clock, name)
        return board


def describe_saved(data: Any, policy: BreakerPolicy, now: float) -> str | None:
    """One line on a breaker entry read from the store, true however old it is: what state it
    was left in, how long ago, and whether its trial is still to come or overdue (no ``watch``
    ran it). None for a closed breaker with nothing remembered."""
    if not isinstance(data, Mapping):
        return None
    state, openings = data.get("state"), _count(data.get("openings"))
    opened, next_try = _finite(data.get("opened_at")), _finite(data.get("next_try_at"))
    if state in ("open", "half_open") and next_try is not None:
        since = "" if opened is None else f" {human_duration(now - opened)} ago"
        due = (
            f"trial in {human_duration(next_try - now)}"
            if next_try > now
            else f"trial overdue by {human_duration(now - next_try)} (is watch running?)"
        )
        error = data.get("last_error")
        why = f": {error}" if isinstance(error, str) and error else ""
        return f"breaker open: isolated{since}, {due}{why}"
    if openings:
        closed = _finite(data.get("closed_at"))
        when = "" if closed is None else f" {human_duration(now - closed)} ago"
        return (
            f"breaker closed{when} after {openings} opening(s): a new isolation would wait "
            f"{human_duration(policy.reset_delay(openings + 1))} until it has been stable "
            f"{human_duration(policy.stable_s)}"
        )
    return None
