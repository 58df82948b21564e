"""``slurm status``, ``slurm resume`` and ``jobs list`` with Slurm, through the real entry point.

No Slurm here: ``scontrol`` and ``squeue`` are small shell scripts written by the test that
print lines in the format Slurm 22.05 prints (``scontrol --oneliner show node``, ``squeue
--format``) and log their arguments, so each test can say what was asked of Slurm and what
was not. ``fail`` and ``hang`` files next to a script make it fail as ``scontrol`` does
without a controller, or hang past its deadline. The real Slurm is exercised by the
integration tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli, tab_completions

from ugro_health.store.state import StateStore

T0 = 1_796_313_600.0  # 2026-12-03T16:00:00Z
XID = "ugro-health: gpu_xid_fatal GPU 3: Xid 79"
# What scontrol 22.05 prints (one line per node, shortened in the middle).
NODES = (
    "NodeName=gpu01 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUTot=8 CPULoad=0.12 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:8 NodeAddr=127.0.0.1 "
    "NodeHostName=localhost Version=22.05.8 RealMemory=64000 AllocMem=0 FreeMem=60000 "
    "Sockets=8 Boards=1 State=IDLE+DRAIN ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A "
    "MCS_label=N/A Partitions=gpu BootTime=2026-12-01T08:00:00 "
    "SlurmdStartTime=2026-12-01T08:01:00 LastBusyTime=2026-12-03T15:50:00 "
    f"CfgTRES=cpu=8,mem=62.50G,billing=8 AllocTRES= CapWatts=n/a Reason={XID} "
    "[root@2026-12-03T16:00:00]\n"
    "NodeName=node-b Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUTot=8 CPULoad=0.10 "
    "NodeAddr=127.0.0.1 NodeHostName=localhost Version=22.05.8 State=IDLE+DRAIN "
    "ThreadsPerCore=1 TmpDisk=0 Weight=1 Partitions=gpu Reason=ADMIN: disk swap "
    "[alice@2026-12-03T15:00:00]\n"
    "NodeName=gpu03 Arch=x86_64 CoresPerSocket=1 CPUAlloc=8 CPUTot=8 CPULoad=7.90 "
    "NodeAddr=127.0.0.1 NodeHostName=localhost Version=22.05.8 State=ALLOCATED "
    "ThreadsPerCore=1 TmpDisk=0 Weight=1 Partitions=gpu\n"
)
JOBS = (
    "4242|alice|2026-12-03T15:30:00|gpu01,node-b|llama-70b\n"
    "4243|bob|2026-12-03T16:10:00|gpu03|bert|eval\n"
    "4244|carol|2026-12-03T16:11:00|cpu07|not ours\n"
)
NO_CONTROLLER = "slurm_load_node error: Unable to contact slurm controller (connect failure)"
FAKE = """#!/bin/sh
dir=$(dirname "$0")
printf '%s|' "$@" >> "$dir/{name}.argv"
echo >> "$dir/{name}.argv"
if [ -e "$dir/{name}.fail" ]; then echo "{error}" >&2; exit 1; fi
if [ -e "$dir/{name}.hang" ]; then exec sleep 60; fi
case "$*" in {pattern}) cat "$dir/{name}.out" ;; esac
"""


def cluster_yaml(slurm: Path, extra: str = "") -> str:
    return (
        "nodes: [gpu01, gpu02, gpu03]\n"
        "slurm:\n"
        "  enabled: true\n"
        f"  scontrol: {slurm / 'scontrol'}\n"
        f"  squeue: {slurm / 'squeue'}\n"
        "  timeout: 2s\n"
        "  node_names: {gpu02: node-b}\n" + extra
    )


@pytest.fixture
def slurm(tmp_path: Path) -> Path:
    """The fake Slurm commands' directory (``scontrol``, ``squeue``, their outputs and logs)."""
    bin_dir = tmp_path / "slurm"
    bin_dir.mkdir()
    for name, pattern, out in (
        ("scontrol", "--oneliner*", NODES),
        ("squeue", "--noheader*", JOBS),
    ):
        error = NO_CONTROLLER.replace("node", "jobs") if name == "squeue" else NO_CONTROLLER
        script = bin_dir / name
        script.write_text(FAKE.format(name=name, pattern=pattern, error=error))
        script.chmod(0o755)
        (bin_dir / f"{name}.out").write_text(out)
    (tmp_path / "cluster.yaml").write_text(cluster_yaml(bin_dir))
    return bin_dir


def calls(slurm: Path, name: str = "scontrol") -> list[list[str]]:
    log = slurm / f"{name}.argv"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.rstrip("|").split("|") for line in lines]


def store(slurm: Path) -> StateStore:
    return StateStore(slurm.parent / "state" / "ugro-health")


def seed_state(slurm: Path, actions: int = 3) -> None:
    """What watch leaves after draining gpu01 and counting gpu02 (drained by an admin)."""

    def seed(state: dict[str, Any]) -> None:
        state["slurm"] = {
            "nodes": {
                "gpu01": {"bad": 4, "good": 0, "reason": XID},
                "gpu02": {
                    "bad": 2,
                    "good": 0,
                    "reason": "ugro-health: gpu_ecc_dbe GPU 0: 2 uncorrectable ECC errors",
                    "note": "not drained: already IDLE+DRAIN in Slurm; reason 'ADMIN: disk "
                    "swap', left as it is",
                },
                "gpu03": {"bad": 0, "good": 12},
            },
            "drained": {"gpu01": {"at": T0, "reason": XID, "slurm_name": "gpu01"}},
            "actions": [
                {"at": T0 + i, "node": "gpu01", "action": "skip", "why": f"skip number {i}"}
                for i in range(actions - 1)
            ]
            + [{"at": T0 + 60, "node": "gpu01", "action": "drain", "why": XID}],
        }

    store(slurm).update(seed)


def slurm_state(slurm: Path) -> dict[str, Any]:
    section = store(slurm).load().state["slurm"]
    assert isinstance(section, dict)
    return section


# --- slurm status ---------------------------------------------------------------------------


