"""The demo's transport: simulated nodes answering in-process, through the probe protocol.

Each request is encoded as the SSH transport sends it, answered by a ``SimProbe`` (the probe's
own request handling and ``UGRO1`` framing) and read back with the SSH transport's parser, so
the engine sees exactly what it would from a real node, exchange times included. A node the
story has taken off the network fails as an unreachable host does.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ugro_health.config import NodeConfig
from ugro_health.engine.collect import Transports, node_budget
from ugro_health.model import ErrorKind
from ugro_health.sim.model import SimCluster
from ugro_health.sim.node import SimProbe
from ugro_health.transport.base import (
    Transport,
    TransportError,
    check_document,
    parse_response_line,
    stamp_exchange,
)


class SimTransport:
    """``Transport`` over a ``SimCluster``: one ``SimProbe`` per node, as a persistent
    session keeps one probe process per node."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self._probes: dict[str, SimProbe] = {}
        self._lock = threading.Lock()

    def run_probe(
        self, node: NodeConfig, request: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        if not self.cluster.reachable(node.name):
            self.forget(node.name)  # its session died with the network
            raise TransportError(
                ErrorKind.UNREACHABLE,
                f"No route to host during TCP connect to {node.name}:22 (simulated)",
            )
        with self._lock:
            sim = self._probes.get(node.name)
            if sim is None:
                sim = self._probes[node.name] = SimProbe(self.cluster.node(node.name))
        sent = time.time()
        reply, _ = sim.answer(json.dumps(request, separators=(",", ":")).encode())
        doc = parse_response_line(reply.encode())
        if doc is None:
            raise TransportError(ErrorKind.PROBE_INVALID, "no probe answer (simulated)")
        return check_document(stamp_exchange(doc, sent))

    def forget(self, node_name: str) -> None:
        with self._lock:
            self._probes.pop(node_name, None)

    def close(self) -> None:
        with self._lock:
            self._probes.clear()


@dataclass
class SimTransports(Transports):
    """``Transports`` that sends every node to the simulated cluster (never SSH or local)."""

    cluster: SimCluster | None = None
    _sim: SimTransport | None = field(default=None, init=False)

    def for_node(self, node: NodeConfig) -> Transport:
        if self._sim is None:
            assert self.cluster is not None, "SimTransports needs its cluster"
            self._sim = SimTransport(self.cluster)
        return self._sim

    def budget(self, node: NodeConfig) -> float:
        return node_budget(self.config)

    def forget(self, node: str) -> None:
        if self._sim is not None:
            self._sim.forget(node)

    def close(self) -> None:
        self.discard_pool()
        if self._sim is not None:
            self._sim.close()
