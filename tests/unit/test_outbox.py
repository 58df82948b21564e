"""The outbox and its delivery with a recording channel (the Channel seam; the real channels have
their own tests against real servers), and ``Alerting.change()`` over a real StateStore."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ugro_health.config import Config, NodeConfig
from ugro_health.config_notify import ChannelConfig, NotifySettings
from ugro_health.engine.alerting import Alerting
from ugro_health.model import Alert, GpuSample, NodeReport, NodeSample, Severity, Status
from ugro_health.notify import deliver
from ugro_health.notify.base import AlertNotice, DeliveryError, Notification
from ugro_health.notify.deliver import Deliverer, deliver_until
from ugro_health.notify.outbox import BACKOFF_MAX_S, RETRY_AFTER_MAX_S, Outbox
from ugro_health.store._fs import StoreError
from ugro_health.store.state import StateStore

T0 = 1_800_000_000.0
HOOK = ChannelConfig(name="hook", type="webhook", options={"url": "http://x", "timeout": 5.0})


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A Channel that keeps what it was sent; ``fail`` decides, per send, what it raises."""

    name = "hook"

    def __init__(self, box: Outbox | None = None, fail=None, on_send=None) -> None:
        self.box = box
        self.fail = fail
        self.on_send = on_send
        self.sent: list[str] = []
        self.queued_while_sending: list[bool] = []

    def send(self, notification: Notification, timeout: float) -> None:
        if self.box is not None:  # at least once: still in the outbox while it is sent
            ids = [e.notification.id for e in self.box.entries()]
            self.queued_while_sending.append(notification.id in ids)
        if self.on_send is not None:
            self.on_send(notification)
        if self.fail is not None:
            error = self.fail(notification)
            if error is not None:
                raise error
        self.sent.append(notification.id)


def note(i: int | str, created: float = T0) -> Notification:
    alert = AlertNotice("gpu1", "gpu_temp_critical", "critical", f"GPU 0: 9{i} C", "firing", T0)
    return Notification(str(i), "lab", created, (alert,))


def box(tmp_path: Path, clock: Clock | None = None, most: int = 1000) -> Outbox:
    return Outbox(tmp_path, "hook", most, clock or Clock())


def far() -> float:
    return time.monotonic() + 120.0


# --- the outbox --------------------------------------------------------------------------------


def test_delivery_is_in_order_and_leaves_the_outbox_empty(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(1), note(2)])
    outbox.put([note(3)])
    channel = Recorder(outbox)
    result = deliver_until(HOOK, outbox, far(), channel)
    assert channel.sent == ["1", "2", "3"]
    assert (result.sent, result.error, result.queued) == (3, None, 0)
    doc = outbox.load()
    assert doc["entries"] == [] and doc["sent"] == 3 and doc["last_success"] == T0


def test_a_notification_leaves_the_outbox_only_after_it_was_sent(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(1), note(2)])
    boom = RuntimeError("channel bug")
    channel = Recorder(outbox, fail=lambda n: boom if n.id == "2" else None)
    result = deliver_until(HOOK, outbox, far(), channel)
    assert channel.queued_while_sending == [True, True]
    assert channel.sent == ["1"]
    assert [e.notification.id for e in outbox.entries()] == ["2"]  # kept for a retry
    assert result.error is not None and "RuntimeError: channel bug" in result.error


def test_a_failure_is_retried_with_backoff_and_the_queue_waits_behind_it(tmp_path: Path) -> None:
    clock = Clock()
    outbox = box(tmp_path, clock)
    outbox.put([note(1), note(2)])
    failing = True
    channel = Recorder(outbox, fail=lambda n: DeliveryError("HTTP 500") if failing else None)
    result = deliver_until(HOOK, outbox, far(), channel)
    assert result.error == "HTTP 500" and result.sent == 0 and result.queued == 2
    head = outbox.entries()[0]
    assert head.attempts == 1 and T0 + 4.5 <= head.next_try <= T0 + 5.5
    assert head.last_error == "HTTP 500"
    assert deliver_until(HOOK, outbox, far(), channel).sent == 0  # not due yet: not tried
    assert outbox.entries()[0].attempts == 1
    clock.now = head.next_try
    deliver_until(HOOK, outbox, far(), channel)
    second = outbox.entries()[0]
    assert second.attempts == 2 and clock.now + 9 <= second.next_try <= clock.now + 11
    failing = False
    clock.now = second.next_try
    assert deliver_until(HOOK, outbox, far(), channel).sent == 2
    assert channel.sent == ["1", "2"]


def test_backoff_is_capped(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(1)])
    for _ in range(20):
        outbox.failed("1", "down")
    entry = outbox.entries()[0]
    assert entry.attempts == 20
    assert T0 + 0.9 * BACKOFF_MAX_S <= entry.next_try <= T0 + 1.1 * BACKOFF_MAX_S


