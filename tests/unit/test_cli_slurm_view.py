"""The watch dashboard with Slurm: jobs from Slurm marked in the header, and the cluster-level
drain guard in the alert panels, read back from a fixed-width, colourless console."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from rich.console import Console

from ugro_health.config import Config, NodeConfig
from ugro_health.config_slurm import SlurmSettings
from ugro_health.engine.collect import Transports
from ugro_health.engine.monitor import Monitor
from ugro_health.engine.slurm import SlurmLink
from ugro_health.model import Alert, Severity
from ugro_health.render.dashboard import TimedAlert, WatchView, dashboard, jobs_text
from ugro_health.store.state import StateStore

NOW = 1_800_000_000.0
GUARD = Alert(
    Severity.CRITICAL,
    "slurm_drain_guard",
    "drain storm guard: 1 of 10 nodes drained by ugro-health (at most 1); not draining gpu03",
    1,
)


def render(view: WatchView, width: int = 120) -> str:
    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    console.print(dashboard(view, width))
    return console.export_text()


def empty_view(
    active_jobs: Sequence[str] = (),
    alerts: Sequence[TimedAlert] = (),
    cluster_alerts: Sequence[Alert] = (),
) -> WatchView:
    return WatchView(
        now=NOW,
        rows=[],
        interval_s=5,
        next_poll_in_s=5,
        last_cycle_s=0.1,
        active_jobs=active_jobs,
        alerts=alerts,
        cluster_alerts=cluster_alerts,
    )


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], "none"),
        (["llama"], "llama"),
        (["llama", "slurm:4242", "slurm:4243"], "llama; slurm: 4242, 4243"),
        (["slurm:4242"], "slurm: 4242"),
        ([f"slurm:{i}" for i in range(100, 110)], "slurm: 100, 101, 102, 103, 104, 105 +4 more"),
        (
            ["a", "b", "c", "d", "e", "f", "g", "slurm:1"],
            "a, b, c, d, e, f +2 more",
        ),
    ],
)
def test_slurm_jobs_are_marked_and_a_long_list_is_cut(names: list[str], expected: str):
    assert jobs_text(names) == expected


def test_the_header_marks_the_jobs_from_slurm():
    header = render(empty_view(active_jobs=["llama", "slurm:4242"])).splitlines()[0]
    assert "jobs: llama; slurm: 4242  " in header


def test_the_cluster_guard_is_an_active_alert_and_an_event_of_the_cluster():
    events = [
        TimedAlert(NOW - 30, "@cluster", GUARD),
        TimedAlert(NOW - 5, "@cluster", GUARD, "cleared"),
    ]
    text = render(empty_view(cluster_alerts=(GUARD,), alerts=events))
    active = text[text.index("active alerts") : text.index("recent events")]
    assert "CRITICAL cluster: drain storm guard: 1 of 10 nodes" in active
    recent = text[text.index("recent events") :]
    assert "CRITICAL cluster: cleared: drain storm guard" in recent
    assert "CRITICAL cluster: drain storm guard" in recent
    assert "@cluster" not in text


def test_watch_view_carries_the_guard_of_the_slurm_link(tmp_path: Path):
    from ugro_health.cli.watch import watch_view

    config = Config(
        nodes=(NodeConfig(name="here", host="localhost", transport="local"),),
        slurm=SlurmSettings(enabled=True, scontrol=str(tmp_path / "absent")),
    )
    store = StateStore(tmp_path)
    link = SlurmLink(config, store)
    monitor = Monitor(config, config.nodes, store, Transports(config), slurm=link)
    assert watch_view(monitor).cluster_alerts == ()
    link.guard = GUARD  # what the link's step sets while the guard holds drains back
    view = watch_view(monitor)
    assert view.cluster_alerts == (GUARD,)
    assert "no active alerts" not in render(view)
    assert time.time() - view.now < 60