def test_status_lists_the_drained_nodes_with_slurm_now_the_counts_and_the_actions(slurm: Path):
    seed_state(slurm, actions=25)
    result = run_cli("slurm", "status", cwd=slurm.parent, env={"COLUMNS": "200"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert "ugro-health may hold 1 of 3 nodes drained" in lines[0]
    gpu01 = next(line for line in lines if line.startswith("gpu01  gpu01"))
    assert "2026-12-03T16:00:00Z" in gpu01 and XID in gpu01
    assert f"IDLE+DRAIN: {XID}" in gpu01  # Slurm's view, read now
    counted = next(line for line in lines if line.startswith("gpu02 "))
    assert "2/2" in counted and "0/3" in counted and "ADMIN: disk swap" in counted
    assert not any(line.startswith("gpu03 ") for line in lines)  # healthy, not drained
    # The last 20 actions, newest last: the drain, after skips 5 to 23.
    assert "last 20 action(s), newest last:" in result.stdout
    assert "skip number 4\n" not in result.stdout and "skip number 5" in result.stdout
    assert lines[-1].split()[1:3] == ["drain", "gpu01"]
    # One scontrol call (every node; the listed ones picked out by their Slurm names).
    assert calls(slurm) == [["--oneliner", "show", "node"]]


@pytest.mark.parametrize("how", ["fail", "hang"])
def test_status_without_slurm_says_so_in_one_line_and_shows_the_state(slurm: Path, how: str):
    seed_state(slurm)
    (slurm / f"scontrol.{how}").touch()
    result = run_cli("slurm", "status", cwd=slurm.parent, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if "Slurm could not be read" in line]
    why = NO_CONTROLLER if how == "fail" else "scontrol timed out after 2 s"
    assert len(said) == 1 and why in said[0], result.stdout
    gpu01 = next(line for line in result.stdout.splitlines() if line.startswith("gpu01  gpu01"))
    assert XID in gpu01 and gpu01.rstrip().endswith("?")  # Slurm's state: unknown


def test_status_json_is_one_document(slurm: Path):
    seed_state(slurm)
    doc = json.loads(run_cli("slurm", "status", "--json", cwd=slurm.parent).stdout)
    assert doc["schema"] == "ugro-health/v1" and doc["slurm_read"] is True
    assert doc["slurm_error"] is None and doc["max_drained"] == 1
    assert doc["drained"] == [
        {
            "node": "gpu01",
            "slurm_name": "gpu01",
            "drained_at": T0,
            "reason": XID,
            "slurm_state": "IDLE+DRAIN",
            "slurm_reason": XID,
            "slurm_known": True,
        }
    ]
    assert [(n["node"], n["bad"], n["slurm_reason"]) for n in doc["counting"]] == [
        ("gpu01", 4, XID),
        ("gpu02", 2, "ADMIN: disk swap"),
    ]
    assert [a["action"] for a in doc["actions"]] == ["skip", "skip", "drain"]
    (slurm / "scontrol.fail").touch()
    doc = json.loads(run_cli("slurm", "status", "--json", cwd=slurm.parent).stdout)
    assert doc["slurm_read"] is False and NO_CONTROLLER in doc["slurm_error"]
    assert doc["drained"][0]["slurm_state"] is None and doc["drained"][0]["reason"] == XID


def test_status_with_nothing_recorded_yet(slurm: Path):
    result = run_cli("slurm", "status", cwd=slurm.parent)
    assert result.returncode == 0 and "no node drained by ugro-health" in result.stdout
    assert "no actions yet" in result.stdout
    assert calls(slurm) == []  # nothing to ask Slurm about


@pytest.mark.parametrize("args", [("status",), ("resume", "gpu01")])
def test_slurm_commands_need_slurm_enabled(tmp_path: Path, args: tuple[str, ...]):
    (tmp_path / "cluster.yaml").write_text("nodes: [gpu01]\n")
    result = run_cli("slurm", *args, cwd=tmp_path)
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "ugro-health: Slurm is not enabled in cluster.yaml (set slurm.enabled: true)"
    ]


# --- slurm resume ---------------------------------------------------------------------------


def test_resume_resumes_a_node_ugro_health_drained_and_holds_watch_off(slurm: Path):
    seed_state(slurm)
    result = run_cli("slurm", "resume", "gpu01", cwd=slurm.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("resumed gpu01 (Slurm gpu01, IDLE+DRAIN, reason")
    assert calls(slurm)[-1] == ["update", "NodeName=gpu01", "State=RESUME"]
    section = slurm_state(slurm)
    assert "gpu01" not in section["drained"]
    assert section["nodes"]["gpu01"]["held_off"] is True
    last = section["actions"][-1]
    assert (last["node"], last["action"], last["why"]) == ("gpu01", "resume", "resumed by hand")


def test_resume_refuses_a_node_someone_else_drained(slurm: Path):
    seed_state(slurm)
    before = slurm_state(slurm)
    result = run_cli("slurm", "resume", "gpu02", cwd=slurm.parent)
    assert result.returncode == 3 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "reason 'ADMIN: disk swap'" in line and "--force" in line
    assert all(call[0] != "update" for call in calls(slurm))
    assert slurm_state(slurm) == before


def test_resume_force_resumes_it_under_its_slurm_name(slurm: Path):
    seed_state(slurm)
    result = run_cli("slurm", "resume", "gpu02", "--force", cwd=slurm.parent)
    assert result.returncode == 0, result.stderr
    assert calls(slurm)[-1] == ["update", "NodeName=node-b", "State=RESUME"]
    section = slurm_state(slurm)
    assert section["nodes"]["gpu02"]["held_off"] is True
    assert "note" not in section["nodes"]["gpu02"]
    assert section["drained"].keys() == {"gpu01"}  # the other drain is untouched


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("gpu09", "no node named 'gpu09' (configured: gpu01, gpu02, gpu03)"),
        ("gpu03", "gpu03 (Slurm gpu03, ALLOCATED, no reason) is not drained or down in Slurm"),
    ],
)
def test_resume_of_an_unknown_or_undrained_node_is_one_line(slurm: Path, node: str, message):
    result = run_cli("slurm", "resume", node, cwd=slurm.parent)
    assert result.returncode == 3 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"ugro-health: {message}")
    assert all(call[0] != "update" for call in calls(slurm))
    assert not (slurm.parent / "state" / "ugro-health" / "state.json").exists()


def test_resume_when_slurm_cannot_be_read_does_nothing(slurm: Path):
    seed_state(slurm)
    before = slurm_state(slurm)
    (slurm / "scontrol.fail").touch()
    result = run_cli("slurm", "resume", "gpu01", cwd=slurm.parent)
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        "ugro-health: gpu01 not resumed: Slurm's state of it could not be read: "
        f"scontrol failed: {NO_CONTROLLER}"
    ]
    assert slurm_state(slurm) == before


def test_resume_in_dry_run_says_what_it_would_do(slurm: Path):
    (slurm.parent / "cluster.yaml").write_text(cluster_yaml(slurm, "  dry_run: true\n"))
    seed_state(slurm)
    before = slurm_state(slurm)
    result = run_cli("slurm", "resume", "gpu01", cwd=slurm.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("dry run (slurm.dry_run): would resume gpu01 (Slurm gpu01")
    assert [call[0] for call in calls(slurm)] == ["--oneliner"]  # read, never updated
    assert slurm_state(slurm) == before


# --- jobs list ------------------------------------------------------------------------------


def test_jobs_list_shows_the_running_slurm_jobs_beside_the_registered_ones(slurm: Path):
    assert run_cli("jobs", "start", "llama", "--nodes", "gpu01", cwd=slurm.parent).returncode == 0
    result = run_cli("jobs", "list", cwd=slurm.parent)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    rows = [line.split()[:3] for line in result.stdout.splitlines()]
    assert rows[0] == ["JOB", "SOURCE", "STATE"]
    assert sorted(rows[1:]) == [
        ["llama", "ugro", "active"],
        ["slurm:4242", "slurm", "active"],
        ["slurm:4243", "slurm", "active"],
    ]  # 4244 runs on no configured node
    assert "gpu01:?, gpu02:?" in result.stdout  # Slurm's node-b is ugro's gpu02
    doc = json.loads(run_cli("jobs", "list", "--json", cwd=slurm.parent).stdout)
    sources = {j["name"]: (j["source"], j["nodes"]) for j in doc["jobs"]}
    assert sources == {
        "llama": ("ugro", ["gpu01"]),
        "slurm:4242": ("slurm", ["gpu01", "gpu02"]),
        "slurm:4243": ("slurm", ["gpu03"]),
    }
    assert calls(slurm, "squeue")[0][:2] == ["--noheader", "--states=RUNNING"]


def test_jobs_list_when_squeue_fails_warns_once_and_lists_the_rest(slurm: Path):
    assert run_cli("jobs", "start", "llama", "--nodes", "gpu01", cwd=slurm.parent).returncode == 0
    (slurm / "squeue.fail").touch()
    result = run_cli("jobs", "list", cwd=slurm.parent)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "ugro-health: warning: slurm: running jobs unknown: squeue failed: "
        + NO_CONTROLLER.replace("node", "jobs")
    ]
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["JOB", "llama"]


def test_jobs_list_without_slurm_jobs_in_the_config_asks_nothing(slurm: Path):
    (slurm.parent / "cluster.yaml").write_text(cluster_yaml(slurm, "  jobs: false\n"))
    result = run_cli("jobs", "list", cwd=slurm.parent)
    assert result.returncode == 0 and result.stdout.strip() == "no jobs"
    assert calls(slurm, "squeue") == []


# --- completion -----------------------------------------------------------------------------


def test_the_slurm_commands_and_check_slurm_act_complete(slurm: Path):
    assert tab_completions(slurm.parent, "ugro-health sl") == ["slurm"]
    assert tab_completions(slurm.parent, "ugro-health slurm ") == ["status", "resume"]
    assert tab_completions(slurm.parent, "ugro-health slurm resume gpu0") == [
        "gpu01",
        "gpu02",
        "gpu03",
    ]
    assert tab_completions(slurm.parent, "ugro-health slurm resume --f") == ["--force"]
    assert tab_completions(slurm.parent, "ugro-health check --sl") == ["--slurm-act"]
