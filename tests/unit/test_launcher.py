"""``ugro_health.track_job``: registers on entry, finishes on exit, also on an exception."""

from __future__ import annotations

from pathlib import Path

import pytest

import ugro_health
from ugro_health.engine.jobs import JobError, jobs_of
from ugro_health.store.state import StateStore


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "nodes:\n  - name: gpu1\n    transport: local\n  - name: gpu2\n    transport: local\n"
    )
    return path


def jobs(state_dir: Path) -> dict[str, object]:
    return {j.name: j for j in jobs_of(StateStore(state_dir).load().state)}


def test_job_is_active_inside_and_finished_after(cluster: Path, tmp_path: Path):
    state = tmp_path / "state"
    with ugro_health.track_job(
        "llama", nodes=["gpu1", "gpu2"], ranks=8, config=cluster, state_dir=state
    ) as job:
        inside = jobs(state)["llama"]
        assert inside.active and inside.nodes == ("gpu1", "gpu2") and inside.ranks == 8
        assert job.name == "llama"
    after = jobs(state)["llama"]
    assert not after.active and after.finish_reason == "finished"


def test_job_finishes_when_the_body_raises(cluster: Path, tmp_path: Path):
    state = tmp_path / "state"
    with (
        pytest.raises(RuntimeError, match="NCCL timeout"),
        ugro_health.track_job("crashy", nodes=["gpu1"], config=cluster, state_dir=state),
    ):
        raise RuntimeError("NCCL timeout")
    assert not jobs(state)["crashy"].active


def test_bad_request_fails_before_the_body(cluster: Path, tmp_path: Path):
    ran = []
    with (
        pytest.raises(JobError, match="unknown node"),
        ugro_health.track_job("x", nodes=["gpu9"], config=cluster, state_dir=tmp_path / "state"),
    ):
        ran.append(True)
    assert ran == []


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, ugro_health; print(sorted(m for m in ('paramiko', 'typer', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("ttl_s", [0.0, -5.0, float("inf"), float("nan")])
def test_a_ttl_that_is_not_a_positive_finite_time_is_refused(
    cluster: Path, tmp_path: Path, ttl_s: float
):
    with (
        pytest.raises(JobError, match="the TTL must be more than 0 and at most 10 years"),
        ugro_health.track_job(
            "x", nodes=["gpu1"], config=cluster, state_dir=tmp_path / "state", ttl_s=ttl_s
        ),
    ):
        pass
