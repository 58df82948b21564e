"""Does ``watch`` stay flat over a long run? RSS over 10,000+ monitor cycles.

Drives the real ``Monitor`` (scheduler, breakers, jobs, recorder, history and state store) with
a fake clock so that cycles follow each other without waiting, over in-process local nodes plus
one node whose SSH port is closed, so the breaker and the alert paths run too. The local nodes
answer with the simulator (``--node-side sim``, the default: 8 recorded H100s each, as a GPU
node's samples are) or the real probe (``--node-side probe``: this machine, no GPU). Prints RSS
every 1,000 cycles and the growth after warm-up.

Rerun: ``python benchmarks/bench_watch_memory.py --cycles 10000 [--write-docs]``
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

from _cluster import NODE_SIDES, in_process
from _docs import write_section

from ugro_health.config import Config, NodeConfig, SshSettings
from ugro_health.engine import collect
from ugro_health.engine.breaker import BreakerPolicy
from ugro_health.engine.clock import FakeClock
from ugro_health.engine.monitor import Monitor
from ugro_health.engine.scheduler import PollPolicy
from ugro_health.store.state import StateStore

DOC_SECTION = "## watch memory"


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(cycles: int, nodes: int, node_side: str) -> list[tuple[int, int, float]]:
    # Cycles here follow each other in microseconds of real time; the probe would then sample
    # CPU over its 0.2 s window every time. Real ticks are seconds apart, so measure without it.
    collect.CPU_WINDOW_S = 0.0
    state_dir = Path(tempfile.mkdtemp(prefix="ugro-bench-mem-"))
    local = [NodeConfig(name=f"local{i:02d}", transport="local") for i in range(nodes)]
    dead = NodeConfig(name="dead", host="127.0.0.1", port=closed_port(), transport="ssh")
    ssh = SshSettings(
        connect_timeout=1.0,
        command_timeout=2.0,
        ssh_config=None,
        known_hosts=str(state_dir / "known_hosts"),
    )
    config = Config(nodes=(*local, dead), ssh=ssh)
    clock = FakeClock(start=time.time())
    monitor = Monitor(
        config,
        config.nodes,
        StateStore(state_dir, clock=clock.time),
        in_process(config, node_side),
        PollPolicy(fixed_interval_s=5.0),
        BreakerPolicy(reset_base_s=30.0, reset_max_s=60.0),
        clock,
    )
    samples: list[tuple[int, int, float]] = []
    started = time.monotonic()

    def on_cycle(_: object) -> None:
        clock.sleeps.clear()  # the fake clock's own record of waits: a test aid, not the monitor
        done = monitor.view.cycles
        if done % 1000 == 0:
            samples.append((done, rss_kib(), time.monotonic() - started))
            print(f"cycle {done:6d}: RSS {samples[-1][1] / 1024:.1f} MiB", file=sys.stderr)

    monitor.run(on_cycle=on_cycle, max_cycles=cycles)
    monitor.transports.close()
    return samples


def table(samples: list[tuple[int, int, float]], nodes: int, node_side: str) -> str:
    base = samples[0][1]
    rows = [
        f"| {c:,} | {r / 1024:.1f} MiB | {(r - base) / 1024:+.1f} MiB | {t:.0f} s |"
        for c, r, t in samples
    ]
    growth = (samples[-1][1] - base) / 1024
    return "\n".join(
        [
            DOC_SECTION,
            "",
            f"`watch` loop (real `Monitor`, fake clock), {nodes} in-process nodes and one node "
            f"with a closed SSH port (breaker and alert paths), {samples[-1][0]:,} cycles, each "
            "recorded to history and state. Measured "
            f"{time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, Python "
            f"{sys.version.split()[0]}. Node side: "
            + ("the simulator (8 GPUs a node)." if node_side == "sim" else "the real probe."),
            "",
            "Rerun: `python benchmarks/bench_watch_memory.py --cycles 10000 "
            f"--node-side {node_side} --write-docs`",
            "",
            "| cycles | RSS | since cycle 1,000 | elapsed |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Growth after cycle 1,000: {growth:+.1f} MiB (target: flat). The dashboard's "
            "alert list and the scheduler's cycle times are bounded deques; per-node state is one "
            "report per node.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--node-side", choices=NODE_SIDES, default="sim")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    samples = run(args.cycles, args.nodes, args.node_side)
    section = table(samples, args.nodes, args.node_side)
    print(section)
    if args.write_docs:
        write_section(DOC_SECTION, section.split("\n")[2:])


if __name__ == "__main__":
    main()
