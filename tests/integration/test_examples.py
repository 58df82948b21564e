"""Every script in ``examples/`` runs: on the local node, and over the sshd rig with a GPU node
whose recorded ``nvidia-smi`` answers turn CRITICAL when the test says so."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prom_server import gpu_python
from sshd_rig import REMOTE_PYTHON, SshdRig
from watch_rig import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def start_example(name: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-u", str(EXAMPLES / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_monitor_script_on_the_local_node(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text("nodes:\n  - name: here\n    host: localhost\n")
    args = ("--config", str(config), "--state-dir", str(tmp_path / "s"), "--cycles", "2")
    done = run_example("monitor_script.py", *args, "--interval", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [x.split(":")[0] for x in lines if x.startswith("cycle")] == ["cycle 1", "cycle 2"]
    assert lines[-1].startswith("stopped after 2 cycle(s); last state: here=")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_config_in_code_on_the_local_node(tmp_path: Path, backend: str) -> None:
    args = ("--node", "here=localhost", "--state-dir", str(tmp_path), "--cycles", "2")
    done = run_example("config_in_code.py", *args, "--backend", backend)
    assert done.returncode in (0, 1, 2), done.stderr  # this machine's own health decides
    assert done.stdout.splitlines()[0].startswith("check: ")
    assert "state: here=" in done.stdout
    bad = run_example("config_in_code.py", "--node", "bad name!")
    assert bad.returncode == 3 and bad.stderr.startswith("error: <make_config>: nodes"), bad.stderr


def gpu_node_config(rig: SshdRig, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A cluster file with rig node ``name`` answering as an H100 (recorded), and the flag file
    that switches its answers from the idle recording (41 °C) to the loaded one (59 °C), which
    the thresholds here make CRITICAL."""
    rig.start_node(name)
    python = Path(gpu_python(rig, name))
    flag = python.parent / "critical"
    smi = python.parent / "nvidia-smi"
    smi.write_text(
        f"#!/bin/sh\nif [ -e {flag} ]; then FAKE_SMI_STATE=load; else FAKE_SMI_STATE=idle; fi\n"
        f'export FAKE_SMI_STATE\nexec {REMOTE_PYTHON} {python.parent}/fake_nvidia_smi.py "$@"\n'
    )
    smi.chmod(0o755)
    node = rig.node_config(name)
    doc = {
        "ssh": {
            "known_hosts": str(rig.known_hosts),
            "ssh_config": None,
            "system_ssh_config": None,
            "connect_timeout": 5,
            "command_timeout": 20,
        },
        # Only the GPU's temperature decides: the rig node is this machine, whose load,
        # memory and disks are whatever the test suite makes them.
        "thresholds": {
            "gpu_temp_warn_c": 50,
            "gpu_temp_crit_c": 55,
            "mem_warn_pct": 100,
            "mem_crit_pct": 100,
            "disk_warn_pct": 100,
            "disk_crit_pct": 100,
            "load_warn_per_core": 10_000.0,
        },
        "nodes": [
            {
                "name": name,
                "host": node.host,
                "port": node.port,
                "user": node.user,
                "identity_file": node.identity_file,
                "python": str(python),
                "transport": "ssh",
                "gpus": 1,
            }
        ],
    }
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(doc))
    return config, flag


def read_lines(proc: subprocess.Popen[str], until: str, timeout: float) -> list[str]:
    """Lines of ``proc``'s stdout up to the first containing ``until``."""
    import selectors

    assert proc.stdout is not None
    lines: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if until in line:
                return lines
    raise AssertionError(f"no line with {until!r} in {timeout}s; got {lines}")


@pytest.mark.ssh
@pytest.mark.slow
def test_training_agent_stops_training_when_its_node_goes_critical(
    sshd_rig: SshdRig, tmp_path: Path
) -> None:
    config, flag = gpu_node_config(sshd_rig, tmp_path, "exgpu1")
    state = tmp_path / "state"
    args = ("--config", str(config), "--state-dir", str(state), "--job", "llama")
    agent = start_example("training_agent.py", *args, "--interval", "1")
    try:
        read_lines(agent, "agent: training started", 60)
        # The job is registered for the training's life, and the node is healthy meanwhile.
        read_lines(agent, "step 3", 60)
        jobs = json.loads((state / "state.json").read_text())["jobs"]
        assert jobs["llama"]["nodes"] == ["exgpu1"] and jobs["llama"].get("finished_at") is None
        assert agent.poll() is None
        flag.touch()  # the GPU heats up: 59 °C against a critical level of 55
        stopped = read_lines(agent, "agent: stopping training", 60)[-1]
        assert "exgpu1 gpu_temp_critical" in stopped
        assert agent.wait(timeout=60) == 2
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.stderr is not None
    assert "agent: training stopped: exgpu1 gpu_temp_critical" in agent.stderr.read()
    jobs = json.loads((state / "state.json").read_text())["jobs"]
    assert jobs["llama"]["finished_at"] is not None  # finished as the agent left
    wait_for(lambda: not sshd_rig.sessions("exgpu1"), 15, "the agent's session to end")
    sshd_rig.stop_node("exgpu1")


@pytest.mark.ssh
@pytest.mark.slow
def test_alert_log_escalates_on_the_second_critical(sshd_rig: SshdRig, tmp_path: Path) -> None:
    config, flag = gpu_node_config(sshd_rig, tmp_path, "exgpu2")
    log = tmp_path / "alerts.jsonl"
    marker = tmp_path / "escalated"
    flag.touch()  # critical from the first poll
    proc = start_example(
        "alert_log.py",
        *("--config", str(config), "--state-dir", str(tmp_path / "state")),
        *("--log", str(log), "--interval", "1"),
        *("--escalate-command", f'echo "$UGRO_NODE: $UGRO_ALERT" > {marker}'),
    )

    def records() -> list[dict[str, object]]:
        text = log.read_text() if log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def seen(kind: str, count: int = 1) -> bool:
        found = [r for r in records() if r["kind"] == kind and r.get("code") == "gpu_temp_critical"]
        return len(found) >= count

    try:
        wait_for(lambda: seen("raised"), 60, "the first CRITICAL")
        assert not seen("escalated") and not marker.exists()
        flag.unlink()  # it cools down ...
        wait_for(lambda: seen("cleared"), 60, "the alert to clear")
        flag.touch()  # ... and heats up again: the second CRITICAL escalates
        wait_for(lambda: seen("escalated"), 60, "the escalation")
        wait_for(marker.exists, 30, "the escalation command")
        assert marker.read_text().startswith("exgpu2: GPU 0")
        assert seen("raised", 2) and not seen("escalated", 2)
        proc.send_signal(signal.SIGTERM)  # stops after the round in flight
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    sshd_rig.stop_node("exgpu2")
