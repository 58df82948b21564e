"""A valid but wrong-typed ``state.json`` never takes a command down (issue 11, fault 1).

Generated: every field of a realistic state (nodes with alerts, GPUs, summary and breaker, an
active and a finished job), at any depth, is set to each wrong JSON type in turn; then what
``status`` (table and JSON), ``jobs list``, ``check`` (its job read and its record), ``watch``
(breakers and jobs on start, a cycle's write) and ``jobs start``/``finish`` do with the state
runs in-process. None may raise; the node or job that was not touched is still there.
"""

from __future__ import annotations

import copy
import json
import math
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from cli_helpers import run_cli, spawn_cli

from ugro_health.cli.app import app
from ugro_health.config import Config, NodeConfig
from ugro_health.engine import jobs as joblib
from ugro_health.engine.clock import FakeClock
from ugro_health.engine.collect import Transports, failed_report
from ugro_health.engine.monitor import Monitor
from ugro_health.model import ClusterReport, ErrorKind, NodeError
from ugro_health.store import StateStore
from ugro_health.store.history import record_from_report

T0 = 1_750_000_000.0
NODES = ("gpu1", "gpu2", "gpu3")


def valid_state() -> dict[str, Any]:
    alert = {
        "severity": "warning",
        "code": "gpu_temp_warning",
        "message": "GPU 0: temperature 82 °C",
        "value": 82.0,
        "gpu": 0,
        "subject": None,
    }
    gpu = {"index": 0, "name": "H100", "util_pct": 91.0, "mem_pct": 40.0, "temp_c": 82.0}
    gpu1 = {
        "status": "warning",
        "score": 74,
        "reachable": True,
        "error": None,
        "error_kind": None,
        "alerts": [alert],
        "polled_at": T0 - 30,
        "last_seen": T0 - 30,
        "metrics": {"cpu_util_pct": 8.0, "disks": {"/": {"util_pct": 61.0}}},
        "gpus": [dict(gpu, power_w=300.0)],
        "summary": {
            "status": "warning",
            "reachable": True,
            "score": 74,
            "cpu": 8.0,
            "gpu_temp": 82.0,
            "alerts": ["warning:gpu_temp_warning"],
        },
        "breaker": {
            "state": "open",
            "failures": 3,
            "opened_at": T0 - 10,
            "next_try_at": T0 + 20,
            "openings": 1,
            "last_error": "timeout: no answer",
            "closed_at": None,
        },
        "lifecycle": {
            "gpu_temp_warning|0|": {
                "code": "gpu_temp_warning",
                "gpu": 0,
                "subject": None,
                "severity": "warning",
                "message": "GPU 0: temperature 82 °C",
                "value": 82.0,
                "state": "firing",
                "present": True,
                "hits": 3,
                "clean": 0,
                "since": T0 - 40,
                "fired_at": T0 - 35,
                "resolved_at": None,
                "changes": [T0 - 40],
                "flapping": False,
                "notified": "firing",
                "notified_at": T0 - 35,
            }
        },
    }
    gpu2 = {
        "status": "critical",
        "score": None,
        "reachable": False,
        "error": "refused: connection refused",
        "error_kind": "refused",
        "alerts": [],
        "polled_at": T0 - 5,
        "last_seen": None,
        "metrics": {},
        "gpus": [],
    }
    llama = {
        "name": "llama",
        "nodes": ["gpu1", "gpu2"],
        "started_at": T0 - 100,
        "ranks": 8,
        "match": "train.*\\.py",
        "ttl_s": 7200.0,
        "finished_at": None,
        "finish_reason": None,
        "procs_seen_at": T0 - 50,
    }
    old = dict(llama, name="old", finished_at=T0 - 60, finish_reason="finished", match=None)
    return {
        "v": 1,
        "updated_at": T0 - 5,
        "nodes": {"gpu1": gpu1, "gpu2": gpu2},
        "jobs": {"llama": llama, "old": old},
        "silences": {
            "5f3a": {
                "id": "5f3a",
                "nodes": ["gpu2"],
                "codes": [],
                "starts_at": T0 - 60,
                "ends_at": T0 + 3600,
                "comment": "fan swap",
                "created_by": "ops",
                "created_at": T0 - 60,
            }
        },
    }


# One value of each JSON type, and the numbers no field may hold (NaN: json accepts it).
WRONG: tuple[Any, ...] = (None, True, -1, "zzz", ["x"], {"k": 1})
OUT_OF_RANGE = (1e308, math.nan)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every field below the top level, at any depth (list items by index)."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        path = (*prefix, key)
        if len(path) > 1 or key == "updated_at":
            yield path
        if isinstance(child, dict | list):
            yield from paths(child, path)


