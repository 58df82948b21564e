"""The alert lifecycle on a fake clock: fire_after, hysteresis, unknown nodes, flapping, repeats,
silences and cron-like ``check`` runs (``engine.lifecycle.advance``; ``now`` is a plain float)."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from ugro_health.config import NodeConfig, Thresholds
from ugro_health.config_notify import AlertRules
from ugro_health.engine.collect import failed_report
from ugro_health.engine.lifecycle import (
    FIRING,
    FLAPPING,
    PENDING,
    RESOLVED,
    SILENCED,
    Silence,
    advance,
    alert_key,
    firing_notices,
    with_states,
)
from ugro_health.engine.scoring import judge
from ugro_health.model import (
    Alert,
    DiskSample,
    ErrorKind,
    GpuSample,
    NodeError,
    NodeReport,
    NodeSample,
    Severity,
    Status,
)
from ugro_health.notify.base import AlertNotice

# The rules these tests were written for (the defaults but resolve_after and flap_changes, which
# test_the_defaults pins): each test that needs another rule says so.
RULES = AlertRules(resolve_after=2, flap_changes=6)
T0 = 1_800_000_000.0
GIB = 1 << 30
HOT = Alert(Severity.CRITICAL, "gpu_temp_critical", "GPU 0: 95 C", 95.0, 0)
WARM = Alert(Severity.WARNING, "gpu_temp_high", "GPU 0: 86 C", 86.0, 0)
DISK = Alert(Severity.WARNING, "disk_full", "/scratch 92 %", 92.0, None, "/scratch")


def sampled(name: str = "gpu1", *alerts: Alert, gpus: int = 1) -> NodeReport:
    status = Status.CRITICAL if alerts else Status.OK
    sample = NodeSample(hostname=name, gpus=tuple(GpuSample(index=i) for i in range(gpus)))
    return NodeReport(name, status, 90, T0, 0.1, sample=sample, alerts=alerts)


def failed(name: str = "gpu1", kind: ErrorKind = ErrorKind.TIMEOUT) -> NodeReport:
    """What collect yields for a node that gave no sample (the real function)."""
    return failed_report(name, NodeError(kind, "connect timed out"), T0, time.monotonic())


class Run:
    """A lifecycle fed poll after poll, keeping every notice; the state is JSON round-tripped
    between polls as the state store does."""

    def __init__(self, rules: AlertRules = RULES) -> None:
        self.rules = rules
        self.state: dict[str, Any] = {}
        self.notices: list[AlertNotice] = []
        self.states: dict[str, dict[str, str]] = {}

    def poll(self, now: float, *reports: NodeReport) -> list[AlertNotice]:
        outcome = advance(self.state, reports, self.rules, now)
        self.state = json.loads(json.dumps(self.state))
        self.notices += outcome.notices
        self.states = outcome.states
        return outcome.notices

    def shown(self, node: str, alert: Alert) -> str | None:
        return self.states.get(node, {}).get(alert_key(alert.code, alert.gpu, alert.subject))

    def silence(self, ends_at: float, nodes: tuple[str, ...] = (), codes: tuple[str, ...] = ()):
        record = Silence("s1", nodes, codes, T0 - 1, ends_at, "fan swap").to_json()
        self.state.setdefault("silences", {})["s1"] = record


def states(notices: list[AlertNotice]) -> list[str]:
    return [n.state for n in notices]


# --- fire_after and resolve_after --------------------------------------------------------------


def test_a_critical_alert_fires_at_once_and_is_told_once() -> None:
    run = Run()
    first = run.poll(T0, sampled("gpu1", HOT))
    assert states(first) == [FIRING]
    assert first[0].node == "gpu1" and first[0].code == "gpu_temp_critical"
    assert first[0].starts_at == T0 and first[0].ends_at is None and not first[0].repeat
    for i in range(1, 20):
        assert run.poll(T0 + 5 * i, sampled("gpu1", HOT)) == []
    assert run.shown("gpu1", HOT) == FIRING


def test_a_warning_is_pending_until_it_held_for_two_polls() -> None:
    run = Run()
    assert run.poll(T0, sampled("gpu1", WARM)) == []
    assert run.shown("gpu1", WARM) == PENDING
    fired = run.poll(T0 + 5, sampled("gpu1", WARM))
    assert states(fired) == [FIRING]
    assert fired[0].starts_at == T0 + 5  # when it fired, not when it was first seen
    assert run.shown("gpu1", WARM) == FIRING


def test_a_one_poll_warning_blip_is_never_told() -> None:
    run = Run()
    for i in range(0, 40, 2):  # raised on one poll, gone the next (never 2 in a row)
        run.poll(T0 + 5 * i, sampled("gpu1", WARM))
        run.poll(T0 + 5 * i + 5, sampled("gpu1"))
    assert run.notices == []


def test_fire_after_is_per_severity_and_configurable() -> None:
    run = Run(
        AlertRules(
            resolve_after=2, flap_changes=6, fire_after={"critical": 3, "warning": 1, "info": 1}
        )
    )
    assert run.poll(T0, sampled("gpu1", HOT, WARM)) != []  # the warning, at once
    assert states(run.notices) == [FIRING] and run.notices[0].code == WARM.code
    assert run.poll(T0 + 5, sampled("gpu1", HOT, WARM)) == []
    third = run.poll(T0 + 10, sampled("gpu1", HOT, WARM))
    assert [(n.code, n.state) for n in third] == [(HOT.code, FIRING)]


def test_a_firing_alert_resolves_after_resolve_after_clean_polls() -> None:
    run = Run()
    run.poll(T0, sampled("gpu1", HOT))
    assert run.poll(T0 + 5, sampled("gpu1")) == []  # one clean poll: not yet
    assert run.shown("gpu1", HOT) == FIRING
    resolved = run.poll(T0 + 10, sampled("gpu1"))
    assert states(resolved) == [RESOLVED]
    assert resolved[0].starts_at == T0 and resolved[0].ends_at == T0 + 10
    for i in range(3, 30):
        assert run.poll(T0 + 5 * i, sampled("gpu1")) == []


def test_hysteresis_a_single_clean_poll_changes_nothing() -> None:
    run = Run(AlertRules(resolve_after=3))
    run.poll(T0, sampled("gpu1", HOT))
    for i in range(1, 20):  # clean twice, then back: never 3 clean in a row
        alerts = () if i % 3 else (HOT,)
        run.poll(T0 + 600 * i, sampled("gpu1", *alerts))  # slow: under flap_changes a window
    assert states(run.notices) == [FIRING]


def test_resolve_after_is_configurable() -> None:
    run = Run(AlertRules(resolve_after=4))
    run.poll(T0, sampled("gpu1", HOT))
    for i in range(1, 4):
        assert run.poll(T0 + 5 * i, sampled("gpu1")) == []
    assert states(run.poll(T0 + 20, sampled("gpu1"))) == [RESOLVED]


def test_an_alert_back_after_its_resolution_fires_again() -> None:
    run = Run()
    run.poll(T0, sampled("gpu1", HOT))
    run.poll(T0 + 5, sampled("gpu1"))
    run.poll(T0 + 10, sampled("gpu1"))
    again = run.poll(T0 + 15, sampled("gpu1", HOT))
    assert states(again) == [FIRING] and again[0].starts_at == T0 + 15
    assert states(run.notices) == [FIRING, RESOLVED, FIRING]


def test_alerts_are_keyed_by_node_code_gpu_and_subject() -> None:
    run = Run()
    other_gpu = Alert(Severity.CRITICAL, HOT.code, "GPU 1: 96 C", 96.0, 1)
    out = run.poll(T0, sampled("gpu1", HOT, other_gpu, gpus=2), sampled("gpu2", HOT))
    assert sorted((n.node, n.gpu) for n in out) == [("gpu1", 0), ("gpu1", 1), ("gpu2", 0)]
    # the value and message change from poll to poll: still the same alert
    hotter = Alert(Severity.CRITICAL, HOT.code, "GPU 0: 99 C", 99.0, 0)
    assert run.poll(T0 + 5, sampled("gpu1", hotter, other_gpu, gpus=2)) == []


# --- unknown is not healthy --------------------------------------------------------------------


def test_an_unreachable_node_does_not_resolve_its_alerts() -> None:
    run = Run()
    run.poll(T0, sampled("gpu1", HOT, DISK))
    run.poll(T0 + 5, sampled("gpu1", HOT, DISK))
    told = states(run.notices)
    for i in range(2, 40):
        run.poll(T0 + 5 * i, failed("gpu1"))
    # the outage itself is told (node_unreachable, CRITICAL); the GPU and disk are not resolved
    new = run.notices[len(told) :]
    assert [(n.code, n.state) for n in new] == [("node_unreachable", FIRING)]
    assert run.shown("gpu1", HOT) == FIRING and run.shown("gpu1", DISK) == FIRING


def test_a_node_back_resolves_its_outage_but_keeps_what_still_holds() -> None:
    run = Run()
    run.poll(T0, sampled("gpu1", HOT))
    for i in range(1, 5):  # refused, timed out, refused: one outage, told once
        run.poll(T0 + 5 * i, failed("gpu1", ErrorKind.REFUSED if i % 2 else ErrorKind.TIMEOUT))
    run.poll(T0 + 25, sampled("gpu1", HOT))
    run.poll(T0 + 30, sampled("gpu1", HOT))
    assert [(n.code, n.state) for n in run.notices] == [
        (HOT.code, FIRING),
        ("node_unreachable", FIRING),
        ("node_unreachable", RESOLVED),
    ]


def test_an_isolated_node_keeps_its_outage_firing() -> None:
    run = Run()
    run.poll(T0, failed("gpu1"))
    for i in range(1, 20):  # the breaker isolates it: skipped polls say nothing new
        run.poll(T0 + 5 * i, failed("gpu1", ErrorKind.SKIPPED))
    assert [(n.code, n.state) for n in run.notices] == [("node_unreachable", FIRING)]


def test_a_node_not_polled_changes_nothing() -> None:
    run = Run()
    run.poll(T0, sampled("gpu1", WARM))  # pending, one hit
    before = copy.deepcopy(run.state)
    for i in range(1, 10):
        assert run.poll(T0 + 5 * i, failed("gpu1", ErrorKind.NOT_POLLED)) == []
    assert run.state == before
    assert "gpu1" not in run.states  # nothing judged: no states shown for it


def test_a_gpu_that_went_unseen_does_not_resolve_its_alerts() -> None:
    # nvidia-smi hangs or the GPU falls off the bus: its temperature is unknown, not cool.
    run = Run()
    run.poll(T0, sampled("gpu1", HOT))
    for i in range(1, 10):
        run.poll(T0 + 5 * i, sampled("gpu1", gpus=0))
    assert states(run.notices) == [FIRING]
    assert run.shown("gpu1", HOT) == FIRING
    # seen again, and cool: now it resolves
    run.poll(T0 + 50, sampled("gpu1"))
    assert states(run.poll(T0 + 55, sampled("gpu1"))) == [RESOLVED]


def test_a_disk_that_could_not_be_read_does_not_resolve_its_alerts() -> None:
    # A hung mount: its usage is unknown, not fine. The alerts come from the real scoring.
    def disk_report(disk: DiskSample) -> NodeReport:
        sample = NodeSample(hostname="gpu1", disks=(disk,))
        verdict = judge(sample, NodeConfig(name="gpu1"), Thresholds())
        return NodeReport("gpu1", verdict.status, verdict.score, T0, 0.1, sample, verdict.alerts)

    full = DiskSample("/scratch", 100 * GIB, 99 * GIB, avail_bytes=1 * GIB)
    hung = DiskSample("/scratch", error="timeout after 2.0s")
    run = Run()
    run.poll(T0, disk_report(full))
    for i in range(1, 10):
        run.poll(T0 + 5 * i, disk_report(hung))
    assert [(n.code, n.state) for n in run.notices] == [
        ("disk_critical", FIRING),
        ("disk_check_failed", FIRING),
    ]
    emptied = DiskSample("/scratch", 100 * GIB, 10 * GIB, avail_bytes=90 * GIB)
    run.poll(T0 + 50, disk_report(emptied))
    run.poll(T0 + 55, disk_report(emptied))
    assert sorted((n.code, n.state) for n in run.notices[2:]) == [
        ("disk_check_failed", RESOLVED),
        ("disk_critical", RESOLVED),
    ]


def test_ignored_codes_are_not_judged() -> None:
    run = Run()
    partial = Alert(Severity.INFO, "probe_partial", "1 sub-check(s) failed", 1)
    isolated = Alert(Severity.CRITICAL, "node_isolated", "isolated", None)
    run.poll(T0, sampled("gpu1", partial, isolated))
    assert run.notices == [] and run.states["gpu1"] == {}
    shown = with_states(sampled("gpu1", partial, HOT), {alert_key(HOT.code, 0, None): FIRING})
    assert [a.state for a in shown.alerts] == [None, FIRING]


# --- flapping ----------------------------------------------------------------------------------


def flap(run: Run, start: float, polls: int, every: int = 1, step: float = 5.0) -> float:
    """The link goes down and up: unreachable for ``every`` polls, then up for as many."""
    now = start
    for i in range(polls):
        down = (i // every) % 2 == 0
        run.poll(now, failed("gpu1") if down else sampled("gpu1"))
        now += step
    return now


def test_a_flapping_alert_is_told_once_then_nothing_until_stable() -> None:
    run = Run()
    end = flap(run, T0, 120)  # 10 minutes at 5 s: 119 raw changes
    assert states(run.notices) == [FIRING, FLAPPING]
    assert run.shown("gpu1", Alert(Severity.CRITICAL, "node_unreachable", "")) == FLAPPING
    # stable (up) again: nothing while the changes are still in the window...
    now = end
    while now < end + RULES.flap_window_s - 60:
        run.poll(now, sampled("gpu1"))
        now += 5
    assert states(run.notices) == [FIRING, FLAPPING]
    # ...then the settled state, once
    while now < end + RULES.flap_window_s + 60:
        run.poll(now, sampled("gpu1"))
        now += 5
    assert states(run.notices) == [FIRING, FLAPPING, RESOLVED]
    assert "node_unreachable||" not in run.state["nodes"]["gpu1"]["lifecycle"]  # forgotten


def test_a_flapping_alert_that_settles_firing_is_told_firing() -> None:
    run = Run()
    end = flap(run, T0, 60)
    for i in range(int(RULES.flap_window_s / 5) + 20):
        run.poll(end + 5 * i, failed("gpu1"))
    assert states(run.notices) == [FIRING, FLAPPING, FIRING]
    assert not run.notices[-1].repeat


def test_a_warning_that_fired_and_then_blinks_is_told_flapping() -> None:
    run = Run()
    run.poll(T0, sampled("gpu1", WARM))
    run.poll(T0 + 5, sampled("gpu1", WARM))
    for i in range(2, 40):
        run.poll(T0 + 5 * i, sampled("gpu1", WARM) if i % 2 else sampled("gpu1"))
    assert states(run.notices) == [FIRING, FLAPPING]


def test_flapping_starts_after_more_than_flap_changes() -> None:
    rules = AlertRules(flap_changes=4, resolve_after=1, fire_after={"critical": 1})
    run = Run(rules)
    for i in range(5):  # 4 changes: raise, clear, raise, clear, raise (first raise is new)
        run.poll(T0 + 5 * i, sampled("gpu1", HOT) if i % 2 == 0 else sampled("gpu1"))
    assert FLAPPING not in states(run.notices)
    run.poll(T0 + 25, sampled("gpu1"))  # the 5th change
    assert states(run.notices)[-1] == FLAPPING


def test_changes_outside_the_window_do_not_make_it_flap() -> None:
    run = Run()
    for i in range(40):  # one change every 10 minutes: at most 3 in any 30 minutes
        run.poll(T0 + 600 * i, sampled("gpu1", HOT) if i % 2 == 0 else sampled("gpu1"))
    assert FLAPPING not in states(run.notices)


def test_a_flapping_alert_is_not_repeated() -> None:
    run = Run()
    now = flap(run, T0, 9 * 3600 // 5)  # 9 hours of flapping
    assert states(run.notices) == [FIRING, FLAPPING]
    assert now > T0 + 2 * RULES.repeat_interval_s


# --- repeat_interval ---------------------------------------------------------------------------


def test_a_still_firing_alert_is_repeated_every_repeat_interval_never_more() -> None:
    run = Run()
    told_at = []
    for i in range(0, 13 * 3600, 60):  # 13 hours, a poll a minute
        if run.poll(T0 + i, sampled("gpu1", HOT)):
            told_at.append(i)
    assert told_at == [0, 4 * 3600, 8 * 3600, 12 * 3600]
    assert [n.repeat for n in run.notices] == [False, True, True, True]
    assert all(n.state == FIRING and n.starts_at == T0 for n in run.notices)


def test_repeat_interval_counts_from_the_last_notice_with_irregular_polls() -> None:
    run = Run(AlertRules(resolve_after=2, flap_changes=6, repeat_interval_s=100.0))
    told_at = []
    for at in (0, 30, 99, 100.5, 150, 199, 200.4, 250, 300.6, 349.9):
        if run.poll(T0 + at, sampled("gpu1", HOT)):
            told_at.append(at)
    assert told_at == [0, 100.5, 250]  # 200.4 is 99.9 s after the last one: too soon


def test_no_reminder_while_a_firing_alert_counts_down_to_its_resolution() -> None:
    run = Run(AlertRules(repeat_interval_s=100.0, resolve_after=3))
    assert states(run.poll(T0, sampled("gpu1", HOT))) == [FIRING]
    assert run.poll(T0 + 150, sampled("gpu1")) == []  # due for a reminder, but clean
    assert run.poll(T0 + 160, sampled("gpu1")) == []
    assert states(run.poll(T0 + 170, sampled("gpu1"))) == [RESOLVED]


# --- silences ----------------------------------------------------------------------------------


def test_a_silenced_alert_is_not_told_and_is_told_when_the_silence_ends() -> None:
    run = Run()
    run.silence(ends_at=T0 + 3600, nodes=("gpu*",), codes=("gpu_temp_*",))
    for i in range(0, 3600, 60):
        assert run.poll(T0 + i, sampled("gpu1", HOT)) == []
    assert run.shown("gpu1", HOT) == SILENCED
    ended = run.poll(T0 + 3600, sampled("gpu1", HOT))
    assert states(ended) == [FIRING] and not ended[0].repeat
    assert ended[0].starts_at == T0  # it has been firing since then
    assert run.shown("gpu1", HOT) == FIRING


def test_an_alert_raised_and_gone_inside_a_silence_is_never_told() -> None:
    run = Run()
    run.silence(ends_at=T0 + 3600)
    run.poll(T0, sampled("gpu1", HOT))
    for i in range(1, 120):
        run.poll(T0 + 60 * i, sampled("gpu1"))
    assert run.notices == []


def test_a_resolution_inside_a_silence_is_told_when_it_ends() -> None:
    run = Run()
    run.poll(T0, sampled("gpu1", HOT))  # told firing before the silence
    run.silence(ends_at=T0 + 3600)
    for i in range(1, 60):
        run.poll(T0 + 60 * i, sampled("gpu1"))
    assert states(run.notices) == [FIRING]
    run.poll(T0 + 3600, sampled("gpu1"))
    assert states(run.notices) == [FIRING, RESOLVED]


def test_a_silence_holds_back_repeats_too() -> None:
    run = Run(AlertRules(resolve_after=2, flap_changes=6, repeat_interval_s=600.0))
    run.poll(T0, sampled("gpu1", HOT))
    run.silence(ends_at=T0 + 3000)
    for i in range(1, 62):
        run.poll(T0 + 60 * i, sampled("gpu1", HOT))
    # one notice before, one repeat when it ended (due long since), then every 600 s
    assert [n.repeat for n in run.notices] == [False, True, True]


def test_a_silence_matches_only_its_nodes_and_codes() -> None:
    run = Run()
    run.silence(ends_at=T0 + 3600, nodes=("gpu1",), codes=("disk_*",))
    run.poll(T0, sampled("gpu1", HOT), sampled("gpu2", HOT))
    run.poll(T0 + 5, sampled("gpu1", HOT, DISK), sampled("gpu2", HOT, DISK))
    run.poll(T0 + 10, sampled("gpu1", HOT, DISK), sampled("gpu2", HOT, DISK))
    told = sorted((n.node, n.code) for n in run.notices)
    assert told == [("gpu1", HOT.code), ("gpu2", DISK.code), ("gpu2", HOT.code)]
    assert run.shown("gpu1", DISK) == SILENCED and run.shown("gpu2", DISK) == FIRING


def test_a_silence_not_yet_started_does_not_silence() -> None:
    run = Run()
    record = Silence("later", (), (), T0 + 600, T0 + 1200).to_json()
    run.state["silences"] = {"later": record, "broken": {"id": "x"}}
    assert states(run.poll(T0, sampled("gpu1", HOT))) == [FIRING]


# --- cron: one `check` every 5 minutes, the state stored between runs ----------------------------


@pytest.mark.parametrize("alert", [HOT, WARM])
def test_cron_checks_notify_a_new_alert_once_and_its_resolution_once(alert: Alert) -> None:
    run = Run()
    now = T0
    for _ in range(12):  # an hour of checks with the alert
        run.poll(now, sampled("gpu1", alert))
        now += 300
    for _ in range(12):  # an hour without
        run.poll(now, sampled("gpu1"))
        now += 300
    assert states(run.notices) == [FIRING, RESOLVED]
    assert run.state["nodes"]["gpu1"]["lifecycle"] == {}  # nothing left to remember


def test_cron_checks_of_a_dead_node_tell_its_outage_once() -> None:
    run = Run()
    now = T0
    for _ in range(36):  # three hours unreachable, then back
        run.poll(now, failed("gpu1"))
        now += 300
    for _ in range(3):
        run.poll(now, sampled("gpu1"))
        now += 300
    assert states(run.notices) == [FIRING, RESOLVED]


def test_cron_checks_that_poll_some_nodes_leave_the_others_alone() -> None:
    run = Run()
    run.poll(T0, sampled("gpu1", HOT), sampled("gpu2", HOT))
    for i in range(1, 10):  # `check gpu2` alone, healthy
        run.poll(T0 + 300 * i, sampled("gpu2"))
    assert sorted((n.node, n.state) for n in run.notices) == [
        ("gpu1", FIRING),
        ("gpu2", FIRING),
        ("gpu2", RESOLVED),
    ]


# --- what Alertmanager is re-sent ----------------------------------------------------------------


def test_firing_notices_are_what_was_told_firing_and_not_silenced() -> None:
    run = Run()
    run.poll(T0, sampled("gpu1", HOT), sampled("gpu2", HOT, WARM))  # WARM only pending
    assert sorted(n.node for n in firing_notices(run.state, T0 + 5)) == ["gpu1", "gpu2"]
    assert [n.node for n in firing_notices(run.state, T0 + 5, nodes=["gpu2"])] == ["gpu2"]
    run.silence(ends_at=T0 + 600, nodes=("gpu1",))
    assert [n.node for n in firing_notices(run.state, T0 + 5)] == ["gpu2"]
    assert all(n.state == FIRING for n in firing_notices(run.state, T0 + 5))


def test_the_defaults() -> None:
    """The documented defaults (README, cluster.example.yaml; chosen with bench_flapping)."""
    rules = AlertRules()
    assert rules.fire_after == {"critical": 1, "warning": 2, "info": 1}
    assert (rules.resolve_after, rules.flap_changes) == (3, 4)
    assert (rules.flap_window_s, rules.repeat_interval_s) == (1800.0, 4 * 3600.0)


def test_alerts_cut_by_the_per_node_cap_are_not_resolved() -> None:
    cut = Alert(Severity.WARNING, "alerts_truncated", "3 more alerts not shown", 3)
    run = Run()
    run.poll(T0, sampled("gpu1", HOT))
    for i in range(1, 6):  # HOT is among those cut: no verdict, not clean
        told = run.poll(T0 + 5 * i, sampled("gpu1", cut))
        assert [n.code for n in told if n.state == RESOLVED] == []
    assert run.shown("gpu1", HOT) == FIRING
