"""``ugro-health check`` end to end over a real sshd cluster with every kind of failure in it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import CALM_THRESHOLDS, cli_env
from sshd_rig import SshdRig

pytestmark = pytest.mark.ssh


def node(rig: SshdRig, name: str, port: int, **extra: str) -> str:
    lines = [f"  - name: {name}", "    host: 127.0.0.1", f"    port: {port}"]
    lines += [f"    {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines)


def write_cluster(rig: SshdRig, path: Path) -> Path:
    ports = {name: rig.nodes[name].port for name in ("node1", "node2", "node3", "changed")}
    nodes = [
        node(rig, "good1", ports["node1"]),
        node(rig, "good2", ports["node2"]),
        node(rig, "refused", rig.refused_port),
        node(rig, "blackhole", rig.blackhole_port),
        node(rig, "changed-key", ports["changed"]),
        node(rig, "wrong-key", ports["node3"], identity_file=str(rig.wrong_key)),
        node(rig, "garbage", ports["node3"], python=str(rig.garbage_python)),
    ]
    path.write_text(
        CALM_THRESHOLDS
        + f"defaults:\n  user: {rig.user}\n  identity_file: {rig.key}\n  python: /usr/bin/python3\n"
        + "ssh:\n  connect_timeout: 2\n  command_timeout: 5\n  ssh_config: ''\n"
        + f"  known_hosts: {rig.known_hosts}\n"
        + "nodes:\n"
        + "\n".join(nodes)
        + "\n"
    )
    return path


def test_every_failure_is_classified_and_the_check_keeps_its_deadline(
    sshd_rig: SshdRig, tmp_path: Path
):
    config = write_cluster(sshd_rig, tmp_path / "cluster.yaml")
    env = cli_env(tmp_path, {"HOME": str(tmp_path)})
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ugro_health",
            "--config",
            str(config),
            "check",
            "--json",
            "--timeout",
            "8",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    doc = json.loads(result.stdout)
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert result.returncode == 2 and doc["status"] == "critical"
    for name in ("good1", "good2"):
        assert nodes[name]["reachable"] and nodes[name]["status"] == "ok", nodes[name]
        assert nodes[name]["metrics"]["cpu_cores"] >= 1
    expected = {
        "refused": "refused",
        "blackhole": "timeout",
        "changed-key": "host_key_changed",
        "wrong-key": "auth_failed",
        "garbage": "probe_invalid",
    }
    for name, kind in expected.items():
        assert nodes[name]["error_kind"] == kind, nodes[name]["error"]
        assert nodes[name]["reachable"] is False and nodes[name]["score"] is None
        assert nodes[name]["status"] == "critical"
    assert "SHA256:" in nodes["changed-key"]["error"]
    # The black hole costs its connect timeout (2 s) in parallel with the rest, not in series.
    assert elapsed < 8 + 5, elapsed
    assert doc["duration_s"] < 2 + 2.5, doc["duration_s"]


def test_nagios_and_table_name_the_failures(sshd_rig: SshdRig, tmp_path: Path):
    config = write_cluster(sshd_rig, tmp_path / "cluster.yaml")
    env = cli_env(tmp_path, {"HOME": str(tmp_path)})
    base = [sys.executable, "-m", "ugro_health", "--config", str(config), "check", "--no-record"]
    table = subprocess.run(
        [*base, "--nodes", "good*,refused"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 2
    refused = next(line for line in table.stdout.splitlines() if line.startswith("refused"))
    assert "UNREACHABLE" in refused and "connection refused" in refused
    nagios = subprocess.run(
        [*base, "--nagios", "--nodes", "good1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nagios.returncode == 0 and nagios.stdout.startswith("UGRO-HEALTH OK - 1 node: 1 ok")
