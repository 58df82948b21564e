"""Open file descriptors of `watch` and `check` per node: the figures behind ``engine.fdlimit``.

    python benchmarks/bench_open_files.py                    # 8 and 32 nodes
    python benchmarks/bench_open_files.py --nodes 8 32 64 --write-docs

For each size N, a simulated cluster (``_cluster.py``: node aliases on ``--sshd`` sshd processes
on loopback, one SSH connection per node) and two real processes of the installed entry point:

- ``watch --headless --interval 2 --metrics-listen PORT``: once every node has been polled
  twice, ``/proc/<pid>/fd`` is read a few times and the highest count kept;
- ``check --no-record``: ``/proc/<pid>/fd`` is read every few milliseconds while it runs, the
  highest count kept (its connections are open together while the fan-out runs).

Each descriptor is classed by what it points at (socket, pipe, file, other). The per-node cost
is the slope between the sizes; the fixed part, the intercept. ``engine.fdlimit`` budgets more
than both (see its docstring).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

from _cluster import SimCluster
from _docs import write_section
from sshd_rig import free_port

SECTION = "## open files per node"
MAX_WORKERS = 64  # SimCluster's ssh.max_workers


def fd_kinds(pid: int) -> Counter[str]:
    """The process' descriptors by kind; empty once it is gone."""
    kinds: Counter[str] = Counter()
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    for entry in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target and not target.startswith("/") else "file"
        kinds[kind if kind in ("socket", "pipe", "file") else "other"] += 1
    return kinds


def cli(cluster: SimCluster, *args: str) -> subprocess.Popen[bytes]:
    env = {**cluster.env(), "UGRO_HEALTH_CONFIG": str(cluster.cluster_yaml)}
    return subprocess.Popen(
        [sys.executable, "-m", "ugro_health", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def measure_watch(cluster: SimCluster, nodes: int) -> Counter[str]:
    port = str(free_port())
    proc = cli(cluster, "watch", "--headless", "--interval", "2", "--metrics-listen", port)
    assert proc.stdout is not None
    cycles = 0
    try:
        deadline = time.monotonic() + 120
        while cycles < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"watch ended early: {proc.wait()}")
            if f" polled {nodes} " in line:
                cycles += 1
        best: Counter[str] = Counter()
        for _ in range(5):
            now = fd_kinds(proc.pid)
            if sum(now.values()) > sum(best.values()):
                best = now
            time.sleep(0.3)
        return best
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def measure_check(cluster: SimCluster) -> Counter[str]:
    proc = cli(cluster, "check", "--no-record")
    best: Counter[str] = Counter()
    while proc.poll() is None:
        now = fd_kinds(proc.pid)
        if sum(now.values()) > sum(best.values()):
            best = now
        time.sleep(0.005)
    return best


def row(label: str, nodes: int, kinds: Counter[str]) -> str:
    parts = ", ".join(f"{k} {kinds[k]}" for k in ("socket", "pipe", "file", "other") if kinds[k])
    return f"| {label} | {nodes} | {sum(kinds.values())} | {parts} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sshd", type=int, default=4, help="sshd processes the nodes share")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    totals: dict[str, dict[int, int]] = {"watch": {}, "check": {}}
    rows = []
    for nodes in args.nodes:
        cluster = SimCluster.start(nodes, sshd=args.sshd, max_workers=MAX_WORKERS)
        try:
            subprocess.run(  # enrol nothing, warm the bytecode cache: the first run is not measured
                [sys.executable, "-m", "ugro_health", "--version"], env=cluster.env(), check=True
            )
            for label, kinds in (
                ("watch", measure_watch(cluster, nodes)),
                ("check", measure_check(cluster)),
            ):
                totals[label][nodes] = sum(kinds.values())
                rows.append(row(label, nodes, kinds))
                print(rows[-1], flush=True)
        finally:
            cluster.close()
    lines = ["| command | nodes | descriptors | by kind |", "|---|---:|---:|---|", *rows, ""]
    for label, by_size in totals.items():
        # check holds at most ssh.max_workers connections at once: fit below that.
        sizes = sorted(n for n in by_size if label == "watch" or n <= MAX_WORKERS)
        if len(sizes) >= 2:
            low, high = sizes[0], sizes[-1]
            slope = (by_size[high] - by_size[low]) / (high - low)
            base = by_size[low] - slope * low
            per = "node" if label == "watch" else f"node up to ssh.max_workers ({MAX_WORKERS})"
            lines.append(f"- {label}: {slope:.2f} per {per} + {base:.0f} fixed")
    for line in lines[-2:]:
        print(line)
    if args.write_docs:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        body = [
            f"Measured {stamp}, `python benchmarks/bench_open_files.py --nodes "
            f"{' '.join(map(str, args.nodes))} --sshd {args.sshd} --write-docs` (Python "
            f"{sys.version.split()[0]}, {os.cpu_count()} cores). Highest count of "
            "`/proc/<pid>/fd` during a run: `watch` after every node was polled, `check` while "
            "its fan-out runs. `engine.fdlimit` budgets above these: 1 per node (watch) or "
            "per parallel connection (check), 1 per fan-out worker, and 64.",
            "",
            *lines,
        ]
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
