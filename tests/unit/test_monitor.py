"""The watch loop with a fake clock: cadence, breakers over a real refused port, jobs, store."""

from __future__ import annotations

import itertools
import socket
import time
from pathlib import Path

import pytest

from ugro_health.config import Config, NodeConfig, SshSettings, Thresholds
from ugro_health.engine.breaker import BreakerPolicy, BreakerState
from ugro_health.engine.clock import FakeClock
from ugro_health.engine.collect import Transports
from ugro_health.engine.jobs import start_job
from ugro_health.engine.monitor import Monitor
from ugro_health.engine.scheduler import PollPolicy
from ugro_health.model import Severity, Status
from ugro_health.store.history import HistoryStore
from ugro_health.store.state import StateStore

# Limits no test machine reaches: the local node must stay OK however loaded the box is.
CALM = Thresholds(
    load_warn_per_core=1000,
    mem_warn_pct=99.9,
    mem_crit_pct=100,
    disk_warn_pct=99.9,
    disk_crit_pct=100,
    swap_warn_pct=100,
    zombie_warn=100000,
    clock_skew_warn_s=100000,
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cluster(tmp_path: Path) -> Config:
    local = NodeConfig(name="here", host="localhost", transport="local")
    dead = NodeConfig(name="dead", host="127.0.0.1", port=closed_port(), transport="ssh")
    ssh = SshSettings(
        connect_timeout=1.0,
        command_timeout=2.0,
        ssh_config=None,
        known_hosts=str(tmp_path / "known_hosts"),
    )
    return Config(nodes=(local, dead), ssh=ssh, thresholds=CALM)


def make_monitor(config: Config, state_dir: Path, clock: FakeClock, **policy) -> Monitor:
    return Monitor(
        config,
        config.nodes,
        StateStore(state_dir, clock=clock.time),
        Transports(config),
        PollPolicy(**policy),
        BreakerPolicy(failure_threshold=3, reset_base_s=30.0),
        clock,
    )


def test_dead_node_is_isolated_then_tried_half_open_while_others_keep_cadence(
    cluster: Config, tmp_path: Path
):
    clock = FakeClock(start=time.time())
    monitor = make_monitor(cluster, tmp_path, clock, fixed_interval_s=10.0)
    results = []
    monitor.run(on_cycle=results.append, max_cycles=12)
    # Full cycles poll "here" exactly every 10 s while "dead" fails around it.
    full = [r.at - r.duration_s for r in results if "here" in r.polled]
    assert [round(b - a, 3) for a, b in itertools.pairwise(full)] == [10.0] * (len(full) - 1)
    # "dead" fails 3 times in a row (re-polled sooner as a CRITICAL node), then is isolated.
    dead = [r for r in results if "dead" in r.polled]
    isolated = [e for r in results for e in r.events if e.alert.code == "node_isolated"]
    assert len(isolated) == 1 and isolated[0].node == "dead"
    assert isolated[0].alert.severity is Severity.CRITICAL
    assert "after 3 consecutive failures" in isolated[0].alert.message
    assert isolated[0].at == dead[2].at - dead[2].duration_s
    # While open it is skipped and shown unreachable, with the time to its next try.
    skipped = [r.skipped["dead"] for r in results if "dead" in r.skipped]
    assert skipped[:2] == [20.0, 10.0]  # counting down to the trial at +30 s
    report = monitor.view.reports["dead"]
    assert report.status is Status.CRITICAL and not report.reachable
    # Exactly one half-open trial once the 30 s reset delay has passed; it fails: reopened.
    trial = dead[3]
    assert trial.at - trial.duration_s == pytest.approx(isolated[0].at + 30.0, abs=0.01)
    assert [e.alert.code for e in trial.events] == ["node_reopened"]
    # The next trial waits twice as long (60 s), and the one after that 2 minutes.
    second = dead[4]
    assert second.at - second.duration_s == pytest.approx(
        trial.at - trial.duration_s + 60, abs=0.01
    )
    assert "retry in 2m" in second.events[0].alert.message


def test_breakers_survive_a_restart(cluster: Config, tmp_path: Path):
    clock = FakeClock(start=time.time())
    monitor = make_monitor(cluster, tmp_path, clock, fixed_interval_s=5.0)
    monitor.run(max_cycles=3)
    assert monitor.breakers["dead"].state is BreakerState.OPEN
    again = make_monitor(cluster, tmp_path, clock, fixed_interval_s=5.0)
    assert again.breakers["dead"].state is BreakerState.OPEN
    assert again.breakers["dead"].next_try_at == monitor.breakers["dead"].next_try_at
    # the alert panel of the new run shows why "dead" is isolated, before any poll
    (event,) = again.view.events
    assert (event.node, event.alert.code, event.alert.severity) == (
        "dead",
        "node_isolated",
        Severity.CRITICAL,
    )
    assert "refused" in event.alert.message


def test_cycles_are_recorded_and_status_can_read_them(cluster: Config, tmp_path: Path):
    clock = FakeClock(start=time.time())
    monitor = make_monitor(cluster, tmp_path, clock, fixed_interval_s=5.0)
    monitor.run(max_cycles=4)
    state = StateStore(tmp_path).load().state
    assert state["nodes"]["here"]["status"] in ("ok", "warning")
    assert state["nodes"]["dead"]["reachable"] is False
    assert state["nodes"]["dead"]["breaker"]["state"] == "open"
    records = list(HistoryStore(tmp_path, clock=clock.time).iter_records())
    assert sum(1 for r in records if r["node"] == "here") == 4
    # the dead node is recorded every cycle too, polled or isolated: availability stays honest
    assert sum(1 for r in records if r["node"] == "dead") == 4


def test_job_started_elsewhere_shortens_the_interval_within_one_cycle(
    tmp_path: Path,
):
    config = Config(
        nodes=(NodeConfig(name="here", host="localhost", transport="local"),), thresholds=CALM
    )
    clock = FakeClock(start=time.time())
    monitor = make_monitor(config, tmp_path, clock)
    results = []

    def launch() -> None:  # what `ugro-health jobs start` does from another shell
        start_job(StateStore(tmp_path), "llama", ["here"], clock.time(), ["here"])

    clock.call_at(clock.time() + 12.0, launch)
    monitor.run(on_cycle=results.append, max_cycles=4)
    starts = [r.at - r.duration_s for r in results]
    # Idle, the next cycle was 40 s away; the job appears at +12 s and the wait is cut there
    # (more than the active interval had passed), then cycles come every 5 s.
    assert starts[1] - starts[0] == pytest.approx(12.0, abs=0.01)
    assert starts[2] - starts[1] == pytest.approx(5.0, abs=0.01)
    assert starts[3] - starts[2] == pytest.approx(5.0, abs=0.01)
    assert monitor.scheduler.interval == 5.0
    assert monitor.view.active_jobs == ["llama"]


def test_a_job_past_its_ttl_ends_fast_polling_at_the_ttl(tmp_path: Path):
    config = Config(
        nodes=(NodeConfig(name="here", host="localhost", transport="local"),), thresholds=CALM
    )
    clock = FakeClock(start=time.time())
    start_job(StateStore(tmp_path), "short", ["here"], clock.time(), ["here"], ttl_s=12.0)
    monitor = make_monitor(config, tmp_path, clock)
    results = []
    monitor.run(on_cycle=results.append, max_cycles=5)
    starts = [r.at - r.duration_s - results[0].at + results[0].duration_s for r in results]
    events = [(e.at - results[0].at, e.alert.code) for r in results for e in r.events]
    # Active: every 5 s (0, 5, 10); the TTL runs out at 12 s, which nothing writes to disk:
    # the cycle at 15 s already sees the job finished and the interval relaxes after it.
    assert starts[:4] == pytest.approx([0.0, 5.0, 10.0, 15.0], abs=0.05)
    assert "job_finished" in {code for at, code in events if at <= 15.1}, events
    assert monitor.view.active_jobs == []
    assert starts[4] - starts[3] > 5.0


def test_each_gpu_and_each_subject_raises_and_clears_its_own_alert(tmp_path: Path):
    from ugro_health.model import Alert, NodeReport

    config = Config(
        nodes=(NodeConfig(name="here", host="localhost", transport="local"),), thresholds=CALM
    )
    monitor = make_monitor(config, tmp_path, FakeClock(start=time.time()))

    def report(*alerts: Alert) -> NodeReport:
        return NodeReport("here", Status.WARNING, 70, 0.0, 0.0, alerts=alerts)

    def hot(gpu: int, temp: float) -> Alert:
        return Alert(Severity.WARNING, "gpu_temp_warning", f"GPU {gpu}: {temp}", temp, gpu)

    def zombie(pid: int) -> Alert:
        return Alert(Severity.WARNING, "gpu_zombie_holder", f"GPU 0: {pid}", pid, 0, str(pid))

    def diff(new: NodeReport) -> list[tuple[str, int | None, str | None]]:
        events = monitor._diff(new, 0.0)
        monitor.view.reports["here"] = new
        return [(e.kind, e.alert.gpu, e.alert.subject) for e in events]

    assert diff(report(hot(0, 82))) == [("raised", 0, None)]
    assert diff(report(hot(0, 83))) == []  # the same alert, its value moved
    assert diff(report(hot(1, 82))) == [("raised", 1, None), ("cleared", 0, None)]
    assert diff(report(hot(0, 82), hot(1, 84))) == [("raised", 0, None)]
    zombies = diff(report(zombie(11), zombie(12), zombie(13)))
    assert sorted(e for e in zombies if e[0] == "raised") == [
        ("raised", 0, "11"),
        ("raised", 0, "12"),
        ("raised", 0, "13"),
    ]


def test_watch_adopts_a_breaker_reset_by_hand_from_the_store(cluster: Config, tmp_path: Path):
    from ugro_health.engine.record import reset_breakers

    clock = FakeClock(start=time.time())
    monitor = make_monitor(cluster, tmp_path, clock, fixed_interval_s=5.0)
    monitor.run(max_cycles=3)
    assert monitor.breakers["dead"].state is BreakerState.OPEN
    # `ugro-health breaker reset dead` from another shell, while this watch runs
    reset_breakers(StateStore(tmp_path), ["dead"], BreakerPolicy(), clock.time())
    results = []
    monitor.run(on_cycle=results.append, max_cycles=1)
    (result,) = results
    assert "dead" in result.polled  # polled at once, not after the breaker's wait
    recovered = [e for e in result.events if e.alert.code == "node_recovered"]
    assert recovered and "reset by hand (was open)" in recovered[0].alert.message
    breaker = monitor.breakers["dead"]
    assert breaker.openings == 0 and breaker.state is BreakerState.CLOSED
    # ... and its write does not undo the reset
    entry = StateStore(tmp_path).load().state["nodes"]["dead"]
    assert entry["breaker"]["openings"] == 0 and entry["breaker"]["state"] == "closed"


def test_watch_adopts_a_breaker_closed_by_a_check(cluster: Config, tmp_path: Path):
    from ugro_health.engine.record import close_answered_breakers
    from ugro_health.model import ClusterReport, NodeReport

    clock = FakeClock(start=time.time())
    monitor = make_monitor(cluster, tmp_path, clock, fixed_interval_s=5.0)
    monitor.run(max_cycles=3)
    answered = NodeReport("dead", Status.OK, 99, clock.time(), 0.1)
    report = ClusterReport(clock.time(), (answered,), 0.1)
    StateStore(tmp_path).update(close_answered_breakers(report, BreakerPolicy()))
    monitor._refresh_jobs(clock.time())
    assert monitor.breakers["dead"].state is BreakerState.CLOSED
    assert monitor.breakers["dead"].openings == 1  # a recovery, not a reset: remembered


def test_cleared_alerts_reach_the_event_history(cluster: Config, tmp_path: Path):
    from ugro_health.model import Alert, NodeReport

    clock = FakeClock(start=time.time())
    monitor = make_monitor(cluster, tmp_path, clock)
    hot = Alert(Severity.WARNING, "gpu_temp_warning", "GPU 0: temperature 81 °C", 81.0, 0)
    monitor.view.reports["here"] = NodeReport("here", Status.WARNING, 80, 1.0, 0.1, alerts=(hot,))
    events = monitor._diff(NodeReport("here", Status.OK, 99, 2.0, 0.1), 2.0)
    assert [(e.kind, e.alert.code) for e in events] == [("cleared", "gpu_temp_warning")]
    assert [(e.kind, e.alert.code) for e in monitor.view.events] == [
        ("cleared", "gpu_temp_warning")
    ]


def test_a_node_is_shown_as_soon_as_it_answers(cluster: Config, tmp_path: Path):
    clock = FakeClock(start=time.time())
    monitor = make_monitor(cluster, tmp_path, clock)
    seen = []

    def progress() -> None:  # the dashboard's redraw, from a poll thread
        seen.append((set(monitor.view.partial), set(monitor.view.reports)))

    monitor.on_progress = progress
    monitor.run(max_cycles=1)
    # each answer was there to draw before the round ended (nothing in `reports` yet)
    assert any("here" in partial for partial, _ in seen)
    assert any("dead" in partial for partial, _ in seen)
    assert all(reports == set() for _, reports in seen)
    assert monitor.view.partial == {} and set(monitor.view.reports) == {"here", "dead"}


def test_the_dashboard_snapshot_tells_what_is_known(cluster: Config, tmp_path: Path):
    from ugro_health.cli.watch import watch_view

    clock = FakeClock(start=time.time())
    monitor = make_monitor(cluster, tmp_path, clock)
    first = watch_view(monitor)
    assert first.interval_s is None and not first.stopping  # no interval claimed yet
    seen = []
    monitor.on_progress = lambda: seen.append(watch_view(monitor))
    monitor.run(max_cycles=1)
    drawn = {name for view in seen for name, row in view.rows if row.report is not None}
    assert drawn == {"here", "dead"}  # each drawn while the round was still running
    assert watch_view(monitor).interval_s == 40.0  # known once the jobs were read
    monitor.stop()
    assert watch_view(monitor).stopping
