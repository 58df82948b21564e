"""Nodes behind one bastion: what the bastion and the control host pay, one-shot and persistent.

``--nodes`` node entries reach one target sshd through one jump host (a real sshd with OpenSSH's
default ``MaxStartups 10:30:100``) behind the suite's counting TCP proxy
(``tests/integration/fault_proxy.py``). Three one-shot rounds (``check``: every node at once,
each connecting, probing, disconnecting) and three persistent ticks (``watch``: sessions kept),
each round measuring the TCP connections the bastion accepted, the wall time, this process's
CPU time and paramiko's reader threads left running.

Rerun: ``python benchmarks/bench_jump.py --nodes 64 [--write-docs]``
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import paramiko
from _cluster import SshdRig
from _docs import write_section
from fault_proxy import FaultProxy
from sshd_rig import PROBE_REQUEST

from ugro_health.config import NodeConfig
from ugro_health.transport.base import TransportError

DOC_SECTION = "## jump hosts"
ROUNDS = 3
BEFORE = (
    "Before nodes shared their jump host's connection (the same run on commit 7594e87, "
    "2026-12-03): `check` 64-66 bastion connections per round (a handshake per node, and a few "
    "dropped by `MaxStartups` and tried again), 6.6-7.3 s and 1.7-2.0 s of control CPU per "
    "round; `watch` 65 bastion connections on the first tick, 128 paramiko threads (a "
    "connection to the bastion and one to the node, per node), 0.12-0.15 s of control CPU per "
    "tick. Sharing: one bastion connection, one paramiko thread for it, about a third of the "
    "control CPU (each node's traffic is still encrypted twice, once for the node and once "
    "for the bastion, as with `ssh -J`). The machine (2 cores) was shared with other "
    "workloads: compare the columns, not the digits."
)


def poll(transport: Any, nodes: list[NodeConfig]) -> int:
    """One round, every node at once; how many failed."""

    def one(node: NodeConfig) -> bool:
        try:
            return bool(transport.run_probe(node, PROBE_REQUEST, time.monotonic() + 60)["ok"])
        except TransportError:
            return False

    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return sum(not ok for ok in pool.map(one, nodes))


def measure(count: int) -> list[tuple[str, int, float, float, int, int, int]]:
    """(mode, round, wall s, CPU s, bastion connections, paramiko threads, failed) per round."""
    rig = SshdRig.create()
    rows = []
    try:
        rig.start_node("target")
        rig.start_node("bastion", options=("MaxStartups 10:30:100",))
        proxy = FaultProxy(rig.nodes["bastion"].port, max_connections=4 * count)
        public = Path(f"{rig.host_key}.pub").read_text().split()[:2]
        with rig.known_hosts.open("a") as fh:
            fh.write(f"[127.0.0.1]:{proxy.port} {' '.join(public)}\n")
        jump = f"{rig.user}@127.0.0.1:{proxy.port}"
        nodes = [
            replace(rig.node_config("target", proxy_jump=jump), name=f"n{i:04d}")
            for i in range(count)
        ]
        settings = rig.settings(connect_timeout=10.0, command_timeout=30.0)
        for mode in ("check", "watch"):
            transport = rig.transport(settings, persistent=mode == "watch")
            try:
                for round_ in range(1, ROUNDS + 1):
                    accepted, cpu, start = proxy.accepted, time.process_time(), time.monotonic()
                    failed = poll(transport, nodes)
                    wall, cpu = time.monotonic() - start, time.process_time() - cpu
                    threads = sum(isinstance(t, paramiko.Transport) for t in threading.enumerate())
                    rows.append(
                        (mode, round_, wall, cpu, proxy.accepted - accepted, threads, failed)
                    )
                    print(rows[-1], flush=True)
            finally:
                transport.close()
        proxy.close()
    finally:
        rig.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    rows = measure(args.nodes)
    body = [
        f"{args.nodes} nodes behind one jump host (a real sshd with the default `MaxStartups "
        f"10:30:100`, behind the suite's counting proxy), all polled at once: {ROUNDS} one-shot "
        f"rounds as `check` makes them, then {ROUNDS} ticks of persistent sessions as `watch` "
        f"keeps them. CPU is the control process's own. Measured {time.strftime('%Y-%m-%d')} "
        f"on {os.cpu_count()} cores, Python {sys.version.split()[0]}.",
        "",
        f"Rerun: `python benchmarks/bench_jump.py --nodes {args.nodes} --write-docs`",
        "",
        "| mode | round | wall | control CPU | bastion connections | paramiko threads after"
        " | failed |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {mode} | {r} | {wall:.2f} s | {cpu:.2f} s | {conns} | {threads} | {failed} |"
            for mode, r, wall, cpu, conns, threads, failed in rows
        ),
    ]
    body += ["", BEFORE]
    if args.write_docs:
        write_section(DOC_SECTION, body)
    print("\n".join(body))


if __name__ == "__main__":
    main()
