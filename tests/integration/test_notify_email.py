"""The e-mail channel against a real SMTP server (aiosmtpd) on loopback: STARTTLS and implicit
TLS with a private CA, AUTH, refusals, and servers that are down, silent or trickling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from smtp_rig import (
    LOOPBACK,
    PASSWORD,
    USER,
    Certs,
    Inbox,
    authenticator,
    make_ca,
    refused_port,
    silent_server,
    smtp_server,
    trickling_server,
)

from ugro_health.config_notify import ChannelConfig, Secret
from ugro_health.notify.base import AlertNotice, DeliveryError, Notification, alert_line
from ugro_health.notify.email import EmailChannel, message_id

T0 = 1_764_000_000.0  # 2025-11-24 16:00:00 UTC
SENDER = "ugro-health <monitor@example.test>"
TO = ("ops@example.test", "oncall@example.test")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_ca(tmp_path_factory.mktemp("smtp-ca"))


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> Secret:
    monkeypatch.setenv("UGRO_TEST_SMTP_PASSWORD", PASSWORD)
    return Secret(env="UGRO_TEST_SMTP_PASSWORD")


@pytest.fixture
def starttls_server(certs: Certs) -> Iterator[tuple[Inbox, int]]:
    """STARTTLS required, AUTH offered only once encrypted (aiosmtpd's default)."""
    inbox = Inbox()
    with smtp_server(
        inbox,
        tls_context=certs.server_context(),
        require_starttls=True,
        authenticator=authenticator,
    ) as port:
        yield inbox, port


def channel(port: int, **options: Any) -> EmailChannel:
    values: dict[str, Any] = {
        "host": LOOPBACK,
        "port": port,
        "tls": "starttls",
        "username": None,
        "password": None,
        "from": SENDER,
        "to": TO,
        "timeout": 30.0,
        "tls_verify": True,
        "ca_file": None,
    }
    values.update(options)
    return EmailChannel(ChannelConfig(name="ops-mail", type="email", options=values))


def notification(*alerts: AlertNotice, cluster: str = "default") -> Notification:
    return Notification(id="n-20251124-0001", cluster=cluster, created_at=T0 + 5, alerts=alerts)


HOT = AlertNotice(
    node="gpu1",
    code="gpu_temp_critical",
    severity="critical",
    message="GPU 0 temperature 91 °C",
    state="firing",
    starts_at=T0,
    value=91.0,
    gpu=0,
)
DISK = AlertNotice(
    node="gpu2",
    code="disk_full",
    severity="warning",
    message="/ 93% full",
    state="resolved",
    starts_at=T0 - 3600,
    ends_at=T0,
    value=93.5,
)


def send_error(mail: EmailChannel, note: Notification, timeout: float = 30.0) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        mail.send(note, timeout)
    return info.value


def test_starttls_and_login_deliver_the_mail(
    starttls_server: tuple[Inbox, int], certs: Certs, secret_env: Secret
) -> None:
    inbox, port = starttls_server
    mail = channel(port, ca_file=str(certs.ca), username=USER, password=secret_env)
    note = notification(HOT, DISK, cluster="prod")
    mail.send(note, 30.0)

    (got,) = inbox.received
    assert got.tls and got.login == USER.encode()
    assert got.mail_from == "monitor@example.test"
    assert got.rcpt_tos == list(TO)
    message = got.message
    assert message["Subject"] == "[ugro-health prod] CRITICAL 2 alerts on 2 node(s): gpu1, gpu2"
    assert message["From"] == SENDER
    assert message["To"] == ", ".join(TO)
    assert message["Message-ID"] == message_id(note, "ops-mail", SENDER)
    assert message["X-Ugro-Notification-Id"] == "n-20251124-0001"
    assert message["Auto-Submitted"] == "auto-generated"
    assert abs(parsedate_to_datetime(message["Date"]).timestamp() - time.time()) < 3600
    body = message.get_content()
    lines = body.splitlines()
    assert alert_line(HOT) in lines  # the ° sign survived the trip (quoted-printable)
    assert "    since 2025-11-24 16:00:00 UTC, value 91" in lines
    assert alert_line(DISK) in lines
    assert "    from 2025-11-24 15:00:00 UTC to 2025-11-24 16:00:00 UTC, value 93.5" in lines
    assert "Cluster: prod" in lines


def test_same_notification_keeps_its_message_id(
    starttls_server: tuple[Inbox, int], certs: Certs
) -> None:
    """A retry after a lost answer is the same mail to the receiving side, so it can fold it."""
    inbox, port = starttls_server
    inbox.refuse.clear()
    mail = channel(port, ca_file=str(certs.ca), to=("ops@example.test",))
    # no login: the server requires STARTTLS, not AUTH
    mail.send(notification(HOT), 30.0)
    mail.send(notification(HOT), 30.0)
    first, second = (m.message["Message-ID"] for m in inbox.received)
    assert first == second
    assert (
        inbox.received[0].message["Subject"]
        == "[ugro-health] CRITICAL gpu1: GPU 0 temperature 91 °C"
    )


def test_wrong_password_is_refused_for_good_and_not_shown(
    starttls_server: tuple[Inbox, int], certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, port = starttls_server
    monkeypatch.setenv("UGRO_TEST_SMTP_PASSWORD", "not-the-password")
    mail = channel(
        port,
        ca_file=str(certs.ca),
        username=USER,
        password=Secret(env="UGRO_TEST_SMTP_PASSWORD"),
    )
    error = send_error(mail, notification(HOT))
    assert error.permanent
    assert "535" in str(error) and f"refused the login of {USER}" in str(error)
    assert "not-the-password" not in str(error) and "not-the-password" not in repr(mail)
    assert inbox.received == []


def test_unset_password_variable_is_a_clear_error(
    starttls_server: tuple[Inbox, int], certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, port = starttls_server
    monkeypatch.delenv("UGRO_TEST_SMTP_PASSWORD", raising=False)
    mail = channel(
        port, ca_file=str(certs.ca), username=USER, password=Secret(env="UGRO_TEST_SMTP_PASSWORD")
    )
    error = send_error(mail, notification(HOT))
    assert (
        str(error)
        == f"password for {USER}: environment variable UGRO_TEST_SMTP_PASSWORD is not set"
    )


def test_implicit_tls_with_login(certs: Certs, tmp_path: Path) -> None:
    password_file = tmp_path / "smtp-password"
    password_file.write_text(PASSWORD + "\n")
    inbox = Inbox()
    with smtp_server(
        inbox,
        ssl_context=certs.server_context(),
        authenticator=authenticator,
        auth_require_tls=False,  # aiosmtpd counts only STARTTLS as TLS; this socket is TLS
    ) as port:
        mail = channel(
            port,
            tls="implicit",
            ca_file=str(certs.ca),
            username=USER,
            password=Secret(file=str(password_file)),
        )
        mail.send(notification(DISK), 30.0)
    (got,) = inbox.received
    assert got.login == USER.encode()
    assert got.message["Subject"] == "[ugro-health] RESOLVED gpu2: / 93% full"


def test_untrusted_certificate_is_refused_by_default(
    starttls_server: tuple[Inbox, int], secret_env: Secret
) -> None:
    inbox, port = starttls_server
    error = send_error(channel(port, username=USER, password=secret_env), notification(HOT))
    assert not error.permanent
    assert str(error).startswith(f"TLS certificate of {LOOPBACK}:{port} not trusted")
    assert inbox.received == []
    # the operator's explicit choice: no verification
    channel(port, username=USER, password=secret_env, tls_verify=False).send(notification(HOT), 30)
    assert len(inbox.received) == 1


def test_implicit_tls_untrusted_certificate_is_refused(certs: Certs) -> None:
    inbox = Inbox()
    with smtp_server(inbox, ssl_context=certs.server_context()) as port:
        error = send_error(channel(port, tls="implicit"), notification(HOT))
    assert "not trusted" in str(error) and not error.permanent
    assert inbox.received == []


def test_server_without_starttls_is_not_sent_in_clear() -> None:
    """No silent downgrade: tls: starttls against a server that does not offer it."""
    inbox = Inbox()
    with smtp_server(inbox) as port:
        error = send_error(channel(port), notification(HOT))
        assert error.permanent and "does not offer STARTTLS" in str(error)
        assert inbox.received == []
        channel(port, tls="none").send(notification(HOT), 30.0)  # said in so many words: ok
    assert len(inbox.received) == 1 and not inbox.received[0].tls


def test_refused_recipients(starttls_server: tuple[Inbox, int], certs: Certs) -> None:
    inbox, port = starttls_server
    inbox.refuse["oncall@example.test"] = "550 5.1.1 no such mailbox"
    error = send_error(channel(port, ca_file=str(certs.ca)), notification(HOT))
    # ops@ got it: a retry would mail it twice
    assert error.permanent
    assert "accepted 1 of 2 recipients" in str(error) and "550 5.1.1 no such mailbox" in str(error)
    assert [m.rcpt_tos for m in inbox.received] == [["ops@example.test"]]

    inbox.refuse["ops@example.test"] = "550 5.1.1 no such mailbox"
    error = send_error(channel(port, ca_file=str(certs.ca)), notification(HOT))
    assert error.permanent and "refused every recipient" in str(error)

    inbox.refuse = {a: "450 4.2.1 mailbox busy, try later" for a in TO}
    error = send_error(channel(port, ca_file=str(certs.ca)), notification(HOT))
    assert not error.permanent and "450" in str(error)


def test_temporary_and_permanent_replies_to_the_mail(
    starttls_server: tuple[Inbox, int], certs: Certs
) -> None:
    inbox, port = starttls_server
    inbox.data_reply = "451 4.3.0 queue full, try again later"
    error = send_error(channel(port, ca_file=str(certs.ca)), notification(HOT))
    assert not error.permanent and "451 4.3.0 queue full" in str(error)
    inbox.data_reply = "554 5.7.1 message rejected"
    error = send_error(channel(port, ca_file=str(certs.ca)), notification(HOT))
    assert error.permanent and "554 5.7.1 message rejected" in str(error)


def test_header_injection_from_a_node_message(
    starttls_server: tuple[Inbox, int], certs: Certs
) -> None:
    inbox, port = starttls_server
    evil = AlertNotice(
        node="gpu1",
        code="x",
        severity="critical",
        message="boom\r\nBcc: victim@example.test\r\n\r\nforged body",
        state="firing",
        starts_at=T0,
    )
    channel(port, ca_file=str(certs.ca), to=("ops@example.test",)).send(notification(evil), 30)
    (got,) = inbox.received
    assert got.rcpt_tos == ["ops@example.test"]
    message = got.message
    assert message["Bcc"] is None
    assert message["Subject"] == (
        "[ugro-health] CRITICAL gpu1: boom Bcc: victim@example.test forged body"
    )
    assert "[CRITICAL] gpu1 boom Bcc: victim@example.test forged body (x)" in (
        message.get_content().splitlines()
    )


def test_server_down_is_retried() -> None:
    port = refused_port()
    error = send_error(channel(port), notification(HOT))
    assert not error.permanent
    assert str(error) == f"{LOOPBACK}:{port} not reached: connection refused"


@pytest.mark.slow
def test_silent_server_ends_within_the_timeout() -> None:
    with silent_server() as port:
        start = time.monotonic()
        error = send_error(channel(port, timeout=1.5), notification(HOT), timeout=30.0)
        elapsed = time.monotonic() - start
    assert not error.permanent
    assert str(error) == f"{LOOPBACK}:{port} did not complete within 1.5s (connecting)"
    assert elapsed < 1.5 + 10  # generous: a loaded CI machine


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_trickling_server_ends_within_the_timeout() -> None:
    """Each read gets a byte in time: only the watchdog on the whole exchange ends it (without
    it this runs until smtplib's 8192-byte line limit, 27 minutes at this pace)."""
    with trickling_server(gap=0.2) as port:
        start = time.monotonic()
        error = send_error(channel(port), notification(HOT), timeout=1.5)
        elapsed = time.monotonic() - start
    assert not error.permanent and "did not complete within 1.5s" in str(error)
    assert elapsed < 1.5 + 10


@pytest.mark.slow
def test_server_hanging_at_data_ends_within_the_timeout(
    starttls_server: tuple[Inbox, int], certs: Certs, secret_env: Secret
) -> None:
    inbox, port = starttls_server
    inbox.hang_at_data = True
    # 4 s: connect, STARTTLS and login take milliseconds, even loaded; the rest waits at DATA
    mail = channel(port, ca_file=str(certs.ca), username=USER, password=secret_env, timeout=4.0)
    start = time.monotonic()
    error = send_error(mail, notification(HOT))
    elapsed = time.monotonic() - start
    assert not error.permanent
    assert str(error) == f"{LOOPBACK}:{port} did not complete within 4s (sending)"
    assert elapsed < 4 + 10


def test_login_without_auth_offered_is_refused_for_good(secret_env: Secret) -> None:
    """aiosmtpd offers AUTH only over TLS: with tls: none the password is never sent."""
    inbox = Inbox()
    with smtp_server(inbox, authenticator=authenticator) as port:
        mail = channel(port, tls="none", username=USER, password=secret_env)
        error = send_error(mail, notification(HOT))
    assert error.permanent and str(error) == f"{LOOPBACK}:{port} does not offer AUTH (login)"
    assert inbox.received == []


def test_non_ascii_password_is_refused_without_quoting_it(
    starttls_server: tuple[Inbox, int], certs: Certs
) -> None:
    _, port = starttls_server
    password = Secret(value="pässwörd-long")
    mail = channel(port, ca_file=str(certs.ca), username=USER, password=password)
    error = send_error(mail, notification(HOT))
    assert (
        error.permanent and str(error) == f"{LOOPBACK}:{port}: smtplib can log in with ASCII only"
    )
