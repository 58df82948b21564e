"""Contract edges through the real entry point: node selection, --nagios errors, status fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import CALM_THRESHOLDS, run_cli

# "dead" refuses at once (nothing listens on port 1): an unreachable node without waiting.
CLUSTER = (
    "nodes:\n  - name: here\n    host: localhost\n"
    "  - name: dead\n    host: 127.0.0.1\n    port: 1\n    transport: ssh\n" + CALM_THRESHOLDS
)


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    return tmp_path


@pytest.mark.parametrize(
    ("command", "nodes", "named"),
    [
        ("check", "here,zzz", "'zzz'"),
        ("check", "zzz, here ,yy*", "'zzz', 'yy*'"),
        ("watch", "here,zzz", "'zzz'"),
    ],
)
def test_a_glob_that_matches_nothing_is_a_usage_error(cluster: Path, command, nodes, named):
    extra = "--headless" if command == "watch" else "--no-record"
    result = run_cli(command, "--nodes", nodes, extra, cwd=cluster, timeout=30)
    assert result.returncode == 3, result
    assert result.stderr == f"ugro-health: no node matches {named} (configured: here, dead)\n"
    assert result.stdout == ""


def test_an_empty_nodes_option_is_a_usage_error_not_every_node(cluster: Path):
    result = run_cli("check", "--nodes", "", "--no-record", cwd=cluster, timeout=30)
    assert result.returncode == 3, result
    assert result.stderr == (
        "ugro-health: --nodes is empty: give node names or globs, or leave the option out\n"
    )


def test_nagios_check_reports_unreachable_as_critical_perfdata(cluster: Path):
    result = run_cli("check", "--nagios", "--no-record", cwd=cluster)
    assert result.returncode == 2, result
    head, perf = result.stdout.rstrip("\n").split(" | ")
    assert head.startswith("UGRO-HEALTH CRITICAL - 2 nodes: 1 ok, 1 critical (1 unreachable)")
    unreachable, score = perf.split()[2:4]
    assert unreachable == "unreachable=1;;0;0;2"
    # This machine's own score depends on its load and zombies: only the format is fixed.
    assert re.fullmatch(r"'here_score'=\d{1,3};70:;;0;100", score), score


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["check", "--nagios", "--nodes", "zzz"], "no node matches 'zzz' (configured: here, dead)"),
        (
            ["check", "--nagios", "--bogus"],
            "No such option: --bogus (see 'ugro-health check --help')",
        ),
        (
            ["check", "--json", "--nagios"],
            "--json and --nagios cannot be used together (see 'ugro-health check --help')",
        ),
        (["--config", "/nonexistent.yaml", "check", "--nagios"], "/nonexistent.yaml: no such file"),
    ],
)
def test_nagios_errors_answer_unknown_on_stdout(cluster: Path, args, reason):
    result = run_cli(*args, cwd=cluster)
    assert result.returncode == 3, result
    assert result.stdout == f"UGRO-HEALTH UNKNOWN - {reason}\n"
    assert "Traceback" not in result.stderr


def test_status_json_has_error_kind(cluster: Path):
    assert run_cli("check", cwd=cluster).returncode == 2
    nodes = json.loads(run_cli("status", "--json", cwd=cluster).stdout)["nodes"]
    assert [(n["name"], n["error_kind"]) for n in nodes] == [("here", None), ("dead", "refused")]
    # State written without the field (older versions): the kind is read from the error text.
    state = cluster / "state" / "ugro-health" / "state.json"
    doc = json.loads(state.read_text())
    for entry in doc["nodes"].values():
        del entry["error_kind"]
    state.write_text(json.dumps(doc))
    nodes = json.loads(run_cli("status", "--json", cwd=cluster).stdout)["nodes"]
    assert [n["error_kind"] for n in nodes] == [None, "refused"]
