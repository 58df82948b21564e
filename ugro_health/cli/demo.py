"""``ugro-health demo``: the real ``watch`` over a simulated GPU cluster, telling a story.

Everything but the nodes is the product itself: the engine, scoring, breakers, the store (in a
temporary state directory, removed on exit unless ``--keep-state``), the dashboard or the
headless log. The nodes are ``ugro_health.sim``: 8 nodes of 8 H100s whose answers are built
from recorded nvidia-smi outputs and follow ``Story.demo()`` (about 90 s at ``--speed 1``).
No SSH, no root, no network. A story thread registers the training job when the story starts
it and finishes it when the story ends it, as a launcher using ``track_job`` would.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ugro_health.cli.export import LISTEN_HELP, listen_address, serve_metrics
from ugro_health.cli.output import console, fail

if TYPE_CHECKING:
    from collections.abc import Callable

    from ugro_health.config import Config
    from ugro_health.engine.monitor import Monitor
    from ugro_health.export.serve import MetricsServer
    from ugro_health.sim.model import SimCluster

BANNER = "SIMULATION"
NODES = 8
GPUS = 8
# The demo's polling, in story seconds (divided by --speed): the engine's defaults are minutes
# long, a demo of 90 s needs the same shape faster. The hot GPU crosses the WARNING band
# (80-85 °C) in about 2.5 story seconds: a node under a job or with a problem is polled every
# 1.5 s so that the WARNING is always seen before the CRITICAL, whatever the phase of the polls.
INTERVALS = {
    "active_interval_s": 1.5,
    "recent_interval_s": 6.0,
    "warm_interval_s": 10.0,
    "idle_interval_s": 12.0,
    "max_interval_s": 15.0,
    "problem_interval_s": 1.5,
    "reset_base_s": 8.0,
    "reset_max_s": 30.0,
}


def demo_command(
    headless: bool = typer.Option(
        False, "--headless", help="Log one line per cycle, alert and story step (no dashboard)."
    ),
    speed: float = typer.Option(
        1.0,
        "--speed",
        min=0.1,
        max=20.0,
        metavar="FACTOR",
        help="Run the story this many times faster (2: about 45 s).",
    ),
    duration: float | None = typer.Option(
        None,
        "--duration",
        min=1.0,
        metavar="SECONDS",
        help="Stop after this many seconds (default: at Ctrl-C).",
    ),
    keep_state: str | None = typer.Option(
        None,
        "--keep-state",
        metavar="PATH",
        help="Keep the demo's state and history in PATH (for status and history afterwards);"
        " default: a temporary directory, removed on exit.",
    ),
    metrics_listen: str | None = typer.Option(
        None, "--metrics-listen", metavar="[HOST:]PORT", help=LISTEN_HELP
    ),
) -> None:
    """Watch a simulated 8-node, 64-GPU cluster through a scripted story (about 90 s).

    A training job starts, a GPU overheats and throttles, another falls off the bus, a node
    drops off the network and comes back, the job ends. Built from recorded real nvidia-smi
    outputs; needs no SSH, no root, no network. Ctrl-C leaves (exit 0).

    Example: [bold]ugro-health demo[/bold]  or  [bold]ugro-health demo --headless --speed 3[/bold]
    """
    from ugro_health.cli import watch
    from ugro_health.engine.runs import build_monitor
    from ugro_health.sim.model import SimCluster, Story
    from ugro_health.sim.transport import SimTransports

    address = listen_address(metrics_listen)
    keep = None if keep_state is None else Path(keep_state).expanduser()
    state_dir = _state_dir(keep)
    server: MetricsServer | None = None
    timer: threading.Timer | None = None
    story: StoryDriver | None = None
    monitor: Monitor | None = None
    try:  # from here on, whatever fails, the temporary state directory goes
        config = demo_config(speed)
        cluster = SimCluster([n.name for n in config.nodes], GPUS, Story.demo(), speed=speed)
        monitor = build_monitor(
            config, config.nodes, state_dir, transports=SimTransports(config, cluster=cluster)
        )
        logging = headless or not console.is_terminal
        story = StoryDriver(monitor, cluster, log=watch._log if logging else None)
        watch._install_signal_handlers(monitor)
        server = serve_metrics(monitor, address)
        timer = _stop_after(monitor, duration)
        story.start()
        if logging:
            watch._log(f"{watch._stamp(time.time())} DEMO {story.banner()}")
            watch._run_headless(monitor)
        else:
            watch._run_dashboard(monitor, banner=story.banner)
    finally:
        if story is not None:
            story.stop()
        if timer is not None:
            timer.cancel()
        if monitor is not None:
            monitor.transports.close()
        if server is not None:
            server.close()
        if keep is None:
            shutil.rmtree(state_dir, ignore_errors=True)
    raise typer.Exit(0)


def demo_config(speed: float = 1.0) -> Config:
    """Eight nodes of eight GPUs (expected: a GPU gone is an alert), polled on the demo's
    shortened intervals."""
    from ugro_health.config import Config, NodeConfig, WatchSettings

    nodes = tuple(
        NodeConfig(name=f"sim{i:02d}", host=f"sim{i:02d}.invalid", gpus=GPUS, nvlinks=18)
        for i in range(1, NODES + 1)
    )
    scaled: dict[str, Any] = {k: v / speed for k, v in INTERVALS.items()}
    watch = replace(WatchSettings(), **scaled)
    return Config(nodes=nodes, watch=watch)


def _state_dir(keep: Path | None) -> Path:
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="ugro-health-demo-"))
    if keep.exists() and not keep.is_dir():
        fail(f"--keep-state {keep}: not a directory")
    if _foreign(keep):
        fail(
            f"--keep-state {keep}: holds files the demo did not write (a real state directory?);"
            " name an empty or new directory"
        )
    _write_cluster_file(keep)
    return keep


CLUSTER_FILE_MARK = "# written by `ugro-health demo`"


def _foreign(directory: Path) -> bool:
    """Whether ``directory`` holds anything but an earlier demo's state: the demo never mixes
    its simulated nodes, job and breakers into a real cluster's store."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if not entries:
        return False
    cluster = directory / "cluster.yaml"
    try:
        return not cluster.read_text().startswith(CLUSTER_FILE_MARK)
    except OSError:
        return True


