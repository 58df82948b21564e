"""``SlurmLink``: one poll's step over a state store, with Slurm played by small scripts that
print recorded Slurm 22.05 output (tests/fixtures/slurm) and log how they were called."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from ugro_health.config import Config, NodeConfig
from ugro_health.config_slurm import SlurmSettings
from ugro_health.engine.slurm import SlurmLink
from ugro_health.engine.slurm_policy import decide, slurm_section, tally
from ugro_health.integrations.slurm import SlurmNode
from ugro_health.model import Alert, NodeReport, NodeSample, Severity, Status
from ugro_health.store.state import StateStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
XID = Alert(Severity.CRITICAL, "gpu_xid_fatal", "GPU 3: Xid 79", 79, gpu=3)


def report(name: str, *alerts: Alert) -> NodeReport:
    status = Status.CRITICAL if alerts else Status.OK
    return NodeReport(name, status, 50, 0.0, 0.1, sample=NodeSample(), alerts=alerts)


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "scontrol"
    path.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls"
    return log.read_text().splitlines() if log.exists() else []


def link(tmp_path: Path, scontrol: str, nodes: list[str] | None = None, **slurm: Any) -> SlurmLink:
    settings = SlurmSettings(enabled=True, scontrol=scontrol, jobs=False, **slurm)
    config = Config(nodes=(NodeConfig("gpu01"), NodeConfig("gpu02")), slurm=settings)
    return SlurmLink(config, StateStore(tmp_path / "state"), nodes=nodes)


IDLE_BOTH = (
    f"sed -e 's/State=[^ ]*/State=IDLE/' -e 's/ Reason=.*//' {FIXTURES / 'show_node_both.txt'}"
)


def test_stale_counts_of_a_node_outside_the_selection_never_drain_it(tmp_path: Path) -> None:
    scontrol = script(tmp_path, f'case "$1" in --oneliner) {IDLE_BOTH};; esac')
    store = StateStore(tmp_path / "state")
    # A week-old count: gpu01 held a draining alert for 5 polls, then nobody polled it.
    store.update(lambda s: s.update(slurm={"nodes": {"gpu01": {"bad": 5, "good": 0}}}))
    only_gpu02 = link(tmp_path, scontrol, nodes=["gpu02"])
    only_gpu02.step([report("gpu02")])
    assert not any(c.startswith("update") for c in calls(tmp_path))
    everyone = link(tmp_path, scontrol)
    everyone.step([report("gpu02")])  # gpu01 not counted in this poll: still nothing
    assert not any(c.startswith("update") for c in calls(tmp_path))
    everyone.step([report("gpu01", XID), report("gpu02")])
    assert [c for c in calls(tmp_path) if c.startswith("update")] == [
        "update NodeName=gpu01 State=DRAIN Reason=ugro-health: gpu_xid_fatal GPU 3: Xid 79"
    ]
    events, _ = everyone.take_events()
    assert [(n, a.code) for n, a in events] == [("gpu01", "slurm_drained")]


def test_a_damaged_slurm_section_is_repaired_record_by_record() -> None:
    state: dict[str, Any] = {
        "slurm": {
            "nodes": {"gpu01": None, "gpu02": {"bad": "x", "good": 2}},
            "drained": ["not", "a", "mapping"],
            "actions": [{"at": 1, "node": "gpu02"}, 7],
        }
    }
    section = tally(state, [report("gpu01", XID), report("gpu02")], SlurmSettings(enabled=True))
    assert section["nodes"]["gpu01"]["bad"] == 1
    assert section["nodes"]["gpu02"]["good"] == 3
    assert section["drained"] == {}
    assert section["actions"] == [{"at": 1, "node": "gpu02"}]
    assert slurm_section({"slurm": "garbage"}) == {"nodes": {}, "drained": {}, "actions": []}


def test_removed_nodes_are_forgotten() -> None:
    state: dict[str, Any] = {"slurm": {"nodes": {"old": {"bad": 9}}, "drained": {"old": {}}}}
    section = tally(state, [report("gpu01")], SlurmSettings(), configured={"gpu01"})
    assert set(section["nodes"]) == {"gpu01"} and section["drained"] == {}


def test_the_guard_keeps_its_verdict_while_slurm_is_unreadable(tmp_path: Path) -> None:
    scontrol = script(tmp_path, f"[ -e {tmp_path / 'down'} ] && exit 1; {IDLE_BOTH}")
    both = link(tmp_path, scontrol, max_drained_fraction=0.5)  # one of two
    assert not both.stepped
    for _ in range(2):
        both.step([report("gpu01", XID), report("gpu02", XID)])
    assert both.stepped and both.guard is not None
    (tmp_path / "down").touch()
    both.step([report("gpu01", XID), report("gpu02", XID)])
    assert both.guard is not None  # unknown is not "the storm is over"
    _, problems = both.take_events()
    assert any("scontrol failed" in p for p in problems)


def test_a_skip_is_told_once_while_its_cause_lasts(tmp_path: Path) -> None:
    admin = f"sed -e 's/ Reason=.*/ Reason=ADMIN: disk swap [root@2026-12-03T16:00:00]/' -e 's/State=[^ ]*/State=IDLE+DRAIN/' {FIXTURES / 'show_node_both.txt'}"
    the_link = link(tmp_path, script(tmp_path, admin))
    told = []
    for _ in range(5):
        the_link.step([report("gpu01", XID), report("gpu02")])
        told += [a.code for _n, a in the_link.take_events()[0]]
    assert told == ["slurm_skipped"]


def test_dry_run_is_told_once_and_runs_no_update(tmp_path: Path) -> None:
    the_link = link(tmp_path, script(tmp_path, IDLE_BOTH), dry_run=True)
    told = []
    for _ in range(6):
        the_link.step([report("gpu01", XID), report("gpu02")])
        told += [a.message for _n, a in the_link.take_events()[0]]
    assert len(told) == 1 and told[0].startswith("dry run: would drain (ugro-health: gpu_xid")
    assert not any(c.startswith("update") for c in calls(tmp_path))


def test_stop_kills_a_hung_scontrol_at_once(tmp_path: Path) -> None:
    started = tmp_path / "started"
    hung = script(tmp_path, f"touch {started}; sleep 300")
    the_link = link(tmp_path, hung, timeout_s=120)
    the_link.start()
    the_link.submit([report("gpu01", XID)])
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    before = time.monotonic()
    the_link.stop()
    assert time.monotonic() - before < 10  # not the command's 120 s deadline
    assert the_link._thread is None


def test_an_internal_error_does_not_end_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    the_link = link(tmp_path, script(tmp_path, IDLE_BOTH))
    steps: list[int] = []

    def broken(reports: Any) -> None:
        steps.append(1)
        raise KeyError("boom")

    monkeypatch.setattr(the_link, "step", broken)
    the_link.start()
    try:
        for _ in range(2):
            the_link.submit([report("gpu01")])
            deadline = time.monotonic() + 10
            count = len(steps)
            while len(steps) == count and time.monotonic() < deadline:
                time.sleep(0.02)
        assert len(steps) == 2
        _, problems = the_link.take_events()
        assert any("internal error" in p and "KeyError" in p for p in problems)
    finally:
        the_link.stop()


def test_decide_only_for_the_acting_nodes() -> None:
    section = {"nodes": {"gpu01": {"bad": 3}, "gpu02": {"bad": 3}}, "drained": {}}
    views = {n: SlurmNode(n, frozenset({"IDLE"}), None) for n in ("gpu01", "gpu02")}
    decision = decide(
        section, views, SlurmSettings(max_drained_fraction=1.0), 0.0, acting={"gpu02"}
    )
    assert [(a.kind, a.node) for a in decision.actions] == [("drain", "gpu02")]


def test_state_after_a_drain_names_it(tmp_path: Path) -> None:
    the_link = link(tmp_path, script(tmp_path, IDLE_BOTH))
    for _ in range(2):
        the_link.step([report("gpu01", XID), report("gpu02")])
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert set(state["slurm"]["drained"]) == {"gpu01"}
    assert state["slurm"]["drained"]["gpu01"]["reason"].startswith("ugro-health: gpu_xid_fatal")
    assert state["slurm"]["actions"][-1]["action"] == "drain"
