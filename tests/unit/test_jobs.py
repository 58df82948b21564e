"""Job registry rules, TTL and grace expiry (fake times), rank alerts and probe patterns."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugro_health.engine.jobs import (
    JobError,
    active_jobs,
    expire_jobs,
    finish_job,
    jobs_of,
    last_activity,
    matched_counts,
    patterns_for,
    rank_alerts,
    start_job,
)
from ugro_health.model import NodeSample
from ugro_health.store.state import StateStore

T0 = 1_800_000_000.0
NODES = ["gpu1", "gpu2"]


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path, clock=lambda: T0)


def test_start_finish_and_last_activity(store: StateStore):
    assert last_activity(store.load().state) is None
    start_job(store, "a", ["gpu1"], T0, NODES)
    assert last_activity(store.load().state) == T0
    finish_job(store, "a", T0 + 60)
    state = store.load().state
    assert active_jobs(state) == [] and last_activity(state) == T0 + 60
    # a finished job's name can be reused
    start_job(store, "a", ["gpu2"], T0 + 120, NODES)
    assert [j.nodes for j in active_jobs(store.load().state)] == [("gpu2",)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": ["gpu3"]}, "unknown node(s) gpu3"),
        ({"nodes": []}, "at least one node"),
        ({"ranks": 0}, "--ranks must be 1 or more"),
        ({"match": "("}, "invalid --match pattern"),
        ({"name": "a b"}, "invalid job name"),
    ],
)
def test_bad_requests(store: StateStore, kwargs, message):
    args = {"name": "job", "nodes": ["gpu1"], **kwargs}
    with pytest.raises(JobError, match=message.replace("(", r"\(").replace(")", r"\)")):
        start_job(store, args.pop("name"), args.pop("nodes"), T0, NODES, **args)
    assert jobs_of(store.load().state) == []  # nothing half-written


def test_duplicate_and_unknown_finish(store: StateStore):
    start_job(store, "a", ["gpu1"], T0, NODES)
    with pytest.raises(JobError, match="already active"):
        start_job(store, "a", ["gpu1"], T0, NODES)
    with pytest.raises(JobError, match=r"no active job 'b' \(active: a\)"):
        finish_job(store, "b", T0)


def test_ttl_expiry(store: StateStore):
    start_job(store, "a", ["gpu1"], T0, NODES, ttl_s=3600)
    seen = {"gpu1": {"*": 8}}
    assert expire_jobs(store, T0 + 3599, seen) == []
    (expired,) = expire_jobs(store, T0 + 3600, seen)
    assert expired.finish_reason == "ttl" and expired.finished_at == T0 + 3600


def test_a_job_past_its_ttl_is_finished_for_readers_and_its_name_free(tmp_path: Path):
    start_job(StateStore(tmp_path, clock=lambda: T0), "a", ["gpu1"], T0, NODES, ttl_s=60)
    later = StateStore(tmp_path, clock=lambda: T0 + 61)
    assert active_jobs(later.load().state) == []
    (job,) = jobs_of(later.load().state)
    assert (job.finish_reason, job.finished_at) == ("ttl", T0 + 60)
    start_job(later, "a", ["gpu2"], T0 + 61, NODES)  # not "already active"
    assert [j.nodes for j in active_jobs(later.load().state)] == [("gpu2",)]


def test_a_node_named_twice_counts_once(store: StateStore):
    job = start_job(store, "a", ["gpu2", "gpu1", "gpu2"], T0, NODES)
    assert job.nodes == ("gpu2", "gpu1")
    assert jobs_of(store.load().state)[0].nodes == ("gpu2", "gpu1")


def test_no_rank_alert_for_a_job_past_its_ttl_at_the_sample_time():
    from ugro_health.engine.jobs import Job

    job = Job(name="j", nodes=("gpu1",), started_at=T0, ranks=2, ttl_s=60)
    assert rank_alerts("gpu1", NodeSample(time=T0 + 59), [job])
    assert rank_alerts("gpu1", NodeSample(time=T0 + 60), [job]) == []


def test_grace_expiry_counts_from_last_sighting(store: StateStore):
    start_job(store, "a", ["gpu1", "gpu2"], T0, NODES)
    # seen on gpu2 only at +100: the job is alive
    assert expire_jobs(store, T0 + 100, {"gpu1": {}, "gpu2": {"*": 1}}, grace_s=300) == []
    # gone everywhere from +200: not yet 300 s since the last sighting at +100
    assert expire_jobs(store, T0 + 399, {"gpu1": {}, "gpu2": {}}, grace_s=300) == []
    (expired,) = expire_jobs(store, T0 + 400, {"gpu1": {}, "gpu2": {}}, grace_s=300)
    assert expired.finish_reason == "processes_gone"


def test_unpolled_nodes_do_not_expire_a_job_early(store: StateStore):
    start_job(store, "a", ["gpu1"], T0, NODES)
    assert expire_jobs(store, T0 + 100, {"gpu1": {"*": 2}}, grace_s=300) == []
    # gpu1 not polled (breaker open): the last sighting stands, until grace passes
    assert expire_jobs(store, T0 + 350, {}, grace_s=300) == []


def test_rank_alerts_and_patterns():
    start = {"name": "j", "nodes": ("gpu1",), "started_at": T0, "ranks": 4, "match": "train_x"}
    from ugro_health.engine.jobs import Job

    own = Job(**start)
    default = Job(name="d", nodes=("gpu1", "gpu2"), started_at=T0, ranks=2)
    sample = NodeSample(
        matched_processes=(
            {"pid": 1, "cmdline": "python train_x.py", "pattern": "train_x"},
            {"pid": 2, "cmdline": "torchrun ...", "pattern": "torchrun"},
            {"pid": 3, "cmdline": "torchrun ...", "pattern": "torchrun"},
        )
    )
    counts = matched_counts(sample, [own, default])
    assert counts == {"train_x": 1, "*": 2}
    alerts = rank_alerts("gpu1", sample, [own, default])
    assert [a.message for a in alerts] == ["job j: 1 of 4 rank processes running"]
    assert rank_alerts("gpu2", NodeSample(), [default])[0].message == (
        "job d: 0 of 2 rank processes running"
    )
    assert patterns_for("gpu1", [own, default], ["torchrun"]) == ["train_x", "torchrun"]
    assert patterns_for("gpu3", [own, default], ["torchrun"]) == []
