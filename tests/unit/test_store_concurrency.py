"""The store under real concurrency and real crashes: several processes, SIGKILL mid-write."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest

from ugro_health.store import HistoryStore, ReadStats, StateStore

WRITERS = 4
CYCLES = 500
PER_CYCLE = 4
FORK = multiprocessing.get_context("fork")


def _writer(directory: str, writer: int) -> None:
    store = HistoryStore(Path(directory), max_bytes=1 << 40)
    rng = random.Random(writer)
    for cycle in range(CYCLES):
        # Some records exceed a buffered file's 8 KiB chunk: a writer that did not write each
        # cycle in one call under the lock would interleave them.
        store.append(
            [
                {
                    "t": time.time(),
                    "node": f"w{writer}-{i}",
                    "w": writer,
                    "c": cycle,
                    "i": i,
                    "pad": "x" * rng.choice((10, 3000, 20000)),
                }
                for i in range(PER_CYCLE)
            ]
        )


def test_concurrent_writers_lose_nothing_and_never_interleave(tmp_path: Path) -> None:
    procs = [FORK.Process(target=_writer, args=(str(tmp_path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    seen: dict[tuple[int, int, int], int] = defaultdict(int)
    lines = 0
    for segment in sorted((tmp_path / "history").glob("*.jsonl")):
        with open(segment, "rb") as f:
            for raw in f:
                record = json.loads(raw)  # every line is one complete JSON document
                seen[(record["w"], record["c"], record["i"])] += 1
                lines += 1
    expected = {(w, c, i) for w in range(WRITERS) for c in range(CYCLES) for i in range(PER_CYCLE)}
    assert set(seen) == expected and lines == len(expected)
    assert max(seen.values()) == 1
    stats = ReadStats()
    assert sum(1 for _ in HistoryStore(tmp_path).iter_points(stats=stats)) == len(expected)
    assert stats.skipped == 0


def _incrementer(directory: str, times: int) -> None:
    store = StateStore(Path(directory))
    pid = os.getpid()

    def bump(state: dict) -> None:
        state["counter"] = state.get("counter", 0) + 1
        state["nodes"].setdefault(f"p{pid}", {"n": 0})["n"] += 1

    for _ in range(times):
        store.update(bump)


def test_concurrent_state_updates_lose_nothing_and_readers_never_see_half(tmp_path: Path) -> None:
    procs = [FORK.Process(target=_incrementer, args=(str(tmp_path), 100)) for _ in range(4)]
    for p in procs:
        p.start()
    reader = StateStore(tmp_path)
    loads = 0
    while any(p.is_alive() for p in procs):
        _, warning = reader.load()
        assert warning is None  # never a torn or half-written state.json
        loads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    state, warning = reader.load()
    assert warning is None and state["counter"] == 400
    assert sorted(n["n"] for n in state["nodes"].values()) == [100] * 4
    assert loads > 0


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from ugro_health.store.history import HistoryStore

    # A slow disk: each write() takes at most 64 KiB and a moment, so a kill lands inside a
    # cycle's write most of the time (with one 2 MB write() it rarely did on a busy machine).
    real_write = os.write

    def slow_write(fd, data):
        time.sleep(0.001)
        return real_write(fd, bytes(data[:65536]))

    os.write = slow_write
    store = HistoryStore(Path(sys.argv[1]), max_bytes=1 << 40)
    run, pad = int(sys.argv[2]), "x" * 250_000
    print("ready", flush=True)
    cycle = 0
    while True:
        store.append([{"t": time.time(), "node": "n%d" % i, "run": run, "cycle": cycle, "i": i,
                       "pad": pad} for i in range(8)])
        cycle += 1
    """
)


def _by_run(store: HistoryStore, stats: ReadStats) -> dict[int, dict[int, list[int]]]:
    runs: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for record in store.iter_records(stats=stats):
        runs[record["run"]][record["cycle"]].append(record["i"])
    return runs


@pytest.mark.slow
def test_sigkill_mid_write_loses_only_the_line_being_written(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    store = HistoryStore(tmp_path / "state")
    rng = random.Random(1)
    kills, torn, previous = 0, 0, {}
    try:
        # Kill until two kills have landed inside a write (most do, on the slow disk).
        while torn < 2 and kills < 24:
            skipped_before = _kill_one_writer(store, script, kills, rng)
            kills += 1
            stats = ReadStats()
            runs = _by_run(store, stats)  # never raises, whatever the kill left
            torn += stats.skipped > skipped_before
            assert stats.skipped <= kills  # at most one torn line per kill
            assert set(stats.reasons) <= {"incomplete", "truncated"}
            _assert_whole_cycles_then_a_prefix(runs)
            for r, cycles in previous.items():
                assert runs[r] == cycles, f"run {r} changed after a later kill"
            previous = {r: {c: list(i) for c, i in cycles.items()} for r, cycles in runs.items()}
        assert torn >= 1, f"none of {kills} kills landed mid-write: nothing was tested"

        store.append([{"t": time.time(), "node": "after", "run": 99, "cycle": 0, "i": 0}])
        stats = ReadStats()
        runs = _by_run(store, stats)
        assert runs[99] == {0: [0]}
        assert stats.skipped <= kills
        assert stats.reasons.get("incomplete", 0) == 0  # the torn tail was ended by the append
    finally:
        shutil.rmtree(tmp_path / "state", ignore_errors=True)  # up to a few hundred MB


def _kill_one_writer(store: HistoryStore, script: Path, run: int, rng: random.Random) -> int:
    """Start a writer, SIGKILL it at a random moment; return the skipped count before."""
    before = ReadStats()
    for _ in store.iter_points(stats=before):
        pass
    child = subprocess.Popen(
        [sys.executable, str(script), str(store.state_dir), str(run)], stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    time.sleep(rng.uniform(0.02, 0.25))
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    return before.skipped


def _assert_whole_cycles_then_a_prefix(runs: dict[int, dict[int, list[int]]]) -> None:
    for r, cycles in runs.items():
        last = max(cycles)
        assert sorted(cycles) == list(range(last + 1)), f"run {r} lost a cycle"
        assert all(cycles[c] == list(range(8)) for c in range(last)), f"run {r} lost a record"
        assert cycles[last] == list(range(len(cycles[last])))
