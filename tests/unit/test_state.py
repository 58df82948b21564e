"""StateStore on a real directory: atomic updates, merges, corrupt files, modes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ugro_health.store import StateStore, StoreError
from ugro_health.store.history import record_from_json

T0 = 1_750_000_000.0


def node_doc(name: str, t: float, reachable: bool = True, score: int | None = 95) -> dict:
    return record_from_json(
        {
            "name": name,
            "status": "ok" if reachable else "critical",
            "score": score if reachable else None,
            "reachable": reachable,
            "error": None if reachable else "timeout: no answer in 5s",
            "error_kind": None if reachable else "timeout",
            "polled_at": t,
            "duration_s": 0.2,
            "metrics": {"cpu_util_pct": 5.0} if reachable else {},
            "gpus": [
                {
                    "index": 0,
                    "name": "H100",
                    "uuid": "GPU-x",
                    "temp_c": 50.0,
                    "util_pct": 1.0,
                    "mem_pct": 2.0,
                    "power_w": 80.0,
                    "pcie_gen": 5,
                    "processes": [],
                }
            ]
            if reachable
            else [],
            "alerts": []
            if reachable
            else [{"severity": "critical", "code": "unreachable", "message": "no answer"}],
        }
    )


def test_missing_state_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "none")
    state, warning = store.load()
    assert state == {"v": 1, "updated_at": None, "nodes": {}, "jobs": {}, "silences": {}}
    assert warning is None
    assert not (tmp_path / "none").exists()


def test_update_round_trip_is_private_and_leaves_no_temp_files(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = StateStore(tmp_path / "a" / "state", clock=lambda: T0)
        store.update(lambda s: s["jobs"].update({"train": {"name": "train", "nodes": ["n1"]}}))
    finally:
        os.umask(old)
    state, warning = store.load()
    assert warning is None and state["jobs"] == {"train": {"name": "train", "nodes": ["n1"]}}
    assert state["updated_at"] == T0
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert sorted(p.name for p in store.directory.iterdir()) == ["state.json", "state.lock"]
    for path in store.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_record_cycle_merges_nodes_and_keeps_breaker_and_jobs(tmp_path: Path) -> None:
    store = StateStore(tmp_path)

    def seed(state: dict) -> None:
        state["jobs"]["llm"] = {"name": "llm", "nodes": ["a"]}
        state["nodes"]["a"] = {"breaker": {"state": "open", "failures": 3}}

    store.update(seed)
    store.record_cycle([node_doc("a", T0), node_doc("b", T0)])
    store.record_cycle([node_doc("a", T0 + 5, reachable=False), node_doc("b", T0 + 5)])
    state, _ = store.load()
    a, b = state["nodes"]["a"], state["nodes"]["b"]
    assert state["jobs"] == {"llm": {"name": "llm", "nodes": ["a"]}}
    assert a["breaker"] == {"state": "open", "failures": 3}
    assert (a["status"], a["reachable"], a["polled_at"], a["last_seen"]) == (
        "critical",
        False,
        T0 + 5,
        T0,
    )
    assert a["error"] == "timeout: no answer in 5s" and a["alerts"][0]["code"] == "unreachable"
    assert a["gpus"] == [] and a["score"] is None
    assert (b["status"], b["score"], b["last_seen"], b["metrics"]) == (
        "ok",
        95,
        T0 + 5,
        {"cpu_util_pct": 5.0},
    )
    assert b["gpus"] == [
        {
            "index": 0,
            "name": "H100",
            "util_pct": 1.0,
            "mem_pct": 2.0,
            "temp_c": 50.0,
            "power_w": 80.0,
        }
    ]
    assert b["summary"]["gpu_temp"] == 50.0


def test_never_reached_node_has_no_last_seen(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record_cycle([node_doc("c", T0, reachable=False)])
    assert store.load().state["nodes"]["c"]["last_seen"] is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"v": 1, "nodes": {"a": ', "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 7, "nodes": {}}', "unknown version 7"),
        (b'{"v": true, "nodes": {}}', "unknown version True"),  # true == 1 in Python
        (b"\xff\xfe", "not valid JSON"),
        (b'{"v": 1, "nodes": []}', "malformed"),
    ],
)
def test_corrupt_state_is_set_aside_with_a_warning(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / "state.json").write_bytes(content)
    store = StateStore(tmp_path, clock=lambda: T0)
    state, warning = store.load()
    assert state["nodes"] == {} and warning is not None and "\n" not in warning
    assert problem in warning and "state.json.corrupt-1750000000" in warning
    assert (tmp_path / "state.json.corrupt-1750000000").read_bytes() == content
    assert not (tmp_path / "state.json").exists()
    store.record_cycle([node_doc("a", T0)])
    assert store.load() == (store.load().state, None)
    assert "a" in store.load().state["nodes"]


def test_update_on_a_corrupt_file_starts_afresh_and_reports_it(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("garbage")
    loaded = StateStore(tmp_path, clock=lambda: T0).update(lambda s: s["jobs"].update(x={}))
    assert loaded.warning is not None and loaded.warning.startswith("state reset: ")
    assert json.loads((tmp_path / "state.json").read_text())["jobs"] == {"x": {}}


def test_a_failing_change_writes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.update(lambda s: s["jobs"].update(keep={}))
    before = (tmp_path / "state.json").read_bytes()

    def boom(state: dict) -> None:
        state["jobs"].clear()
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        store.update(boom)
    assert (tmp_path / "state.json").read_bytes() == before


def test_unwritable_state_dir_is_a_one_line_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    expected = r"^state not saved: Not a directory \(.*/file/state\.lock\)$"
    with pytest.raises(StoreError, match=expected):
        StateStore(blocker).update(lambda s: None)
    state, warning = StateStore(blocker).load()
    assert state["nodes"] == {} and warning is not None and warning.startswith("state not read")


def _job(started: float, ttl: float | None) -> dict:
    return {"name": "j", "nodes": ["a"], "started_at": started, "ttl_s": ttl, "finished_at": None}


def test_a_job_past_its_ttl_reads_finished_for_all_and_readers_write_nothing(
    tmp_path: Path,
) -> None:
    writer = StateStore(tmp_path, clock=lambda: T0 - 100)
    writer.update(lambda s: s["jobs"].update(old=_job(T0 - 100, 60), new=_job(T0 - 100, 600)))
    before = (tmp_path / "state.json").read_bytes()
    state, warning = StateStore(tmp_path, clock=lambda: T0).load()
    assert warning is None
    old, new = state["jobs"]["old"], state["jobs"]["new"]
    # finished at the moment its TTL ran out (the same for every reader), not at the read
    assert (old["finished_at"], old["finish_reason"]) == (T0 - 40, "ttl")
    assert new["finished_at"] is None
    assert (tmp_path / "state.json").read_bytes() == before  # a reader never writes
    # the next update (any writer) persists it
    StateStore(tmp_path, clock=lambda: T0).update(lambda s: None)
    on_disk = json.loads((tmp_path / "state.json").read_text())["jobs"]["old"]
    assert (on_disk["finished_at"], on_disk["finish_reason"]) == (T0 - 40, "ttl")


def test_an_update_never_sees_a_job_past_its_ttl_as_active(tmp_path: Path) -> None:
    StateStore(tmp_path, clock=lambda: T0).update(lambda s: s["jobs"].update(j=_job(T0, 60)))
    seen: list = []
    StateStore(tmp_path, clock=lambda: T0 + 60).update(lambda s: seen.append(dict(s["jobs"]["j"])))
    assert seen[0]["finished_at"] == T0 + 60 and seen[0]["finish_reason"] == "ttl"


def test_a_read_only_store_still_reads_a_job_past_its_ttl_as_finished(tmp_path: Path) -> None:
    StateStore(tmp_path, clock=lambda: T0).update(lambda s: s["jobs"].update(j=_job(T0, 60)))
    before = (tmp_path / "state.json").read_bytes()
    (tmp_path / "state.lock").unlink()
    (tmp_path / "state.lock").mkdir()  # the lock cannot be taken: nothing can be written
    state, warning = StateStore(tmp_path, clock=lambda: T0 + 61).load()
    assert warning is None and state["jobs"]["j"]["finish_reason"] == "ttl"
    assert (tmp_path / "state.json").read_bytes() == before


def test_a_damaged_lifecycle_record_is_dropped_alone(tmp_path):
    good = {
        "code": "disk_critical", "gpu": None, "subject": "/", "severity": "critical",
        "message": "/ full", "value": 96.0, "state": "firing", "present": True, "hits": 1,
        "clean": 0, "since": 1.0e9, "fired_at": 1.0e9, "resolved_at": None, "changes": [],
        "flapping": False, "notified": "firing", "notified_at": 1.0e9,
    }  # fmt: skip
    bad = dict(good, code="gpu_temp_critical", state=["firing"])
    lifecycle = {"disk_critical||/": good, "gpu_temp_critical|0|": bad}
    entry = {"status": "critical", "breaker": {"state": "closed"}, "lifecycle": lifecycle}
    doc = {"v": 1, "updated_at": None, "nodes": {"gpu1": entry}, "jobs": {}}
    (tmp_path / "state.json").write_text(json.dumps(doc))
    state, warning = StateStore(tmp_path).load()
    kept = state["nodes"]["gpu1"]
    assert list(kept["lifecycle"]) == ["disk_critical||/"]  # what the channels were told stays
    assert kept["breaker"] == {"state": "closed"} and kept["status"] == "critical"
    assert warning is not None and "lifecycle record 'gpu_temp_critical|0|'" in warning
