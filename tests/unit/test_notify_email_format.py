"""The e-mail channel's mail, without a server: subject, body, headers, hostile text."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from ugro_health.config_notify import ChannelConfig
from ugro_health.notify.base import AlertNotice, DeliveryError, Notification
from ugro_health.notify.email import (
    SUBJECT_MAX,
    EmailChannel,
    body,
    build_message,
    message_id,
    one_line,
    subject,
)

T0 = 1_764_000_000.0  # 2025-11-24 16:00:00 UTC


def alert(node: str = "gpu1", **changes: object) -> AlertNotice:
    values: dict[str, object] = {
        "node": node,
        "code": "gpu_temp_critical",
        "severity": "critical",
        "message": "GPU 0 temperature 91 C",
        "state": "firing",
        "starts_at": T0,
        "gpu": 0,
    }
    values.update(changes)
    return AlertNotice(**values)  # type: ignore[arg-type]


def note(*alerts: AlertNotice, cluster: str = "default", **changes: object) -> Notification:
    return Notification(
        id="n-1",
        cluster=cluster,
        created_at=T0 + 5,
        alerts=alerts,
        **changes,  # type: ignore[arg-type]
    )


def reparsed(message: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_subjects() -> None:
    assert subject(note(alert())) == "[ugro-health] CRITICAL gpu1: GPU 0 temperature 91 C"
    resolved = alert(state="resolved", ends_at=T0 + 60)
    assert subject(note(resolved)) == "[ugro-health] RESOLVED gpu1: GPU 0 temperature 91 C"
    assert subject(note(alert(), alert("gpu2", severity="warning"), cluster="prod")) == (
        "[ugro-health prod] CRITICAL 2 alerts on 2 node(s): gpu1, gpu2"
    )
    assert subject(note(test=True)) == "[ugro-health] test notification from ugro-health"


def test_subject_is_one_bounded_line() -> None:
    long = alert(message="x" * 500 + "\n" + "y")
    line = subject(note(long))
    assert len(line) == SUBJECT_MAX and line.endswith("...")
    hostile = alert(message="a\rb\nc\u2028d\x00e\x1b[31mf\tg")
    assert subject(note(hostile)) == "[ugro-health] CRITICAL gpu1: a b c d e [31mf g"


def test_one_line() -> None:
    assert one_line("  two\r\n lines\u2029and\x85more  ") == "two lines and more"
    assert one_line("température 91 °C ✓") == "température 91 °C ✓"


def test_body_lists_every_alert_with_utc_times_and_values() -> None:
    resolved = alert("gpu2", state="resolved", ends_at=T0 + 90, value=93.5, gpu=None)
    repeat = alert("gpu3", repeat=True, value="n/a", gpu=None, severity="warning")
    text = body(note(alert(value=91.0), resolved, repeat, cluster="prod"), "ops-mail")
    assert text.splitlines() == [
        "CRITICAL 3 alerts on 3 node(s): gpu1, gpu2, gpu3",
        "Cluster: prod",
        "",
        "[CRITICAL] gpu1 GPU 0 GPU 0 temperature 91 C (gpu_temp_critical)",
        "    since 2025-11-24 16:00:00 UTC, value 91",
        "[CRITICAL] gpu2 resolved: GPU 0 temperature 91 C (gpu_temp_critical)",
        "    from 2025-11-24 16:00:00 UTC to 2025-11-24 16:01:30 UTC, value 93.5",
        "[WARNING] gpu3 still firing: GPU 0 temperature 91 C (gpu_temp_critical)",
        "    since 2025-11-24 16:00:00 UTC, value n/a",
        "",
        "-- ",
        "Sent by ugro-health at 2025-11-24 16:00:05 UTC (notification n-1, channel ops-mail).",
    ]


def test_test_notification_says_so() -> None:
    text = body(note(test=True), "ops-mail")
    assert "This is a test from ugro-health: channel ops-mail delivers mail." in text


def test_headers() -> None:
    message = reparsed(
        build_message(note(alert()), "Monitor <m@example.test>", ["a@example.test"], "ops", T0)
    )
    assert message["From"] == "Monitor <m@example.test>"
    assert message["To"] == "a@example.test"
    assert parsedate_to_datetime(message["Date"]).timestamp() == T0
    assert message["Message-ID"] == "<ugro-health.n-1.ops@example.test>"
    assert message["X-Ugro-Notification-Id"] == "n-1"
    assert message["X-Ugro-Status"] == "firing"
    assert message["X-Ugro-Severity"] == "critical"
    assert message["Auto-Submitted"] == "auto-generated"


def test_message_id_is_stable_and_safe() -> None:
    odd = Notification(id="a b\r\n<c>", cluster="x", created_at=T0, alerts=())
    first = message_id(odd, "ops", "m@example.test")
    assert first == message_id(odd, "ops", "m@example.test")
    assert first == "<ugro-health.a-b---c-.ops@example.test>"
    assert message_id(odd, "ops", "no-domain") == "<ugro-health.a-b---c-.ops@ugro-health.invalid>"


def test_utf8_survives_and_nothing_is_injected() -> None:
    hostile = alert(message="température 91 °C\r\nBcc: victim@example.test\r\n\r\nforged")
    raw = build_message(note(hostile), "m@example.test", ["a@example.test"], "ops").as_bytes()
    assert raw.isascii()  # 7-bit clean: any server takes it
    message = reparsed(build_message(note(hostile), "m@example.test", ["a@example.test"], "ops"))
    assert message["Bcc"] is None
    assert message["Subject"] == (
        "[ugro-health] CRITICAL gpu1: température 91 °C Bcc: victim@example.test forged"
    )
    assert "température 91 °C Bcc: victim@example.test forged" in message.get_content()


def test_plain_ascii_body_stays_readable() -> None:
    raw = build_message(note(alert()), "m@example.test", ["a@example.test"], "ops").as_bytes()
    assert b"[CRITICAL] gpu1 GPU 0 GPU 0 temperature 91 C (gpu_temp_critical)" in raw


@pytest.mark.parametrize("to", [("ops@example.test\r\nBcc: x@example.test",), ("not an address",)])
def test_bad_addresses_are_refused_for_good(to: tuple[str, ...]) -> None:
    options = {"host": "127.0.0.1", "port": 9, "from": "m@example.test", "to": to}
    mail = EmailChannel(ChannelConfig(name="ops", type="email", options=options))
    with pytest.raises(DeliveryError) as info:
        mail.send(note(alert()), 5.0)
    assert info.value.permanent and str(info.value).startswith("cannot write the mail:")


def test_defaults() -> None:
    options = {"host": "smtp.example.test", "from": "m@example.test", "to": ("a@example.test",)}
    mail = EmailChannel(ChannelConfig(name="ops", type="email", options=options))
    assert (mail.port, mail.tls, mail.verify, mail.timeout) == (587, "starttls", True, 30.0)
    implicit = EmailChannel(
        ChannelConfig(name="ops", type="email", options={**options, "tls": "implicit"})
    )
    assert implicit.port == 465


def test_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    options = {
        "host": "127.0.0.1",
        "port": 9,
        "from": "m@example.test",
        "to": ("a@example.test",),
        "ca_file": str(tmp_path / "missing-ca.pem"),
    }
    mail = EmailChannel(ChannelConfig(name="ops", type="email", options=options))
    with pytest.raises(DeliveryError) as info:
        mail.send(note(alert()), 5.0)
    assert str(info.value) == f"ca_file {tmp_path / 'missing-ca.pem'}: No such file or directory"
