"""The drain and resume rules (engine.slurm_policy), pure: counts over polls, then decisions
from Slurm's view of each node as recorded from a real Slurm."""

from __future__ import annotations

from typing import Any

from ugro_health.config_slurm import SlurmSettings
from ugro_health.engine.slurm_policy import DRAIN, RELEASE, RESUME, SKIP, decide, tally
from ugro_health.integrations.slurm import SlurmNode
from ugro_health.model import (
    Alert,
    ErrorKind,
    NodeError,
    NodeReport,
    NodeSample,
    Severity,
    Status,
)

XID = Alert(Severity.CRITICAL, "gpu_xid_fatal", "GPU 3: Xid 79 (fallen off the bus)", 79, gpu=3)
HOT = Alert(Severity.WARNING, "gpu_temp_high", "GPU 0: 82 °C", 82.0, gpu=0)
SETTINGS = SlurmSettings(enabled=True, max_drained_fraction=0.5)


def report(name: str, *alerts: Alert) -> NodeReport:
    status = Status.CRITICAL if any(a.severity is Severity.CRITICAL for a in alerts) else Status.OK
    return NodeReport(name, status, 50, 0.0, 0.1, sample=NodeSample(), alerts=alerts)


def unreachable(name: str) -> NodeReport:
    alert = Alert(Severity.CRITICAL, "node_unreachable", "timed out")
    error = NodeError(ErrorKind.TIMEOUT, "timed out")
    return NodeReport(name, Status.CRITICAL, None, 0.0, 5.0, alerts=(alert,), error=error)


def idle(name: str) -> SlurmNode:
    return SlurmNode(name, frozenset({"IDLE"}), None)


def drained(name: str, reason: str) -> SlurmNode:
    return SlurmNode(name, frozenset({"IDLE", "DRAIN"}), reason)


def polls(
    state: dict[str, Any], *batches: list[NodeReport], settings: SlurmSettings = SETTINGS
) -> dict[str, Any]:
    section: dict[str, Any] = {}
    for batch in batches:
        section = tally(state, batch, settings)
    return section


def kinds(decision: Any) -> list[tuple[str, str]]:
    return [(a.kind, a.node) for a in decision.actions]


def test_one_critical_poll_does_not_drain_two_do() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", XID), report("gpu02")])
    views = {"gpu01": idle("gpu01"), "gpu02": idle("gpu02")}
    assert kinds(decide(section, views, SETTINGS, 0.0)) == []
    section = polls(state, [report("gpu01", XID), report("gpu02")])
    decision = decide(section, views, SETTINGS, 0.0)
    assert kinds(decision) == [(DRAIN, "gpu01")]
    assert decision.actions[0].why.startswith("ugro-health: gpu_xid_fatal GPU 3: Xid 79")


def test_unreachable_never_drains_and_keeps_the_counts() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [unreachable("gpu01")], [unreachable("gpu01")], [unreachable("gpu01")])
    assert kinds(decide(section, {"gpu01": idle("gpu01")}, SETTINGS, 0.0)) == []
    # A critical poll, an unreachable one (no verdict), a critical one: two in a row.
    section = polls(state, [report("gpu01", XID)], [unreachable("gpu01")], [report("gpu01", XID)])
    assert kinds(decide(section, {"gpu01": idle("gpu01")}, SETTINGS, 0.0)) == [(DRAIN, "gpu01")]


def test_a_clean_poll_between_resets_the_count() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", XID)], [report("gpu01")], [report("gpu01", XID)])
    assert kinds(decide(section, {"gpu01": idle("gpu01")}, SETTINGS, 0.0)) == []


def test_only_matching_codes_drain() -> None:
    settings = SlurmSettings(enabled=True, drain_codes=("gpu_ecc_*",))
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", XID)], [report("gpu01", XID)], settings=settings)
    assert kinds(decide(section, {"gpu01": idle("gpu01")}, settings, 0.0)) == []


