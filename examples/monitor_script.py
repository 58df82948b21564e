"""Standalone monitoring from a script: one line per round and per alert, until Ctrl-C.

    python examples/monitor_script.py --config cluster.yaml [--cycles N] [--interval S]

What ``ugro-health watch --headless`` prints, written against the Python API: the handlers get
each round's report and each alert raised or cleared; ``on_state`` keeps a small table that
another part of a program (a scheduler, a dashboard) could read. SIGINT and SIGTERM stop it
after the round in flight.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import ugro_health

latest: dict[str, tuple[str, int | None]] = {}  # node -> (status, score): a cluster-state table
lock = threading.Lock()


def on_cycle(event: ugro_health.CycleEvent) -> None:
    counts: dict[str, int] = {}
    for node in event.report.nodes:
        counts[node.status.label] = counts.get(node.status.label, 0) + 1
    summary = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
    print(f"cycle {event.number}: polled {len(event.polled)} in {event.duration_s:.2f}s; {summary}")


def on_alert(event: ugro_health.AlertEvent) -> None:
    word = "ALERT" if event.kind == "raised" else "CLEARED"
    alert = event.alert
    print(f"{word} {alert.severity.value.upper()} {event.node} {alert.code}: {alert.message}")


def on_state(state: ugro_health.ClusterState) -> None:
    with lock:
        latest.update({n.name: (n.status.label, n.score) for n in state.nodes})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="cluster file (default: the CLI's lookup)")
    parser.add_argument("--state-dir", help="state directory (default: the CLI's)")
    parser.add_argument("--cycles", type=int, help="stop after this many rounds")
    parser.add_argument("--interval", type=float, help="fixed poll interval in seconds")
    args = parser.parse_args(argv)
    try:
        config = ugro_health.load_config(args.config)
    except ugro_health.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    monitor = ugro_health.HealthMonitor(
        config,
        state_dir=args.state_dir,
        interval_s=args.interval,
        on_cycle=on_cycle,
        on_alert=on_alert,
        on_state=on_state,
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: monitor.stop())
    monitor.run(max_cycles=args.cycles)  # blocks; handlers run on their own thread
    with lock:
        table = ", ".join(f"{name}={status}/{score}" for name, (status, score) in latest.items())
    print(f"stopped after {monitor.stats.cycles} cycle(s); last state: {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
