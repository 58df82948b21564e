"""Drain and resume against a real Slurm (munged, slurmctld, two slurmd on loopback), through
the real entry point: ``check --slurm-act`` as cron runs it, and ``watch --headless``.

The ugro nodes ``gpu01`` and ``gpu02`` are polled in-process (no sshd needed); each one's only
mount is a symlink to ``/`` (healthy) or a plain directory (``mount_missing``: CRITICAL), so a
test makes a node sick and well again. Slurm's own view is read back with ``sinfo`` (ugro-health
itself reads ``scontrol``: two tools, one truth).
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import CALM_THRESHOLDS, cli_env, run_cli
from notify_e2e_helpers import make_mount
from slurm_rig import SlurmRig
from watch_rig import wait_for

CALM: dict[str, Any] = yaml.safe_load(CALM_THRESHOLDS)["thresholds"]
NODES = ("gpu01", "gpu02")


def set_health(home: Path, node: str, healthy: bool) -> None:
    make_mount(home, healthy, f"mnt-{node}")


def write_cluster(
    home: Path, rig: SlurmRig, extra: dict[str, Any] | None = None, **slurm: Any
) -> None:
    for node in NODES:
        if not (home / f"mnt-{node}").exists():
            set_health(home, node, True)
    doc = {
        "thresholds": CALM,
        "nodes": [
            {"name": n, "transport": "local", "mounts": [str(home / f"mnt-{n}")]} for n in NODES
        ],
        "slurm": {
            "enabled": True,
            "scontrol": rig.bin["scontrol"],
            "squeue": rig.bin["squeue"],
            "sinfo": rig.bin["sinfo"],
            "timeout": 20,
            **slurm,
        },
        **(extra or {}),
    }
    (home / "cluster.yaml").write_text(json.dumps(doc, indent=1))


def sinfo_state(rig: SlurmRig, node: str) -> tuple[set[str], str | None]:
    """(state flags, reason) of ``node`` as ``sinfo`` shows them: ``{"IDLE", "DRAIN"}``."""
    out = rig.run(
        "sinfo", "--noheader", "--Node", "-n", node, "-O", "NodeList:|,StateComplete:|,Reason:"
    )
    name, state, reason = out.stdout.splitlines()[0].split("|", 2)
    assert name == node
    return {f.upper() for f in state.split("+")}, None if reason == "none" else reason


def env(rig: SlurmRig) -> dict[str, str]:
    return {"SLURM_CONF": str(rig.conf)}


def check_act(home: Path, rig: SlurmRig, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli("check", "--slurm-act", *args, cwd=home, env=env(rig), timeout=120)
    assert result.returncode in (0, 1, 2), result.stderr
    return result


def history_codes(home: Path, node: str) -> list[str]:
    """The Slurm event codes in ``node``'s recorded history."""
    result = run_cli("history", node, "--since", "1h", "--json", cwd=home)
    assert result.returncode == 0, result.stderr
    return re.findall(r'"code": "(slurm_[a-z_]+)"', result.stdout)


@pytest.mark.slow
def test_critical_node_is_drained_with_the_prefixed_reason_then_resumed(
    slurm: SlurmRig, tmp_path: Path
) -> None:
    write_cluster(tmp_path, slurm)
    set_health(tmp_path, "gpu01", False)
    check_act(tmp_path, slurm)
    assert not sinfo_state(slurm, "gpu01")[0] & {"DRAIN"}, "drained after one poll"
    result = check_act(tmp_path, slurm)
    flags, reason = sinfo_state(slurm, "gpu01")
    assert "DRAIN" in flags, result.stderr
    assert reason is not None and reason.startswith("ugro-health: mount_missing")
    assert "DRAIN" not in sinfo_state(slurm, "gpu02")[0]
    assert "slurm_drained" in history_codes(tmp_path, "gpu01")

    set_health(tmp_path, "gpu01", True)
    check_act(tmp_path, slurm)
    check_act(tmp_path, slurm)
    assert "DRAIN" in sinfo_state(slurm, "gpu01")[0], "resumed before 3 healthy polls"
    check_act(tmp_path, slurm)
    assert "DRAIN" not in sinfo_state(slurm, "gpu01")[0]
    assert "slurm_resumed" in history_codes(tmp_path, "gpu01")


