"""sshd's connection throttling (``MaxStartups``) must never make a healthy node CRITICAL.

64 node entries point at one real sshd with OpenSSH's default ``MaxStartups 10:30:100`` (as
many names behind one address, or a bastion every node jumps through): without pacing, sshd
drops a random share of the handshakes ("Error reading SSH protocol banner ... Connection reset
by peer") and ``check`` reported 7-21 healthy nodes CRITICAL. ``ssh.max_startups`` paces the
connections per endpoint and a drop before the banner is retried within the node's budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import CALM_THRESHOLDS, cli_env
from sshd_rig import SshdRig

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

NODES = 64
DEFAULT_MAX_STARTUPS = "MaxStartups 10:30:100"


@pytest.fixture(scope="module")
def throttled(sshd_rig: SshdRig) -> Iterator[str]:
    """An sshd with the default MaxStartups (the rig's own nodes allow 200)."""
    sshd_rig.start_node("throttled", options=(DEFAULT_MAX_STARTUPS,))
    yield "throttled"
    sshd_rig.stop_node("throttled")


def write_cluster(rig: SshdRig, path: Path, port: int, jump: str | None) -> Path:
    nodes = "".join(
        f"  - name: n{i:02d}\n    host: 127.0.0.1\n    port: {port}\n" for i in range(NODES)
    )
    extra = f"  proxy_jump: {jump}\n" if jump else ""
    path.write_text(
        CALM_THRESHOLDS
        + f"defaults:\n  user: {rig.user}\n  identity_file: {rig.key}\n  python: /usr/bin/python3\n"
        + extra
        + "ssh:\n  connect_timeout: 10\n  command_timeout: 30\n  max_workers: 64\n"
        + f"  ssh_config: ''\n  known_hosts: {rig.known_hosts}\n"
        + "nodes:\n"
        + nodes
    )
    return path


def run_check(config: Path, tmp_path: Path) -> dict[str, dict[str, object]]:
    env = cli_env(tmp_path, {"HOME": str(tmp_path)})
    args = [sys.executable, "-m", "ugro_health", "--config", str(config), "check", "--json"]
    result = subprocess.run(
        [*args, "--no-record"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    doc = json.loads(result.stdout)
    return {n["name"]: n for n in doc["nodes"]}


def unreachable(nodes: dict[str, dict[str, object]]) -> dict[str, object]:
    return {name: n["error"] for name, n in nodes.items() if not n["reachable"]}


def test_many_nodes_behind_one_default_sshd_are_all_reached(
    sshd_rig: SshdRig, throttled: str, tmp_path: Path
) -> None:
    port = sshd_rig.nodes[throttled].port
    config = write_cluster(sshd_rig, tmp_path / "cluster.yaml", port, None)
    for _ in range(2):  # the drops are random: two runs, each with zero false CRITICALs
        nodes = run_check(config, tmp_path)
        assert len(nodes) == NODES
        assert unreachable(nodes) == {}


def test_many_nodes_through_one_default_bastion_are_all_reached(
    sshd_rig: SshdRig, throttled: str, tmp_path: Path
) -> None:
    # Every node connects to the bastion first: the bastion's MaxStartups is the one hit.
    jump = f"{sshd_rig.user}@127.0.0.1:{sshd_rig.nodes[throttled].port}"
    config = write_cluster(sshd_rig, tmp_path / "cluster.yaml", sshd_rig.nodes["node1"].port, jump)
    for _ in range(2):
        nodes = run_check(config, tmp_path)
        assert len(nodes) == NODES
        assert unreachable(nodes) == {}
