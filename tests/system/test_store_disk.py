"""The store on a file system that fills up or turns read-only: real tmpfs mounts (root only)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tmpfs_mount import ROOT_ONLY, mounted_tmpfs

from ugro_health.store import HistoryStore, ReadStats, StateStore, StoreError, record_cycle

pytestmark = ROOT_ONLY


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "mnt", "64k") as mount:
        yield mount


def records(cycle: int, n: int = 3) -> list[dict]:
    return [
        {
            "t": time.time(),
            "node": f"n{i}",
            "status": "ok",
            "score": 90,
            "reachable": True,
            "cycle": cycle,
            "pad": "p" * 1500,
        }
        for i in range(n)
    ]


def all_lines_valid(directory: Path) -> int:
    count = 0
    for segment in (directory / "history").glob("*.jsonl"):
        data = segment.read_bytes()
        assert data.endswith(b"\n"), f"{segment} ends in a partial line"
        for line in data.splitlines():
            json.loads(line)
            count += 1
    return count


def test_full_disk_reports_one_line_and_keeps_the_store_whole(tmpfs: Path) -> None:
    state = StateStore(tmpfs)
    state.update(lambda s: s["jobs"].update(train={"name": "train", "nodes": ["n0"]}))
    before = (tmpfs / "state.json").read_bytes()
    history = HistoryStore(tmpfs)
    written = 0
    with pytest.raises(StoreError) as info:
        for cycle in range(1000):
            history.append(records(cycle))
            written += 3
    message = str(info.value)
    assert message.startswith("history not recorded: No space left on device (")
    assert "\n" not in message and str(tmpfs) in message
    assert written > 0
    assert all_lines_valid(tmpfs) == written  # the failed cycle was rolled back
    stats = ReadStats()
    assert len(list(history.iter_records(stats=stats))) == written and stats.skipped == 0

    for attempt in range(3):  # repeated failures neither corrupt nor grow the store
        with pytest.raises(StoreError):
            history.append(records(1000 + attempt))
    assert all_lines_valid(tmpfs) == written

    with pytest.raises(StoreError, match=r"^state not saved: No space left on device \("):
        state.update(lambda s: s["jobs"].update(big={"name": "big", "pad": "x" * 100_000}))
    assert (tmpfs / "state.json").read_bytes() == before
    assert sorted(p.name for p in tmpfs.iterdir()) == ["history", "state.json", "state.lock"]

    problems = record_cycle(history, state, records(2000, n=40))
    assert problems == [f"history and state not recorded: No space left on device ({tmpfs})"]


def test_read_only_directory_reports_one_line_and_still_reads(tmpfs: Path) -> None:
    history, state = HistoryStore(tmpfs), StateStore(tmpfs)
    history.append(records(0))
    state.record_cycle(records(0))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)

    with pytest.raises(StoreError) as info:
        history.append(records(1))
    assert str(info.value).startswith("history not recorded: Read-only file system (")
    with pytest.raises(StoreError, match=r"^state not saved: Read-only file system \("):
        state.record_cycle(records(1))
    assert len(list(history.iter_records())) == 3
    loaded = state.load()
    assert loaded.warning is None and sorted(loaded.state["nodes"]) == ["n0", "n1", "n2"]
    assert record_cycle(history, state, records(2)) == [
        f"history and state not recorded: Read-only file system ({tmpfs})"
    ]


def test_read_only_before_anything_was_written(tmpfs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    state_dir = tmpfs / "ugro-health"
    with pytest.raises(StoreError, match=r"^history not recorded: Read-only file system"):
        HistoryStore(state_dir).append(records(0))
    assert list(HistoryStore(state_dir).iter_records()) == []
    assert StateStore(state_dir).load().warning is None


def test_corrupt_state_on_a_read_only_disk_is_reported_not_fatal(tmpfs: Path) -> None:
    (tmpfs / "state.json").write_text("{broken")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    state, warning = StateStore(tmpfs).load()
    assert state["nodes"] == {} and warning is not None
    assert warning.startswith("state ignored: not valid JSON") and "\n" not in warning
    assert (tmpfs / "state.json").read_text() == "{broken"
