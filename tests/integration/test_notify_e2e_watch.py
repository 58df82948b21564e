"""Notifications end to end through ``ugro-health watch --headless``, one real process.

A watch killed with SIGKILL while its receiver is down loses nothing: what piled up in the
outbox is delivered, in order, by the next watch. A receiver that hangs never holds up polling
or stopping. A node isolated by its breaker resolves nothing while it is skipped. Through the
real Alertmanager over the sshd rig: a node whose sshd dies is a CRITICAL that reaches
Alertmanager's receiver, and resolves there when the node comes back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alertmanager_rig import AlertmanagerRig, require_alertmanager
from cli_helpers import cli_env
from http_receiver import HttpReceiver, Reply
from notify_e2e_helpers import (
    CALM,
    alert_states,
    hook,
    make_mount,
    outbox,
    queued_ids,
    state_dir,
    told,
    wait_for,
    write_cluster,
)
from sshd_rig import SshdRig

pytestmark = pytest.mark.slow


@contextmanager
def watching(home: Path, name: str = "watch") -> Iterator[subprocess.Popen[bytes]]:
    """``watch --headless --interval 1`` in ``home``, its output in ``home/<name>.log``; at the
    end stopped with SIGTERM, after which it must exit 0 (unless the test ended it itself)."""
    log = (home / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ugro_health", "watch", "--headless", "--interval", "1"],
        cwd=home,
        env=cli_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        yield proc
    except BaseException:
        _stop(proc)
        raise
    code = _stop(proc)
    assert code in (None, 0), (home / f"{name}.log").read_text()


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, then its exit code; None if it had already ended."""
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise


def statuses(home: Path) -> list[str]:
    return [e["n"]["status"] for e in outbox(home)["entries"]]


def told_state(home: Path) -> str | None:
    """What the lifecycle in state.json says the channels were last told about the mount."""
    try:
        state = json.loads((state_dir(home) / "state.json").read_text())
    except (OSError, ValueError):
        return None
    records = state["nodes"].get("local1", {}).get("lifecycle", {}).values()
    return next((r["notified"] for r in records if r["code"] == "mount_missing"), None)


def test_watch_killed_with_a_full_outbox_loses_nothing(tmp_path: Path) -> None:
    receiver = HttpReceiver()
    receiver.down()
    node = {"name": "local1", "transport": "local", "mounts": [make_mount(tmp_path, False)]}
    write_cluster(
        tmp_path, [hook(receiver)], thresholds=CALM, nodes=[node], alerts={"resolve_after": 1}
    )
    try:
        with watching(tmp_path) as watch:
            # mount_missing fires, resolves, fires again: three notifications, none deliverable
            wait_for(lambda: statuses(tmp_path) == ["firing"], 60, "the first notification")
            make_mount(tmp_path, True)
            wait_for(lambda: len(statuses(tmp_path)) == 2, 60, "the resolution")
            make_mount(tmp_path, False)
            wait_for(lambda: len(statuses(tmp_path)) == 3, 60, "the second firing")
            # Killed once the state says so too: between the outbox write and the state write
            # a kill makes the next start tell it again (at least once), not what this tests.
            wait_for(lambda: told_state(tmp_path) == "firing", 30, "the state write")
            watch.kill()
            watch.wait(timeout=10)
        assert statuses(tmp_path) == ["firing", "resolved", "firing"]
        assert outbox(tmp_path)["entries"][0]["attempts"] >= 1  # it was tried, and kept
        queued = queued_ids(tmp_path)
        assert "NOTIFY hook:" in (tmp_path / "watch.log").read_text()

        receiver.up()
        with watching(tmp_path, "watch2"):  # the mount is still missing: nothing new to tell
            wait_for(lambda: len(receiver.delivered()) >= 3, 90, "the piled-up notifications")
            wait_for(lambda: queued_ids(tmp_path) == [], 30, "an empty outbox")
        assert [i for i, _alerts in told(receiver)] == queued  # in order, each once
        assert alert_states(receiver) == [["firing"], ["resolved"], ["firing"]]
        assert told(receiver)[0][1] == [("local1", "mount_missing", "firing")]
    finally:
        receiver.close()


def cycles(home: Path) -> int:
    return (home / "watch.log").read_text().count(" cycle ")


