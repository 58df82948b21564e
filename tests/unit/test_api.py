"""The Python API on the local node and a replayed answer: configuration, ``check``,
``HealthMonitor`` run blocking and in the background, its handlers, jobs, two monitors."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from api_helpers import ReplayTransports, calm_config, new_threads, wait_for

import ugro_health
from ugro_health import ConfigError, HealthMonitor, make_config
from ugro_health.engine.jobs import jobs_of
from ugro_health.store.state import StateStore


def test_make_config_checks_values_as_the_file_would():
    config = make_config(
        ["localhost", {"name": "gpu[01-02]", "gpus": 8}],
        base_interval_s=2,
        max_interval_s=30,
        max_workers=4,
        thresholds={"score_critical": 40},
    )
    assert [n.name for n in config.nodes] == ["localhost", "gpu01", "gpu02"]
    assert config.nodes[1].gpus == 8 and config.ssh.max_workers == 4
    w = config.watch
    assert (w.active_interval_s, w.recent_interval_s, w.warm_interval_s) == (2, 4, 8)
    assert (w.idle_interval_s, w.max_interval_s) == (16, 30)
    assert config.thresholds.score_critical == 40
    for bad, message in (
        ({"thresholds": {"score_critical": 101}}, "thresholds.score_critical: must be 0 to 100"),
        ({"max_workers": 0}, "ssh.max_workers: must be at least 1"),
        ({"thresholds": {"score_warn": 50, "score_critical": 60}}, "must not be above"),
        ({"watch": {"max_interval": 5}}, "watch.max_interval: unknown key (did you mean"),
    ):
        with pytest.raises(ConfigError, match=r"^<make_config>: ") as caught:
            make_config(["a"], **bad)
        assert message in str(caught.value) and "\n" not in str(caught.value)


def test_load_config_applies_overrides_over_the_file(tmp_path: Path):
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "thresholds:\n  gpu_temp_crit_c: 90\nnodes:\n  - name: here\n    host: localhost\n"
    )
    config = ugro_health.load_config(path, max_interval_s=20, thresholds={"gpu_temp_warn_c": 88})
    assert (config.thresholds.gpu_temp_warn_c, config.thresholds.gpu_temp_crit_c) == (88, 90)
    assert config.watch.max_interval_s == 20 and config.source == str(path)
    with pytest.raises(
        ConfigError, match=r"gpu_temp_warn_c \(95\) must not be above gpu_temp_crit_c \(90\)"
    ):
        ugro_health.load_config(path, thresholds={"gpu_temp_warn_c": 95})
    with pytest.raises(ConfigError, match="no such file"):
        ugro_health.load_config(tmp_path / "missing.yaml")


def test_check_returns_the_cli_report_and_records_it(tmp_path: Path):
    config = make_config([{"name": "here", "host": "localhost"}])
    report = ugro_health.check(config, state_dir=tmp_path)
    doc = report.to_json()
    assert doc["schema"] == "ugro-health/v1" and [n["name"] for n in doc["nodes"]] == ["here"]
    assert report.nodes[0].reachable and report.nodes[0].score is not None
    json.dumps(doc)
    assert list((tmp_path / "history").glob("*.jsonl"))  # recorded, as `check` does
    other = tmp_path / "other"
    ugro_health.check(config, "here", record=False, state_dir=other)
    assert not (other / "history").exists()
    with pytest.raises(ValueError, match="no node matches 'gpu9'"):
        ugro_health.check(config, ["gpu9"], state_dir=tmp_path)


def replay_monitor(tmp_path: Path, name: str = "here", **kwargs) -> HealthMonitor:
    config = calm_config(name)
    kwargs.setdefault("interval_s", 0.05)
    return HealthMonitor(config, state_dir=tmp_path, transports=ReplayTransports(config), **kwargs)


def test_run_blocks_for_max_cycles_and_hands_every_kind_of_event(tmp_path: Path):
    seen: list[object] = []
    monitor = replay_monitor(tmp_path, on_cycle=seen.append, on_state=seen.append)
    monitor.run(max_cycles=3)
    cycles = [e for e in seen if isinstance(e, ugro_health.CycleEvent)]
    states = [e for e in seen if isinstance(e, ugro_health.ClusterState)]
    assert [c.number for c in cycles] == [1, 2, 3]
    assert cycles[0].report.nodes[0].name == "here" and cycles[0].polled == ("here",)
    node = states[-1].node("here")
    assert node.status is ugro_health.Status.OK and node.breaker == "closed"
    assert node.score == cycles[-1].report.nodes[0].score
    assert monitor.stats.cycles == 3 and monitor.stats.handler_errors == 0
    with pytest.raises(RuntimeError, match="runs once"):
        monitor.run(max_cycles=1)


def test_a_handler_that_raises_is_logged_and_counted_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    def broken(event: object) -> None:
        raise ValueError("handler bug")

    caplog.set_level(logging.ERROR, logger="ugro_health.api")
    monitor = replay_monitor(tmp_path, on_cycle=broken)
    monitor.run(max_cycles=4)
    assert monitor.stats.cycles == 4
    assert monitor.stats.handler_errors == 4
    assert "handler" in caplog.text and "ValueError: handler bug" in caplog.text


def test_a_handler_stuck_for_good_stalls_nothing_and_its_calls_are_dropped(tmp_path: Path):
    release = threading.Event()
    entered = threading.Event()

    def stuck(event: object) -> None:
        entered.set()
        release.wait()

    monitor = replay_monitor(tmp_path, on_state=stuck, handler_queue=2).start()
    try:
        wait_for(entered.is_set, 30, "the handler to be called")
        # Rounds go on while it is stuck; what it cannot take is dropped and counted.
        wait_for(lambda: monitor.stats.cycles >= 10, 60, "ten rounds past a stuck handler")
        wait_for(lambda: monitor.stats.handler_dropped > 0, 30, "dropped handler calls")
        assert not monitor.close(timeout=1.0)  # the handler is still stuck: said, not waited for
        wait_for(monitor.join, 30, "the loop's thread to end despite the stuck handler")
    finally:
        release.set()
    # Unstuck, the handlers' thread ends too (it is not left waiting for a stop it missed).
    wait_for(lambda: not monitor._dispatcher.alive, 30, "the handlers' thread to end")


def test_start_job_wakes_the_loop_and_polls_the_job_nodes_at_once(tmp_path: Path):
    jobs: list[ugro_health.JobEvent] = []
    # A long interval: only the wake-up can explain a poll soon after the job starts.
    monitor = replay_monitor(tmp_path, interval_s=3600, on_job=jobs.append).start()
    try:
        wait_for(lambda: monitor.stats.cycles >= 1, 30, "the first round")
        with monitor.track_job("llama", ["here"], ranks=1):
            wait_for(lambda: monitor.stats.cycles >= 2, 30, "a round right after the job started")
            wait_for(lambda: jobs, 30, "the job_started event")
            assert (jobs[0].job, jobs[0].change, jobs[0].node) == ("llama", "started", "here")
            assert [j.name for j in jobs_of(StateStore(tmp_path).load().state)] == ["llama"]
        assert not jobs_of(StateStore(tmp_path).load().state)[0].active
        with pytest.raises(ugro_health.JobError, match="unknown node"):
            monitor.start_job("x", ["nowhere"])
    finally:
        assert monitor.close()


def test_two_monitors_in_one_process_keep_to_their_own_state(tmp_path: Path):
    seen: dict[str, set[str]] = {"alpha": set(), "beta": set()}

    def recorder(who: str):
        return lambda event: seen[who].update(n.name for n in event.report.nodes)

    first = replay_monitor(tmp_path / "a", "alpha", on_cycle=recorder("alpha"))
    second = replay_monitor(tmp_path / "b", "beta", on_cycle=recorder("beta"))
    first.start(max_cycles=5)
    second.start(max_cycles=5)
    assert first.join(60) and second.join(60)
    assert seen == {"alpha": {"alpha"}, "beta": {"beta"}}
    for directory, name in ((tmp_path / "a", "alpha"), (tmp_path / "b", "beta")):
        assert set(StateStore(directory).load().state["nodes"]) == {name}
        lines = [
            json.loads(x)
            for f in (directory / "history").glob("*.jsonl")
            for x in f.read_text().splitlines()
        ]
        assert lines and {x.get("node") or x.get("name") for x in lines} == {name}
    assert first.stats.cycles == second.stats.cycles == 5


def test_close_abandons_a_stalled_round_without_recording_it(tmp_path: Path):
    config = make_config(
        [{"name": "ok", "host": "localhost"}, {"name": "wedged", "host": "localhost"}]
    )
    transports = ReplayTransports(config, stalls={"wedged"})
    before = set(threading.enumerate())
    monitor = HealthMonitor(config, state_dir=tmp_path, interval_s=0.05, transports=transports)
    monitor.start()
    wait_for(transports.replay.stalled_now.is_set, 30, "the wedged node's poll to hang")
    assert new_threads(before)  # the loop, the handlers and the poll threads
    assert monitor.close(timeout=30)
    # Its session was dropped (ending the poll), the loop and the poll threads are gone, and
    # the abandoned round left nothing in the store (no false "unreachable" for wedged).
    assert "wedged" in transports.replay.forgotten and transports.replay.closed.is_set()
    wait_for(lambda: not new_threads(before), 30, "the monitor's threads to end")
    assert "wedged" not in (StateStore(tmp_path).load().state.get("nodes") or {})


def test_a_failing_node_opens_its_breaker_and_the_state_says_so(tmp_path: Path):
    config = calm_config(
        "up",
        "down",
        watch={"failure_threshold": 2, "reset_base_s": 3600, "reset_max_s": 3600},
    )
    transports = ReplayTransports(config, refuses={"down"})
    breakers: list[ugro_health.BreakerEvent] = []
    alerts: list[ugro_health.AlertEvent] = []
    states: list[ugro_health.ClusterState] = []
    monitor = HealthMonitor(
        config,
        state_dir=tmp_path,
        interval_s=0.05,
        transports=transports,
        on_breaker=breakers.append,
        on_alert=alerts.append,
        on_state=states.append,
    )
    monitor.run(max_cycles=3)
    assert [(b.node, b.previous, b.state) for b in breakers] == [("down", "closed", "open")]
    assert "refused" in (breakers[0].last_error or "")
    assert {(a.node, a.alert.code) for a in alerts} >= {("down", "node_isolated")}
    down, up = states[-1].node("down"), states[-1].node("up")
    assert (down.status, down.reachable, down.breaker) == (
        ugro_health.Status.CRITICAL,
        False,
        "open",
    )
    assert (up.status, up.breaker) == (ugro_health.Status.OK, "closed") and up.score


def test_close_from_a_handler_returns_at_once_and_ends_the_loop(tmp_path: Path):
    config = calm_config("here")
    results: list[tuple[bool, float]] = []
    holder: dict[str, ugro_health.HealthMonitor] = {}

    def on_cycle(event: object) -> None:
        if not results:
            started = time.monotonic()
            results.append((holder["m"].close(), time.monotonic() - started))

    monitor = ugro_health.HealthMonitor(
        config,
        state_dir=tmp_path,
        transports=ReplayTransports(config),
        interval_s=0.05,
        on_cycle=on_cycle,
    )
    holder["m"] = monitor
    monitor.start()
    deadline = time.monotonic() + 30
    while not results and time.monotonic() < deadline:
        time.sleep(0.02)
    assert results and results[0][1] < 2.0, results
    assert monitor.join(30)
