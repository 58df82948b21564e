"""Rank processes are a job's workers, not every process whose command line matches (issue 10):
a launcher plus its workers, wrappers around the launcher, and GPU-using ranks."""

from __future__ import annotations

import secrets
from pathlib import Path

from job_launchers import launched_job, wait_for

from ugro_health import probe
from ugro_health.engine.jobs import Job, job_ranks, matched_counts, rank_alerts, rank_processes
from ugro_health.model import GpuProcess, GpuSample, NodeSample

T0 = 1_800_000_000.0


def proc(pid: int, ppid: int, cmdline: str, pattern: str | None = "torchrun") -> dict:
    out = {"pid": pid, "ppid": ppid, "cmdline": cmdline}
    if pattern is not None:
        out["pattern"] = pattern
    return out


def test_torchrun_agent_and_one_worker_is_one_rank():
    sample = NodeSample(
        matched_processes=(proc(10, 1, "torchrun --nproc_per_node 2 train.py"),),
        matched_descendants=(proc(11, 10, "python -u train.py", None),),
    )
    job = Job(name="llm", nodes=("gpu1",), started_at=T0, ranks=2)
    assert matched_counts(sample, [job]) == {"*": 1}
    (alert,) = rank_alerts("gpu1", sample, [job])
    assert alert.message == "job llm: 1 of 2 rank processes running"


def test_wrapper_and_matching_workers_are_not_counted_twice():
    # bash wrapper -> exec -a torchrun launcher -> 2 workers whose arguments match too,
    # each with a DataLoader child
    sample = NodeSample(
        matched_processes=(
            proc(10, 1, "/bin/bash /usr/local/bin/torchrun train.py"),
            proc(11, 10, "torchrun train.py"),
            proc(12, 11, "python train.py --launcher torchrun"),
            proc(13, 11, "python train.py --launcher torchrun"),
        ),
        matched_descendants=(proc(14, 12, "python train.py", None), proc(15, 13, "pt", None)),
    )
    assert [p["pid"] for p in rank_processes(sample, sample.matched_processes)] == [12, 13]


def test_gpu_using_processes_are_the_ranks():
    sample = NodeSample(
        matched_processes=(proc(10, 1, "torchrun train.py"),),
        matched_descendants=(
            proc(11, 10, "python train.py", None),
            proc(12, 10, "python train.py", None),
            proc(13, 11, "python train.py", None),  # a DataLoader worker, no GPU context
        ),
        gpus=(
            GpuSample(index=0, processes=(GpuProcess(11, None, None),)),
            GpuSample(index=1, processes=(GpuProcess(12, None, None),)),
        ),
    )
    assert [p["pid"] for p in rank_processes(sample, sample.matched_processes)] == [11, 12]


def test_ranks_matched_directly_count_one_each_and_old_samples_still_read():
    # a job pattern naming the ranks themselves; entries without ppid (recorded before it)
    sample = NodeSample(
        matched_processes=(
            {"pid": 2, "cmdline": "python x-rank0", "pattern": "x"},
            {"pid": 3, "cmdline": "python x-rank1", "pattern": "x"},
        )
    )
    assert len(rank_processes(sample, sample.matched_processes)) == 2


def test_a_pid_cycle_in_a_damaged_answer_ends():
    sample = NodeSample(
        matched_processes=(proc(10, 11, "torchrun"),),
        matched_descendants=(proc(11, 10, "python", None),),
    )
    assert len(rank_processes(sample, sample.matched_processes)) <= 2


def sampled(token: str, descendants: int) -> NodeSample | None:
    """The local node's sample once ``descendants`` processes run below the matched ones."""
    with probe.Probe() as sampler:
        sample = NodeSample.from_probe(sampler.sample({"match": [token], "window_s": 0}))
    return sample if len(sample.matched_descendants) >= descendants else None


def test_real_launcher_with_three_workers(tmp_path: Path):
    token = f"ugro-train-{secrets.token_hex(4)}"
    job = Job(name="j", nodes=("here",), started_at=T0, ranks=3, match=token)
    with launched_job(tmp_path, token, workers=3) as launcher:
        # the three workers and their three children up
        sample = wait_for(lambda: sampled(token, 6))
        assert sample is not None
        assert [p["pid"] for p in sample.matched_processes] == [launcher.pid]
        assert matched_counts(sample, [job]) == {token: 3}  # not 1 (launcher) nor 6
        assert rank_alerts("here", sample, [job]) == []
        (entry,) = job_ranks("here", sample, [job])
        assert (entry["ranks_seen"], entry["ranks_expected"]) == (3, 3)
        assert {p["ppid"] for p in entry["ranks"]} == {launcher.pid}
        assert [p["pid"] for p in entry["launchers"]] == [launcher.pid]


def test_real_exec_a_wrapper_counts_once(tmp_path: Path):
    token = f"ugro-train-{secrets.token_hex(4)}"
    job = Job(name="j", nodes=("here",), started_at=T0, ranks=2, match=token)
    with launched_job(tmp_path, token, workers=1, wrapper=True):
        sample = wait_for(lambda: sampled(token, 2))
        assert sample is not None
        # the wrapper and the exec -a'd launcher both match: two processes, one launcher
        assert len(sample.matched_processes) == 2
        assert any(p["cmdline"].startswith(f"{token}-agent") for p in sample.matched_processes)
        assert matched_counts(sample, [job]) == {token: 1}
        (alert,) = rank_alerts("here", sample, [job])
        assert "1 of 2 rank processes" in alert.message


def test_dashboard_shows_the_ranks_found():
    from rich.console import Console

    from ugro_health.model import NodeReport, Status
    from ugro_health.render.dashboard import NodeRow, WatchView, dashboard

    sample = NodeSample(
        matched_processes=(proc(10, 1, "torchrun train.py"),),
        matched_descendants=(proc(11, 10, "python", None), proc(12, 10, "python", None)),
    )
    job = Job(name="llm", nodes=("gpu1",), started_at=T0, ranks=3)
    report = NodeReport(
        "gpu1", Status.OK, 100, T0, 0.1, sample, jobs=tuple(job_ranks("gpu1", sample, [job]))
    )
    view = WatchView(T0, [("gpu1", NodeRow(report))], 40.0, 10.0, 1.0, ["llm"])
    console = Console(width=80, color_system=None, record=True)
    console.print(dashboard(view, width=80))
    assert "job llm on gpu1: 2/3 ranks (pids 11, 12)" in console.export_text()
