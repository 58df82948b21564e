"""An agent that launches training with automatic job tracking and stops it on a CRITICAL alert.

    python examples/training_agent.py --config cluster.yaml --nodes gpu1,gpu2 -- \
        torchrun --nnodes 2 --nproc_per_node 8 train.py

Without a command after ``--`` a dummy training runs (a Python loop printing its steps). The
job is registered while the training runs (the monitor polls its nodes at once, then at the
active interval, and checks its rank processes); a CRITICAL alert raised on one of its nodes
(a GPU too hot, an uncorrectable ECC error, a node unreachable) terminates the training. Exit
status: the training's own, or 2 when it was stopped because a node went CRITICAL.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading

import ugro_health

DUMMY_TRAINING = [
    sys.executable,
    "-c",
    "import time\nfor step in range(1_000_000):\n    print(f'step {step}', flush=True)\n"
    "    time.sleep(0.5)\n",
]
# The dummy's processes, for the job's rank check (jobs.match would not know them): without
# a pattern that finds them, the job would be marked finished (processes gone) after its grace.
DUMMY_MATCH = r"for step in range"


class Agent:
    """Owns the training process; ``on_alert`` (the monitor's handlers thread) may stop it."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = set(nodes)
        self.training: subprocess.Popen[bytes] | None = None
        self.stopped_because: str | None = None
        self._lock = threading.Lock()

    def launch(self, command: list[str]) -> None:
        with self._lock:
            self.training = subprocess.Popen(command)
        print(f"agent: training started (pid {self.training.pid})", flush=True)

    def on_alert(self, event: ugro_health.AlertEvent) -> None:
        critical = event.alert.severity is ugro_health.Severity.CRITICAL
        if event.kind != "raised" or not critical or event.node not in self.nodes:
            return
        with self._lock:
            if self.training is None or self.training.poll() is not None:
                return
            self.stopped_because = f"{event.node} {event.alert.code}: {event.alert.message}"
            self.training.terminate()
        print(f"agent: stopping training: {self.stopped_because}", flush=True)

    def wait(self) -> int:
        assert self.training is not None
        return self.training.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="cluster file (default: the CLI's lookup)")
    parser.add_argument("--state-dir", help="state directory (default: the CLI's)")
    parser.add_argument("--nodes", help="comma-separated nodes of the job (default: all)")
    parser.add_argument("--job", default="training", help="the job's name")
    parser.add_argument("--interval", type=float, help="fixed poll interval in seconds")
    parser.add_argument("--match", help="regex for the training's processes (default: jobs.match)")
    parser.add_argument("command", nargs="*", help="the training command (after --)")
    args = parser.parse_args(argv)
    config = ugro_health.load_config(args.config)
    nodes = args.nodes.split(",") if args.nodes else [n.name for n in config.nodes]
    agent = Agent(nodes)
    with (
        ugro_health.HealthMonitor(
            config,
            nodes=nodes,
            state_dir=args.state_dir,
            interval_s=args.interval,
            on_alert=agent.on_alert,
        ) as monitor,
        monitor.track_job(
            args.job, nodes, match=args.match or (None if args.command else DUMMY_MATCH)
        ),
    ):
        agent.launch(args.command or DUMMY_TRAINING)
        code = agent.wait()
    if agent.stopped_because is not None:
        print(f"agent: training stopped: {agent.stopped_because}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
