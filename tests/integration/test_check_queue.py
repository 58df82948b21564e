"""More nodes than workers: a node queued behind slow ones still gets its own budget, and one
whose turn never comes within ``--timeout`` is reported as not polled, never as unreachable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import CALM_THRESHOLDS, cli_env
from sshd_rig import SshdRig

pytestmark = pytest.mark.ssh

HANGING = 8  # nodes whose probe never answers: each holds a worker for its command timeout


def write_cluster(rig: SshdRig, path: Path) -> Path:
    port = rig.nodes["node1"].port
    hanging = [
        f"  - name: hang{i}\n    host: 127.0.0.1\n    port: {port}\n    python: {rig.hang_python}"
        for i in range(HANGING)
    ]
    good = [f"  - name: good{i}\n    host: 127.0.0.1\n    port: {port}" for i in range(2)]
    path.write_text(
        CALM_THRESHOLDS
        + f"defaults:\n  user: {rig.user}\n  identity_file: {rig.key}\n  python: /usr/bin/python3\n"
        # one node's budget: 4 x 1 s connect phases + 2 s command = 6 s; two workers
        + "ssh:\n  connect_timeout: 1\n  command_timeout: 2\n  max_workers: 2\n  ssh_config: ''\n"
        + f"  known_hosts: {rig.known_hosts}\n"
        + "nodes:\n"
        + "\n".join(hanging + good)
        + "\n"
    )
    return path


def check(config: Path, tmp_path: Path, *args: str) -> tuple[int, dict]:
    result = subprocess.run(
        [sys.executable, "-m", "ugro_health", "--config", str(config), "check", "--json", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path, {"HOME": str(tmp_path)}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, {n["name"]: n for n in json.loads(result.stdout)["nodes"]}


def test_queued_nodes_get_their_own_budget(sshd_rig: SshdRig, tmp_path: Path):
    # The two good nodes start only after four waves of hanging ones (about 8.3 s), past one
    # node's 6 s budget: counted from the start of the run they would time out unpolled.
    config = write_cluster(sshd_rig, tmp_path / "cluster.yaml")
    code, nodes = check(config, tmp_path, "--no-record")
    assert code == 2
    for i in range(2):
        assert nodes[f"good{i}"]["status"] == "ok", nodes[f"good{i}"]["error"]
    for i in range(HANGING):
        assert nodes[f"hang{i}"]["error_kind"] == "timeout"


def test_nodes_whose_turn_never_comes_are_not_polled_and_not_recorded(
    sshd_rig: SshdRig, tmp_path: Path
):
    config = write_cluster(sshd_rig, tmp_path / "cluster.yaml")
    code, nodes = check(config, tmp_path, "--timeout", "3")
    assert code == 2  # the hanging nodes that ran are CRITICAL
    for i in range(2):
        good = nodes[f"good{i}"]
        assert (good["status"], good["error_kind"], good["reachable"]) == (
            "unknown",
            "not_polled",
            False,
        )
        assert [a["code"] for a in good["alerts"]] == ["node_not_polled"]
    # The first wave times out at its 2 s command timeout; the second starts about then and is
    # cut short by the 3 s (a slow machine may cut the first wave short too).
    polled = {n for n, v in nodes.items() if v["error_kind"] != "not_polled"}
    assert polled <= {"hang0", "hang1"}
    assert {nodes[n]["error_kind"] for n in polled} <= {"timeout"}
    history = subprocess.run(
        [sys.executable, "-m", "ugro_health", "--config", str(config), "history", "--json"],
        cwd=tmp_path,
        env=cli_env(tmp_path, {"HOME": str(tmp_path)}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    recorded = {s["node"] for s in json.loads(history.stdout)["samples"]}
    assert recorded == polled, recorded  # nothing was learnt about the others


def test_a_node_cut_short_by_the_runs_timeout_is_not_polled_not_critical(
    sshd_rig: SshdRig, tmp_path: Path
):
    # "slow" is healthy but takes 5 s to start its probe: --timeout 2.5 cuts its command phase
    # short (10 s of its own). "dark" never sends a banner: its 1 s banner phase runs out first,
    # inside the run's time, so that one is a real timeout.
    slow_python = sshd_rig.root / "slow_python"
    slow_python.write_text('#!/bin/sh\nsleep 5\nexec /usr/bin/python3 "$@"\n')
    slow_python.chmod(0o755)
    config = tmp_path / "cluster.yaml"
    config.write_text(
        CALM_THRESHOLDS
        + f"defaults:\n  user: {sshd_rig.user}\n  identity_file: {sshd_rig.key}\n"
        + "ssh:\n  connect_timeout: 1\n  command_timeout: 10\n  ssh_config: ''\n"
        + f"  known_hosts: {sshd_rig.known_hosts}\n"
        + "nodes:\n"
        + f"  - name: dark\n    host: 127.0.0.1\n    port: {sshd_rig.blackhole_port}\n"
        + f"  - name: slow\n    host: 127.0.0.1\n    port: {sshd_rig.nodes['node1'].port}\n"
        + f"    python: {slow_python}\n"
    )
    code, nodes = check(config, tmp_path, "--timeout", "2.5", "--no-record")
    assert nodes["dark"]["error_kind"] == "timeout", nodes["dark"]["error"]
    slow = nodes["slow"]
    assert (slow["status"], slow["error_kind"]) == ("unknown", "not_polled"), slow["error"]
    assert "the run's time left it" in slow["error"]
    assert code == 2  # "dark" is CRITICAL; "slow" is not counted against the cluster