@pytest.mark.parametrize(
    ("asked", "waited"), [(30.0, 30.0), (0.0, 0.0), (-5.0, 0.0), (1e9, RETRY_AFTER_MAX_S)]
)
def test_retry_after_is_honoured_within_its_cap(tmp_path: Path, asked: float, waited: float):
    outbox = box(tmp_path)
    outbox.put([note(1)])
    channel = Recorder(fail=lambda n: DeliveryError("HTTP 429", retry_after=asked))
    deliver_until(HOOK, outbox, far(), channel)
    assert outbox.entries()[0].next_try == T0 + waited


def test_a_permanent_failure_is_dropped_counted_and_the_next_one_goes(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(1), note(2)])
    refused = DeliveryError("HTTP 400: bad payload", permanent=True)
    channel = Recorder(fail=lambda n: refused if n.id == "1" else None)
    first = deliver_until(HOOK, outbox, far(), channel)
    assert first.error == "HTTP 400: bad payload" and first.queued == 1
    doc = outbox.load()
    assert doc["rejected"] == 1 and doc["last_error"] == "HTTP 400: bad payload"
    deliver_until(HOOK, outbox, far(), channel)
    assert channel.sent == ["2"] and outbox.load()["sent"] == 1


def test_overflow_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    outbox = box(tmp_path, most=3)
    assert outbox.put([note(1), note(2)]) == 0
    assert outbox.put([note(3), note(4), note(5)]) == 2
    assert [e.notification.id for e in outbox.entries()] == ["3", "4", "5"]
    assert outbox.load()["dropped"] == 2
    assert outbox.put([note(6)]) == 1
    assert outbox.load()["dropped"] == 3


def test_a_damaged_outbox_is_set_aside_with_a_one_line_warning(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(1)])
    outbox.path.write_text('{"v": 1, "entries": [{"n": ')  # torn by hand
    assert outbox.entries() == []  # a reader sees an empty outbox, and changes nothing
    assert outbox.path.exists()
    outbox.put([note(2)])
    assert outbox.warning is not None and "\n" not in outbox.warning
    assert outbox.warning.startswith("outbox hook: damaged")
    aside = list(outbox.directory.glob("hook.json.corrupt-*"))
    assert len(aside) == 1 and str(aside[0]) in outbox.warning
    assert aside[0].read_text() == '{"v": 1, "entries": [{"n": '  # kept as it was
    assert [e.notification.id for e in outbox.entries()] == ["2"]
    outbox.put([note(3)])
    assert outbox.warning is None  # said once


def test_the_outbox_survives_a_new_process(tmp_path: Path) -> None:
    box(tmp_path).put([note(1), note(2)])
    assert [e.notification for e in box(tmp_path).entries()] == [note(1), note(2)]
    assert (os.stat(box(tmp_path).path).st_mode & 0o077) == 0  # private: it holds alerts


# --- one sender at a time ----------------------------------------------------------------------


def test_a_second_sender_does_not_send_while_the_first_holds_the_channel(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(1), note(2)])
    inside, release = threading.Event(), threading.Event()

    def hold(n: Notification) -> None:
        inside.set()
        assert release.wait(60)

    first = Recorder(on_send=hold)
    thread = threading.Thread(target=deliver_until, args=(HOOK, outbox, far(), first))
    thread.start()
    try:
        assert inside.wait(60)
        second = Recorder()
        other = Outbox(tmp_path, "hook", 1000, Clock())  # another process's view
        result = deliver_until(HOOK, other, far(), second)
        assert result.busy and second.sent == [] and result.queued == 2
    finally:
        release.set()
        thread.join(60)
    assert first.sent == ["1", "2"]
    with outbox.sending() as mine:
        assert mine  # released


# --- deadlines -----------------------------------------------------------------------------------


def test_deliver_until_stops_at_the_deadline(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(i) for i in range(5)])
    ticks = {"t": 0.0}
    channel = Recorder(on_send=lambda n: ticks.__setitem__("t", ticks["t"] + 4.0))
    result = deliver_until(HOOK, outbox, 10.0, channel, monotonic=lambda: ticks["t"])
    # sends at t=0 and t=4; at t=8 only 2 s are left: enough (>= MIN_SEND_S), at 12 none
    assert channel.sent == ["0", "1", "2"]
    assert result.sent == 3 and result.queued == 2 and result.error is None


def test_deliver_until_past_its_deadline_sends_nothing(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(1)])
    channel = Recorder()
    result = deliver_until(HOOK, outbox, time.monotonic() - 1, channel)
    assert channel.sent == [] and result.queued == 1


def test_deliver_until_stops_on_the_first_failure(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(i) for i in range(4)])
    channel = Recorder(fail=lambda n: DeliveryError("timed out") if n.id == "1" else None)
    result = deliver_until(HOOK, outbox, far(), channel)
    assert channel.sent == ["0"]
    assert (result.sent, result.error, result.queued) == (1, "timed out", 3)


