"""The simulator behind a real sshd: a node whose ``python:`` runs ``ugro_health.sim.node``
answers ``check`` and a persistent session as a real node with 8 recorded H100s would
(``sim_rig.py``; the benchmarks' ``node_side="sim"``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env
from sim_rig import sim_pythons
from sshd_rig import PROBE_REQUEST, SshdRig

from ugro_health.sim.node import node_names

pytestmark = pytest.mark.ssh

NAMES = node_names(8)
GPU_NAME = "NVIDIA H100 80GB HBM3"
DRIVER = "590.48.01"  # the recordings' driver (ugro_health/sim/recordings)


@pytest.fixture(scope="module")
def sim_sshd(sshd_rig: SshdRig) -> Iterator[SshdRig]:
    """The session's rig with an sshd of its own for the simulated nodes."""
    sshd_rig.start_node("simnodes")
    try:
        yield sshd_rig
    finally:
        sshd_rig.stop_node("simnodes")


def check_json(rig: SshdRig, tmp_path: Path, pythons: dict[str, str]) -> tuple[int, Any]:
    """``ugro-health check --json`` of the nodes in ``pythons``, all on the ``simnodes`` sshd."""
    nodes = "".join(f"  - name: {name}\n    python: {python}\n" for name, python in pythons.items())
    config = tmp_path / "cluster.yaml"
    config.write_text(
        f"defaults:\n  host: 127.0.0.1\n  port: {rig.nodes['simnodes'].port}\n"
        f"  user: {rig.user}\n  identity_file: {rig.key}\n  gpus: 8\n"
        f"ssh:\n  connect_timeout: 10\n  command_timeout: 30\n  ssh_config: ''\n"
        f"  known_hosts: {rig.known_hosts}\nnodes:\n{nodes}"
    )
    result = subprocess.run(
        [sys.executable, "-m", "ugro_health", "--config", str(config), "check", "--json"],
        cwd=tmp_path,
        env=cli_env(tmp_path, {"HOME": str(tmp_path), "UGRO_HEALTH_STATE_DIR": str(tmp_path)}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_check_of_a_simulated_node_over_ssh_reports_its_recorded_gpus(
    sim_sshd: SshdRig, tmp_path: Path
) -> None:
    pythons = sim_pythons(sim_sshd, NAMES)
    code, doc = check_json(sim_sshd, tmp_path, {"node03": pythons["node03"]})
    (node,) = doc["nodes"]
    assert node["reachable"] and node["error"] is None, node
    assert [gpu["name"] for gpu in node["gpus"]] == [GPU_NAME] * 8
    assert node["metrics"]["driver_version"] == DRIVER
    assert (node["status"], node["score"], node["alerts"]) == ("ok", 100, [])
    assert code == 0 and doc["status"] == "ok"


def simulators(rig: SshdRig, name: str) -> list[Any]:
    """The simulator processes for node ``name`` under the ``simnodes`` sshd (other tests'
    sessions may not have been reaped yet)."""
    found = rig.probe_processes("simnodes")
    return [p for p in found if f"--node {name} " in " ".join(p.cmdline())]


def test_a_persistent_session_answers_every_tick_from_one_simulator_process(
    sim_sshd: SshdRig,
) -> None:
    python = sim_pythons(sim_sshd, NAMES)["node02"]
    node = sim_sshd.node_config("simnodes", python=python)
    transport = sim_sshd.transport(persistent=True)
    try:
        answers = []
        for _ in range(4):
            answers.append(transport.run_probe(node, PROBE_REQUEST, time.monotonic() + 30))
            (process,) = simulators(sim_sshd, "node02")
            answers[-1]["pid"] = process.pid
    finally:
        transport.close()
    assert all(answer["ok"] is True for answer in answers)
    assert all(len(answer["gpus"]) == 8 for answer in answers)
    assert "ugro_health.sim.node" in " ".join(process.cmdline())
    assert len({answer["pid"] for answer in answers}) == 1  # one process, four ticks
    times = [answer["time"] for answer in answers]
    assert times == sorted(times) and len(set(times)) == 4  # each a fresh answer


def test_the_demo_story_over_ssh_puts_its_fatal_xid_on_the_fifth_node(
    sim_sshd: SshdRig, tmp_path: Path
) -> None:
    # 50 story seconds in: after the Xid (44 s), before the network drop (52 s).
    pythons = sim_pythons(sim_sshd, NAMES, story="demo", start=time.time() - 50)
    code, doc = check_json(sim_sshd, tmp_path, {n: pythons[n] for n in ("node01", "node05")})
    nodes = {node["name"]: node for node in doc["nodes"]}
    xid = nodes["node05"]
    assert xid["status"] == "critical", xid
    assert "gpu_xid_fatal" in {alert["code"] for alert in xid["alerts"]}
    assert "gpu_xid_fatal" not in {alert["code"] for alert in nodes["node01"]["alerts"]}
    assert code == 2 and doc["status"] == "critical"
