"""Configuration in code, a one-off check, then async monitoring (asyncio or trio).

    python examples/config_in_code.py [--node NAME[=HOST]]... [--cycles N] [--backend trio]

No cluster file: the nodes come from the command line (default: this machine), the thresholds
and the polling from code, checked exactly as the same keys in ``cluster.yaml`` would be. The
check prints the ``check --json`` status line; the monitor then reads its event stream in
``async with`` until ``--cycles`` rounds are done.
"""

from __future__ import annotations

import argparse
import sys

import anyio

import ugro_health


def build_config(specs: list[str]) -> ugro_health.Config:
    nodes: list[str | dict[str, object]] = []
    for spec in specs or ["localhost"]:
        name, _, host = spec.partition("=")
        nodes.append({"name": name, "host": host} if host else name)
    return ugro_health.make_config(
        nodes,
        defaults={"mounts": ["/"]},
        base_interval_s=2,  # 2 s while a job runs, then 4, 8, 16 s as activity fades
        max_interval_s=30,
        max_workers=16,
        thresholds={"gpu_temp_warn_c": 78, "gpu_temp_crit_c": 83, "score_critical": 40},
        ssh={"connect_timeout": 3, "command_timeout": 10},
    )


async def monitor(config: ugro_health.Config, cycles: int, state_dir: str | None) -> None:
    async with ugro_health.HealthMonitor(config, state_dir=state_dir, interval_s=1) as m:
        async for event in m.events():
            if isinstance(event, ugro_health.ClusterState):
                line = ", ".join(f"{n.name}={n.status.label}/{n.score}" for n in event.nodes)
                print(f"state: {line}", flush=True)
            elif isinstance(event, ugro_health.CycleEvent) and event.number >= cycles:
                break  # leaving `async with` closes every session and thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", action="append", default=[], help="NAME or NAME=HOST")
    parser.add_argument("--state-dir", help="state directory (default: the CLI's)")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args(argv)
    try:
        config = build_config(args.node)
    except ugro_health.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    report = ugro_health.check(config, state_dir=args.state_dir, timeout=60)
    print(f"check: {report.to_json()['status']} ({len(report.nodes)} node(s))", flush=True)
    anyio.run(monitor, config, args.cycles, args.state_dir, backend=args.backend)
    return report.status.exit_code


if __name__ == "__main__":
    sys.exit(main())
