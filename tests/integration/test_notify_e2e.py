"""Notifications end to end through ``ugro-health check`` run as cron would, one process a run.

The receivers are real servers on loopback (``HttpReceiver``, aiosmtpd); the alerts come from a
local node whose thresholds force them, or from nodes whose SSH port refuses connections. What
is asserted is what the receivers got: once per alert, its resolution once, in order, nothing
lost when a receiver fails, answers 429, hangs or is down for a while; one message per run for
a whole dead rack; silenced alerts shown as silenced and told once the silence ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_receiver import HttpReceiver, Reply
from notify_e2e_helpers import (
    CALM,
    DISK_CRIT,
    DISK_WARN,
    alert_states,
    check,
    check_states,
    hook,
    outbox,
    queued_ids,
    state_dir,
    told,
    wait_due,
    write_cluster,
)
from smtp_rig import PASSWORD, USER, Inbox, authenticator, make_ca, refused_port, smtp_server

ROOT_CRIT = "local1/disk_critical"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as server:
        yield server


# --- the lifecycle across cron runs -------------------------------------------------------------


def test_cron_checks_notify_a_critical_once_and_its_resolution_once(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    write_cluster(tmp_path, [hook(receiver)], thresholds=DISK_CRIT)
    for _run in range(3):
        assert check_states(tmp_path)[ROOT_CRIT] == "firing"
    assert len(receiver.received) == 1  # three runs, one notification
    ((_id, alerts),) = told(receiver)
    assert alerts == [("local1", "disk_critical", "firing")]
    assert receiver.delivered()[0].json()["cluster"] == "e2e"

    write_cluster(tmp_path, [hook(receiver)], thresholds=CALM)  # the disk is fine again
    assert ROOT_CRIT not in check_states(tmp_path)
    assert len(told(receiver)) == 1  # one clean run: not yet resolved (resolve_after: 2)
    check(tmp_path)
    check(tmp_path)
    assert [a for _id, a in told(receiver)] == [
        [("local1", "disk_critical", "firing")],
        [("local1", "disk_critical", "resolved")],
    ]
    resolved = receiver.delivered()[1].json()["alerts"][0]
    assert resolved["ends_at"] is not None
    assert outbox(tmp_path)["entries"] == [] and outbox(tmp_path)["sent"] == 2


def test_a_warning_fires_on_its_second_consecutive_check(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    write_cluster(tmp_path, [hook(receiver)], thresholds=DISK_WARN)
    assert check_states(tmp_path)["local1/disk_warning"] == "pending"
    assert receiver.received == []
    assert check_states(tmp_path)["local1/disk_warning"] == "firing"
    check(tmp_path)
    assert alert_states(receiver) == [["firing"]]
    assert receiver.delivered()[0].json()["severity"] == "warning"


def test_no_record_shows_the_states_and_sends_nothing(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    write_cluster(tmp_path, [hook(receiver)], thresholds=DISK_CRIT)
    assert check_states(tmp_path, "--no-record")[ROOT_CRIT] == "firing"
    assert check_states(tmp_path, "--no-record")[ROOT_CRIT] == "firing"
    assert receiver.received == []
    assert not (state_dir(tmp_path) / "outbox").exists() or queued_ids(tmp_path) == []
    check(tmp_path)  # nothing was told: the first recorded run is the one that notifies
    assert alert_states(receiver) == [["firing"]]


# --- receivers that fail ----------------------------------------------------------------------


def test_a_receiver_answering_500_gets_it_again_once_it_recovers(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    write_cluster(tmp_path, [hook(receiver)], thresholds=DISK_CRIT)
    receiver.reply(Reply(500))
    result = check(tmp_path)
    assert "notify hook: HTTP 500" in result.stderr and "1 queued" in result.stderr
    box = outbox(tmp_path)
    assert [e["attempts"] for e in box["entries"]] == [1] and "500" in box["last_error"]
    queued = queued_ids(tmp_path)

    receiver.reply(Reply(200))
    check(tmp_path)  # not due yet (backoff): kept, not lost, not sent twice
    assert queued_ids(tmp_path) == queued
    wait_due(tmp_path)
    check(tmp_path)
    assert [(r.status, r.json()["id"]) for r in receiver.received] == [
        (500, queued[0]),
        (200, queued[0]),
    ]
    assert queued_ids(tmp_path) == [] and outbox(tmp_path)["sent"] == 1


def test_a_429_is_retried_after_its_retry_after(tmp_path: Path, receiver: HttpReceiver) -> None:
    write_cluster(tmp_path, [hook(receiver)], thresholds=DISK_CRIT)
    receiver.script(Reply(429, headers={"Retry-After": "1"}))
    assert "HTTP 429" in check(tmp_path).stderr
    (entry,) = outbox(tmp_path)["entries"]
    # The receiver's 1 s, not the 5 s backoff a failure without Retry-After waits.
    assert entry["next_try"] - outbox(tmp_path)["last_error_at"] == pytest.approx(1.0, abs=0.1)
    wait_due(tmp_path)
    check(tmp_path)
    assert [r.status for r in receiver.received] == [429, 200]
    assert told(receiver)[0][0] == entry["n"]["id"]
    assert queued_ids(tmp_path) == []


@pytest.mark.slow
def test_a_hanging_receiver_does_not_hang_check(tmp_path: Path, receiver: HttpReceiver) -> None:
    # The channel would wait 60 s; the check waits notify.check_wait (2 s) and leaves it queued.
    write_cluster(tmp_path, [hook(receiver, timeout=60)], thresholds=DISK_CRIT, check_wait=2)
    receiver.reply(Reply(hang=True))
    started = time.monotonic()
    result = check(tmp_path, timeout=120)
    assert time.monotonic() - started < 40  # generous: 2 s of wait, the rest is a loaded box
    assert result.returncode == 2
    receiver.wait_for(1)
    (queued,) = queued_ids(tmp_path)

    receiver.reply(Reply(200))
    receiver.release()
    wait_due(tmp_path)
    check(tmp_path)
    assert [r.json()["id"] for r in receiver.received] == [queued, queued]  # at least once
    assert [r.status for r in receiver.received] == [None, 200]
    assert queued_ids(tmp_path) == []


@pytest.mark.slow
def test_a_receiver_down_for_a_while_gets_everything_in_order(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.down()
    channels = [hook(receiver)]
    for thresholds in (DISK_CRIT, CALM, DISK_CRIT):  # firing, resolved, firing again
        write_cluster(tmp_path, channels, thresholds=thresholds, alerts={"resolve_after": 1})
        check(tmp_path)
    box = outbox(tmp_path)
    assert len(box["entries"]) == 3 and box["dropped"] == 0  # the depth, visible on disk
    assert "not reached" in box["last_error"]
    queued = queued_ids(tmp_path)
    assert [e["n"]["status"] for e in box["entries"]] == ["firing", "resolved", "firing"]

    receiver.up()
    wait_due(tmp_path)
    check(tmp_path)  # still firing: nothing new to tell, the queue is delivered
    assert [i for i, _alerts in told(receiver)] == queued
    assert alert_states(receiver) == [["firing"], ["resolved"], ["firing"]]
    assert queued_ids(tmp_path) == []


# --- one message per run for a dead rack ----------------------------------------------------------


def dead_rack(home: Path, count: int) -> list[dict[str, Any]]:
    """``count`` nodes whose SSH port refuses: each node_unreachable, CRITICAL at once."""
    (home / "kh").touch()
    port = refused_port()
    return [
        {"name": f"rack1-n{i}", "host": "127.0.0.1", "port": port, "transport": "ssh"}
        for i in range(1, count + 1)
    ]


def test_a_dead_rack_is_one_slack_message_and_one_mail_in_spite_of_a_429(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    certs = make_ca(tmp_path)
    inbox = Inbox()
    with smtp_server(
        inbox,
        tls_context=certs.server_context(),
        require_starttls=True,
        authenticator=authenticator,
    ) as smtp_port:
        env = {"UGRO_E2E_SLACK_URL": receiver.url("/services/T0/B0/x"), "UGRO_E2E_SMTP": PASSWORD}
        mail = {
            "name": "mail",
            "type": "email",
            "host": "127.0.0.1",
            "port": smtp_port,
            "ca_file": str(certs.ca),
            "username": USER,
            "password": {"env": "UGRO_E2E_SMTP"},
            "from": "ugro-health <monitor@example.test>",
            "to": ["ops@example.test"],
            "codes": ["node_*"],
        }
        chat = {"name": "chat", "type": "slack", "url": {"env": "UGRO_E2E_SLACK_URL"}}
        ssh = {"connect_timeout": 3, "ssh_config": "", "known_hosts": str(tmp_path / "kh")}
        write_cluster(tmp_path, [chat, mail], nodes=dead_rack(tmp_path, 4), extra={"ssh": ssh})
        receiver.script(Reply(429, headers={"Retry-After": "1"}))  # Slack's rate limit
        result = check(tmp_path, env=env)
        assert "notify chat: HTTP 429" in result.stderr and "notify mail" not in result.stderr
        wait_due(tmp_path, "chat")
        for _run in range(2):
            result = check(tmp_path, env=env)
            assert result.returncode == 2 and "notify" not in result.stderr, result.stderr
    names = [f"rack1-n{i}" for i in range(1, 5)]
    # one message for four nodes: refused once, sent again after Retry-After, then never again
    limited, slack = receiver.received
    assert (limited.status, slack.status, limited.body) == (429, 200, slack.body)
    text = json.dumps(slack.json())
    assert all(name in text for name in names)
    assert "4 alerts on 4 node(s)" in slack.json()["text"]
    (got,) = inbox.received
    assert got.tls and got.login == USER.encode()
    subject = got.message["Subject"]
    assert subject.startswith("[ugro-health e2e] CRITICAL 4 alerts on 4 node(s)")
    body = got.message.get_content()
    assert all(name in body for name in names)


# --- silences ------------------------------------------------------------------------------------


def add_silence(home: Path, ends_in_s: float) -> None:
    """A silence written straight into state.json, as ``ugro-health silence add`` would."""
    path = state_dir(home) / "state.json"
    state = json.loads(path.read_text())
    now = time.time()
    state["silences"] = {
        "s1": {
            "id": "s1",
            "nodes": ["local*"],
            "codes": ["disk_*"],
            "starts_at": now - 60,
            "ends_at": now + ends_in_s,
            "comment": "disk swap",
        }
    }
    path.write_text(json.dumps(state))


def test_a_silenced_alert_is_shown_not_told_and_told_once_the_silence_ends(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    write_cluster(tmp_path, [hook(receiver)], thresholds=CALM)
    check(tmp_path)  # state.json exists
    add_silence(tmp_path, ends_in_s=7200)
    write_cluster(tmp_path, [hook(receiver)], thresholds=DISK_CRIT)
    for _run in range(2):
        assert check_states(tmp_path)[ROOT_CRIT] == "silenced"
    assert receiver.received == []

    add_silence(tmp_path, ends_in_s=-1)  # expired, and the disk is still full
    assert check_states(tmp_path)[ROOT_CRIT] == "firing"
    check(tmp_path)
    assert alert_states(receiver) == [["firing"]]


def test_an_overflowing_outbox_drops_the_oldest_and_counts_it(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.down()
    for thresholds in (DISK_CRIT, CALM, DISK_CRIT):  # firing, resolved, firing: one too many
        write_cluster(
            tmp_path,
            [hook(receiver)],
            thresholds=thresholds,
            alerts={"resolve_after": 1},
            outbox_max=2,
        )
        result = check(tmp_path)
    assert "notify: outbox full, 1 oldest notification(s) dropped" in result.stderr
    box = outbox(tmp_path)
    assert box["dropped"] == 1
    assert [e["n"]["status"] for e in box["entries"]] == ["resolved", "firing"]
    queued = queued_ids(tmp_path)

    receiver.up()
    wait_due(tmp_path)
    check(tmp_path)
    assert [i for i, _alerts in told(receiver)] == queued
    assert alert_states(receiver) == [["resolved"], ["firing"]]
    assert outbox(tmp_path)["dropped"] == 1


def test_a_flapping_alert_is_told_once_as_flapping_then_left_alone(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    rules = {"resolve_after": 1, "flap_changes": 1}
    for thresholds in (DISK_CRIT, CALM) * 2:  # raised and cleared at every run
        write_cluster(tmp_path, [hook(receiver)], thresholds=thresholds, alerts=rules)
        check(tmp_path)
    # firing, resolved; the second change makes it flapping: one notice, then nothing
    assert alert_states(receiver) == [["firing"], ["resolved"], ["flapping"]]
    assert len(receiver.received) == 3
    write_cluster(tmp_path, [hook(receiver)], thresholds=DISK_CRIT, alerts=rules)
    assert check_states(tmp_path)[ROOT_CRIT] == "flapping"
    assert len(receiver.received) == 3
