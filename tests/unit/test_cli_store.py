"""``status``, ``history`` and ``jobs`` through the real entry point, over a real store."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cli_helpers import run_cli

LOCAL = "nodes:\n  - name: here\n    host: localhost\n  - name: spare\n    transport: local\n"


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yaml").write_text(LOCAL)
    return tmp_path


def test_status_before_any_check_is_unknown(cluster: Path):
    result = run_cli("status", cwd=cluster)
    assert result.returncode == 3
    assert "NEVER POLLED" in result.stdout
    doc = json.loads(run_cli("status", "--json", cwd=cluster).stdout)
    assert doc["status"] == "unknown" and [n["name"] for n in doc["nodes"]] == ["here", "spare"]
    assert all(n["stale"] and n["age_s"] is None for n in doc["nodes"])


def test_check_records_and_status_reads_it_back(cluster: Path):
    checked = run_cli("check", "--json", cwd=cluster)
    check_doc = json.loads(checked.stdout)
    result = run_cli("status", "--json", cwd=cluster)
    doc = json.loads(result.stdout)
    assert result.returncode == checked.returncode
    assert doc["status"] == check_doc["status"]
    for node, checked_node in zip(doc["nodes"], check_doc["nodes"], strict=True):
        assert node["name"] == checked_node["name"]
        assert node["score"] == checked_node["score"]
        assert node["stale"] is False and 0 <= node["age_s"] < 60
    table = run_cli("status", cwd=cluster).stdout
    assert table.splitlines()[0].split()[:3] == ["NODE", "STATUS", "SCORE"]
    # permissions: 0700 directory, 0600 files
    state_dir = cluster / "state" / "ugro-health"
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "state.json").stat().st_mode) == 0o600


def test_no_record_leaves_no_trace(cluster: Path):
    run_cli("check", "--no-record", cwd=cluster)
    assert not (cluster / "state" / "ugro-health" / "state.json").exists()


def test_stale_state_counts_as_unknown(cluster: Path):
    run_cli("check", cwd=cluster)
    state = cluster / "state" / "ugro-health" / "state.json"
    doc = json.loads(state.read_text())
    for entry in doc["nodes"].values():
        entry["polled_at"] -= 3600
    state.write_text(json.dumps(doc))
    result = run_cli("status", cwd=cluster)
    assert "STALE" in result.stdout
    if "CRITICAL" not in result.stdout:
        assert result.returncode == 3


def test_history_summarises_recorded_checks(cluster: Path):
    for _ in range(3):
        run_cli("check", cwd=cluster)
    result = run_cli("history", "--since", "1h", "--metric", "cpu", cwd=cluster)
    assert result.returncode == 0, result.stderr
    assert "CPU utilisation, last 1h" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith(("here", "spare"))]
    assert len(rows) == 2 and all("100.0%" in row for row in rows)  # availability
    doc = json.loads(run_cli("history", "here", "--json", cwd=cluster).stdout)
    assert len(doc["samples"]) == 3 and {s["node"] for s in doc["samples"]} == {"here"}
    (summary,) = doc["summaries"]
    assert summary["samples"] == 3 and summary["availability"] == 1.0


def test_history_reports_corrupt_lines_and_carries_on(cluster: Path):
    run_cli("check", cwd=cluster)
    (segment,) = (cluster / "state" / "ugro-health" / "history").glob("*.jsonl")
    with segment.open("a") as handle:
        handle.write("this is not json\n")
    run_cli("check", cwd=cluster)
    result = run_cli("history", "--json", cwd=cluster)
    assert result.returncode == 0
    assert "skipped 1 unreadable history line" in result.stderr
    assert len(json.loads(result.stdout)["samples"]) == 4


def test_history_over_a_damaged_store_is_one_line(cluster: Path):
    run_cli("check", cwd=cluster)
    history = cluster / "state" / "ugro-health" / "history"
    (segment,) = history.glob("*.jsonl")
    segment.unlink()
    segment.mkdir()  # a directory where this hour's segment should be
    result = run_cli("history", cwd=cluster)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"ugro-health: warning: skipped 1 unreadable history segment(s) "
        f"(first: Is a directory ({segment}))\n"
    )
    blocker = cluster / "blocker"
    blocker.write_text("")
    refused = run_cli("--state-dir", str(blocker), "history", cwd=cluster)
    assert refused.returncode == 3
    assert refused.stderr == (
        f"ugro-health: state directory {blocker}: {blocker} is a file, not a directory "
        "(see --state-dir)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", "--since", "soon"], "--since: invalid duration 'soon'"),
        (["history", "--metric", "vibes"], "--metric: unknown metric 'vibes'"),
        (["history", "nosuchnode"], "unknown node 'nosuchnode'"),
        (["jobs", "start", "x", "--nodes", "here,ghost"], "unknown node(s) ghost"),
        (["jobs", "finish", "never"], "no active job 'never'"),
        (["jobs", "start", "bad name", "--nodes", "here"], "invalid job name"),
        (["jobs", "start", "x", "--nodes", "here", "--ttl", "forever"], "--ttl: invalid duration"),
    ],
)
def test_bad_input_is_one_line_and_exit_3(cluster: Path, args, message):
    result = run_cli(*args, cwd=cluster)
    assert result.returncode == 3
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_jobs_lifecycle(cluster: Path):
    started = run_cli(
        "jobs", "start", "llama", "--nodes", "here", "--ranks", "2", "--ttl", "2h", cwd=cluster
    )
    assert started.returncode == 0 and "job llama started on here" in started.stdout
    again = run_cli("jobs", "start", "llama", "--nodes", "here", cwd=cluster)
    assert again.returncode == 3 and "already active" in again.stderr
    listed = json.loads(run_cli("jobs", "list", "--json", cwd=cluster).stdout)
    (job,) = listed["jobs"]
    assert job["name"] == "llama" and job["active"] and job["ranks"] == 2 and job["ttl_s"] == 7200
    # an active job with ranks: check looks for its processes and finds none here
    report = json.loads(run_cli("check", "--json", "--no-record", cwd=cluster).stdout)
    here = next(n for n in report["nodes"] if n["name"] == "here")
    assert any(a["code"] == "job_ranks_low" for a in here["alerts"])
    finished = run_cli("jobs", "finish", "llama", cwd=cluster)
    assert finished.returncode == 0 and "job llama finished" in finished.stdout
    table = run_cli("jobs", "list", cwd=cluster).stdout
    assert "llama" in table and "done (finished)" in table


def test_jobs_start_is_safe_from_many_processes(cluster: Path):
    import subprocess
    import sys

    from cli_helpers import cli_env

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ugro_health", "jobs", "start", f"job{i}", "--nodes", "here"],
            cwd=cluster,
            env=cli_env(cluster),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    listed = json.loads(run_cli("jobs", "list", "--json", cwd=cluster).stdout)
    assert sorted(j["name"] for j in listed["jobs"]) == [f"job{i}" for i in range(8)]


def test_store_on_read_only_dir_still_reports_health(cluster: Path):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions; tests/system covers a read-only mount")
    state_dir = cluster / "state" / "ugro-health"
    state_dir.mkdir(parents=True)
    state_dir.chmod(0o500)
    result = run_cli("check", "--json", cwd=cluster)
    assert json.loads(result.stdout)["nodes"]
    assert "history not recorded" in result.stderr


def test_stale_limit_comes_from_the_configuration(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(
        "watch: {stale_after_s: 60}\nnodes:\n  - name: here\n    host: localhost\n"
    )
    run_cli("check", cwd=tmp_path)
    state = tmp_path / "state" / "ugro-health" / "state.json"
    doc = json.loads(state.read_text())
    doc["nodes"]["here"]["polled_at"] -= 120  # older than 60 s, younger than the 600 s default
    state.write_text(json.dumps(doc))
    (node,) = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)["nodes"]
    assert node["stale"] is True
    (node,) = json.loads(run_cli("status", "--json", "--stale-after", "600", cwd=tmp_path).stdout)[
        "nodes"
    ]
    assert node["stale"] is False


def test_a_job_past_its_ttl_is_finished_for_list_start_and_check(cluster: Path):
    started = run_cli(
        "jobs", "start", "t2", "--nodes", "here,here", "--ranks", "1", "--ttl", "2s", cwd=cluster
    )
    assert "job t2 started on here\n" in started.stdout  # a node named twice counts once
    state = cluster / "state" / "ugro-health" / "state.json"
    doc = json.loads(state.read_text())
    doc["jobs"]["t2"]["started_at"] -= 10  # its TTL ran out 8 s ago
    state.write_text(json.dumps(doc))
    report = json.loads(run_cli("check", "--json", "--no-record", cwd=cluster).stdout)
    assert not any(a["code"] == "job_ranks_low" for n in report["nodes"] for a in n["alerts"])
    (job,) = json.loads(run_cli("jobs", "list", "--json", cwd=cluster).stdout)["jobs"]
    assert not job["active"] and job["finish_reason"] == "ttl"
    assert job["finished_at"] == job["started_at"] + 2
    # the launcher's own `jobs finish`, late: not an error for its script
    late = run_cli("jobs", "finish", "t2", cwd=cluster)
    assert late.returncode == 0, late.stderr
    assert late.stdout.startswith("job t2 had already finished: its TTL ran out after 2s")
    again = run_cli("jobs", "start", "t2", "--nodes", "here", cwd=cluster)
    assert again.returncode == 0, again.stderr


def _state(cluster: Path) -> Path:
    return cluster / "state" / "ugro-health" / "state.json"


def test_status_shows_the_configured_nodes_and_agrees_with_check(cluster: Path):
    run_cli("check", cwd=cluster)  # records "here" and "spare"
    (cluster / "cluster.yaml").write_text("nodes:\n  - name: here\n    host: localhost\n")
    checked = run_cli("check", cwd=cluster)
    result = run_cli("status", cwd=cluster)
    assert result.returncode == checked.returncode
    assert "spare" not in result.stdout
    assert "1 more in the store, not configured (--all shows, --prune removes)" in result.stdout
    doc = json.loads(run_cli("status", "--json", cwd=cluster).stdout)
    assert [n["name"] for n in doc["nodes"]] == ["here"] and doc["nodes"][0]["configured"]
    # --all: shown, marked, and still not counted in the exit code
    shown = run_cli("status", "--all", cwd=cluster)
    assert shown.returncode == checked.returncode
    assert "not configured" in shown.stdout.split("spare", 1)[1]
    every = json.loads(run_cli("status", "--all", "--json", cwd=cluster).stdout)
    assert [(n["name"], n["configured"]) for n in every["nodes"]] == [
        ("here", True),
        ("spare", False),
    ]
    # --prune: gone from the store for good
    pruned = run_cli("status", "--prune", cwd=cluster)
    assert "removed from the store: spare" in pruned.stderr
    assert set(json.loads(_state(cluster).read_text())["nodes"]) == {"here"}


def _open_breaker(cluster: Path, node: str, opened_ago: float) -> None:
    """What a `watch` stopped while ``node`` was isolated leaves in the state."""
    run_cli("check", cwd=cluster)
    doc = json.loads(_state(cluster).read_text())
    now = doc["updated_at"]
    doc["nodes"][node]["breaker"] = {
        "state": "open",
        "failures": 3,
        "opened_at": now - opened_ago,
        "next_try_at": now - opened_ago + 30,
        "openings": 1,
        "last_error": "refused: connection refused",
        "closed_at": None,
    }
    _state(cluster).write_text(json.dumps(doc))


def test_status_tells_a_stopped_watchs_breaker_as_it_is(cluster: Path):
    _open_breaker(cluster, "here", opened_ago=600)
    text = run_cli("status", cwd=cluster, env={"COLUMNS": "200"}).stdout
    assert "breaker open: isolated 10m ago, trial overdue by 10m (is watch running?)" in text
    doc = json.loads(run_cli("status", "--json", cwd=cluster).stdout)
    here = doc["nodes"][0]
    assert here["breaker"]["state"] == "open"
    assert here["breaker_note"].startswith("breaker open: isolated 10m ago")


def test_a_successful_check_closes_the_nodes_breaker(cluster: Path):
    _open_breaker(cluster, "here", opened_ago=600)
    run_cli("check", cwd=cluster)
    doc = json.loads(run_cli("status", "--json", cwd=cluster).stdout)
    here = doc["nodes"][0]
    assert here["breaker"]["state"] == "closed" and here["breaker"]["failures"] == 0
    # closed, but the opening is remembered for a while: status says what that means
    assert "a new isolation would wait 1m" in here["breaker_note"]
    assert json.loads(_state(cluster).read_text())["nodes"]["here"]["breaker_override"]["by"] == (
        "check"
    )


def test_breaker_reset_by_hand(cluster: Path):
    _open_breaker(cluster, "here", opened_ago=60)
    result = run_cli("breaker", "reset", "here", cwd=cluster)
    assert result.returncode == 0, result.stderr
    assert "breaker reset: here (was open, 1 opening(s))" in result.stdout
    entry = json.loads(_state(cluster).read_text())["nodes"]["here"]
    assert entry["breaker"]["state"] == "closed" and entry["breaker"]["openings"] == 0
    assert entry["breaker_override"]["by"] == "reset"
    doc = json.loads(run_cli("status", "--json", cwd=cluster).stdout)
    assert doc["nodes"][0]["breaker_note"] is None
    unknown = run_cli("breaker", "reset", "nope", cwd=cluster)
    assert unknown.returncode == 3 and "not configured: nope" in unknown.stderr


def test_piped_output_has_no_trailing_spaces(cluster: Path):
    run_cli("jobs", "start", "llama", "--nodes", "here", cwd=cluster)
    for args in (["check"], ["status"], ["history", "--metric", "cpu"], ["jobs", "list"]):
        out = run_cli(*args, cwd=cluster).stdout
        assert out.strip(), args
        assert [line for line in out.splitlines() if line != line.rstrip()] == [], args
