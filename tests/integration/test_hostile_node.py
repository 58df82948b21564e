"""A node that answers something hostile (NaN numbers, escape sequences, newlines) is judged
on its own; the others are still reported and nothing it sent reaches the output raw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import CALM_THRESHOLDS, cli_env
from sshd_rig import SshdRig

pytestmark = pytest.mark.ssh

# Stand-ins for the node's python: they read nothing and print one protocol answer.
NAN_ANSWER = 'UGRO1 {"ok": true, "probe_version": 1, "cpu": {"util_pct": NaN, "cores": 4}}'
ESCAPE_ANSWER = 'UGRO1 {"ok": false, "error": "disk \\u001b[31mon fire\\nsecond line\\u0007"}'
SHOUTY_HOST = (
    'UGRO1 {"ok": true, "probe_version": 1, "hostname": "evil\\u001b]0;owned\\u0007",'
    ' "errors": {"gpu": "nvidia-smi: \\u001b[2Jcleared"}}'
)


def stand_in(rig: SshdRig, name: str, answer: str) -> Path:
    path = rig.root / name
    path.write_text(f"#!/bin/sh\ncat > /dev/null &\ncat <<'EOF'\n{answer}\nEOF\n")
    path.chmod(0o755)
    return path


def write_cluster(rig: SshdRig, path: Path) -> Path:
    port = rig.nodes["node1"].port
    nodes = {
        "good": "/usr/bin/python3",
        "nan": stand_in(rig, "nan_python", NAN_ANSWER),
        "escape": stand_in(rig, "escape_python", ESCAPE_ANSWER),
        "shouty": stand_in(rig, "shouty_python", SHOUTY_HOST),
    }
    lines = [
        f"  - name: {name}\n    host: 127.0.0.1\n    port: {port}\n    python: {python}"
        for name, python in nodes.items()
    ]
    path.write_text(
        CALM_THRESHOLDS
        + f"defaults:\n  user: {rig.user}\n  identity_file: {rig.key}\n"
        + "ssh:\n  connect_timeout: 2\n  command_timeout: 5\n  ssh_config: ''\n"
        + f"  known_hosts: {rig.known_hosts}\n"
        + "nodes:\n"
        + "\n".join(lines)
        + "\n"
    )
    return path


def run(config: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ugro_health", "--config", str(config), *args],
        cwd=tmp_path,
        env=cli_env(tmp_path, {"HOME": str(tmp_path)}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_nan_answer_is_invalid_and_the_rest_are_reported(sshd_rig: SshdRig, tmp_path: Path):
    config = write_cluster(sshd_rig, tmp_path / "cluster.yaml")
    result = run(config, tmp_path, "check", "--json")
    assert "internal error" not in result.stderr
    nodes = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert nodes["good"]["status"] == "ok", nodes["good"]["error"]
    assert nodes["nan"]["error_kind"] == "probe_invalid"
    assert "NaN is not a JSON number" in nodes["nan"]["error"]
    assert result.returncode == 2
    # what was recorded reads back (no NaN in the store)
    history = run(config, tmp_path, "history", "--json")
    assert history.returncode == 0, history.stderr


def test_control_characters_from_a_node_never_reach_the_output(sshd_rig: SshdRig, tmp_path: Path):
    config = write_cluster(sshd_rig, tmp_path / "cluster.yaml")
    outputs = [
        run(config, tmp_path, "check", "--no-record", "--json").stdout,
        run(config, tmp_path, "check", "--no-record").stdout,
    ]
    nagios = run(config, tmp_path, "check", "--no-record", "--nagios").stdout
    for text in [*outputs, nagios]:
        assert "\x1b" not in text and "\x07" not in text
    # the Nagios status line is the first line and names the escaped message on it
    assert "\\x1b[31mon fire\\x0asecond line" in nagios
    doc = json.loads(outputs[0])
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert nodes["escape"]["error"].endswith("disk \\x1b[31mon fire\\x0asecond line\\x07")
    assert nodes["shouty"]["metrics"]["probe_errors"] == {"gpu": "nvidia-smi: \\x1b[2Jcleared"}
