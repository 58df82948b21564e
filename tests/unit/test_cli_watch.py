"""``watch`` as a process: headless log lines, SIGTERM/SIGINT stop it cleanly, status sees it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import CALM_THRESHOLDS, run_cli, spawn_cli


def start_watch(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return spawn_cli("watch", "--interval", "1", *args, cwd=cwd)


def read_lines_until(proc: subprocess.Popen[str], needle: str, timeout: float = 30) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen in {lines}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_headless_logs_cycles_and_stops_cleanly(tmp_path: Path, signum: int):
    (tmp_path / "cluster.yaml").write_text("nodes:\n  - name: here\n    host: localhost\n")
    proc = start_watch(tmp_path)  # stdout is a pipe: headless without being asked
    try:
        lines = read_lines_until(proc, "cycle 2:")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert lines[0].endswith(f"watching 1 node(s); state in {tmp_path}/state/ugro-health")
    cycle = next(line for line in lines if " cycle 1: " in line)
    # `--interval 1`: next in 1 s, or at once when this busy machine's load made the node a
    # WARNING (problem nodes are re-polled sooner)
    assert "polled 1 in" in cycle and "1 node: 1 " in cycle
    assert re.search(r"; next in [01]s$", cycle), cycle
    assert out.strip().splitlines()[-1].split(" ", 1)[1].startswith("stopped after ")
    assert "Traceback" not in err
    status = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)
    assert status["nodes"][0]["stale"] is False


def test_alert_lines_are_logged_once(tmp_path: Path):
    # A node whose SSH port is closed: one ALERT line when it fails, not one per cycle.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "cluster.yaml").write_text(
        f"ssh: {{connect_timeout: 1, ssh_config: '', known_hosts: {tmp_path}/kh}}\n"
        f"nodes:\n  - name: dead\n    host: 127.0.0.1\n    port: {port}\n"
    )
    proc = start_watch(tmp_path)
    try:
        lines = read_lines_until(proc, "cycle 3:")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    alerts = [line for line in lines if " ALERT " in line]
    assert len([a for a in alerts if "node_unreachable" in a]) == 1
    assert "ALERT CRITICAL dead node_unreachable: unreachable (refused)" in alerts[0]
    assert proc.returncode == 0


def test_running_watch_picks_up_a_job_started_from_another_shell(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(
        CALM_THRESHOLDS + "nodes:\n  - name: here\n    host: localhost\n"
    )
    proc = spawn_cli("watch", "--headless", cwd=tmp_path)
    try:
        first = read_lines_until(proc, "cycle 1:")
        assert "jobs: none; next in 40s" in first[-1]  # idle
        started = time.monotonic()
        assert run_cli("jobs", "start", "llama", "--nodes", "here", cwd=tmp_path).returncode == 0
        lines = read_lines_until(proc, "cycle 2:", timeout=20)
        assert time.monotonic() - started < 20  # not the 40 s idle wait
        assert "jobs: llama; next in 5s" in lines[-1]
        # the cycle's events come before its summary line, so the log's times never go back
        (news,) = [line for line in lines if "job_started" in line]
        assert "ALERT INFO here job_started: job llama started on here" in news
        assert [line[:20] for line in lines] == sorted(line[:20] for line in lines)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0


def test_headless_says_an_unreadable_kernel_log_once_per_node(capsys: pytest.CaptureFixture[str]):
    from dataclasses import replace
    from types import SimpleNamespace

    from ugro_health.cli.watch import _note_kernel_log
    from ugro_health.model import NodeReport, NodeSample, Status

    denied = NodeSample(errors={"xid": "dmesg: read kernel buffer failed: Permission denied"})
    reports = {"gpu1": NodeReport("gpu1", Status.OK, 100, 0.0, 0.1, sample=denied)}
    monitor = SimpleNamespace(view=SimpleNamespace(reports=reports))
    noted: set[str] = set()
    _note_kernel_log(monitor, 0.0, noted)  # type: ignore[arg-type]
    _note_kernel_log(monitor, 5.0, noted)  # type: ignore[arg-type]
    reports["gpu2"] = replace(reports["gpu1"], name="gpu2")
    _note_kernel_log(monitor, 10.0, noted)  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    assert " NOTE XID errors are not checked on gpu1: " in lines[0]
    assert " NOTE XID errors are not checked on gpu2: " in lines[1]
    assert "kernel.dmesg_restrict=0" in lines[1]
