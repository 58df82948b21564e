"""The e-mail channel: one plain-text mail per notification, over SMTP.

May import ``config_notify``, ``notify.base``, ``notify.http`` (its TLS context) and the standard
library (smtplib, ssl, email). ``tls``: ``starttls`` (default, port 587), ``implicit`` (465) or
``none`` (25, for a relay on the same host); certificates are verified unless ``tls_verify:
false``, ``ca_file`` adds a private CA. Login is used when a ``username`` is set; the password is
read at send time and never appears in a message.

The whole exchange (connect, TLS, login, the mail, QUIT) is bounded by the send's timeout: each
step gets what is left of it, and a watchdog shuts the socket at the deadline, since a server
that trickles a byte at a time would defeat any per-read timeout.

How a failure is classified:
- no connection, a timeout, a dropped connection, TLS failures (an untrusted certificate too:
  a fixed CA file or a renewed certificate recovers) and 4xx replies: retried later;
- 5xx replies (535 login refused, 550 recipient refused...), a server without STARTTLS or AUTH
  when they are configured, a bad address: refused for good (``permanent``); so are some
  recipients refused while others accepted, since a retry would mail those again.

``Message-ID`` comes from the notification's id and the channel's name: an at-least-once repeat
of a notification is the same message to the receiving side, which can fold it.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr

from ugro_health.config_notify import ChannelConfig, Secret, SecretError
from ugro_health.notify.base import (
    RESOLVED,
    AlertNotice,
    DeliveryError,
    Notification,
    alert_line,
    summary_line,
)
from ugro_health.notify.http import tls_context

DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
SUBJECT_MAX = 200  # characters of the subject line; longer summaries are cut with "..."
REPLY_MAX = 200  # characters of a server's reply quoted in an error
DEFAULT_CLUSTER = "default"  # a cluster with no name of its own is not named in the subject
_LONG_HEADERS = SMTP_POLICY.clone(max_line_length=998)


class EmailChannel:
    """Sends each notification as one mail to every ``to`` address."""

    def __init__(self, config: ChannelConfig) -> None:
        options = config.options
        self.name = config.name
        self.host: str = options["host"]
        self.tls: str = options.get("tls") or "starttls"
        self.port: int = options.get("port") or DEFAULT_PORTS.get(self.tls, 587)
        self.username: str | None = options.get("username")
        self._password: Secret | None = options.get("password")
        self.sender: str = options["from"]
        self.recipients: tuple[str, ...] = tuple(options["to"])
        self.timeout: float = float(options.get("timeout") or 30.0)
        self.verify: bool = options.get("tls_verify", True) is not False
        self.ca_file: str | None = options.get("ca_file")
        self.where = f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"EmailChannel({self.name!r}, {self.where}, tls={self.tls})"

    def send(self, notification: Notification, timeout: float) -> None:
        try:
            message = build_message(notification, self.sender, self.recipients, self.name)
            envelope = _envelope(self.sender, self.recipients)
        except ValueError as exc:
            raise DeliveryError(f"cannot write the mail: {exc}", permanent=True) from None
        password = self._reveal()
        context = self._tls_context()
        budget = max(min(timeout, self.timeout), 0.1)
        session = _Session(self.host, self.port, budget)
        try:
            refused = session.run(message, envelope, context, self.tls, self.username, password)
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            error = _classify(exc, self.where, session, self.username)
            raise _scrubbed(error, password) from None
        if refused:
            raise _refused(refused, envelope[1], self.where)

    def _reveal(self) -> str | None:
        if self.username is None or self._password is None:
            return None
        try:
            return self._password.reveal()
        except SecretError as exc:
            raise DeliveryError(f"password for {self.username}: {exc}") from None

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls == "none":
            return None
        try:
            return tls_context(self.verify, self.ca_file)
        except OSError as exc:  # ssl.SSLError included: not a PEM file
            raise DeliveryError(f"ca_file {self.ca_file}: {exc.strerror or exc}") from None


# --- the SMTP exchange -------------------------------------------------------------------------


class _SMTP(smtplib.SMTP):
    """``smtplib.SMTP`` that connects in ``connect()`` (watched by the deadline) yet knows the
    server's name for ``starttls()``'s certificate check: smtplib takes it only in
    ``__init__``, which would connect at once."""

    def __init__(self, host: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._host = host


class _SMTPSSL(smtplib.SMTP_SSL):
    """Implicit TLS, likewise connected later with the server's name known."""

    def __init__(self, host: str, timeout: float, context: ssl.SSLContext | None) -> None:
        super().__init__(timeout=timeout, context=context)
        self._host = host


