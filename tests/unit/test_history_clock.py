"""Retention under wall-clock steps (issue 11, fault 5): a step never deletes history.

The suite's ``FakeClock`` gives wall time (``time``) and real elapsed time (``monotonic``);
``step_wall`` moves wall time alone, as NTP or an operator would.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from cli_helpers import spawn_cli

from ugro_health.config import Config, NodeConfig
from ugro_health.engine.clock import FakeClock
from ugro_health.engine.collect import Transports
from ugro_health.engine.monitor import Monitor
from ugro_health.engine.scheduler import PollPolicy
from ugro_health.store import HistoryStore, StateStore
from ugro_health.store.history import SEGMENT_S, segment_name

HOUR = 3600.0
T0 = 1_750_000_000.0 - (1_750_000_000.0 % SEGMENT_S)


def store_on(path: Path, clock: FakeClock, **kw: float) -> HistoryStore:
    return HistoryStore(path, clock=clock.time, elapsed=lambda: ("boot", clock.monotonic()), **kw)


def record(clock: FakeClock, node: str = "n0") -> dict:
    return {"t": clock.time(), "node": node, "status": "ok", "reachable": True, "score": 90}


def segments(store: HistoryStore) -> list[str]:
    return sorted(p.name for p in store.directory.glob("*.jsonl"))


def fill_hours(store: HistoryStore, clock: FakeClock, hours: int) -> list[str]:
    """A poll every 10 minutes for ``hours``; returns the segments that hold them."""
    for _ in range(hours * 6):
        store.append([record(clock)])
        clock.advance(600)
    return segments(store)


def test_a_brief_forward_step_deletes_nothing(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    store = store_on(tmp_path, clock, retention_s=24 * HOUR)
    before = fill_hours(store, clock, 20)
    assert len(before) == 20
    clock.step_wall(30 * HOUR)  # NTP gone wrong for a few seconds, watch polling every 5 s
    for _ in range(3):
        store.append([record(clock)])
        clock.advance(5)
    future = segment_name(clock.time())
    clock.step_wall(-30 * HOUR)
    store.append([record(clock)])
    now = segment_name(clock.time())
    assert set(before) | {future, now} == set(segments(store))


def test_a_future_dated_segment_is_neither_lost_nor_kept_forever(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    store = store_on(tmp_path, clock, retention_s=24 * HOUR)
    fill_hours(store, clock, 2)
    clock.step_wall(30 * HOUR)
    store.append([record(clock)])
    future = segment_name(clock.time())
    clock.step_wall(-30 * HOUR)
    fill_hours(store, clock, 30)  # the real time reaches it: still kept, it is in the window
    assert future in segments(store)
    fill_hours(store, clock, 26)  # its hour is now older than the retention: dropped
    assert future not in segments(store)
    assert len(segments(store)) in (24, 25)  # and the store holds the last 24 hours, as ever


def test_age_retention_still_follows_real_time(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    store = store_on(tmp_path, clock, retention_s=6 * HOUR)
    assert len(fill_hours(store, clock, 10)) in (6, 7)


def test_a_lasting_forward_correction_is_caught_up_without_a_jump(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    store = store_on(tmp_path, clock, retention_s=6 * HOUR)
    before = fill_hours(store, clock, 6)
    clock.step_wall(10 * HOUR)  # the clock was 10 h slow, and NTP fixed it for good
    store.append([record(clock)])
    assert set(before) <= set(segments(store))  # nothing dropped at the step
    fill_hours(store, clock, 1)
    # caught up at most twice as fast as real time: 1 h later, at most 2 h more are gone
    assert len(set(before) & set(segments(store))) >= len(before) - 3
    fill_hours(store, clock, 16)
    assert len(segments(store)) in (6, 7)  # caught up: the last 6 hours, by the new clock


def test_the_segment_being_written_is_never_dropped_by_the_size_cap(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    store = store_on(tmp_path, clock, max_bytes=1)
    store.append([record(clock)])
    clock.step_wall(30 * HOUR)
    store.append([record(clock)])  # a future-dated segment, the newest name in the store
    clock.step_wall(-30 * HOUR)
    clock.advance(HOUR)
    store.append([record(clock)])
    assert segment_name(clock.time()) in segments(store)


def test_the_real_boot_clock_is_the_default(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    store.append([{"t": time.time(), "node": "a", "status": "ok"}])
    assert (store.directory / ".retention").is_file()


def test_watch_across_a_forward_step_keeps_its_history(tmp_path: Path) -> None:
    """The real watch loop (a local node polled in-process) on the fake clock."""
    clock = FakeClock(start=time.time() - 20 * HOUR)
    seeded = fill_hours(store_on(tmp_path, clock), clock, 20)  # 20 h of history, 10-min polls
    node = NodeConfig(name="here", host="localhost", transport="local")
    config = Config(nodes=(node,), history_retention_h=24)
    monitor = Monitor(
        config,
        config.nodes,
        StateStore(tmp_path, clock=clock.time),
        Transports(config),
        PollPolicy(fixed_interval_s=5.0),
        clock=clock,
    )
    polled = []

    def cycle() -> None:
        result = monitor.run_once()
        assert result is not None and result.store_problems == []
        polled.append(segment_name(result.at))
        clock.advance(5)

    cycle()
    clock.step_wall(30 * HOUR)
    cycle()
    cycle()
    clock.step_wall(-30 * HOUR)
    cycle()
    assert set(seeded) | set(polled) == set(segments(HistoryStore(tmp_path)))


# A real `watch` whose wall clock reads real time plus the offset in a file the test writes.
FAKED_WATCH = """
import sys, time
real, offset_file = time.time, sys.argv[1]
time.time = lambda: real() + float(open(offset_file).read() or 0)
from ugro_health.cli.app import main
main(sys.argv[2:])
"""


def test_a_real_watch_process_across_a_forward_step_keeps_its_history(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text("nodes:\n  - name: here\n    host: localhost\n")
    state_dir = tmp_path / "store"
    seed = HistoryStore(state_dir)
    now = time.time()
    for hour in range(20, 0, -1):  # 20 h of history, written in real time
        seed.append([{"t": now - hour * HOUR, "node": "here", "status": "ok"}])
    seeded = segments(seed)
    offset = tmp_path / "offset"
    offset.write_text("0")
    argv = ["--state-dir", str(state_dir), "watch", "--headless", "--interval", "1"]
    proc = spawn_cli(str(offset), *argv, cwd=tmp_path, entry=("-c", FAKED_WATCH))
    try:
        assert proc.stdout is not None

        def cycles(n: int) -> None:
            while n:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                assert line, "watch ended early"
                n -= " cycle " in line

        cycles(2)
        offset.write_text(str(30 * HOUR))  # the clock jumps 30 h ahead for a few seconds
        cycles(2)
        offset.write_text("0")
        cycles(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    left = segments(HistoryStore(state_dir))
    assert set(seeded) <= set(left), "history deleted by a clock step"
    assert segment_name(now + 30 * HOUR) in left or segment_name(now + 30 * HOUR + 60) in left