def test_warning_never_drains() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", HOT)], [report("gpu01", HOT)])
    assert kinds(decide(section, {"gpu01": idle("gpu01")}, SETTINGS, 0.0)) == []


def test_a_node_drained_by_an_admin_is_left_with_its_reason() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", XID)], [report("gpu01", XID)])
    decision = decide(section, {"gpu01": drained("gpu01", "ADMIN: disk swap")}, SETTINGS, 0.0)
    assert kinds(decision) == [(SKIP, "gpu01")]
    assert "ADMIN: disk swap" in decision.actions[0].why


def test_down_or_maintenance_is_left_alone() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", XID)], [report("gpu01", XID)])
    for flags in ({"DOWN"}, {"IDLE", "MAINT"}, {"IDLE", "REBOOT_REQUESTED"}):
        view = SlurmNode("gpu01", frozenset(flags), "someone's reason")
        assert kinds(decide(section, {"gpu01": view}, SETTINGS, 0.0)) == [(SKIP, "gpu01")]


def test_already_drained_by_us_is_nothing_to_do() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", XID)], [report("gpu01", XID)])
    view = drained("gpu01", "ugro-health: gpu_xid_fatal GPU 3 Xid 79")
    assert kinds(decide(section, {"gpu01": view}, SETTINGS, 0.0)) == []


def test_unknown_slurm_state_touches_nothing() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", XID), report("gpu02")], [report("gpu01", XID)])
    section = polls(state, [report("gpu02")], [report("gpu02")])
    decision = decide(section, {"gpu01": None, "gpu02": None}, SETTINGS, 0.0, "scontrol timed out")
    assert kinds(decision) == [(SKIP, "gpu01")]
    assert "scontrol timed out" in decision.actions[0].why


def test_resume_only_ours_after_the_healthy_polls() -> None:
    state: dict[str, Any] = {}
    ours = drained("gpu01", "ugro-health: gpu_xid_fatal GPU 3 Xid 79")
    admin = drained("gpu02", "ADMIN: disk swap")
    views = {"gpu01": ours, "gpu02": admin}
    section = polls(state, [report("gpu01"), report("gpu02")], [report("gpu01"), report("gpu02")])
    assert kinds(decide(section, views, SETTINGS, 0.0)) == []
    section = polls(state, [report("gpu01"), report("gpu02")])
    assert kinds(decide(section, views, SETTINGS, 0.0)) == [(RESUME, "gpu01")]


def test_a_warning_is_healthy_enough_a_critical_that_does_not_drain_is_not() -> None:
    settings = SlurmSettings(enabled=True, drain_codes=("gpu_xid_*",))
    other = Alert(Severity.CRITICAL, "disk_full", "/ at 99 %", subject="/")
    state: dict[str, Any] = {}
    ours = {"gpu01": drained("gpu01", "ugro-health: x")}
    section = polls(state, *[[report("gpu01", other)]] * 3, settings=settings)
    assert kinds(decide(section, ours, settings, 0.0)) == []
    section = polls(state, *[[report("gpu01", HOT)]] * 3, settings=settings)
    assert kinds(decide(section, ours, settings, 0.0)) == [(RESUME, "gpu01")]


def test_storm_guard_caps_drains_and_raises_one_cluster_alert() -> None:
    settings = SlurmSettings(enabled=True)  # 10 %: 2 of 20 nodes
    names = [f"gpu{i:02d}" for i in range(1, 21)]
    state: dict[str, Any] = {}
    batch = [report(n, XID) if n <= "gpu05" else report(n) for n in names]
    section = polls(state, batch, batch, settings=settings)
    decision = decide(section, {n: idle(n) for n in names}, settings, 0.0)
    assert kinds(decision) == [
        (DRAIN, "gpu01"),
        (DRAIN, "gpu02"),
        (SKIP, "gpu03"),
        (SKIP, "gpu04"),
        (SKIP, "gpu05"),
    ]
    assert decision.guard is not None and decision.guard.severity is Severity.CRITICAL
    assert decision.guard.code == "slurm_drain_guard"
    assert "gpu03, gpu04, gpu05" in decision.guard.message