@pytest.mark.slow
def test_a_node_drained_by_an_admin_is_never_resumed_and_keeps_its_reason(
    slurm: SlurmRig, tmp_path: Path
) -> None:
    write_cluster(tmp_path, slurm)
    slurm.admin_drain("gpu02", "ADMIN: disk swap")
    for _ in range(4):  # healthy all along: more than resume.after polls
        check_act(tmp_path, slurm)
    flags, reason = sinfo_state(slurm, "gpu02")
    assert "DRAIN" in flags and reason == "ADMIN: disk swap"
    set_health(tmp_path, "gpu02", False)  # sick as well: still the admin's reason
    check_act(tmp_path, slurm)
    result = check_act(tmp_path, slurm)
    flags, reason = sinfo_state(slurm, "gpu02")
    assert "DRAIN" in flags and reason == "ADMIN: disk swap", result.stderr
    assert "slurm_skipped" in history_codes(tmp_path, "gpu02")


@pytest.mark.slow
def test_the_guard_stops_a_storm_with_one_cluster_alert(slurm: SlurmRig, tmp_path: Path) -> None:
    write_cluster(tmp_path, slurm)  # 10 % of 2 nodes: at most one (the guard's floor)
    for node in NODES:
        set_health(tmp_path, node, False)
    check_act(tmp_path, slurm)
    result = check_act(tmp_path, slurm)
    drained = [n for n in NODES if "DRAIN" in sinfo_state(slurm, n)[0]]
    assert drained == ["gpu01"], result.stderr
    assert result.stderr.count("drain storm guard") == 1
    state = json.loads((tmp_path / "state" / "ugro-health" / "state.json").read_text())
    records = state["cluster"]["nodes"]["@cluster"]["lifecycle"]
    assert [r["code"] for r in records.values()] == ["slurm_drain_guard"]


@pytest.mark.slow
def test_most_nodes_unreachable_drains_nothing(slurm: SlurmRig, tmp_path: Path) -> None:
    write_cluster(tmp_path, slurm, guard={"max_drained_fraction": 1.0})
    doc = json.loads((tmp_path / "cluster.yaml").read_text())
    # Three nodes nobody answers for (a refused port each), one sick local node.
    doc["nodes"] += [
        {"name": f"dead{i}", "host": "127.0.0.1", "port": 1, "transport": "ssh"} for i in range(3)
    ]
    (tmp_path / "cluster.yaml").write_text(json.dumps(doc))
    set_health(tmp_path, "gpu01", False)
    check_act(tmp_path, slurm, "--timeout", "30")
    result = check_act(tmp_path, slurm, "--timeout", "30")
    assert "DRAIN" not in sinfo_state(slurm, "gpu01")[0], result.stderr


def broken_scontrol(tmp_path: Path, rig: SlurmRig, show: str) -> str:
    """An scontrol whose ``show`` fails (or hangs) and whose ``update`` is the real one; every
    call is logged, so a test sees that no update was even tried."""
    path = tmp_path / "scontrol"
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path / "calls"}\n'
        f'case "$*" in *show*) {show};; *) exec {rig.bin["scontrol"]} "$@";; esac\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "show",
    ["echo 'slurm_load_node error: Unable to contact slurm controller' >&2; exit 1", "sleep 600"],
    ids=["failing", "hung"],
)
def test_a_failing_or_hung_scontrol_changes_nothing(
    slurm: SlurmRig, tmp_path: Path, show: str
) -> None:
    write_cluster(tmp_path, slurm, scontrol=broken_scontrol(tmp_path, slurm, show), timeout=2)
    set_health(tmp_path, "gpu01", False)
    check_act(tmp_path, slurm)
    started = time.monotonic()
    result = check_act(tmp_path, slurm)
    assert time.monotonic() - started < 60
    assert "slurm" in result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls and not any(c.startswith("update") for c in calls), calls
    assert "DRAIN" not in sinfo_state(slurm, "gpu01")[0]
    # Once Slurm answers again, the node is drained as it should have been.
    write_cluster(tmp_path, slurm)
    check_act(tmp_path, slurm)
    assert "DRAIN" in sinfo_state(slurm, "gpu01")[0]


