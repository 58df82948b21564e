"""Regenerate docs/dashboard.svg: the real dashboard during ``ugro-health demo``'s story.

The same simulated cluster as the demo (``cli.demo``: its configuration, ``SimTransports`` and
story driver; 8 nodes of 8 H100s whose answers are built from recorded nvidia-smi outputs), the
same engine, run at ``SPEED`` until the moment the story shows everything at once: a GPU
CRITICAL and throttling, another fallen off the bus (Xid 79), a node isolated by its open
breaker. Then Rich exports the dashboard, with the demo's SIMULATION banner, as an SVG.
Needs no root, no sshd, no network: ``python docs/screenshot.py``.
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console, RenderableType

from ugro_health.cli.demo import GPUS, StoryDriver, demo_config
from ugro_health.cli.watch import watch_view
from ugro_health.engine.monitor import Monitor
from ugro_health.engine.runs import build_monitor
from ugro_health.render.dashboard import dashboard
from ugro_health.sim.model import SimCluster, Story
from ugro_health.sim.transport import SimTransports

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 128
SPEED = 2.0  # the story's busy moment (56 s in) after about 30 s; event ages stay readable
# What the picture must show, node -> alert codes; and the node whose breaker is open.
WANTED = {"sim02": {"gpu_temp_critical", "gpu_throttle_thermal"}, "sim05": {"gpu_xid_fatal"}}
ISOLATED = "sim07"


def ready(monitor: Monitor) -> bool:
    """The story's busiest moment: the hot GPU, the Xid and the isolated node, all at once."""
    reports = dict(monitor.view.reports)
    for name, codes in WANTED.items():
        report = reports.get(name)
        if report is None or not codes <= {a.code for a in report.alerts}:
            return False
    rows = dict(watch_view(monitor).rows)
    return rows[ISOLATED].breaker == "open"


def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="ugro-shot-"))
    config = demo_config(SPEED)
    cluster = SimCluster([n.name for n in config.nodes], GPUS, Story.demo(), speed=SPEED)
    monitor = build_monitor(
        config, config.nodes, state, transports=SimTransports(config, cluster=cluster)
    )
    story = StoryDriver(monitor, cluster)
    deadline = time.time() + cluster.story.length_s / SPEED + 10
    shot: list[RenderableType] = []

    def on_cycle(_: object) -> None:
        if ready(monitor):  # drawn now, as the dashboard would (not once stopping)
            shot.append(dashboard(watch_view(monitor, story.banner()), WIDTH))
        if shot or time.time() > deadline:
            monitor.stop()

    try:
        story.start()
        monitor.run(on_cycle=on_cycle, tick_s=0.1)
    finally:
        story.stop()
        monitor.transports.close()
        shutil.rmtree(state, ignore_errors=True)
    if not shot:
        sys.exit("the story never showed the hot GPU, the Xid and the open breaker at once")
    console = Console(width=WIDTH, record=True, file=io.StringIO())
    console.print(shot[0])
    print(console.export_text(clear=False))  # to check the layout without an SVG viewer
    console.save_svg(str(ROOT / "docs" / "dashboard.svg"), title="ugro-health demo (simulated)")
    print("wrote docs/dashboard.svg")


if __name__ == "__main__":
    main()
