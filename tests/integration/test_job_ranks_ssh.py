"""Rank-process checks over real SSH: real processes on the rig's host are found, then missed."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from job_launchers import launched_job, wait_for
from sshd_rig import SshdRig

from ugro_health.config import Config
from ugro_health.engine.collect import Transports, collect_cluster
from ugro_health.engine.jobs import active_jobs, expire_jobs, matched_counts, start_job
from ugro_health.model import NodeReport
from ugro_health.store.state import StateStore

pytestmark = pytest.mark.ssh


def start_rank(token: str, rank: int) -> subprocess.Popen[bytes]:
    # A stand-in for a rank: its command line carries the job's pattern, as torchrun's would.
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", f"{token}-rank{rank}"]
    )


def test_ranks_found_then_missing_then_job_expires(sshd_rig: SshdRig, tmp_path: Path):
    token = f"ugro-train-{secrets.token_hex(4)}"
    config = Config(nodes=(sshd_rig.node_config("node1"),), ssh=sshd_rig.settings())
    store = StateStore(tmp_path)
    start_job(store, "llama", ["node1"], time.time(), ["node1"], ranks=2, match=token)
    jobs = active_jobs(store.load().state)
    ranks = [start_rank(token, r) for r in range(2)]
    transports = Transports(config)
    try:
        report = collect_cluster(config, config.nodes, transports, jobs=jobs)
        (node,) = report.nodes
        assert node.reachable, node.error
        assert {p["pid"] for p in node.sample.matched_processes} == {p.pid for p in ranks}
        assert not [a for a in node.alerts if a.code == "job_ranks_low"]

        ranks[1].kill()
        ranks[1].wait()
        (node,) = collect_cluster(config, config.nodes, transports, jobs=jobs).nodes
        low = [a for a in node.alerts if a.code == "job_ranks_low"]
        assert len(low) == 1 and "1 of 2 rank processes" in low[0].message
        assert node.status.label == "warning" or node.status.label == "critical"

        ranks[0].kill()
        ranks[0].wait()
        (node,) = collect_cluster(config, config.nodes, transports, jobs=jobs).nodes
        counts = {"node1": matched_counts(node.sample, jobs)}
        assert counts["node1"].get(token, 0) == 0
        assert expire_jobs(store, time.time(), counts, grace_s=3600) == []  # within grace
        expired = expire_jobs(store, time.time() + 3601, counts, grace_s=3600)
        assert [j.finish_reason for j in expired] == ["processes_gone"]
    finally:
        transports.close()
        for proc in ranks:
            proc.kill()
            proc.wait()


def test_launcher_workers_counted_over_ssh(sshd_rig: SshdRig, tmp_path: Path):
    """A launcher behind an ``exec -a`` wrapper with two workers on the rig's host: the two
    matching processes are one launcher, the two workers are the ranks, and --json lists them."""
    token = f"ugro-train-{secrets.token_hex(4)}"
    config = Config(nodes=(sshd_rig.node_config("node1"),), ssh=sshd_rig.settings())
    store = StateStore(tmp_path)
    start_job(store, "llama", ["node1"], time.time(), ["node1"], ranks=3, match=token)
    jobs = active_jobs(store.load().state)
    transports = Transports(config)

    def polled() -> NodeReport | None:
        (node,) = collect_cluster(config, config.nodes, transports, jobs=jobs).nodes
        assert node.reachable, node.error
        return node if len(node.sample.matched_descendants) >= 4 else None

    try:
        with launched_job(tmp_path, token, workers=2, wrapper=True):
            node = wait_for(polled)
            assert node is not None
            assert len(node.sample.matched_processes) == 2  # the wrapper and the launcher
            (low,) = [a for a in node.alerts if a.code == "job_ranks_low"]
            assert "2 of 3 rank processes" in low.message  # not 2 matched + 2 workers, not 2
            (entry,) = node.to_json()["jobs"]
            assert (entry["job"], entry["ranks_seen"], entry["ranks_expected"]) == ("llama", 2, 3)
            assert len(entry["launchers"]) == 2
            assert all("-c import subprocess" in p["cmdline"] for p in entry["ranks"])
    finally:
        transports.close()
