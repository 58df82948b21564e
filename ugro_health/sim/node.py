"""A simulated node that speaks the probe protocol: the probe's own request handling and
framing (``probe.Probe.answer``) around a ``SimNode``'s document instead of a real scan.

``SimProbe`` answers in-process (the demo's transport). ``main`` stands in for a node's
interpreter behind a real sshd: configure a node's ``python:`` as a wrapper that runs
``python -m ugro_health.sim.node --node NAME [...]`` with the arguments it is given. It accepts
the probe's bootstrap command line (``-c '<bootstrap>'``), reads the probe source the control
host sends (a length line, then that many bytes) without running it, then answers one
``UGRO1 <json>`` frame per request line until EOF or ``{"op": "exit"}``, as the real probe does
(docs/probe-protocol.md). Costs next to nothing per tick: benchmarks put many of them behind
a few sshd.

    python -m ugro_health.sim.node --node gpu03 --nodes 64 --story steady -c '...'
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ugro_health import probe
from ugro_health.sim.model import SimCluster, SimNode, Story


class SimProbe(probe.Probe):
    """``probe.Probe`` whose sample is the simulated node's document (request validation,
    size cap, error documents and framing are the probe's own)."""

    def __init__(self, node: SimNode) -> None:
        super().__init__()
        self.node = node

    def _sample(self, req: probe.Json) -> probe.Json:
        return self.node.document(req)


def node_names(count: int, prefix: str = "node") -> list[str]:
    """``node01`` ... (at least two digits), the names ``--nodes N`` stands for."""
    width = max(2, len(str(count)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, count + 1)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ugro_health.sim.node",
        description="A simulated GPU node speaking the probe protocol on stdin/stdout.",
    )
    parser.add_argument("--node", required=True, help="this node's name")
    parser.add_argument("--nodes", type=int, default=8, help="cluster size (node01 ... nodeNN)")
    parser.add_argument("--names", help="comma-separated node names instead of --nodes")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--story", choices=("steady", "demo"), default="steady")
    parser.add_argument("--start", type=float, help="wall-clock time of story time 0 (now)")
    parser.add_argument("--speed", type=float, default=1.0, help="story seconds per second")
    parser.add_argument("-c", dest="bootstrap", help="the probe's bootstrap (accepted, not run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.names.split(",") if args.names else node_names(args.nodes)
    story = Story.demo() if args.story == "demo" else Story.steady()
    start = time.time() if args.start is None else args.start
    cluster = SimCluster(names, gpus=args.gpus, story=story, start=start, speed=args.speed)
    stdin = sys.stdin.buffer
    if args.bootstrap is not None:  # under the bootstrap: skip the probe's source
        header = stdin.readline()
        try:
            size = int(header)
        except ValueError:
            sys.stderr.write("ugro-health sim: expected the probe source's length\n")
            return 1
        while size > 0:
            chunk = stdin.read(min(size, 1 << 16))
            if not chunk:
                return 0
            size -= len(chunk)
    probe.main(SimProbe(cluster.node(args.node)))  # the probe's own request loop
    return 0


def _run() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    _run()
