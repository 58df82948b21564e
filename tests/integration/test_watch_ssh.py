"""``watch``'s loop against the real sshd rig: a node's sshd dies mid-watch and comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sshd_rig import SshdRig
from watch_rig import running_monitor, wait_for

from ugro_health.config import Config
from ugro_health.engine.breaker import BreakerPolicy, BreakerState
from ugro_health.store.state import StateStore

pytestmark = pytest.mark.ssh


def test_node_down_is_isolated_others_stay_on_time_then_it_recovers(
    sshd_rig: SshdRig, tmp_path: Path
):
    sshd_rig.start_node("flaky")
    names = ("node1", "node2", "flaky")
    config = Config(
        nodes=tuple(sshd_rig.node_config(n) for n in names),
        ssh=sshd_rig.settings(connect_timeout=2.0, command_timeout=5.0),
    )
    with running_monitor(
        config, tmp_path, BreakerPolicy(failure_threshold=3, reset_base_s=2.0, reset_max_s=4.0)
    ) as (monitor, cycles):
        wait_for(lambda: len(cycles) >= 2, 30, "two healthy cycles")
        assert all(monitor.view.reports[n].reachable for n in names)
        sshd_rig.stop_node("flaky")
        down_at = len(cycles)
        # Wait on the cycle results, not the breaker: the breaker opens inside the round,
        # before the round's result reaches on_cycle.
        wait_for(
            lambda: any(e.alert.code == "node_isolated" for c in cycles for e in c.events),
            30,
            "the node_isolated alert",
        )
        events = [e for c in cycles for e in c.events]
        assert [e.node for e in events if e.alert.code == "node_isolated"] == ["flaky"]
        assert monitor.breakers["flaky"].state is not BreakerState.CLOSED
        # The healthy nodes were polled in every full cycle meanwhile, and on time.
        during = [c for c in cycles[down_at:] if "node1" in c.polled]
        assert during and all("node2" in c.polled for c in during)
        assert all(c.duration_s < 2.0 for c in during)
        assert not monitor.view.reports["flaky"].reachable
        sshd_rig.restart_node("flaky")
        wait_for(
            lambda: any(e.alert.code == "node_recovered" for c in cycles for e in c.events),
            30,
            "the node_recovered alert",
        )
        recovered = next(e for c in cycles for e in c.events if e.alert.code == "node_recovered")
        assert recovered.node == "flaky" and recovered.alert.severity.value == "info"
        assert monitor.breakers["flaky"].state is BreakerState.CLOSED
        wait_for(lambda: monitor.view.reports["flaky"].reachable, 10, "a good poll of flaky")
    state = StateStore(tmp_path).load().state
    assert state["nodes"]["flaky"]["breaker"]["state"] == "closed"
