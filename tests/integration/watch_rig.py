"""``watch``'s loop run in a thread against the sshd rig, for the integration tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ugro_health.config import Config
from ugro_health.engine.breaker import BreakerPolicy
from ugro_health.engine.collect import Transports
from ugro_health.engine.monitor import CycleResult, Monitor
from ugro_health.engine.scheduler import PollPolicy
from ugro_health.store.state import StateStore


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def running_monitor(
    config: Config, state_dir: Path, breakers: BreakerPolicy
) -> Iterator[tuple[Monitor, list[CycleResult]]]:
    """A persistent-session ``Monitor`` polling every second in a thread, and the results of
    its cycles as they come; stopped, its thread joined and its sessions closed on exit."""
    monitor = Monitor(
        config,
        config.nodes,
        StateStore(state_dir),
        Transports(config, persistent=True),
        PollPolicy(fixed_interval_s=1.0, problem_interval_s=1.0),
        breakers,
    )
    cycles: list[CycleResult] = []
    thread = threading.Thread(target=monitor.run, kwargs={"on_cycle": cycles.append, "tick_s": 0.1})
    thread.start()
    try:
        yield monitor, cycles
    finally:
        monitor.stop()
        thread.join(timeout=30)
        monitor.transports.close()
    assert not thread.is_alive()
