"""CPU utilisation a person can trust (issue 10): the window spans the probe's whole run, and
the monitor's own CPU time is left out (in-process, that is all of ugro-health)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ugro_health import probe

FIXTURES = Path(__file__).parent.parent / "fixtures" / "probe"


def stat_text(user: int, idle: int) -> str:
    # The aggregate line of proc_stat_1.txt's form: user nice system idle iowait irq softirq ...
    return f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {user} 0 0 {idle} 0 0 0 0 0 0\n"


def test_cpu_util_leaves_out_the_monitors_own_time() -> None:
    before = {"total": 100.0, "idle": 50.0, "own": 1.0}
    after = {"total": 200.0, "idle": 100.0, "own": 31.0}  # 50 s busy, 30 of them ours
    assert probe.cpu_util(before, after) == 20.0
    assert probe.cpu_util({**before, "own": 0.0}, {**after, "own": 90.0}) == 0.0  # not below 0
    assert probe.cpu_util({"total": 100.0, "idle": 50.0}, {"total": 200.0, "idle": 100.0}) == 50.0


def test_counters_are_seconds_from_recorded_proc_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(FIXTURES / "proc_stat_1.txt", tmp_path / "stat")
    monkeypatch.setattr(probe, "PROC", str(tmp_path))
    ticks = probe.parse_proc_stat((FIXTURES / "proc_stat_1.txt").read_text())
    counters = probe.cpu_counters()
    hz = os.sysconf("SC_CLK_TCK")
    assert counters["total"] == pytest.approx(ticks["total"] / hz)
    assert counters["idle"] == pytest.approx(ticks["idle"] / hz)
    assert counters["own"] == pytest.approx(sum(os.times()[:4]), abs=0.5)


def spin(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_busy_thread_in_process_is_not_the_nodes_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process (the local node), a busy thread of ugro-health itself is left out: the node's
    /proc/stat (written here) shows exactly that thread's work, and the figure stays near 0,
    where it read 50 % before."""
    hz = os.sysconf("SC_CLK_TCK")
    monkeypatch.setattr(probe, "PROC", str(tmp_path))
    (tmp_path / "stat").write_text(stat_text(1000, 1000))
    before = probe.cpu_counters()
    thread = threading.Thread(target=spin, args=(0.3,))
    thread.start()
    thread.join()
    ours = round((sum(os.times()[:4]) - before["own"]) * hz)
    assert ours >= 0.3 * hz - 1
    (tmp_path / "stat").write_text(stat_text(1000 + ours, 1000 + ours))  # half busy: ours
    after = probe.cpu_counters()
    util: Any = probe.cpu_util(before, after)
    assert util is not None and util <= 5.0
    assert probe.cpu_util({**before, "own": 0.0}, {**after, "own": 0.0}) == 50.0


def test_one_shot_window_spans_the_whole_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sub-check that takes 0.8 s lengthens the window past window_s: the figure covers the
    probe's run, and the answer says how long that was."""
    real_statvfs = os.statvfs

    def slow_statvfs(path: Any) -> Any:
        time.sleep(0.8)
        return real_statvfs(path)

    monkeypatch.setattr(os, "statvfs", slow_statvfs)
    with probe.Probe() as sampler:
        doc = sampler.sample({"window_s": 0.2, "mounts": ["/"]})
    assert doc["disks"][0]["error"] is None
    assert doc["cpu"]["window_s"] >= 0.8
    with probe.Probe() as sampler:
        quick = sampler.sample({"window_s": 0.3, "mounts": []})
    assert quick["cpu"]["window_s"] >= 0.3  # at least window_s