def test_nodes_already_ours_count_towards_the_guard() -> None:
    settings = SlurmSettings(enabled=True)
    names = [f"gpu{i:02d}" for i in range(1, 11)]  # 10 %: one node
    state: dict[str, Any] = {}
    batch = [report("gpu02", XID)] + [report(n) for n in names if n != "gpu02"]
    section = polls(state, batch, batch, settings=settings)
    views = {n: idle(n) for n in names}
    views["gpu07"] = drained("gpu07", "ugro-health: earlier")
    decision = decide(section, views, settings, 0.0)
    assert kinds(decision) == [(SKIP, "gpu02")]
    assert decision.guard is not None


def test_most_nodes_unreachable_drains_nothing() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", XID)], [report("gpu01", XID)])
    decision = decide(section, {"gpu01": idle("gpu01")}, SETTINGS, unreachable=0.8)
    assert kinds(decision) == [(SKIP, "gpu01")]
    assert "network" in decision.actions[0].why
    assert decision.guard is None


def test_a_drain_taken_over_or_resumed_by_hand_is_released() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01"), report("gpu02")])
    section["drained"] = {"gpu01": {"at": 0.0}, "gpu02": {"at": 0.0}}
    views = {"gpu01": drained("gpu01", "ADMIN: disk swap"), "gpu02": idle("gpu02")}
    decision = decide(section, views, SETTINGS, 0.0)
    assert kinds(decision) == [(RELEASE, "gpu01"), (RELEASE, "gpu02")]
    assert "taken over" in decision.actions[0].why
    assert "resumed outside" in decision.actions[1].why


def test_held_off_until_healthy_once() -> None:
    state: dict[str, Any] = {}
    section = polls(state, [report("gpu01", XID)], [report("gpu01", XID)])
    section["nodes"]["gpu01"]["held_off"] = True
    decision = decide(section, {"gpu01": idle("gpu01")}, SETTINGS, 0.0)
    assert kinds(decision) == [(SKIP, "gpu01")]
    section = polls(state, [report("gpu01")], [report("gpu01", XID)], [report("gpu01", XID)])
    assert kinds(decide(section, {"gpu01": idle("gpu01")}, SETTINGS, 0.0)) == [(DRAIN, "gpu01")]


def test_max_drained_is_at_least_one() -> None:
    assert SlurmSettings().max_drained(3) == 1
    assert SlurmSettings().max_drained(20) == 2
    assert SlurmSettings(max_drained_fraction=0.3).max_drained(10) == 3


def test_events_are_told_once_each_and_heard_whatever_min_severity() -> None:
    from ugro_health.config_notify import AlertRules, ChannelConfig
    from ugro_health.engine.lifecycle import advance
    from ugro_health.notify.channels import hears

    drained_event = Alert(Severity.INFO, "slurm_drained", "drained in Slurm: x", subject="slurm")
    state: dict[str, Any] = {}
    first = advance(state, [report("gpu01", XID, drained_event)], AlertRules(), 10.0)
    codes = [n.code for n in first.notices]
    assert codes.count("slurm_drained") == 1 and "gpu_xid_fatal" in codes
    assert all(r["code"] != "slurm_drained" for r in state["nodes"]["gpu01"]["lifecycle"].values())
    again = advance(state, [report("gpu01", XID)], AlertRules(), 20.0)
    assert [n.code for n in again.notices] == []  # the event is not resolved or repeated
    (notice,) = [n for n in first.notices if n.code == "slurm_drained"]
    assert hears(ChannelConfig("hook", "webhook", min_severity="critical"), notice)
    assert not hears(ChannelConfig("hook", "webhook", codes=("gpu_*",)), notice)
    assert not hears(ChannelConfig("am", "alertmanager"), notice)
