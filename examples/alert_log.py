"""A custom alert handler: every alert to a JSON-lines file, and an escalation after two
CRITICALs on the same node.

    python examples/alert_log.py --config cluster.yaml --log alerts.jsonl \
        [--escalate-command 'mail -s "GPU node in trouble" oncall@example.com']

Each alert raised or cleared is one line of ``--log``. The second time a CRITICAL alert is
raised on a node (the same fault come back, or another one), the handler escalates: it writes
an ``escalated`` line and runs ``--escalate-command`` with the node and the alert in its
environment (``UGRO_NODE``, ``UGRO_ALERT``). Runs until SIGINT/SIGTERM or ``--cycles``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import ugro_health


class AlertLog:
    """The handler: called on the monitor's handlers thread, one alert at a time."""

    def __init__(self, path: Path, escalate_command: str | None = None, after: int = 2) -> None:
        self.path = path
        self.escalate_command = escalate_command
        self.after = after
        self.criticals: Counter[str] = Counter()

    def __call__(self, event: ugro_health.AlertEvent) -> None:
        alert = event.alert
        self._write(
            {
                "at": event.at,
                "node": event.node,
                "kind": event.kind,
                "severity": alert.severity.value,
                "code": alert.code,
                "message": alert.message,
            }
        )
        if event.kind == "raised" and alert.severity is ugro_health.Severity.CRITICAL:
            self.criticals[event.node] += 1
            if self.criticals[event.node] == self.after:
                self.escalate(event)

    def escalate(self, event: ugro_health.AlertEvent) -> None:
        code = event.alert.code
        self._write({"at": event.at, "node": event.node, "kind": "escalated", "code": code})
        if self.escalate_command:
            env = {**os.environ, "UGRO_NODE": event.node, "UGRO_ALERT": event.alert.message}
            # A hung command must not hold the handlers' thread for ever.
            subprocess.run(self.escalate_command, shell=True, env=env, timeout=30, check=False)

    def _write(self, record: dict[str, object]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="cluster file (default: the CLI's lookup)")
    parser.add_argument("--state-dir", help="state directory (default: the CLI's)")
    parser.add_argument("--log", required=True, type=Path, help="the JSON-lines file")
    parser.add_argument("--escalate-command", help="shell command run on escalation")
    parser.add_argument("--cycles", type=int, help="stop after this many rounds")
    parser.add_argument("--interval", type=float, help="fixed poll interval in seconds")
    args = parser.parse_args(argv)
    monitor = ugro_health.HealthMonitor(
        ugro_health.load_config(args.config),
        state_dir=args.state_dir,
        interval_s=args.interval,
        on_alert=AlertLog(args.log, args.escalate_command),
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: monitor.stop())
    print("alert_log: watching", flush=True)
    monitor.run(max_cycles=args.cycles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