def mutations() -> Iterator[tuple[str, dict[str, Any]]]:
    base = valid_state()
    for path in paths(base):
        parent = base
        for key in path[:-1]:
            parent = parent[key]
        original = parent[path[-1]]
        numeric = isinstance(original, int | float) and not isinstance(original, bool)
        for wrong in WRONG + (OUT_OF_RANGE if numeric else ()):
            if type(wrong) is type(original) and not isinstance(wrong, dict | list):
                continue  # the same type is not a wrong type
            state = copy.deepcopy(base)
            target = state
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(wrong)
            yield f"{'.'.join(map(str, path))}={json.dumps(wrong)[:12]}", state


CASES = list(mutations())


def test_the_generator_covers_every_field() -> None:
    fields = {case.split("=")[0] for case, _ in CASES}
    assert "nodes.gpu1.breaker.next_try_at" in fields and "jobs.llama.match" in fields
    assert "nodes.gpu1.alerts.0.message" in fields and "nodes.gpu2" in fields
    assert len(CASES) > 400


@pytest.fixture
def config(tmp_path: Path) -> Config:
    nodes = tuple(NodeConfig(name=n, host="127.0.0.1", port=9, transport="ssh") for n in NODES)
    return Config(nodes=nodes)


COMMAND = typer.main.get_command(app)  # built once: Typer rebuilds it on every main() call


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The real command, its exceptions raised (main() would turn them into exit 3)."""
    try:
        code = COMMAND.main(list(args), prog_name="ugro-health", standalone_mode=False)
    except SystemExit as exc:  # fail(): a one-line error
        code = exc.code
    out, err = capsys.readouterr()
    return int(code or 0), out, err


def run_commands(state_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What every command does with the state; returns what ``status --json`` printed."""
    base = ("--config", str(config_file), "--state-dir", str(state_dir))
    code, out, err = cli(*base, "status", "--json", capsys=capsys)
    assert code in (0, 1, 2, 3) and "internal error" not in err
    assert len(err.splitlines()) <= 1, err
    status_json = out
    json.loads(out)
    for args in (("status",), ("jobs", "list")):
        code, out, err = cli(*base, *args, capsys=capsys)
        assert code in (0, 1, 2, 3) and "internal error" not in err, (args, err)
    return status_json


def write_paths(state_dir: Path, config: Config) -> None:
    """``check`` (jobs, then its record), ``watch`` (start, a cycle), ``jobs``: the writers."""
    clock = FakeClock(start=T0)
    store = StateStore(state_dir, clock=clock.time)
    joblib.active_jobs(store.load().state)  # check's read of the jobs
    monitor = Monitor(config, config.nodes, store, Transports(config), clock=clock)
    monitor._refresh_jobs(T0)
    error = NodeError(ErrorKind.REFUSED, "connection refused")
    report = ClusterReport(T0, tuple(failed_report(n, error, T0, 0.0) for n in NODES))
    records = [record_from_report(n) for n in report.nodes]
    store.record_cycle(records, now=T0, also=monitor._put_breakers)
    joblib.expire_jobs(store, T0, {})
    try:
        joblib.finish_job(store, "llama", T0)
    except joblib.JobError:
        pass  # dropped as damaged: "no active job", a one-line answer
    joblib.start_job(store, "fresh", ["gpu1"], T0, NODES, ranks=1, ttl_s=60)
    loaded = store.load()
    assert loaded.warning is None, loaded.warning  # the writers repaired the file
    assert "fresh" in loaded.state["jobs"]


