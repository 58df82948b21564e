"""A scrape of a running ``watch`` loop never waits on the poll in flight, nor starts one.

The loop polls a local node through a transport that holds its second poll until the test lets
it go: while that poll hangs, scrapes over HTTP must still answer, from the first cycle's report.
If a scrape waited on the poll it would hang too (and pytest-timeout would fail the test).
"""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ugro_health.config import Config, NodeConfig, Thresholds
from ugro_health.engine.collect import Transports
from ugro_health.engine.monitor import Monitor
from ugro_health.engine.scheduler import PollPolicy
from ugro_health.export.metrics import SnapshotCollector
from ugro_health.export.serve import ListenAddress, MetricsServer
from ugro_health.export.sources import monitor_snapshot
from ugro_health.store.state import StateStore
from ugro_health.transport.local import LocalTransport

# Limits no test machine reaches: the node stays OK, so the loop does not re-poll it early.
CALM = Thresholds(load_warn_per_core=1000, mem_warn_pct=99.9, mem_crit_pct=100,
                  disk_warn_pct=99.9, disk_crit_pct=100, swap_warn_pct=100, zombie_warn=100000,
                  clock_skew_warn_s=100000)  # fmt: skip


class HeldTransport(LocalTransport):
    """The real in-process probe, except that the second poll waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.holding = threading.Event()
        self.release = threading.Event()

    def run_probe(self, node: NodeConfig, request: dict[str, Any], deadline: float) -> Any:
        self.calls += 1
        if self.calls == 2:
            self.holding.set()
            self.release.wait(120)
        return super().run_probe(node, request, deadline)


def scrape(server: MetricsServer) -> dict[str, float]:
    url = f"http://{server.address}/metrics"
    with urllib.request.urlopen(url, timeout=60) as answer:
        text = answer.read().decode()
    return {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
        if not s.labels or s.labels.get("node") == "here"
    }  # fmt: skip


def test_scrapes_answer_while_a_poll_hangs_and_never_start_one(tmp_path: Path):
    config = Config(nodes=(NodeConfig("here", transport="local"),), thresholds=CALM)
    transports = Transports(config, persistent=True)
    held = transports._local = HeldTransport()
    monitor = Monitor(
        config, config.nodes, StateStore(tmp_path), transports, PollPolicy(fixed_interval_s=1.0)
    )
    server = MetricsServer(
        SnapshotCollector(lambda: monitor_snapshot(monitor)), ListenAddress("127.0.0.1", 0)
    )
    loop = threading.Thread(target=monitor.run, kwargs={"tick_s": 0.1})
    loop.start()
    try:
        assert held.holding.wait(120), "the second poll never started"
        for _ in range(5):
            seen = scrape(server)
            assert seen["ugro_health_cycles_total"] == 1  # the first cycle's data, served
            assert seen["ugro_health_node_up"] == 1
        assert held.calls == 2  # the scrapes started no poll
    finally:
        held.release.set()
        monitor.stop()
        loop.join(timeout=60)
        server.close()
        transports.close()
    assert not loop.is_alive()