@pytest.mark.slow
def test_check_timeout_bounds_a_hung_slurm(slurm: SlurmRig, tmp_path: Path) -> None:
    hung = broken_scontrol(tmp_path, slurm, "sleep 600")
    squeue = tmp_path / "squeue"
    squeue.write_text("#!/bin/sh\nsleep 600\n")
    squeue.chmod(0o755)
    write_cluster(tmp_path, slurm, scontrol=hung, squeue=str(squeue), timeout=120)
    set_health(tmp_path, "gpu01", False)
    started = time.monotonic()
    check_act(tmp_path, slurm, "--timeout", "4")
    assert time.monotonic() - started < 30  # not squeue's and scontrol's 120 s each


@pytest.mark.slow
def test_watch_drains_in_the_background_and_polls_fast_while_a_slurm_job_runs(
    slurm: SlurmRig, tmp_path: Path
) -> None:
    watch = {
        "active_interval_s": 1,
        "recent_interval_s": 30,
        "warm_interval_s": 30,
        "idle_interval_s": 30,
        "max_interval_s": 30,
        "problem_interval_s": 30,
    }
    write_cluster(tmp_path, slurm, jobs_interval=1, extra={"watch": watch})
    proc = subprocess.Popen(
        [sys.executable, "-m", "ugro_health", "watch", "--headless"],
        cwd=tmp_path,
        env=cli_env(tmp_path, env(slurm)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        reader = _reader(proc, lines)
        wait_for(lambda: any(" cycle 1:" in line for line in lines), 60, "the first cycle")
        time.sleep(3)
        idle_cycles = sum(" cycle " in line for line in lines)
        assert idle_cycles <= 2, lines  # idle: every 30 s
        job = slurm.submit("gpu02", 120)
        slurm.wait_running(job)
        wait_for(
            lambda: any(f"slurm:{job}" in line and "job_started" in line for line in lines),
            30,
            "the Slurm job seen",
        )
        count = sum(" cycle " in line for line in lines)
        wait_for(
            lambda: sum(" cycle " in line for line in lines) >= count + 4,
            30,
            "cycles at the active interval",
        )
        set_health(tmp_path, "gpu01", False)
        wait_for(lambda: "DRAIN" in sinfo_state(slurm, "gpu01")[0], 60, "gpu01 drained by watch")
        wait_for(lambda: any("slurm_drained" in line for line in lines), 30, "the drain logged")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=10)
    assert proc.returncode == 0, "\n".join(lines[-20:])


def _reader(proc: subprocess.Popen[str], lines: list[str]) -> Any:
    import threading

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_actions_reach_a_channel_whatever_its_min_severity(slurm: SlurmRig, tmp_path: Path) -> None:
    from http_receiver import HttpReceiver
    from notify_e2e_helpers import told

    with HttpReceiver() as receiver:
        hook = {"name": "hook", "type": "webhook", "url": receiver.url("/hook")}  # warning+
        write_cluster(tmp_path, slurm, extra={"notify": {"channels": [hook], "check_wait": 20}})
        set_health(tmp_path, "gpu01", False)
        check_act(tmp_path, slurm)
        check_act(tmp_path, slurm)
        alerts = [a for _id, batch in told(receiver) for a in batch]
        assert ("gpu01", "slurm_drained", "firing") in alerts
        assert ("gpu01", "mount_missing", "firing") in alerts
        assert not any(code == "slurm_skipped" for _n, code, _s in alerts)
