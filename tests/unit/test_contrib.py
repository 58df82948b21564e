"""contrib/: the systemd unit, the cron file and the two launcher examples really do their job.

The launchers run against the real ``ugro-health`` with a fake ``torchrun`` that records whether
the job was active while it ran.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import cli_env

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
CLUSTER = "nodes:\n  - name: gpu1\n    transport: local\n  - name: gpu2\n    transport: local\n"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are cased
    parser.read(CONTRIB / "ugro-health.service")
    return parser


def test_service_runs_watch_headless_with_a_private_state_dir():
    service = unit()["Service"]
    assert service["ExecStart"].startswith("/") and service["ExecStart"].endswith(
        " watch --headless"
    )
    assert (service["StateDirectory"], service["StateDirectoryMode"]) == ("ugro-health", "0700")
    assert service["Environment"] == "UGRO_HEALTH_CONFIG=/etc/ugro-health/cluster.yaml"
    assert (service["Restart"], service["KillSignal"]) == ("on-failure", "SIGTERM")
    assert (service["NoNewPrivileges"], service["ProtectSystem"], service["PrivateTmp"]) == (
        "yes",
        "strict",
        "yes",
    )
    assert service["User"] == "ugro-health" and "DynamicUser" not in service
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_service_keeps_what_the_local_probe_needs():
    service = unit()["Service"]
    for breaks_the_probe in ("PrivateDevices", "ProtectKernelLogs", "ProtectProc"):
        assert breaks_the_probe not in service


def test_systemd_accepts_the_unit(tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = (CONTRIB / "ugro-health.service").read_text()
    path = tmp_path / "ugro-health.service"  # ExecStart must exist for verify
    path.write_text(text.replace("/usr/local/bin/ugro-health", sys.executable, 1))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_service_sets_the_open_file_limit():
    assert int(unit()["Service"]["LimitNOFILE"]) >= 65536


def template() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(CONTRIB / "ugro-health@.service")
    return parser


def test_shard_template_runs_one_shard_per_instance():
    from ugro_health.engine.shard import parse_shard
    from ugro_health.export.serve import parse_listen

    service = template()["Service"]
    argv = service["ExecStart"].split()
    assert argv[1:3] == ["watch", "--headless"]
    shard = argv[argv.index("--shard") + 1]
    listen = argv[argv.index("--metrics-listen") + 1]
    count = int(shard.split("/")[1])
    for index in range(1, count + 1):
        instance = f"{index:02d}"  # the instances the comment tells to start
        assert parse_shard(shard.replace("%i", instance)).label == f"{index}/{count}"
        assert parse_listen(listen.replace("%i", instance)).port == 9800 + index
    # The rest as the single unit: same user, state directory, limit and hardening.
    single = unit()["Service"]
    for key, value in single.items():
        if key != "ExecStart":
            assert service.get(key) == value, key


def test_systemd_accepts_the_shard_template(tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = (CONTRIB / "ugro-health@.service").read_text()
    path = tmp_path / "ugro-health@.service"
    path.write_text(text.replace("/usr/local/bin/ugro-health", sys.executable, 1))
    instance = tmp_path / "ugro-health@01.service"
    instance.symlink_to(path.name)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(instance)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def cron_jobs() -> list[list[str]]:
    jobs = []
    for line in (CONTRIB / "ugro-health.cron").read_text().splitlines():
        fields = line.lstrip("#").split(None, 6)
        if len(fields) == 7 and fields[0].startswith("*/"):
            jobs.append(fields)
    return jobs


def test_cron_jobs_are_locked_bounded_snapshots():
    jobs = cron_jobs()
    assert len(jobs) == 2
    for minute, hour, dom, month, dow, user, command in jobs:
        assert (minute, hour, dom, month, dow, user) == ("*/5", "*", "*", "*", "*", "ugro-health")
        assert command.startswith("flock -n /run/lock/")
        assert "ugro-health check --" in command and "--timeout 240" in command
        assert "%" not in command  # cron turns % into a newline
    assert "--nagios" in jobs[0][6] and "--json" in jobs[1][6]
    text = (CONTRIB / "ugro-health.cron").read_text()
    assert text.endswith("\n")  # cron ignores an unterminated last line
    assert "UGRO_HEALTH_CONFIG=/etc/ugro-health/cluster.yaml" in text.splitlines()


def test_launch_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(CONTRIB / "launch-example.sh")], check=True)


# --- the launchers, with the real ugro-health and a fake torchrun ---------------------------

FAKE_TORCHRUN = """#!/bin/sh
echo "$*" > "$LOG.args"
ugro-health jobs list --json > "$LOG.during"
trap 'echo TERM >> "$LOG"; exit 143' TERM
echo started >> "$LOG"
[ -n "$FAKE_HANG" ] && while :; do sleep 0.05; done
exit "${FAKE_RC:-0}"
"""


@pytest.fixture
def rig(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {
        "ugro-health": f'#!/bin/sh\nexec "{sys.executable}" -m ugro_health "$@"\n',
        "torchrun": FAKE_TORCHRUN,
    }.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    env = cli_env(tmp_path)
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        UGRO_HEALTH_CONFIG=str(tmp_path / "cluster.yaml"),
        UGRO_HEALTH_STATE_DIR=str(tmp_path / "state"),
        LOG=str(tmp_path / "torchrun.log"),
        JOB="llama",
        NODES="gpu1,gpu2",
    )
    return env


def job_after(env: dict[str, str]) -> dict[str, object]:
    listed = subprocess.run(
        [sys.executable, "-m", "ugro_health", "jobs", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    (job,) = json.loads(listed.stdout)["jobs"]
    return job


def job_during(env: dict[str, str]) -> dict[str, object]:
    (job,) = json.loads(Path(env["LOG"] + ".during").read_text())["jobs"]
    return job


LAUNCHERS = {
    "sh": [str(CONTRIB / "launch-example.sh"), "--epochs", "3"],
    "py": [
        sys.executable,
        str(CONTRIB / "track_job_example.py"),
        "--job=llama",
        "--nodes=gpu1,gpu2",
        "--",
        "train.py",
        "--epochs",
        "3",
    ],
}


@pytest.mark.parametrize("launcher", ["sh", "py"])
def test_launcher_tracks_the_job_and_passes_on_the_exit_status(rig, launcher):
    rig["FAKE_RC"] = "7"
    result = subprocess.run(LAUNCHERS[launcher], env=rig, capture_output=True, text=True)
    assert result.returncode == 7, result.stderr
    during = job_during(rig)
    assert during["active"] and during["nodes"] == ["gpu1", "gpu2"] and during["ranks"] == 8
    assert job_after(rig)["finish_reason"] == "finished"
    args = Path(rig["LOG"] + ".args").read_text()
    assert "--nnodes" in args and "8" in args and args.rstrip().endswith("train.py --epochs 3")


@pytest.mark.parametrize("launcher", ["sh", "py"])
def test_launcher_refuses_an_unknown_node_without_running_torchrun(rig, launcher):
    rig["NODES"] = "gpu1,nope"
    argv = [a.replace("gpu1,gpu2", "gpu1,nope") for a in LAUNCHERS[launcher]]
    result = subprocess.run(argv, env=rig, capture_output=True, text=True)
    assert result.returncode == 3 and "nope" in result.stderr
    assert not Path(rig["LOG"]).exists()


@pytest.mark.parametrize("launcher", ["sh", "py"])
def test_sigterm_stops_torchrun_and_finishes_the_job(rig, launcher):
    rig["FAKE_HANG"] = "1"
    proc = subprocess.Popen(LAUNCHERS[launcher], env=rig, stderr=subprocess.PIPE, text=True)
    log = Path(rig["LOG"])
    deadline = time.monotonic() + 30
    while not (log.exists() and "started" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "torchrun never started"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    code = proc.wait(timeout=30)
    assert code in (-signal.SIGTERM, 128 + signal.SIGTERM)
    assert log.read_text().splitlines() == ["started", "TERM"]
    assert job_after(rig)["finish_reason"] == "finished"
