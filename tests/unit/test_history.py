"""HistoryStore on a real temporary directory: round trip, damaged lines, retention, modes."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from ugro_health.model import (
    Alert,
    GpuSample,
    NodeReport,
    NodeSample,
    Severity,
    Status,
)
from ugro_health.store import HistoryStore, ReadStats, StoreError, record_from_report
from ugro_health.store.history import SEGMENT_S, record_from_json, segment_name

T0 = 1_750_000_000.0 - (1_750_000_000.0 % SEGMENT_S)  # an hour boundary, UTC


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def report(name: str, t: float, score: int = 90, temp: float = 60.0, **extra: Any) -> dict:
    doc = {
        "name": name,
        "status": "ok",
        "score": score,
        "reachable": True,
        "error": None,
        "error_kind": None,
        "polled_at": t,
        "duration_s": 0.1,
        "metrics": {"cpu_util_pct": 10.0, "load1": 1.5, "disks": {"/": {"util_pct": 40.0}}},
        "gpus": [{"index": 0, "temp_c": temp, "util_pct": 50.0, "mem_pct": 20.0, "power_w": 300}],
        "alerts": [],
    }
    doc.update(extra)
    return record_from_json(doc)


def segment_files(store: HistoryStore) -> list[str]:
    return sorted(p.name for p in store.directory.glob("*.jsonl"))


def test_round_trip_keeps_records_and_order(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, clock=FakeClock(T0 + 100))
    cycles = [[report(f"n{i}", T0 + c, score=c) for i in range(3)] for c in range(5)]
    for cycle in cycles:
        assert store.append(cycle) == 3
    stats = ReadStats()
    got = list(store.iter_records(stats=stats))
    assert got == [json.loads(json.dumps(r)) for cycle in cycles for r in cycle]
    assert stats.records == 15 and stats.skipped == 0 and stats.message() is None
    points = list(store.iter_points())
    assert [(p["t"], p["node"], p["summary"]["score"]) for p in points] == [
        (r["t"], r["node"], r["score"]) for cycle in cycles for r in cycle
    ]
    assert set(points[0]) == {"v", "t", "node", "summary"}


def test_line_layout_puts_version_time_node_summary_first(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, clock=FakeClock(T0))
    store.append([report("gpu01", T0 + 1.5)])
    line = (store.directory / segment_name(T0)).read_text()
    assert line.startswith('{"v":1,"t":%r,"node":"gpu01","summary":{' % (T0 + 1.5))
    assert line.endswith("}\n") and line.count("\n") == 1
    assert '"name"' not in line  # "node" replaces it


def test_record_from_report_carries_the_json_contract_and_a_summary() -> None:
    sample = NodeSample(
        cpu_util_pct=12.0,
        load1=3.0,
        mem_util_pct=50.0,
        gpus=(
            GpuSample(
                index=0,
                temp_c=70.0,
                util_pct=80.0,
                power_w=300.0,
                mem_used_bytes=1,
                mem_total_bytes=4,
            ),
            GpuSample(
                index=1,
                temp_c=75.0,
                util_pct=100.0,
                power_w=350.0,
                mem_used_bytes=3,
                mem_total_bytes=4,
            ),
        ),
    )
    alert = Alert(Severity.WARNING, "gpu_temp_high", "GPU 1 at 75 °C", 75.0, 1)
    rep = NodeReport("gpu07", Status.WARNING, 81, T0 + 5, 0.2, sample, (alert,))
    record = record_from_report(rep)
    doc = rep.to_json()
    assert record["v"] == 1 and record["t"] == T0 + 5 and record["node"] == "gpu07"
    assert {k: record[k] for k in doc if k != "name"} == {
        k: v for k, v in doc.items() if k != "name"
    }
    s = record["summary"]
    assert s["status"] == "warning" and s["reachable"] is True and s["score"] == 81
    assert s["gpu_temp"] == 75.0 and s["gpu_util"] == 90.0 and s["power"] == 650.0
    assert s["gpu_mem"] == 75.0 and s["cpu"] == 12.0 and s["load"] == 3.0 and s["mem"] == 50.0
    assert s["disk"] is None  # unknown, not 0
    assert s["alerts"] == ["warning:gpu_temp_high"]


GARBAGE = {
    "hand-edited": b'{"v":1,"t":%d,"node":"n0","summary":{"score":1}, oops}\n',
    "truncated": b'{"v":1,"t":%d,"node":"n0","summary":{"score":1},"metr\n',
    "other version": b'{"v":2,"t":%d,"node":"n0","summary":{}}\n',
    "not json": b"hello %d\n",
    "non-object": b"[%d, 2]\n",
    "no node": b'{"v":1,"t":%d}\n',
}


@pytest.mark.parametrize("summary_only", [False, True])
def test_garbage_lines_are_skipped_and_counted(tmp_path: Path, summary_only: bool) -> None:
    store = HistoryStore(tmp_path, clock=FakeClock(T0))
    store.append([report("n0", T0 + 1)])
    path = store.directory / segment_name(T0)
    with open(path, "ab") as f:
        for line in GARBAGE.values():
            f.write(line % (T0 + 2))
        f.write(b"\n   \n")  # blank lines are not worth a warning
    store.append([report("n0", T0 + 3)])
    stats = ReadStats()
    read = store.iter_points if summary_only else store.iter_records
    got = list(read(stats=stats))
    expected = {"not_json": 2, "truncated": 1, "other_version": 1, "not_object": 1, "invalid": 1}
    if summary_only:
        # Only the head is decoded: an edit after an intact summary goes unnoticed, and the
        # summary it yields is the one on the line.
        expected["not_json"] -= 1
        assert [r["t"] for r in got] == [T0 + 1, T0 + 2, T0 + 3]
        assert got[1]["summary"] == {"score": 1}
    else:
        assert [r["t"] for r in got] == [T0 + 1, T0 + 3]
    assert stats.reasons == {k: v for k, v in expected.items() if v}
    assert stats.skipped == sum(expected.values())
    assert stats.first == f"{path}:{3 if summary_only else 2}"
    message = stats.message()
    assert message is not None and "\n" not in message and "other_version 1" in message


def test_torn_tail_is_reported_then_repaired_by_the_next_append(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, clock=FakeClock(T0))
    store.append([report("n0", T0 + 1), report("n1", T0 + 1)])
    path = store.directory / segment_name(T0)
    whole = encode_line(report("n2", T0 + 1))
    with open(path, "ab") as f:
        f.write(whole[: len(whole) // 2])  # what a writer killed mid-write leaves
    stats = ReadStats()
    assert [r["node"] for r in store.iter_records(stats=stats)] == ["n0", "n1"]
    assert stats.reasons == {"incomplete": 1}

    store.append([report("n3", T0 + 2)])
    stats = ReadStats()
    assert [r["node"] for r in store.iter_records(stats=stats)] == ["n0", "n1", "n3"]
    assert stats.reasons == {"truncated": 1}  # the same torn line, counted once
    assert path.read_bytes().endswith(b"}\n")


def encode_line(record: dict) -> bytes:
    from ugro_health.store.history import encode_record

    return encode_record(record).encode()


def test_retention_by_age_drops_whole_segments(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    # Time passes for real here: elapsed time moves with the wall clock (test_history_clock.py
    # steps the wall clock alone).
    store = HistoryStore(
        tmp_path, retention_s=6 * 3600, clock=clock, elapsed=lambda: ("boot", clock.now)
    )
    for hour in range(10):
        clock.now = T0 + hour * 3600 + 10
        store.append([report("n0", clock.now)])
        cutoff = clock.now - 6 * 3600
        # A segment goes once all of its hour is older than the retention, not before.
        kept = [
            segment_name(T0 + h * 3600) for h in range(hour + 1) if T0 + (h + 1) * 3600 > cutoff
        ]
        assert segment_files(store) == kept
    assert len(segment_files(store)) == 7  # hours 3-9: hour 3 still holds in-window seconds
    clock.now = T0 + 20 * 3600
    assert len(store.enforce_retention()) == 7
    assert segment_files(store) == [] and list(store.iter_records()) == []


def test_size_cap_drops_oldest_segments_first_but_never_the_newest(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    line_size = len(encode_line(report("n0", T0)))
    store = HistoryStore(tmp_path, max_bytes=3 * 4 * line_size, clock=clock)
    for hour in range(8):
        clock.now = T0 + hour * 3600
        store.append([report(f"n{i}", clock.now) for i in range(4)])  # one segment per hour
    assert segment_files(store) == [segment_name(T0 + h * 3600) for h in (5, 6, 7)]
    total = sum(p.stat().st_size for p in store.directory.glob("*.jsonl"))
    assert total <= store.max_bytes

    small = HistoryStore(tmp_path / "small", max_bytes=10, clock=clock)
    small.append([report("n0", clock.now)])
    assert len(segment_files(small)) == 1  # over the cap on its own, but it is all we have


def test_reads_open_only_the_segments_in_the_window(tmp_path: Path) -> None:
    clock = FakeClock(T0 + 5 * 3600)
    store = HistoryStore(tmp_path, clock=clock)
    for hour in range(6):
        store.append([report("a", T0 + hour * 3600 + 60), report("b", T0 + hour * 3600 + 61)])
    old = store.directory / segment_name(T0)
    with open(old, "ab") as f:
        f.write(b"garbage that only a full read would see\n")
    stats = ReadStats()
    got = list(store.iter_records(since=T0 + 4 * 3600, nodes={"b"}, stats=stats))
    assert [(r["node"], r["t"]) for r in got] == [
        ("b", T0 + 4 * 3600 + 61),
        ("b", T0 + 5 * 3600 + 61),
    ]
    assert stats.skipped == 0
    got = list(store.iter_points(since=T0 + 3660.5, until=T0 + 7260.5, stats=stats))
    assert [(r["node"], r["t"]) for r in got] == [("b", T0 + 3661), ("a", T0 + 7260)]
    assert stats.skipped == 0  # the garbage line is in the first segment, outside the window
    list(store.iter_points(stats=stats))
    assert stats.skipped == 1


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        state_dir = tmp_path / "missing" / "ugro-health"
        store = HistoryStore(state_dir, clock=FakeClock(T0))
        store.append([report("n0", T0)])
    finally:
        os.umask(old)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    for path in store.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_reading_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "nope")
    assert list(store.iter_records()) == [] and store.enforce_retention() == []
    assert not (tmp_path / "nope").exists()


def test_unwritable_location_is_a_one_line_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError) as info:
        HistoryStore(blocker).append([report("n0", T0)])
    message = str(info.value)
    assert message.startswith("history not recorded: ") and "\n" not in message
    assert str(blocker) in message


def test_a_held_lock_times_out_with_a_message(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, clock=FakeClock(T0), lock_timeout_s=0.2)
    store.append([report("n0", T0)])
    with open(store.directory / ".lock", "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(StoreError, match=r"^history not recorded: lock busy \("):
            store.append([report("n0", T0 + 1)])
    assert len(list(store.iter_records())) == 1


@pytest.mark.parametrize(
    "bad",
    [{"t": "now", "node": "n0"}, {"t": float("nan"), "node": "n0"}, {"t": 1.0, "node": 'a"b'}],
)
def test_malformed_records_are_refused_before_writing(tmp_path: Path, bad: dict) -> None:
    store = HistoryStore(tmp_path)
    with pytest.raises(ValueError):
        store.append([report("n0", T0), bad])
    assert not store.directory.exists()


def test_reading_streams_with_flat_memory(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, max_bytes=1 << 40, clock=FakeClock(T0 + 7200))
    pad = "x" * 4000
    for c in range(400):
        store.append([report(f"n{i:02d}", T0 + c * 15, pad=pad) for i in range(16)])
    size = sum(p.stat().st_size for p in store.directory.glob("*.jsonl"))
    assert size > 25_000_000
    for read in (store.iter_records, store.iter_points):
        tracemalloc.start()
        count = sum(1 for _ in read())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == 6400
        assert peak < 512 * 1024, f"{read.__name__} peaked at {peak} bytes for {size} on disk"


def test_a_directory_where_a_segment_should_be_is_skipped_counted_and_kept(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0 + 100)
    store = HistoryStore(tmp_path, retention_s=3600, clock=clock)
    store.append([report("a", T0 + 10)])
    odd = store.directory / segment_name(T0 - SEGMENT_S)
    odd.mkdir()
    stats = ReadStats()
    assert [r["node"] for r in store.iter_records(stats=stats)] == ["a"]
    assert stats.message() == (
        f"skipped 1 unreadable history segment(s) (first: Is a directory ({odd}))"
    )
    clock.now = T0 + 3 * SEGMENT_S  # retention passes over it without failing the append
    assert store.append([report("a", clock.now)]) == 1
    assert odd.is_dir()


def test_a_state_dir_that_is_a_file_is_a_one_line_store_error_for_readers(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(
        StoreError, match=r"^history not read: Not a directory \(.*/file/history\)$"
    ):
        list(HistoryStore(blocker).iter_points())
