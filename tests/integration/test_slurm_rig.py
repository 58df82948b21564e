"""The Slurm rig against the real Slurm it starts: the foundation of the Slurm integration tests.

Each test gets the session's rig reset (``slurm`` fixture), reads state back through the real
``scontrol`` / ``squeue`` / ``sinfo``, and so fails if the rig, its configuration or its parsing of
Slurm's output is wrong.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from slurm_rig import SlurmRig, SlurmRigError, parse_show_node

pytestmark = pytest.mark.root

TRICKY_REASON = "ADMIN: disk swap | slot=3  (see ticket a=b)"


def running_on(slurm: SlurmRig) -> dict[int, str]:
    """{job id: node list} of the RUNNING jobs, as squeue reports them."""
    out = slurm.run("squeue", "-h", "-t", "RUNNING", "-o", "%i|%N").stdout
    return {int(job): nodes for job, nodes in (line.split("|") for line in out.splitlines())}


def test_both_nodes_start_idle_in_partition_gpu(slurm: SlurmRig) -> None:
    assert slurm.nodes == ("gpu01", "gpu02")
    assert slurm.show_nodes() == {"gpu01": ({"IDLE"}, None), "gpu02": ({"IDLE"}, None)}
    out = slurm.run("sinfo", "-h", "-N", "-o", "%N|%P|%T").stdout.split()
    assert out == ["gpu01|gpu*|idle", "gpu02|gpu*|idle"]


def test_env_reaches_the_rig_from_a_plain_subprocess(slurm: SlurmRig) -> None:
    # What the integration will do: its own subprocess with slurm.env and slurm.bin[...].
    done = subprocess.run(
        [slurm.bin["sinfo"], "-h", "-o", "%R"],
        env=slurm.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["gpu"]
    assert slurm.env["SLURM_CONF"] == str(slurm.conf)


def test_drain_reason_with_spaces_pipes_and_equals_reads_back_exactly(slurm: SlurmRig) -> None:
    slurm.admin_drain("gpu01", TRICKY_REASON)
    assert slurm.node_state("gpu01") == ({"IDLE", "DRAIN"}, TRICKY_REASON)
    assert slurm.node_state("gpu02") == ({"IDLE"}, None)
    sinfo = slurm.run(
        "sinfo", "-h", "-n", "gpu01", "-O", "NodeList:|,StateComplete:|,Reason:"
    ).stdout
    assert sinfo.strip() == f"gpu01|idle+drain|{TRICKY_REASON}"


def test_resume_returns_a_drained_node_to_idle(slurm: SlurmRig) -> None:
    slurm.admin_drain("gpu02", "ADMIN: disk swap")
    slurm.run("scontrol", "update", "nodename=gpu02", "state=resume")
    flags, reason = slurm.node_state("gpu02")
    # Until slurmctld pings it again (about a second) the node reads IDLE+NOT_RESPONDING.
    assert flags - {"NOT_RESPONDING"} == {"IDLE"}
    assert reason is None
    slurm.wait_idle()
    assert slurm.node_state("gpu02") == ({"IDLE"}, None)


def test_job_on_gpu02_runs_there_and_drain_makes_it_draining(slurm: SlurmRig) -> None:
    job = slurm.submit("gpu02")
    assert slurm.wait_running(job) == "gpu02"
    assert running_on(slurm) == {job: "gpu02"}
    assert slurm.node_state("gpu02")[0] == {"ALLOCATED"}
    slurm.admin_drain("gpu02", "ugro-health: gpu_xid_fatal GPU 3 Xid 79")
    assert slurm.node_state("gpu02")[0] == {"ALLOCATED", "DRAIN"}
    assert running_on(slurm) == {job: "gpu02"}  # draining lets the job finish


def test_two_jobs_at_once_one_per_node(slurm: SlurmRig) -> None:
    first, second = slurm.submit("gpu01"), slurm.submit("gpu02")
    assert (slurm.wait_running(first), slurm.wait_running(second)) == ("gpu01", "gpu02")
    assert running_on(slurm) == {first: "gpu01", second: "gpu02"}


def test_reset_cancels_running_jobs(slurm: SlurmRig) -> None:
    slurm.wait_running(slurm.submit("gpu[01-02]", nnodes=2))
    slurm.reset()
    assert slurm.run("squeue", "-h", "-o", "%i").stdout == ""
    assert slurm.show_nodes() == {"gpu01": ({"IDLE"}, None), "gpu02": ({"IDLE"}, None)}


def test_admin_down_stays_down_and_reset_resumes_drained_and_down_nodes(slurm: SlurmRig) -> None:
    job = slurm.submit("gpu[01-02]", nnodes=2)
    assert slurm.wait_running(job) == "gpu[01-02]"
    slurm.run("scontrol", "update", "nodename=gpu02", "state=down", "reason=ADMIN: dead PSU")
    # The job is requeued (pending: gpu02 is down) and gpu01 turns idle once its slurmd has
    # answered; gpu02's answers as fast and, with ReturnToService=1, does not undo the DOWN.
    slurm.wait_idle(("gpu01",))
    assert slurm.node_state("gpu02") == ({"DOWN"}, "ADMIN: dead PSU")
    slurm.admin_drain("gpu01", "ADMIN: disk swap")
    slurm.reset()
    assert slurm.run("squeue", "-h", "-o", "%i").stdout == ""
    assert slurm.show_nodes() == {"gpu01": ({"IDLE"}, None), "gpu02": ({"IDLE"}, None)}


def test_failures_raise_with_slurms_own_message(slurm: SlurmRig) -> None:
    with pytest.raises(SlurmRigError, match=r"exit 1: .*Invalid node name specified"):
        slurm.run("scontrol", "update", "nodename=nosuch", "state=drain", "reason=x")
    with pytest.raises(SlurmRigError, match="exit 1: Node nosuch not found"):
        slurm.node_state("nosuch")


def test_parse_show_node_keeps_a_reason_that_looks_like_fields() -> None:
    line = (
        "NodeName=gpu07 Arch=x86_64 State=MIXED+DRAIN ThreadsPerCore=1 "
        "Reason=ugro-health: a State=IDLE b=c [slurm@2026-12-03T16:30:02]"
    )
    assert parse_show_node(line) == {"gpu07": ({"MIXED", "DRAIN"}, "ugro-health: a State=IDLE b=c")}


def test_parse_show_node_reads_the_recorded_fixtures() -> None:
    # The rig's parser on this Slurm's recorded outputs (tests/fixtures/slurm, see its README).
    fixtures = Path(__file__).parents[1] / "fixtures" / "slurm"
    both = parse_show_node((fixtures / "show_node_both.txt").read_text())
    assert both == {
        "gpu01": ({"IDLE", "DRAIN"}, "ADMIN: disk swap"),
        "gpu02": ({"ALLOCATED", "DRAIN"}, "ugro-health: gpu_xid_fatal GPU 3 Xid 79"),
    }
    resumed = parse_show_node((fixtures / "show_node_just_resumed.txt").read_text())
    assert resumed == {"gpu01": ({"IDLE", "NOT_RESPONDING"}, None)}
    assert parse_show_node((fixtures / "show_node_nosuch.txt").read_text()) == {}
