"""Idle cost of ``ugro-health watch``: CPU of the whole process at a 60 s interval on 32 nodes.

Starts a simulated cluster (``_cluster.SimCluster``), runs the real CLI
``ugro-health watch --headless --interval 60`` against it, lets the first cycle (connections,
probes starting) pass, then measures the process's own CPU time (user + system, from
/proc/PID/stat, threads included) over a window that contains one steady-state cycle. The
target: under 1 % of one core. The nodes answer with the simulator (``--node-side sim``, the
default: ``ugro_health/sim`` behind each node's sshd) or the real probe (``--node-side probe``).

Rerun: ``python benchmarks/bench_watch_idle.py --nodes 32 --seconds 90 [--write-docs]``
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _cluster import NODE_SIDES, SimCluster
from _docs import write_section

DOC_SECTION = "## watch idle"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(nodes: int, seconds: float, node_side: str) -> tuple[float, float, int]:
    with SimCluster.start(nodes, sshd=min(nodes, 16), node_side=node_side) as cluster:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ugro_health",
                "--config",
                str(cluster.cluster_yaml),
                "watch",
                "--headless",
                "--interval",
                "60",
            ],
            env=cluster.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            while " cycle 1:" not in proc.stdout.readline():
                pass
            time.sleep(5)  # let the first cycle's connections settle
            start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            used, elapsed = cpu_seconds(proc.pid) - start_cpu, time.monotonic() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        return used, elapsed, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--node-side", choices=NODE_SIDES, default="sim")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    used, elapsed, code = measure(args.nodes, args.seconds, args.node_side)
    side = "the simulator" if args.node_side == "sim" else "the real probe"
    share = 100.0 * used / elapsed
    body = [
        f"`ugro-health watch --headless --interval 60` on {args.nodes} simulated SSH nodes "
        f"(persistent sessions), the whole process's CPU over {elapsed:.0f} s after its first "
        f"cycle (so at least one steady-state cycle is inside the window). Measured "
        f"{time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}. Node side: {side}.",
        "",
        f"Rerun: `python benchmarks/bench_watch_idle.py --nodes {args.nodes} "
        f"--seconds {args.seconds:.0f} --node-side {args.node_side} --write-docs`",
        "",
        "| nodes | CPU used | window | share of one core | target | exit code after SIGTERM |",
        "|---|---|---|---|---|---|",
        f"| {args.nodes} | {used * 1000:.0f} ms | {elapsed:.0f} s | {share:.2f} % | < 1 %: "
        f"{'met' if share < 1 else '**missed**'} | {code} |",
    ]
    print("\n".join([DOC_SECTION, "", *body]))
    if args.write_docs:
        write_section(DOC_SECTION, body)


if __name__ == "__main__":
    main()
