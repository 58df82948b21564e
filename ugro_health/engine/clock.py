"""Time as a seam: the ``Clock`` the watch loop, breaker and scheduler read, and a fake for tests.

Imports only the standard library. ``SystemClock`` is the real thing; ``FakeClock`` follows
GCM's habit: ``sleep()`` and ``wait()`` advance virtual time at once and record how long was
asked for, so a test can drive a thousand cycles of the loop without waiting for any of them.
Callbacks scheduled with ``FakeClock.call_at`` run when virtual time reaches them (a job that
starts mid-wait, a SIGTERM that sets the stop event).
"""

from __future__ import annotations

import heapq
import itertools
import time as _time
from collections.abc import Callable
from typing import Protocol


class Event(Protocol):
    """What ``Clock.wait`` needs of an event; ``threading.Event`` is one."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Clock(Protocol):
    """Wall time (epoch seconds), monotonic time, and the two ways to pass time."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def wait(self, event: Event, timeout: float) -> bool:
        """Block until ``event`` is set or ``timeout`` seconds pass; True when it was set."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()

    def sleep(self, seconds: float) -> None:
        _time.sleep(seconds)

    def wait(self, event: Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))


class FakeClock:
    """Virtual time: ``sleep``/``wait``/``advance`` move it forward instantly.

    Wall and monotonic time advance together; ``step_wall`` moves wall time alone, as NTP
    or an operator would. ``sleeps`` records every ``sleep`` and ``wait`` duration actually
    spent (a wait cut short by its event records the part that passed).
    """

    def __init__(self, start: float = 1_700_000_000.0, monotonic_start: float = 1_000.0) -> None:
        self._wall = float(start)
        self._mono = float(monotonic_start)
        self.sleeps: list[float] = []
        self._calls: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        self.advance(seconds)
        self.sleeps.append(seconds)

    def wait(self, event: Event, timeout: float) -> bool:
        timeout = max(0.0, timeout)
        start = self._mono
        end = start + timeout
        while not event.is_set() and self._calls and self._calls[0][0] <= end:
            self._run_next()
        if not event.is_set():
            self._move(end - self._mono)
        self.sleeps.append(self._mono - start)
        return event.is_set()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running the callbacks that fall due on the way."""
        if seconds < 0:
            raise ValueError("time only moves forward; use step_wall for a wall-clock step")
        end = self._mono + seconds
        while self._calls and self._calls[0][0] <= end:
            self._run_next()
        self._move(end - self._mono)

    def step_wall(self, seconds: float) -> None:
        """Step wall time alone (either way), as a clock correction would."""
        self._wall += seconds

    def call_at(self, when: float, fn: Callable[[], object]) -> None:
        """Run ``fn`` when time reaches ``when`` (wall time as it reads now) while passing."""
        heapq.heappush(self._calls, (when - self._wall + self._mono, next(self._seq), fn))

    def _run_next(self) -> None:
        when, _, fn = heapq.heappop(self._calls)
        self._move(max(0.0, when - self._mono))
        fn()

    def _move(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds
