"""The ``check`` command end to end through the real entry point, on the local machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import run_cli

run = run_cli


def test_check_without_config_checks_this_machine(tmp_path: Path):
    result = run("check", "--json", cwd=tmp_path)
    doc = json.loads(result.stdout)
    assert doc["schema"] == "ugro-health/v1"
    (node,) = doc["nodes"]
    assert node["reachable"] is True and node["error"] is None
    assert node["metrics"]["cpu_cores"] == os.cpu_count()
    assert 0 <= node["score"] <= 100
    assert result.returncode == {"ok": 0, "warning": 1, "critical": 2}[doc["status"]]


def test_check_table_and_nagios(tmp_path: Path):
    table = run("check", "--no-record", cwd=tmp_path)
    assert table.returncode in (0, 1, 2), table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["NODE", "STATUS", "SCORE"]
    assert "\x1b[" not in table.stdout  # no escape codes in a pipe
    nagios = run("check", "--nagios", "--no-record", cwd=tmp_path)
    assert nagios.stdout.startswith("UGRO-HEALTH ") and " | nodes=1;" in nagios.stdout
    assert nagios.stdout.count("\n") == 1


def test_config_lookup_order(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text("nodes:\n  - name: from-cwd\n    host: localhost\n")
    explicit = tmp_path / "other.yaml"
    explicit.write_text("nodes:\n  - name: from-flag\n    transport: local\n")
    names = lambda r: [n["name"] for n in json.loads(r.stdout)["nodes"]]  # noqa: E731
    assert names(run("check", "--json", "--no-record", cwd=tmp_path)) == ["from-cwd"]
    assert names(
        run("--config", str(explicit), "check", "--json", "--no-record", cwd=tmp_path)
    ) == ["from-flag"]
    env = {"UGRO_HEALTH_CONFIG": str(explicit)}
    assert names(run("check", "--json", "--no-record", cwd=tmp_path, env=env)) == ["from-flag"]


@pytest.mark.parametrize(
    ("args", "config", "expected"),
    [
        (
            ["check"],
            "nodes:\n  - name: a\n    prot: 22\n",
            "cluster.yaml:3: nodes[0].prot: unknown key",
        ),
        (["check"], "nodes: [\n", "cluster.yaml:2: invalid YAML"),
        (
            ["check", "--nodes", "nope*"],
            "nodes: [{name: a, transport: local}]\n",
            "no node matches 'nope*'",
        ),
        (["check", "--bogus"], None, "No such option: --bogus"),
        (["chekc"], None, "No such command 'chekc'"),
        (["--config", "/nonexistent.yaml", "check"], None, "/nonexistent.yaml: no such file"),
    ],
)
def test_usage_and_config_errors_exit_3_with_one_line(tmp_path: Path, args, config, expected):
    if config is not None:
        (tmp_path / "cluster.yaml").write_text(config)
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 3, result
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_version_and_help(tmp_path: Path):
    version = run("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("ugro-health ")
    helped = run("check", "--help", cwd=tmp_path, env={"COLUMNS": "80"})
    assert helped.returncode == 0 and "--nodes" in helped.stdout and "--json" in helped.stdout
    assert max(len(line) for line in helped.stdout.splitlines()) <= 80
