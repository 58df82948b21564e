"""One cluster split across two real ``watch --headless --shard I/2`` processes over the sshd
rig, each with its own state directory and ``--metrics-listen`` port, their results meeting in
one real Prometheus (scraping both) and one real Alertmanager (fed by both); then again with
one state directory shared by both.

The cluster: healthy nodes (names of the rig's sshd ports, several per server) and, in each
shard, one node whose port refuses connections, so each shard has an alert to send. After a
few cycles: every node is in exactly one shard's ``/metrics``, ``state.json`` and Prometheus
series; the union is the cluster; Alertmanager holds each dead node's alert once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alertmanager_rig import AlertmanagerRig, require_alertmanager
from cli_helpers import cli_env
from notify_e2e_helpers import CALM, wait_for
from prom_server import PrometheusServer
from prom_tools import require
from sshd_rig import SshdRig, free_port

from ugro_health.engine.shard import shard_of

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

SHARDS = (1, 2)


def first_of_each_shard(prefix: str, count: int) -> list[str]:
    """The first ``count`` names ``<prefix>01``.. of each shard: a handful of names splits as
    unevenly as coins fall (gpu01..gpu10 give 9 and 1), and the test wants both at work."""
    names = [f"{prefix}{i:02d}" for i in range(1, 100)]
    return [n for i in SHARDS for n in [m for m in names if shard_of(m, 2) == i][:count]]


HEALTHY = sorted(first_of_each_shard("gpu", 4))


def dead_nodes() -> list[str]:
    """One refusing node per shard."""
    return first_of_each_shard("down", 1)


@dataclass
class Shard:
    index: int
    port: int
    state_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as answer:
            return str(answer.read().decode())

    def nodes_up(self) -> dict[str, float]:
        """``ugro_health_node_up`` by node, from this shard's own ``/metrics`` (none while
        it is not serving yet)."""
        try:
            text = self.metrics()
        except OSError:
            return {}
        found = {}
        for line in text.splitlines():
            if line.startswith("ugro_health_node_up{"):
                labels, value = line.rsplit(" ", 1)
                found[labels.split('node="')[1].split('"')[0]] = float(value)
        return found

    def state_nodes(self) -> set[str]:
        try:
            doc = json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return set()
        return set(doc.get("nodes", {}))


def write_cluster(rig: SshdRig, home: Path, am: AlertmanagerRig) -> Path:
    servers = [rig.nodes[n].port for n in ("node1", "node2", "node3")]
    nodes = [{"name": n, "port": servers[i % 3]} for i, n in enumerate(HEALTHY)]
    nodes += [{"name": n, "port": rig.refused_port} for n in dead_nodes()]
    doc = {
        "thresholds": CALM,
        "defaults": {
            "host": "127.0.0.1",
            "user": rig.user,
            "identity_file": str(rig.key),
            "python": "/usr/bin/python3",
            "transport": "ssh",
        },
        "ssh": {
            "connect_timeout": 5,
            "command_timeout": 20,
            "ssh_config": "",
            "known_hosts": str(rig.known_hosts),
        },
        "watch": {"failure_threshold": 1000},  # keep polling the dead nodes
        "alerts": {"resolve_after": 1},
        "notify": {
            "cluster": "sharded",
            "channels": [am.channel_entry(resend_interval="2s")],
        },
        "nodes": nodes,
    }
    path = home / "cluster.yaml"
    path.write_text(json.dumps(doc, indent=1))
    return path


def start_shard(home: Path, cluster: Path, index: int, shared: bool) -> Shard:
    state_dir = home / ("state" if shared else f"state-{index}")
    port = free_port()
    log = home / f"watch-{index}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ugro_health", "--config", str(cluster),
             "--state-dir", str(state_dir), "watch", "--headless", "--interval", "1",
             "--shard", f"{index}/2", "--metrics-listen", f"127.0.0.1:{port}"],
            cwd=home, env=cli_env(home), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Shard(index, port, state_dir, log, proc)


def stop(shard: Shard) -> int:
    if shard.proc.poll() is None:
        shard.proc.send_signal(signal.SIGTERM)
    try:
        return shard.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        shard.proc.kill()
        shard.proc.wait(timeout=10)
        raise


def prometheus_config(targets: list[str]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "ugro-health", "static_configs": [{"targets": targets}]},
        ],
    }


@pytest.fixture
def am() -> Iterator[AlertmanagerRig]:
    require_alertmanager()
    with AlertmanagerRig.start() as rig:
        yield rig


@pytest.fixture(params=[False, True], ids=["own-state-dirs", "shared-state-dir"])
def shards(
    request: pytest.FixtureRequest, sshd_rig: SshdRig, am: AlertmanagerRig, tmp_path: Path
) -> Iterator[tuple[list[Shard], PrometheusServer]]:
    binary = require("prometheus")
    cluster = write_cluster(sshd_rig, tmp_path, am)
    started: list[Shard] = []
    prom = None
    try:
        started = [start_shard(tmp_path, cluster, i, request.param) for i in SHARDS]
        targets = [f"127.0.0.1:{s.port}" for s in started]
        prom = PrometheusServer(binary, prometheus_config(targets), tmp_path)
        yield started, prom
    finally:
        if prom is not None:
            prom.close()
        codes = [stop(s) for s in started]
    assert codes == [0, 0], [s.log.read_text()[-3000:] for s in started]


def test_two_watch_shards_poll_every_node_once_and_meet_in_prometheus_and_alertmanager(
    shards: tuple[list[Shard], PrometheusServer], am: AlertmanagerRig
):
    started, prom = shards
    everyone = set(HEALTHY) | set(dead_nodes())
    expected = {i: {n for n in everyone if shard_of(n, 2) == i} for i in SHARDS}
    assert all(len(nodes) >= 3 for nodes in expected.values())  # both shards have work

    def polled() -> bool:
        return all(set(s.nodes_up()) == expected[s.index] for s in started)

    wait_for(polled, 120, "each shard's /metrics to hold its nodes")
    dead = set(dead_nodes())

    def in_alertmanager() -> set[str]:
        return {
            a["labels"]["node"]
            for a in am.alerts()
            if a["labels"].get("alertname") == "node_unreachable"
        }

    wait_for(lambda: in_alertmanager() == dead, 120, "both dead nodes' alerts in Alertmanager")
    wait_for(
        lambda: (
            len(prom.query("ugro_health_node_up")) == len(everyone)
            and len(prom.query("ugro_health_cycles_total")) == 2
        ),
        120,
        "Prometheus to scrape both shards",
    )

    # Each shard polled exactly its own nodes: its /metrics, its state and its log say so.
    for shard in started:
        up = shard.nodes_up()
        assert set(up) == expected[shard.index]
        assert {n for n, v in up.items() if v == 0} == dead & expected[shard.index]
        # Its own state directory holds its nodes; a shared one, everybody's (each shard
        # writes its nodes under the store's lock, as check and watch always could).
        shared = started[0].state_dir == started[1].state_dir
        held = everyone if shared else expected[shard.index]
        wait_for(lambda: shard.state_nodes() == held, 60, "the state written")  # noqa: B023
        assert shard.state_nodes() == held
        start = next(line for line in shard.log.read_text().splitlines() if " watching " in line)
        assert f"watching {len(expected[shard.index])} node(s) (shard {shard.index}/2);" in start
        assert f'ugro_health_cycles_total{{shard="{shard.index}/2"}}' in shard.metrics()
    # The union is the cluster and nobody is in two shards.
    assert expected[1] | expected[2] == everyone and not expected[1] & expected[2]

    # In Prometheus, every node once, from the one instance that owns it.
    series = prom.query("ugro_health_node_up")
    by_node = {r["metric"]["node"]: r["metric"]["instance"] for r in series}
    assert len(series) == len(by_node) == len(everyone)
    owner = {n: f"127.0.0.1:{s.port}" for s in started for n in expected[s.index]}
    assert by_node == owner
    assert {r["metric"]["shard"] for r in prom.query("ugro_health_cycles_total")} == {"1/2", "2/2"}
    assert prom.by_node("count by (node) (ugro_health_node_up) > 1") == {}

    # In Alertmanager, each dead node's alert once, labelled as one cluster.
    alerts = [a for a in am.alerts() if a["labels"].get("alertname") == "node_unreachable"]
    assert sorted(a["labels"]["node"] for a in alerts) == sorted(dead)
    assert {a["labels"]["cluster"] for a in alerts} == {"sharded"}
    # The healthy nodes never paged, from either shard.
    assert not {a["labels"].get("node") for a in am.receiver.alerts()} - dead
