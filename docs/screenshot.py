"""Regenerate docs/dashboard.svg: the real dashboard after a real run against the test cluster.

Starts the test suite's sshd rig (three healthy SSH nodes, one whose sshd is then stopped) plus
this machine in-process, runs `watch`'s loop for a few cycles, and exports the dashboard as an
SVG with Rich. No GPU here, so the GPU columns are empty. Run as root (the rig creates its test
user): ``python docs/screenshot.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from sshd_rig import SshdRig  # noqa: E402

from ugro_health.cli.watch import watch_view  # noqa: E402
from ugro_health.config import Config, NodeConfig  # noqa: E402
from ugro_health.engine.breaker import BreakerPolicy  # noqa: E402
from ugro_health.engine.collect import Transports  # noqa: E402
from ugro_health.engine.jobs import start_job  # noqa: E402
from ugro_health.engine.monitor import Monitor  # noqa: E402
from ugro_health.engine.scheduler import PollPolicy  # noqa: E402
from ugro_health.render.dashboard import dashboard  # noqa: E402
from ugro_health.store.state import StateStore  # noqa: E402


def main() -> None:
    rig = SshdRig.create()
    state = Path(tempfile.mkdtemp(prefix="ugro-shot-"))
    try:
        for name in ("gpu1", "gpu2", "gpu3", "gpu4"):
            rig.start_node(name)
        nodes = (
            NodeConfig(name="gpu-master", transport="local"),
            *(rig.node_config(n) for n in ("gpu1", "gpu2", "gpu3", "gpu4")),
        )
        config = Config(nodes=nodes, ssh=rig.settings(connect_timeout=1.0))
        store = StateStore(state)
        start_job(store, "llama-70b", ["gpu1", "gpu2"], time.time(), [n.name for n in nodes])
        monitor = Monitor(
            config,
            nodes,
            store,
            Transports(config, persistent=True),
            PollPolicy(fixed_interval_s=1.0),
            BreakerPolicy(reset_base_s=30),
        )
        monitor.run(max_cycles=2, tick_s=0.2)
        rig.stop_node("gpu4")
        monitor.run(max_cycles=4, tick_s=0.2)
        monitor.transports.close()
        console = Console(width=128, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(dashboard(watch_view(monitor), 128))
        console.save_svg(str(ROOT / "docs" / "dashboard.svg"), title="ugro-health watch")
        print("wrote docs/dashboard.svg")
    finally:
        rig.close()


if __name__ == "__main__":
    main()