def _write_cluster_file(directory: Path) -> None:
    """``cluster.yaml`` naming the simulated nodes beside the kept state, so that ``status``
    and ``history`` read it as they would a real cluster's (``-c DIR/cluster.yaml``). A file of
    that name not written by the demo is left alone."""
    path = directory / "cluster.yaml"
    try:
        if path.exists() and not path.read_text().startswith(CLUSTER_FILE_MARK):
            return
        from ugro_health.store._fs import ensure_private_dir

        ensure_private_dir(directory)  # 0700, as every state directory
        nodes = "".join(f"  - name: {n.name}\n    host: {n.host}\n" for n in demo_config().nodes)
        path.write_text(
            f"{CLUSTER_FILE_MARK}: its simulated nodes, for reading this state directory\n"
            "# (status, history); they exist only inside the demo.\n"
            f"defaults:\n  gpus: {GPUS}\n  nvlinks: 18\nnodes:\n{nodes}"
        )
    except OSError as exc:
        fail(f"--keep-state {directory}: {exc.strerror or exc}")


def _stop_after(monitor: Monitor, duration: float | None) -> threading.Timer | None:
    if duration is None:
        return None
    timer = threading.Timer(duration, monitor.stop)
    timer.daemon = True
    timer.start()
    return timer


class StoryDriver:
    """Follows the story's clock: registers the training job when it starts, finishes it when
    it ends (polling the job's nodes at once, as ``track_job`` does), and narrates each step
    (a log line when headless, the banner's "now" otherwise)."""

    def __init__(
        self, monitor: Monitor, cluster: SimCluster, log: Callable[[str], None] | None = None
    ) -> None:
        self.monitor = monitor
        self.cluster = cluster
        self.log = log
        self.beats = cluster.story.beats()
        self.told = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ugro-demo-story", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # not started when the demo failed to start
            self._thread.join(timeout=5)

    def banner(self) -> str:
        """``SIMULATION · 8 simulated nodes x 8 H100 ... · story 0:45 of 1:32: <latest step>``."""
        t = max(0.0, self.cluster.story_time())
        length = self.cluster.story.length_s
        told = self.beats[self.told - 1][1] if self.told else "waiting for the job to start"
        if t >= length:
            told = "the story is over (the cluster keeps being watched); Ctrl-C to leave"
        return (
            f"{BANNER} · {len(self.cluster.names)} simulated nodes × {self.cluster.gpus} H100,"
            f" answers built from recorded nvidia-smi outputs · story {_mmss(min(t, length))}"
            f" of {_mmss(length)}: {told}"
        )

    def _run(self) -> None:
        from ugro_health.cli.watch import _stamp
        from ugro_health.engine.jobs import JobError, finish_job, start_job
        from ugro_health.sim.model import JOB_NAME

        story = self.cluster.story
        names = list(self.cluster.names)
        for at, what in self.beats:
            wait = self.cluster.start + at / self.cluster.speed - time.time()
            if self._stop.wait(max(0.0, wait)):
                return
            now = time.time()
            try:
                if at == story.job_start:
                    ranks = self.cluster.gpus  # per node: one per GPU
                    start_job(self.monitor.store, JOB_NAME, names, now, names, ranks, "torchrun")
                    self.monitor.poll_now(names)
                elif at == story.job_end:
                    finish_job(self.monitor.store, JOB_NAME, now)
                    self.monitor.poll_now(names)
            except (JobError, OSError) as exc:  # the demo goes on; the operator sees why
                what = f"{what} (not registered: {exc})"
            self.told += 1
            if self.log is not None:
                self.log(f"{_stamp(now)} DEMO story {_mmss(at)}: {what} (simulated)")


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"
