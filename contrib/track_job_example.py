#!/usr/bin/env python3
"""Run torchrun with ugro-health tracking the job, from Python: ``ugro_health.track_job``.

    python contrib/track_job_example.py --job llama --nodes gpu1,gpu2 --ranks 8 -- train.py -e 3

The job is registered before torchrun starts (exit 3 with one line if the job is already active
or a node is not in cluster.yaml) and finished when it ends, however it ends. SIGINT and SIGTERM
are passed on to torchrun, whose exit status becomes ours (128 + N when a signal N ended it).
The configuration and state follow the CLI's lookup (--config / UGRO_HEALTH_CONFIG, ...).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from types import FrameType

import ugro_health
from ugro_health.config import ConfigError
from ugro_health.launcher import JobError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", required=True, help="job name: letters, digits, '.', '_', '-'")
    parser.add_argument("--nodes", required=True, help="node names from cluster.yaml, a,b,c")
    parser.add_argument("--ranks", type=int, default=8, help="processes per node (default 8)")
    parser.add_argument("--ttl-hours", type=float, default=48.0, help="finish after this anyway")
    parser.add_argument("--torchrun", default="torchrun", help="the torchrun executable")
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- train.py [its arguments]")
    return parser.parse_args(argv)


def run(command: list[str]) -> int:
    """Run ``command``, passing SIGINT and SIGTERM on to it; its exit status, shell-style."""
    child = subprocess.Popen(command)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    command = [
        args.torchrun,
        f"--nnodes={len(nodes)}",
        f"--nproc-per-node={args.ranks}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={nodes[0]}:29500",
        f"--rdzv-id={args.job}",
        *script,
    ]
    try:
        with ugro_health.track_job(
            args.job, nodes=nodes, ranks=args.ranks, ttl_s=args.ttl_hours * 3600
        ):
            return run(command)
    except (JobError, ConfigError) as exc:
        print(f"track_job_example: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
