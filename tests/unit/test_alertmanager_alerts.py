"""The alertmanager channel's documents: labels, annotations, and the endsAt rules (firing alerts
a few resend intervals ahead, resolved ones at their resolution), built by ``am_alerts``."""

from __future__ import annotations

import base64
import textwrap
from datetime import datetime

import pytest

from ugro_health.config import parse_config
from ugro_health.config_notify import ChannelConfig
from ugro_health.notify.alertmanager import AlertmanagerChannel, am_alerts, api_url
from ugro_health.notify.base import AlertNotice, DeliveryError, Notification

NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def at(when: float):
    """Equal to the millisecond (a relative tolerance would allow minutes at epoch scale)."""
    return pytest.approx(when, rel=0, abs=1e-3)


def notice(**changes) -> AlertNotice:
    base = dict(
        node="gpu1",
        code="gpu_temp",
        severity="critical",
        message="GPU 0 at 91 C",
        state="firing",
        starts_at=NOW - 300,
    )
    return AlertNotice(**{**base, **changes})


def notification(*alerts: AlertNotice, test: bool = False) -> Notification:
    return Notification(id="n1", cluster="lab", created_at=NOW, alerts=alerts, test=test)


def channel(extra: str = "") -> ChannelConfig:
    text = f"""
        nodes:
          - name: gpu1
        notify:
          channels:
            - name: am
              type: alertmanager
              urls: [http://127.0.0.1:9093]
{textwrap.indent(textwrap.dedent(extra), " " * 14)}
        """
    config = parse_config(textwrap.dedent(text), "cluster.yaml")
    return config.notify.channels[0]


def test_firing_alert_has_identity_labels_and_message_annotations() -> None:
    (doc,) = am_alerts(notification(notice(gpu=0, value=91.0)), NOW, 60.0)
    assert doc["labels"] == {
        "alertname": "gpu_temp",
        "node": "gpu1",
        "instance": "gpu1",
        "severity": "critical",
        "cluster": "lab",
        "gpu": "0",
    }
    assert doc["annotations"]["summary"] == "GPU 0 at 91 C"
    assert "gpu1" in doc["annotations"]["description"]
    assert doc["annotations"]["value"] == "91.0"
    assert doc["annotations"]["state"] == "firing"
    assert all(isinstance(v, str) for v in {**doc["labels"], **doc["annotations"]}.values())


def test_unset_gpu_subject_and_value_are_left_out_and_subject_is_a_label() -> None:
    (plain,) = am_alerts(notification(notice()), NOW, 60.0)
    assert "gpu" not in plain["labels"] and "subject" not in plain["labels"]
    assert "value" not in plain["annotations"]
    (mount,) = am_alerts(notification(notice(code="disk_full", subject="/data")), NOW, 60.0)
    assert mount["labels"]["subject"] == "/data"


def test_firing_alert_ends_four_resend_intervals_after_the_send() -> None:
    (doc,) = am_alerts(notification(notice()), NOW, 60.0)
    assert epoch(doc["startsAt"]) == at(NOW - 300)
    assert epoch(doc["endsAt"]) == at(NOW + 240)
    (later,) = am_alerts(notification(notice()), NOW + 60, 30.0)
    assert epoch(later["startsAt"]) == at(NOW - 300)  # the same alert, re-sent
    assert epoch(later["endsAt"]) == at(NOW + 60 + 120)


def test_a_firing_alert_queued_for_an_hour_is_still_active_when_it_arrives() -> None:
    """endsAt counts from the send, not from when the outbox took the notification in."""
    queued = Notification(id="old", cluster="lab", created_at=NOW - 3600, alerts=(notice(),))
    (doc,) = am_alerts(queued, NOW, 60.0)
    assert epoch(doc["endsAt"]) == at(NOW + 240)


def test_resolved_alert_ends_when_it_resolved_not_at_the_send() -> None:
    resolved = notice(state="resolved", ends_at=NOW - 30)
    (doc,) = am_alerts(notification(resolved), NOW, 60.0)
    assert epoch(doc["endsAt"]) == at(NOW - 30)
    assert doc["annotations"]["state"] == "resolved"
    # Same labels as when it fired: Alertmanager matches the two by their fingerprint.
    (fired,) = am_alerts(notification(notice()), NOW - 60, 60.0)
    assert doc["labels"] == fired["labels"]


