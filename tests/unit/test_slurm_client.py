"""Slurm's outputs as recorded from a real Slurm 22.05 (tests/fixtures/slurm), and the command
runner's deadline and failures."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from ugro_health.config_slurm import SlurmSettings
from ugro_health.integrations.slurm import (
    SlurmClient,
    SlurmError,
    expand_hostlist,
    parse_jobs,
    parse_nodes,
    run_command,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_idle_node_in_service_without_reason() -> None:
    (node,) = parse_nodes(fixture("show_node_idle.txt"))
    assert node.name == "gpu01"
    assert node.flags == {"IDLE"}
    assert node.reason is None
    assert not node.out_of_service and not node.drained


def test_admin_drain_keeps_its_reason_and_is_not_ours() -> None:
    (node,) = parse_nodes(fixture("show_node_drained_admin.txt"))
    assert node.flags == {"IDLE", "DRAIN"}
    assert node.reason == "ADMIN: disk swap"
    assert node.drained and node.out_of_service
    assert not node.ours("ugro-health:")


def test_our_drain_while_a_job_runs_is_ours() -> None:
    (node,) = parse_nodes(fixture("show_node_draining.txt"))
    assert node.flags == {"ALLOCATED", "DRAIN"}
    assert node.reason == "ugro-health: gpu_xid_fatal GPU 3 Xid 79"
    assert node.ours("ugro-health:")


def test_down_node_is_out_of_service() -> None:
    (node,) = parse_nodes(fixture("show_node_down.txt"))
    assert node.flags == {"DOWN"} and node.out_of_service and not node.drained
    assert node.reason == "ADMIN: dead PSU"


def test_two_nodes_in_one_call() -> None:
    nodes = {n.name: n for n in parse_nodes(fixture("show_node_both.txt"))}
    assert set(nodes) == {"gpu01", "gpu02"}
    assert nodes["gpu01"].reason == "ADMIN: disk swap"
    assert nodes["gpu02"].ours("ugro-health:")


def test_not_responding_flag() -> None:
    (node,) = parse_nodes(fixture("show_node_just_resumed.txt"))
    assert "NOT_RESPONDING" in node.flags and "IDLE" in node.flags


def test_state_suffix_star_means_not_responding() -> None:
    (node,) = parse_nodes("NodeName=n1 Arch=x86_64 State=DOWN* ThreadsPerCore=1\n")
    assert node.flags == {"DOWN", "NOT_RESPONDING"}


def test_reason_with_brackets_and_equals_is_kept_whole() -> None:
    line = "NodeName=n1 State=IDLE+DRAIN Weight=1 Reason=ugro-health: x [a=b] | y=z [root@2026-12-03T16:00:00]"
    (node,) = parse_nodes(line)
    assert node.reason == "ugro-health: x [a=b] | y=z"


def test_line_without_state_is_an_error() -> None:
    with pytest.raises(SlurmError):
        parse_nodes("NodeName=n1 Arch=x86_64\n")


def test_jobs_with_hostlists_and_a_separator_in_the_name() -> None:
    text = "17|alice|2026-12-03T16:34:28|gpu[01-02]|train|v2\n18|bob|N/A|gpu02|eval\n"
    jobs = parse_jobs(text)
    assert [j.job_id for j in jobs] == ["17", "18"]
    assert jobs[0].nodes == ("gpu01", "gpu02") and jobs[0].name == "train|v2"
    assert jobs[0].started_at == time.mktime(
        time.strptime("2026-12-03T16:34:28", "%Y-%m-%dT%H:%M:%S")
    )
    assert jobs[1].started_at is None


def test_garbage_from_squeue_is_an_error() -> None:
    with pytest.raises(SlurmError):
        parse_jobs("this is not squeue output\n")


def test_hostlist_matches_scontrol_show_hostnames() -> None:
    assert list(expand_hostlist("gpu[01-02]")) == fixture("show_hostnames.txt").split()
    assert expand_hostlist("a[1-2]-b[08-09],c") == ("a1-b08", "a1-b09", "a2-b08", "a2-b09", "c")


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_hung_command_is_killed_at_its_deadline_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    hung = script(tmp_path, "scontrol", f"sleep 300 & echo $! > {marker}; wait\n")
    started = time.monotonic()
    with pytest.raises(SlurmError, match=r"timed out after 0\.5 s"):
        run_command([hung, "show", "node"], 0.5)
    assert time.monotonic() - started < 30
    child = int(marker.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the hung command's child survived its deadline")


def test_failure_says_what_slurm_said(tmp_path: Path) -> None:
    stderr = fixture("show_node_controller_down.stderr").strip()
    failing = script(tmp_path, "scontrol", f"echo '{stderr}' >&2; exit 1\n")
    with pytest.raises(SlurmError, match="Unable to contact slurm controller"):
        run_command([failing], 5)


def test_failure_said_on_stdout(tmp_path: Path) -> None:
    failing = script(tmp_path, "scontrol", "echo 'Node nosuch not found'; exit 1\n")
    with pytest.raises(SlurmError, match="Node nosuch not found"):
        run_command([failing], 5)


def test_missing_command_is_one_line() -> None:
    with pytest.raises(SlurmError, match="nosuch-scontrol"):
        run_command(["/nonexistent/nosuch-scontrol"], 5)


def test_client_reads_every_node_and_keeps_the_configured(tmp_path: Path) -> None:
    log = tmp_path / "argv"
    scontrol = script(
        tmp_path, "scontrol", f'echo "$@" > {log}; cat {FIXTURES / "show_node_both.txt"}\n'
    )
    client = SlurmClient(SlurmSettings(scontrol=scontrol))
    nodes = client.nodes(["gpu02", "other"])
    assert set(nodes) == {"gpu02"}
    assert log.read_text().split() == ["--oneliner", "show", "node"]


def test_drain_and_resume_argv(tmp_path: Path) -> None:
    log = tmp_path / "argv"
    scontrol = script(tmp_path, "scontrol", f'printf "%s\\n" "$@" >> {log}\n')
    client = SlurmClient(SlurmSettings(scontrol=scontrol))
    client.drain("gpu01", "ugro-health: gpu_xid_fatal GPU 3 Xid 79")
    client.resume("gpu01")
    assert log.read_text().splitlines() == [
        "update",
        "NodeName=gpu01",
        "State=DRAIN",
        "Reason=ugro-health: gpu_xid_fatal GPU 3 Xid 79",
        "update",
        "NodeName=gpu01",
        "State=RESUME",
    ]