# --- the background deliverer -------------------------------------------------------------------


def settings() -> NotifySettings:
    return NotifySettings(cluster="lab", channels=(HOOK,))


def wait_for(predicate, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)


def test_the_deliverer_sends_in_the_background_and_stops_promptly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Idle threads would sleep 10 minutes: they end at once only if stop() wakes them.
    monkeypatch.setattr(deliver, "IDLE_WAKE_S", 600.0)
    channel = Recorder()
    deliverer = Deliverer(tmp_path, settings(), {"hook": channel})
    deliverer.start()
    try:
        Outbox(tmp_path, "hook").put([note(1), note(2)])
        deliverer.kick()
        wait_for(lambda: channel.sent == ["1", "2"])
        Outbox(tmp_path, "hook").put([note(3)])
        deliverer.kick()
        wait_for(lambda: channel.sent == ["1", "2", "3"])
    finally:
        deliverer.stop(timeout=60.0)
    assert not any(t.is_alive() for t in deliverer._threads)
    assert Outbox(tmp_path, "hook").entries() == []


def test_the_deliverer_reports_a_new_error_once(tmp_path: Path) -> None:
    errors: list[tuple[str, str]] = []
    channel = Recorder(fail=lambda n: DeliveryError("connection refused", retry_after=0.0))
    deliverer = Deliverer(
        tmp_path, settings(), {"hook": channel}, lambda c, e: errors.append((c, e))
    )
    Outbox(tmp_path, "hook").put([note(1)])
    deliverer.start()
    try:
        wait_for(lambda: Outbox(tmp_path, "hook").entries()[0].attempts >= 3)
    finally:
        deliverer.stop(timeout=30.0)
    assert errors == [("hook", "connection refused")]


# --- Alerting.change(): the outbox before the state ---------------------------------------------


HOT = Alert(Severity.CRITICAL, "gpu_temp_critical", "GPU 0: 95 C", 95.0, 0)


def report(*alerts: Alert) -> NodeReport:
    sample = NodeSample(
        hostname="gpu1", gpus=(GpuSample(index=0, temp_c=95.0 if alerts else 60.0),)
    )
    status = Status.CRITICAL if alerts else Status.OK
    return NodeReport("gpu1", status, 50, T0, 0.1, sample=sample, alerts=alerts)


def config(*channels: ChannelConfig) -> Config:
    return Config(
        nodes=(NodeConfig(name="gpu1"),),
        notify=NotifySettings(cluster="lab", channels=channels or (HOOK,)),
    )


