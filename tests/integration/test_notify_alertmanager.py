"""The alertmanager channel against the real Alertmanager binary on loopback: an alert fires,
arrives at Alertmanager's webhook receiver, and resolves; an HA set with a member down still
delivers; nothing accepted is a retryable error, a refusal for good is permanent."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import alertmanager_rig
import pytest
from alertmanager_rig import AlertmanagerRig, free_port, require_alertmanager

from ugro_health.config_notify import ChannelConfig, Secret
from ugro_health.notify import http
from ugro_health.notify.alertmanager import AlertmanagerChannel, api_url
from ugro_health.notify.base import AlertNotice, DeliveryError, Notification

TIMEOUT = 10.0  # per send: generous for a loaded CI machine


@pytest.fixture(scope="module")
def am() -> Iterator[AlertmanagerRig]:
    binary = require_alertmanager()
    with AlertmanagerRig.start(binary) as rig:
        yield rig


def channel(*urls: str, **options: Any) -> AlertmanagerChannel:
    config = ChannelConfig(
        name="am",
        type="alertmanager",
        options={"urls": urls, "resend_interval": 60.0, "tls_verify": True, **options},
    )
    return AlertmanagerChannel(config)


def notification(node: str, state: str = "firing", ends_at: float | None = None) -> Notification:
    alert = AlertNotice(
        node=node,
        code="gpu_temp",
        severity="critical",
        message="GPU 0 at 91 C",
        state=state,
        starts_at=time.time() - 60,
        ends_at=ends_at,
        value=91.0,
        gpu=0,
    )
    return Notification(id=f"n-{node}", cluster="lab", created_at=time.time(), alerts=(alert,))


def of_node(node: str, status: str | None = None):
    def match(alert: dict[str, Any]) -> bool:
        return alert["labels"].get("node") == node and status in (None, alert["status"])

    return match


def active(rig: AlertmanagerRig, node: str) -> list[dict[str, Any]]:
    return [a for a in rig.alerts() if a["labels"].get("node") == node]


def test_firing_then_resolved_reaches_the_receiver_through_alertmanager(
    am: AlertmanagerRig,
) -> None:
    am_channel = channel(am.url)
    firing = notification("e2e1")
    am_channel.send(firing, TIMEOUT)
    got = am.receiver.wait_for(of_node("e2e1", "firing"))
    assert got["labels"] == {
        "alertname": "gpu_temp",
        "node": "e2e1",
        "instance": "e2e1",
        "severity": "critical",
        "cluster": "lab",
        "gpu": "0",
    }
    assert got["annotations"]["summary"] == "GPU 0 at 91 C"
    assert got["annotations"]["value"] == "91.0"
    am.wait_alerts(lambda alerts: any(a["labels"].get("node") == "e2e1" for a in alerts))
    # A resend of what still fires is the same alert to Alertmanager, not a second one.
    am_channel.send(notification("e2e1"), TIMEOUT)
    assert len(active(am, "e2e1")) == 1

    am_channel.send(notification("e2e1", "resolved", ends_at=time.time()), TIMEOUT)
    resolved = am.receiver.wait_for(of_node("e2e1", "resolved"))
    assert resolved["labels"] == got["labels"]
    am.wait_alerts(lambda alerts: not any(a["labels"].get("node") == "e2e1" for a in alerts))


def test_one_member_of_the_set_down_still_delivers(am: AlertmanagerRig) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    channel(down, am.url).send(notification("ha1"), TIMEOUT)
    am.receiver.wait_for(of_node("ha1", "firing"))
    channel(am.url, down).send(notification("ha1", "resolved", time.time()), TIMEOUT)
    am.receiver.wait_for(of_node("ha1", "resolved"))


def test_every_member_of_the_set_gets_the_alert(am: AlertmanagerRig) -> None:
    with AlertmanagerRig.start(require_alertmanager()) as second:
        channel(am.url, second.url).send(notification("ha2"), TIMEOUT)
        am.receiver.wait_for(of_node("ha2", "firing"))
        second.receiver.wait_for(of_node("ha2", "firing"))


def test_a_member_that_never_answers_does_not_hold_up_the_others(am: AlertmanagerRig) -> None:
    with socket.socket() as hung:  # listens, never accepts: the request waits for an answer
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        stuck = f"http://127.0.0.1:{hung.getsockname()[1]}"
        channel(stuck, am.url).send(notification("ha3"), timeout=2.0)
    am.receiver.wait_for(of_node("ha3", "firing"))


def test_a_member_that_answers_a_byte_at_a_time_is_cut_off_at_the_deadline() -> None:
    """Each byte comes well within the socket timeout; the whole answer would take ~8 s, and
    the send must give up at its 2 s deadline, not deliver late."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    stop = threading.Event()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def drip() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                for byte in answer:
                    if stop.wait(0.2):
                        return
                    conn.sendall(bytes([byte]))

        thread = threading.Thread(target=drip, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        try:
            # Cut off either by the channel's own deadline over its members ("in time") or by
            # http.post's deadline on the request ("within 2s"), whichever notices first.
            with pytest.raises(DeliveryError, match=r"did not answer (in time|within)") as info:
                channel(url).send(notification("drip"), timeout=2.0)
            assert not info.value.permanent
        finally:
            stop.set()
            thread.join(timeout=10)


def test_all_members_down_is_a_retryable_error_naming_each() -> None:
    ports = [free_port(), free_port()]
    with pytest.raises(DeliveryError) as info:
        channel(*(f"http://127.0.0.1:{p}" for p in ports)).send(notification("x"), TIMEOUT)
    message = str(info.value)
    assert not info.value.permanent
    assert "all 2 Alertmanagers failed" in message and "\n" not in message
    assert all(f"127.0.0.1:{p}" in message for p in ports)


def test_a_malformed_request_is_refused_for_good(am: AlertmanagerRig) -> None:
    """Alertmanager answers 400 to a body it cannot use; the shared POST makes it permanent."""
    bad = b'[{"labels": {"1bad": "x"}}]'
    with pytest.raises(DeliveryError, match="HTTP 400") as info:
        http.post(api_url(am.url), bad, {"Content-Type": "application/json"}, TIMEOUT)
    assert info.value.permanent


def test_refused_for_good_by_every_member_is_permanent_unless_one_may_recover(
    am: AlertmanagerRig,
) -> None:
    wrong_prefix = f"{am.url}/no-such-prefix"  # Alertmanager answers 404
    with pytest.raises(DeliveryError, match="HTTP 404") as info:
        channel(wrong_prefix).send(notification("p1"), TIMEOUT)
    assert info.value.permanent
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DeliveryError) as info:
        channel(wrong_prefix, down).send(notification("p1"), TIMEOUT)
    assert not info.value.permanent  # the member that is down may come back


@pytest.mark.slow
def test_basic_auth_against_alertmanager_web_config(monkeypatch: pytest.MonkeyPatch) -> None:
    with AlertmanagerRig.start(require_alertmanager(), basic_auth=("ugro", "s3cret")) as rig:
        monkeypatch.setenv("AM_PASSWORD", "s3cret")
        good = channel(rig.url, username="ugro", password=Secret(env="AM_PASSWORD"))
        good.send(notification("auth1"), TIMEOUT)
        rig.receiver.wait_for(of_node("auth1", "firing"))

        monkeypatch.setenv("AM_PASSWORD", "wrong-password")
        with pytest.raises(DeliveryError, match="HTTP 401") as info:
            good.send(notification("auth2"), TIMEOUT)
        assert info.value.permanent
        assert "wrong-password" not in str(info.value)


def test_a_missing_binary_fails_under_ci_and_skips_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alertmanager_rig, "CANDIDATES", ("no-such-alertmanager",))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_alertmanager()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_alertmanager()
