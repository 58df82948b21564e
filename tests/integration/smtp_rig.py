"""A real SMTP server on loopback for the e-mail channel's tests: aiosmtpd, with STARTTLS or
implicit TLS from a private CA made here, and AUTH against one user.

``make_ca(directory)`` writes ``ca.pem`` (to trust, as the channel's ``ca_file``) and a server
certificate for 127.0.0.1 signed by it; ``smtp_server(inbox, ...)`` runs aiosmtpd on a free
loopback port for the length of a ``with``. Also here: servers that misbehave below SMTP (one
that never answers, one that trickles its greeting a byte at a time).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

USER = "alerts@example.test"
PASSWORD = "s3cret-smtp-Passw0rd"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Certs:
    ca: Path  # the CA to trust (ca_file)
    cert: Path  # the server's chain (its certificate)
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_ca(directory: Path) -> Certs:
    """A private CA and a certificate for 127.0.0.1 and localhost signed by it."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ugro-health test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)])
    alt = [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
    cert = (
        _builder(name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    certs = Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certs


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: Any, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(slots=True)
class Mail:
    """One mail as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: bytes | None  # the user that logged in, None without AUTH
    tls: bool  # whether the session was encrypted (STARTTLS or implicit)

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(slots=True)
class Inbox:
    """The aiosmtpd handler: records what arrives; can refuse recipients or hang at DATA."""

    received: list[Mail] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # address -> reply
    data_reply: str = "250 2.0.0 OK: queued"
    hang_at_data: bool = False

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hang_at_data:
            await asyncio.sleep(3600)
        if self.data_reply.startswith("250"):
            login = session.auth_data.login if session.authenticated else None
            data = envelope.original_content or envelope.content
            mail = Mail(envelope.mail_from, list(envelope.rcpt_tos), data, login, bool(session.ssl))
            self.received.append(mail)
        return self.data_reply


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    # handled=False: aiosmtpd answers the refusal (535) itself
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _Controller(Controller):
    """aiosmtpd's threaded controller on a port the kernel picks (port 0)."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def smtp_server(inbox: Inbox, **kwargs: Any) -> Iterator[int]:
    """aiosmtpd on 127.0.0.1 for the ``with``; its port. ``kwargs`` go to aiosmtpd: e.g.
    ``tls_context``/``require_starttls`` (STARTTLS), ``ssl_context`` (implicit TLS),
    ``authenticator``/``auth_require_tls``."""
    controller = _Controller(inbox, hostname=LOOPBACK, port=0, ready_timeout=60.0, **kwargs)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections (the kernel's backlog does) and never says a word."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


@contextmanager
def trickling_server(gap: float = 0.2) -> Iterator[int]:
    """Greets with ``220`` one byte every ``gap`` seconds, never ending the line: each read
    gets its byte in time, so only a deadline over the whole exchange ends the wait."""
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(8)
        listener.settimeout(0.2)

        def serve() -> None:
            conns: list[socket.socket] = []
            while not stop.is_set():
                try:
                    conns.append(listener.accept()[0])
                except OSError:
                    pass
                for conn in conns:
                    try:
                        conn.send(b"2")
                    except OSError:
                        pass
                stop.wait(gap)
            for conn in conns:
                conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield int(listener.getsockname()[1])
        finally:
            stop.set()
            thread.join(10)