def test_resolved_without_a_time_ends_now_and_never_before_it_started() -> None:
    (doc,) = am_alerts(notification(notice(state="resolved")), NOW, 60.0)
    assert epoch(doc["endsAt"]) == at(NOW)
    # A clock stepped back: Alertmanager refuses endsAt < startsAt with HTTP 400.
    skewed = notice(state="resolved", starts_at=NOW + 10, ends_at=NOW + 5)
    (doc,) = am_alerts(notification(skewed), NOW, 60.0)
    assert epoch(doc["endsAt"]) >= epoch(doc["startsAt"])


def test_flapping_is_an_annotation_and_the_alert_stays_active() -> None:
    (doc,) = am_alerts(notification(notice(state="flapping")), NOW, 60.0)
    assert doc["annotations"]["state"] == "flapping"
    assert "state" not in doc["labels"]
    assert epoch(doc["endsAt"]) > NOW


def test_one_document_per_alert_of_a_group() -> None:
    group = notification(notice(node="gpu1"), notice(node="gpu2"), notice(node="gpu3"))
    assert [d["labels"]["node"] for d in am_alerts(group, NOW, 60.0)] == ["gpu1", "gpu2", "gpu3"]


def test_a_test_notification_with_nothing_firing_sends_one_expiring_info_alert() -> None:
    (doc,) = am_alerts(notification(test=True), NOW, 60.0)
    assert doc["labels"]["severity"] == "info"
    assert doc["labels"]["cluster"] == "lab"
    assert doc["annotations"]["test"] == "true"
    assert epoch(doc["endsAt"]) == at(NOW + 240)
    assert am_alerts(notification(), NOW, 60.0) == []


def test_api_url_appends_the_alerts_path_once() -> None:
    assert api_url("http://am:9093") == "http://am:9093/api/v2/alerts"
    assert api_url("http://am:9093/prefix/") == "http://am:9093/prefix/api/v2/alerts"
    assert api_url("http://am:9093/api/v2/alerts") == "http://am:9093/api/v2/alerts"


def test_channel_reads_its_options_with_defaults() -> None:
    am = AlertmanagerChannel(channel())
    assert am.name == "am" and am.urls == ("http://127.0.0.1:9093",)
    assert am.resend_interval == 60.0 and am.tls_verify is True
    assert AlertmanagerChannel(channel("resend_interval: 2m")).resend_interval == 120.0


def test_basic_auth_header_from_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_PASSWORD", "s3cret")
    am = AlertmanagerChannel(channel("username: ugro\npassword: {env: AM_PASSWORD}"))
    header = am._auth()["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")) == b"ugro:s3cret"
    assert "s3cret" not in repr(am.password) and "s3cret" not in str(am.password)


def test_bearer_token_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_TOKEN", "tok-123")
    am = AlertmanagerChannel(channel("bearer_token: {env: AM_TOKEN}"))
    assert am._auth() == {"Authorization": "Bearer tok-123"}


def test_unreadable_secret_is_a_delivery_error_without_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AM_TOKEN", raising=False)
    am = AlertmanagerChannel(channel("bearer_token: {env: AM_TOKEN}"))
    with pytest.raises(DeliveryError, match="AM_TOKEN is not set") as info:
        am.send(notification(notice()), timeout=1.0)
    assert not info.value.permanent  # the file or variable may be put right: keep it queued
    assert "\n" not in str(info.value)


def test_both_auth_kinds_is_a_permanent_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_TOKEN", "tok-123")
    monkeypatch.setenv("AM_PASSWORD", "s3cret")
    am = AlertmanagerChannel(
        channel("username: u\npassword: {env: AM_PASSWORD}\nbearer_token: {env: AM_TOKEN}")
    )
    with pytest.raises(DeliveryError, match="both set") as info:
        am.send(notification(notice()), timeout=1.0)
    assert info.value.permanent
    assert "tok-123" not in str(info.value) and "s3cret" not in str(info.value)