class _Session:
    """One SMTP conversation within ``budget`` seconds; ``step`` says where it stands."""

    def __init__(self, host: str, port: int, budget: float) -> None:
        self.host, self.port, self.budget = host, port, budget
        self.deadline = time.monotonic() + budget
        self.step = "connecting"
        self.expired = threading.Event()
        self.client: smtplib.SMTP | None = None

    def run(
        self,
        message: EmailMessage,
        envelope: tuple[str, list[str]],
        context: ssl.SSLContext | None,
        tls: str,
        username: str | None,
        password: str | None,
    ) -> dict[str, tuple[int, bytes]]:
        """Send; the recipients refused while others were accepted (empty: all accepted)."""
        if tls == "implicit":
            self.client = _SMTPSSL(self.host, self.budget, context)
        else:
            self.client = _SMTP(self.host, self.budget)
        client = self.client
        watchdog = threading.Timer(max(self.deadline - time.monotonic(), 0.0), self._expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            code, reply = client.connect(self.host, self.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, reply)
            if tls == "starttls":
                self._next("STARTTLS")
                client.starttls(context=context)
            if username is not None:
                self._next("login")
                client.login(username, password or "")
            self._next("sending")
            refused = client.send_message(message, envelope[0], envelope[1])
            self._next("QUIT")
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                pass  # the mail was accepted before QUIT; a server that drops it now lost nothing
            return refused
        finally:
            watchdog.cancel()
            client.close()

    def _next(self, step: str) -> None:
        """Give the next step what is left of the budget."""
        self.step = step
        left = self.deadline - time.monotonic()
        if left <= 0 or self.expired.is_set():
            raise TimeoutError("timed out")
        if self.client is not None and self.client.sock is not None:
            self.client.sock.settimeout(left)

    def _expire(self) -> None:
        """At the deadline: shut the socket, so a blocked read returns whatever it waits on."""
        self.expired.set()
        sock = self.client.sock if self.client is not None else None
        if sock is not None:
            try:
                # the plain socket's shutdown, not SSLSocket's (which also drops its TLS state
                # under the reading thread's feet): the blocked read just sees the end
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def timed_out(self, exc: BaseException) -> bool:
        return (
            self.expired.is_set()
            or isinstance(exc, TimeoutError)
            or "timed out" in str(exc)
            or time.monotonic() >= self.deadline - 0.05
        )


def _classify(
    exc: BaseException, where: str, session: _Session, username: str | None
) -> DeliveryError:
    """A one-line DeliveryError for what went wrong, retryable or permanent (module doc)."""
    step = session.step
    if session.expired.is_set():  # whatever came after the watchdog shut the socket is noise
        return DeliveryError(f"{where} did not complete within {session.budget:g}s ({step})")
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or "verification failed"
        return DeliveryError(
            f"TLS certificate of {where} not trusted: {why} (ca_file adds a private CA)"
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _refused(exc.recipients, list(exc.recipients), where)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_error(exc, where, step, username)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryError(f"{where} does not offer {_wanted(step)}", permanent=True)
    if session.timed_out(exc):  # before TLS errors: the watchdog's shutdown ends TLS reads too
        return DeliveryError(f"{where} did not complete within {session.budget:g}s ({step})")
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"TLS with {where} failed: {exc.reason or exc}")
    if isinstance(exc, UnicodeError) and step == "login":  # its text would quote the password
        return DeliveryError(f"{where}: smtplib can log in with ASCII only", permanent=True)
    if isinstance(exc, ValueError):
        return DeliveryError(f"{where}: {exc}", permanent=True)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryError(f"{where} closed the connection ({step})")
    if step == "connecting":
        return DeliveryError(f"{where} not reached: {_why(exc)}")
    return DeliveryError(f"{where} failed ({step}): {_why(exc)}")


def _reply_error(
    exc: smtplib.SMTPResponseException, where: str, step: str, username: str | None
) -> DeliveryError:
    code = exc.smtp_code
    reply = f"{code} {_text(exc.smtp_error)}".strip()
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        what = f"{where} refused the login of {username}"
    elif isinstance(exc, smtplib.SMTPSenderRefused):
        what = f"{where} refused the sender {exc.sender}"
    elif isinstance(exc, smtplib.SMTPConnectError):
        what = f"{where} refused the connection"
    else:
        what = f"{where} refused {_wanted(step)}"
    # 4xx: "try again later" in SMTP's own words; 5xx (and anything odd): it will not change
    return DeliveryError(f"{what}: {reply}", permanent=not 400 <= code < 500)


def _refused(
    refused: dict[str, tuple[int, bytes]], recipients: Sequence[str], where: str
) -> DeliveryError:
    address, (code, text) = next(iter(refused.items()))
    reply = f"{address}: {code} {_text(text)}"
    if len(refused) < len(recipients):  # the others have it: a retry would mail them twice
        accepted = f"accepted {len(recipients) - len(refused)} of {len(recipients)} recipients"
        return DeliveryError(f"{where} {accepted} but refused {reply}", permanent=True)
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    temporary = all(400 <= c < 500 for c, _ in refused.values())
    return DeliveryError(f"{where} refused every recipient: {reply}{more}", permanent=not temporary)


def _wanted(step: str) -> str:
    return {"STARTTLS": "STARTTLS", "login": "AUTH (login)"}.get(step, f"the mail ({step})")


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return one_line(reply)[:REPLY_MAX]


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return one_line(str(exc)) or exc.__class__.__name__


def _scrubbed(error: DeliveryError, password: str | None) -> DeliveryError:
    """The error without the password, should a server ever echo it back."""
    text = str(error)
    if not password or password not in text:
        return error
    return DeliveryError(
        text.replace(password, "***"), retry_after=error.retry_after, permanent=error.permanent
    )


# --- the mail ----------------------------------------------------------------------------------


def build_message(
    notification: Notification,
    sender: str,
    recipients: Sequence[str],
    channel: str,
    now: float | None = None,
) -> EmailMessage:
    """The mail for ``notification``; ValueError for an address that cannot be a header."""
    for address in (sender, *recipients):
        if one_line(address) != address.strip():
            raise ValueError(f"address {address!r} has control characters")
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject(notification)
    message["Date"] = formatdate(now, usegmt=True)
    message["Message-ID"] = message_id(notification, channel, sender)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to the monitor
    message["X-Ugro-Notification-Id"] = _token(notification.id)
    message["X-Ugro-Status"] = notification.status
    message["X-Ugro-Severity"] = notification.severity
    message["X-Ugro-Cluster"] = one_line(notification.cluster)[:SUBJECT_MAX]
    text = body(notification, channel)
    # ASCII stays readable as is; anything else travels quoted-printable, safe on any server
    message.set_content(text, cte=None if text.isascii() else "quoted-printable")
    # Headers are folded only past RFC 5322's hard 998: at 78, Python folds some subjects
    # right after "Subject:", and mail readers then show a leading blank (the body is already
    # encoded at this point, its quoted-printable lines stay at 76)
    message.policy = _LONG_HEADERS
    return message


def subject(notification: Notification) -> str:
    """``[ugro-health] CRITICAL gpu1: GPU 0 at 91 C``; a named cluster goes into the tag."""
    cluster = one_line(notification.cluster)
    tag = "[ugro-health]" if cluster in ("", DEFAULT_CLUSTER) else f"[ugro-health {cluster}]"
    line = f"{tag} {one_line(summary_line(notification))}"
    return line if len(line) <= SUBJECT_MAX else line[: SUBJECT_MAX - 3].rstrip() + "..."


def body(notification: Notification, channel: str) -> str:
    """The plain-text body: the summary, then every alert with its times (UTC) and value."""
    cluster = one_line(notification.cluster) or DEFAULT_CLUSTER
    lines = [one_line(summary_line(notification)), f"Cluster: {cluster}", ""]
    if notification.test:
        lines.append(f"This is a test from ugro-health: channel {channel} delivers mail.")
        lines.append("")
    for alert in notification.alerts:
        lines.append(one_line(alert_line(alert)))
        lines.append(f"    {_when(alert)}")
    if notification.alerts:
        lines.append("")
    lines.append("-- ")
    lines.append(
        f"Sent by ugro-health at {utc(notification.created_at)}"
        f" (notification {_token(notification.id)}, channel {channel})."
    )
    return "\n".join(lines) + "\n"


def _when(alert: AlertNotice) -> str:
    if alert.state == RESOLVED and alert.ends_at is not None:
        when = f"from {utc(alert.starts_at)} to {utc(alert.ends_at)}"
    else:
        when = f"since {utc(alert.starts_at)}"
    if alert.value is None:
        return when
    value = f"{alert.value:g}" if isinstance(alert.value, float) else str(alert.value)
    return f"{when}, value {one_line(value)}"


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def message_id(notification: Notification, channel: str, sender: str) -> str:
    """Stable for one notification on one channel: retries carry the same id."""
    _, at, domain = parseaddr(sender)[1].rpartition("@")
    domain = (_token(domain) if at else "") or "ugro-health.invalid"
    return f"<ugro-health.{_token(notification.id)}.{_token(channel)}@{domain}>"


def one_line(text: str) -> str:
    """``text`` on one line: control characters and line breaks (CR, LF, U+2028...) become
    spaces, so a message from a node cannot add a header or fake a line."""
    shown = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(shown.split())


def _token(text: str) -> str:
    """Letters, digits and ``._-`` only: safe inside a Message-ID or a header."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in text)


def _envelope(sender: str, recipients: Sequence[str]) -> tuple[str, list[str]]:
    """The SMTP envelope: the bare addresses of ``from`` and ``to``."""
    addresses = [parseaddr(a)[1] for a in (sender, *recipients)]
    for given, address in zip((sender, *recipients), addresses, strict=True):
        if "@" not in address:
            raise ValueError(f"{given!r} is not an e-mail address")
    return addresses[0], addresses[1:]