@pytest.mark.slow
def test_every_wrong_typed_field_is_survived(
    tmp_path: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "cluster.yaml"
    config_file.write_text("nodes:\n" + "".join(f"  - name: {n}\n    port: 9\n" for n in NODES))
    failures = []
    for i, (case, state) in enumerate(CASES):
        state_dir = tmp_path / f"s{i}"
        state_dir.mkdir()
        (state_dir / "state.json").write_text(json.dumps(state))
        try:
            shown = run_commands(state_dir, config_file, capsys)
            names = [n["name"] for n in json.loads(shown)["nodes"]]
            assert names[:3] == list(NODES)
            write_paths(state_dir, config)
        except Exception as exc:  # collect them all: one run names every field that fails
            failures.append(f"{case}: {type(exc).__name__}: {str(exc)[:200]}")
    assert not failures, f"{len(failures)} of {len(CASES)}:\n" + "\n".join(failures[:40])


def test_a_damaged_record_is_dropped_the_rest_kept_and_the_file_kept_aside(
    tmp_path: Path,
) -> None:
    state = valid_state()
    state["nodes"]["gpu1"]["status"] = "bogus"
    state["jobs"]["old"] = "str"
    (tmp_path / "state.json").write_text(json.dumps(state))
    original = (tmp_path / "state.json").read_bytes()
    store = StateStore(tmp_path, clock=lambda: T0)
    loaded = store.load()
    assert sorted(loaded.state["nodes"]) == ["gpu2"] and sorted(loaded.state["jobs"]) == ["llama"]
    assert loaded.warning == (
        "state: 2 damaged record(s) dropped (node 'gpu1': bad 'status'; "
        f"job 'old': not an object (str)) ({tmp_path / 'state.json'})"
    )
    assert (tmp_path / "state.json").read_bytes() == original  # a reader writes nothing
    written = store.update(lambda s: None)
    aside = tmp_path / f"state.json.corrupt-{int(T0)}"
    assert written.warning is not None and written.warning.startswith("state repaired: 2 damaged")
    assert written.warning.endswith(f"original kept as {aside}")
    assert aside.read_bytes() == original  # nothing is lost
    assert store.load() == (written.state, None)  # said once: the file is clean now


LOCAL = "nodes:\n  - name: gpu1\n    host: localhost\n"


def _seed(tmp_path: Path, state: dict[str, Any]) -> Path:
    (tmp_path / "cluster.yaml").write_text(LOCAL)
    state_dir = tmp_path / "state" / "ugro-health"
    state_dir.mkdir(parents=True)
    (state_dir / "state.json").write_text(json.dumps(state))
    return state_dir


def test_check_over_a_null_node_record_reports_and_repairs(tmp_path: Path) -> None:
    state_dir = _seed(tmp_path, {"v": 1, "nodes": {"gpu1": None}, "jobs": {}})
    result = run_cli("check", "--json", cwd=tmp_path)
    assert json.loads(result.stdout)["nodes"][0]["reachable"] is True, result.stderr
    assert "internal error" not in result.stderr and result.returncode in (0, 1, 2)
    assert result.stderr.startswith(
        "ugro-health: warning: state repaired: 1 damaged record(s) dropped "
        "(node 'gpu1': not an object (NoneType)); original kept as "
    )
    assert result.stderr.count("\n") == 1  # said once, by the write that repairs it
    again = run_cli("check", "--json", cwd=tmp_path)
    assert again.stderr == ""  # repaired by the first run's write: said once
    assert list(state_dir.glob("state.json.corrupt-*"))


@pytest.mark.parametrize(
    ("field", "value"),
    [("status", "bogus"), ("polled_at", "yesterday"), ("alerts", "zzz")],
)
def test_status_over_a_bad_field_is_one_warning(tmp_path: Path, field: str, value: str) -> None:
    state = valid_state()
    state["nodes"]["gpu1"][field] = value
    _seed(tmp_path, state)
    # status shows the configured nodes: name all three (status polls nothing, so no host is used)
    (tmp_path / "cluster.yaml").write_text("nodes:\n" + "".join(f"  - name: {n}\n" for n in NODES))
    result = run_cli("status", "--json", cwd=tmp_path)
    assert result.returncode == 2 and "internal error" not in result.stderr  # gpu2 CRITICAL
    assert result.stderr.count("\n") == 1 and f"node 'gpu1': bad '{field}'" in result.stderr
    nodes = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert nodes["gpu1"]["polled_at"] is None and nodes["gpu2"]["status"] == "critical"


def test_jobs_start_over_a_string_job(tmp_path: Path) -> None:
    _seed(tmp_path, {"v": 1, "nodes": {}, "jobs": {"j": "str"}})
    result = run_cli("jobs", "start", "j", "--nodes", "gpu1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "state repaired: 1 damaged record(s) dropped (job 'j'" in result.stderr


def test_watch_over_a_null_node_record_runs(tmp_path: Path) -> None:
    _seed(tmp_path, {"v": 1, "nodes": {"gpu1": None}, "jobs": {}})
    proc = spawn_cli("watch", "--headless", "--interval", "5", cwd=tmp_path)
    try:
        assert proc.stdout is not None
        # "watching", the cycle's ALERT lines if this machine is loaded, cycle 1, its STORE
        lines: list[str] = []
        while not any(" cycle 1: " in line for line in lines) and len(lines) < 50:
            lines.append(proc.stdout.readline())
            assert lines[-1], lines
        assert " cycle 1: polled 1 " in lines[-1], lines
        lines.append(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "internal error" not in err
    assert "STORE state repaired: 1 damaged record(s) dropped" in lines[-1], lines
