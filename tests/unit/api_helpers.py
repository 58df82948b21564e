"""Helpers for the Python API's tests: a transport that replays a real probe answer, and waits.

``ReplayTransports`` answers every node with one answer the real probe gave on this machine
(taken once per test session through ``LocalTransport``): a round costs no CPU window, so a
test can run hundreds of rounds. ``stalls`` makes named nodes hang until closed or forgotten,
as a wedged SSH session would; ``refuses`` makes them fail at once, as a closed port would.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from ugro_health.config import Config, NodeConfig
from ugro_health.engine.collect import Transports, probe_request
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError


@cache
def recorded_answer() -> dict[str, Any]:
    """One real answer of the probe on this machine (psutil, /proc; no GPU here)."""
    from ugro_health.config import default_config
    from ugro_health.transport.local import LocalTransport

    config = default_config()
    transport = LocalTransport()
    try:
        node = config.nodes[0]
        return transport.run_probe(node, probe_request(config, node), time.monotonic() + 30)
    finally:
        transport.close()


class ReplayTransport:
    def __init__(self, stalls: set[str], refuses: set[str]) -> None:
        self.stalls = stalls
        self.refuses = refuses
        self.polls = 0
        self.closed = threading.Event()
        self.forgotten: set[str] = set()
        self.stalled_now = threading.Event()

    def run_probe(self, node: NodeConfig, request: dict[str, Any], deadline: float) -> Any:
        self.polls += 1
        if node.name in self.refuses:
            raise TransportError(ErrorKind.REFUSED, "connection refused")
        if node.name in self.stalls:
            self.stalled_now.set()
            while not self.closed.is_set() and node.name not in self.forgotten:
                if time.monotonic() >= deadline:
                    raise TransportError(ErrorKind.TIMEOUT, "no answer", at_deadline=True)
                time.sleep(0.01)
            raise TransportError(ErrorKind.SSH_ERROR, "session closed")
        doc = copy.deepcopy(recorded_answer())
        doc["time"] = time.time()
        return doc

    def forget(self, node_name: str) -> None:
        self.forgotten.add(node_name)

    def close(self) -> None:
        self.closed.set()


class ReplayTransports(Transports):
    def __init__(
        self, config: Config, stalls: set[str] | None = None, refuses: set[str] | None = None
    ) -> None:
        super().__init__(config, persistent=True)
        self.replay = ReplayTransport(stalls or set(), refuses or set())

    def for_node(self, node: NodeConfig) -> Any:
        return self.replay

    def budget(self, node: NodeConfig) -> float:
        return 60.0

    def forget(self, node: str) -> None:
        self.replay.forget(node)

    def close(self) -> None:
        super().close()
        self.replay.close()


# The replayed answer is this machine's, taken under whatever load the suite puts on it: the
# tests of the API are not about its health, so no level of load, memory or disk alerts here.
CALM = {
    "load_warn_per_core": 10_000.0,
    "mem_warn_pct": 100,
    "mem_crit_pct": 100,
    "disk_warn_pct": 100,
    "disk_crit_pct": 100,
    "swap_warn_pct": 100,
    "zombie_warn": 1_000_000,
    "score_warn": 0,
}


def calm_config(*names: str, **kwargs: Any) -> Config:
    """Nodes ``names`` (in-process) with the ``CALM`` thresholds."""
    from ugro_health import make_config

    thresholds = {**CALM, **kwargs.pop("thresholds", {})}
    nodes = [{"name": n, "host": "localhost"} for n in names]
    return make_config(nodes, thresholds=thresholds, **kwargs)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def new_threads(before: set[threading.Thread]) -> list[str]:
    """Threads of ours (``ugro-*``) started since ``before`` that still run (other tests' own
    leftovers are not this test's business)."""
    return [
        t.name
        for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name.startswith("ugro-")
    ]