def test_a_hanging_receiver_never_holds_up_polling(tmp_path: Path) -> None:
    node = {"name": "local1", "transport": "local", "mounts": [make_mount(tmp_path, False)]}
    with HttpReceiver() as receiver:
        receiver.reply(Reply(hang=True))
        write_cluster(tmp_path, [hook(receiver, timeout=600)], thresholds=CALM, nodes=[node])
        with watching(tmp_path) as watch:
            receiver.wait_for(1, timeout=60)
            hung_at = cycles(tmp_path)
            wait_for(lambda: cycles(tmp_path) >= hung_at + 3, 60, "cycles beside the hung send")
            assert receiver.received[0].status is None  # still hanging: nothing answered it
            watch.send_signal(signal.SIGTERM)  # and it does not keep watch from stopping
            assert watch.wait(timeout=60) == 0
        assert queued_ids(tmp_path) != []  # not answered: still queued for the next start


@pytest.mark.ssh
def test_a_node_isolated_by_its_breaker_does_not_resolve_its_alert(
    sshd_rig: SshdRig, tmp_path: Path
) -> None:
    # Its probe answers garbage (probe_invalid); the breaker isolates it after one failure and
    # skips it from then on: nothing is learnt about it, so nothing resolves or changes.
    broken: dict[str, Any] = {
        "name": "broken",
        "host": "127.0.0.1",
        "port": sshd_rig.nodes["node1"].port,
        "user": sshd_rig.user,
        "identity_file": str(sshd_rig.key),
        "python": str(sshd_rig.garbage_python),
        "transport": "ssh",
    }
    nodes: list[dict[str, Any]] = [{"name": "local1", "transport": "local"}, broken]
    extra = {
        "ssh": {"connect_timeout": 3, "ssh_config": "", "known_hosts": str(sshd_rig.known_hosts)},
        "watch": {"failure_threshold": 1, "reset_base_s": 3600, "reset_max_s": 3600},
    }
    with HttpReceiver() as receiver:
        write_cluster(tmp_path, [hook(receiver)], nodes=nodes, extra=extra)
        with watching(tmp_path):
            receiver.wait_for(1, timeout=60)
            start = cycles(tmp_path)
            wait_for(lambda: cycles(tmp_path) >= start + 4, 60, "cycles with the node isolated")
        assert "broken" in (tmp_path / "watch.log").read_text()
        assert [a for _id, a in told(receiver)] == [[("broken", "probe_invalid", "firing")]]


# --- through the real Alertmanager over the sshd rig ----------------------------------------------


@pytest.fixture
def am() -> Iterator[AlertmanagerRig]:
    require_alertmanager()
    with AlertmanagerRig.start() as rig:
        yield rig


def rig_cluster(rig: SshdRig, home: Path, am: AlertmanagerRig) -> None:
    nodes = [
        {"name": "gpu-a", "port": rig.nodes["node1"].port},
        {"name": "gpu-b", "port": rig.nodes["am-flaky"].port},
    ]
    extra = {
        "defaults": {
            "host": "127.0.0.1",
            "user": rig.user,
            "identity_file": str(rig.key),
            "python": "/usr/bin/python3",
            "transport": "ssh",
        },
        "ssh": {
            "connect_timeout": 3,
            "command_timeout": 15,
            "ssh_config": "",
            "known_hosts": str(rig.known_hosts),
        },
        "watch": {"failure_threshold": 1000},  # keep polling the dead node: see it come back
    }
    channel = am.channel_entry(resend_interval="2s")
    write_cluster(
        home, [channel], nodes=nodes, alerts={"resolve_after": 1}, extra=extra, check_wait=5
    )


@pytest.mark.ssh
def test_a_dead_node_reaches_alertmanager_from_watch_and_resolves_there(
    sshd_rig: SshdRig, am: AlertmanagerRig, tmp_path: Path
) -> None:
    sshd_rig.start_node("am-flaky")
    rig_cluster(sshd_rig, tmp_path, am)

    def about_b(status: str) -> Callable[[dict[str, Any]], bool]:
        return lambda a: a["labels"].get("node") == "gpu-b" and a["status"] == status

    try:
        with watching(tmp_path):
            wait_for(lambda: (state_dir(tmp_path) / "state.json").exists(), 60, "a first cycle")
            sshd_rig.stop_node("am-flaky")
            firing = am.receiver.wait_for(about_b("firing"), timeout=90)
            assert firing["labels"]["alertname"] == "node_unreachable"
            assert firing["labels"]["severity"] == "critical"
            assert firing["labels"]["cluster"] == "e2e"
            sshd_rig.restart_node("am-flaky")
            resolved = am.receiver.wait_for(about_b("resolved"), timeout=90)
            assert resolved["labels"]["alertname"] == "node_unreachable"
            assert resolved["endsAt"] >= firing["startsAt"]
        # the healthy node never paged
        assert not [a for a in am.receiver.alerts() if a["labels"].get("node") == "gpu-a"]
    finally:
        sshd_rig.stop_node("am-flaky")  # the session's rig keeps only its standard nodes