def test_notices_are_queued_before_the_state_says_they_were_told(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    alerting = Alerting(tmp_path, config(), Clock())
    seen_in_outbox: list[int] = []
    judge = alerting.change([report(HOT)], T0)

    def change(state: dict) -> None:
        judge(state)
        # inside the locked state write, before it is written: already on disk in the outbox
        seen_in_outbox.append(len(Outbox(tmp_path, "hook").entries()))
        assert "lifecycle" not in (store.load().state.get("nodes") or {}).get("gpu1", {})

    store.update(change)
    assert seen_in_outbox == [1] and alerting.queued == 1
    queued = Outbox(tmp_path, "hook").entries()[0].notification
    assert [(a.node, a.code, a.state) for a in queued.alerts] == [
        ("gpu1", "gpu_temp_critical", "firing")
    ]
    record = store.load().state["nodes"]["gpu1"]["lifecycle"]["gpu_temp_critical|0|"]
    assert record["notified"] == "firing"
    store.update(alerting.change([report(HOT)], T0 + 5))  # told once
    assert alerting.queued == 0 and len(Outbox(tmp_path, "hook").entries()) == 1


def test_an_outbox_that_cannot_be_written_fails_the_state_write(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    alerting = Alerting(tmp_path, config(), Clock())
    (tmp_path / "outbox").write_text("a file where the outbox directory should be\n")
    with pytest.raises(StoreError, match="state not saved"):
        store.update(alerting.change([report(HOT)], T0))
    assert "lifecycle" not in (store.load().state.get("nodes") or {}).get("gpu1", {})
    # repaired: the next call decides again, and the notice is not lost
    (tmp_path / "outbox").unlink()
    store.update(alerting.change([report(HOT)], T0 + 5))
    assert alerting.queued == 1
    [queued] = Outbox(tmp_path, "hook").entries()
    assert queued.notification.alerts[0].state == "firing"


AM = ChannelConfig(
    name="am", type="alertmanager", options={"urls": ["http://x"], "resend_interval": 60.0}
)


def test_alertmanager_gets_one_resend_at_a_time_every_resend_interval(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    alerting = Alerting(tmp_path, config(AM), Clock())
    am = Outbox(tmp_path, "am")

    def poll(now: float) -> list[Notification]:
        store.update(alerting.change([report(HOT)], now))
        return [e.notification for e in am.entries()]

    # The first poll: no resend yet, so one is due; it already holds the alert told in this
    # same write, queued ahead of the new notification (a harmless duplicate for Alertmanager).
    first = poll(T0)
    assert [n.resend for n in first] == [True, False]
    assert [a.state for a in first[0].alerts] == ["firing"]
    assert len(poll(T0 + 30)) == 2  # not due
    assert len(poll(T0 + 60)) == 2  # due, but the last resend is still queued: not another
    am.delivered(first[0].id)
    assert [n.resend for n in poll(T0 + 65)] == [False, True]  # due since T0 + 60
    am.delivered(am.entries()[1].notification.id)
    assert len(poll(T0 + 124)) == 1  # resent at T0 + 65: next at T0 + 125
    assert [n.resend for n in poll(T0 + 125)] == [False, True]


def test_cron_checks_each_a_new_process_queue_each_notice_once(tmp_path: Path) -> None:
    def check(now: float, *alerts: Alert) -> None:  # what one `check` run does, from scratch
        StateStore(tmp_path).update(
            Alerting(tmp_path, config(), Clock(now)).change([report(*alerts)], now)
        )

    now = T0
    for _ in range(12):
        check(now, HOT)
        now += 300
    for _ in range(12):
        check(now)
        now += 300
    queued = [e.notification for e in Outbox(tmp_path, "hook").entries()]
    assert [[a.state for a in n.alerts] for n in queued] == [["firing"], ["resolved"]]


def test_a_clock_stepped_back_does_not_stall_a_retry(tmp_path: Path) -> None:
    clock = Clock()
    outbox = box(tmp_path, clock)
    outbox.put([note(1)])
    failing = Recorder(fail=lambda n: DeliveryError("HTTP 503", retry_after=60.0))
    assert deliver_until(HOOK, outbox, far(), failing).error == "HTTP 503"
    clock.now -= 86400.0  # the wall clock is stepped back a day
    channel = Recorder()
    assert deliver_until(HOOK, outbox, far(), channel).sent == 1  # due now, not in a day
    assert channel.sent == ["1"]


def test_a_send_lock_that_cannot_be_opened_is_an_error_not_a_crash(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(1)])
    (tmp_path / "outbox" / "hook.send.lock").mkdir()  # e.g. left by another user
    result = deliver_until(HOOK, outbox, far(), Recorder())
    assert result.error is not None and "outbox hook not sent" in result.error
    assert result.queued == 1  # kept for later


def test_a_delivery_thread_survives_a_failure_and_says_so(tmp_path: Path) -> None:
    outbox = box(tmp_path)
    outbox.put([note(1)])
    lock = tmp_path / "outbox" / "hook.send.lock"
    lock.mkdir()
    errors: list[str] = []
    channel = Recorder()
    settings = NotifySettings(channels=(HOOK,))
    deliverer = Deliverer(tmp_path, settings, {"hook": channel}, lambda c, e: errors.append(e))
    deliverer.start()
    try:
        deadline = time.monotonic() + 30
        while not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert errors and "not sent" in errors[0]
        lock.rmdir()
        deliverer.kick()
        while not channel.sent and time.monotonic() < deadline:
            time.sleep(0.05)
            deliverer.kick()
        assert channel.sent == ["1"]  # the same thread, still alive, delivered it
    finally:
        deliverer.stop()


def test_a_node_removed_from_the_configuration_is_resolved_and_forgotten(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.update(Alerting(tmp_path, config(HOOK, AM), Clock()).change([report(HOT)], T0))
    renamed = Config(
        nodes=(NodeConfig(name="gpu2"),),
        notify=NotifySettings(cluster="lab", channels=(HOOK, AM)),
    )
    alerting = Alerting(tmp_path, renamed, Clock(T0 + 600))
    store.update(alerting.change([], T0 + 600))
    [firing, resolved] = [e.notification for e in Outbox(tmp_path, "hook").entries()]
    assert [(a.node, a.state) for a in firing.alerts] == [("gpu1", "firing")]
    assert [(a.node, a.state) for a in resolved.alerts] == [("gpu1", "resolved")]
    assert "no longer configured" in resolved.alerts[0].message
    assert store.load().state["nodes"]["gpu1"]["lifecycle"] == {}
    # Alertmanager hears the resolution, and is not re-sent the removed node's alert
    am = [e.notification for e in Outbox(tmp_path, "am").entries()]
    assert [(a.node, a.state) for a in am[-1].alerts] == [("gpu1", "resolved")]
    store.update(alerting.change([], T0 + 700))
    assert len(Outbox(tmp_path, "am").entries()) == len(am)  # no resend of gpu1 for ever
