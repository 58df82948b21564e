"""The ``webhook`` channel: one HTTP POST of the notification's v1 JSON document.

May import ``notify.base``, ``notify.http``, ``config_notify`` and the standard library.

The body is ``public_json(notification)`` (schema ``ugro-health/notification/v1``, documented
field by field in docs/notify-webhook.md) as compact UTF-8 JSON. With a ``secret``, the request
carries ``X-Ugro-Timestamp`` (Unix seconds at send time) and ``X-Ugro-Signature:
sha256=<hex>``, the HMAC-SHA256 under the secret of ``<timestamp>.<body>``: the timestamp is part
of what is signed, so a receiver that refuses stale timestamps refuses replays, and a retry from
the outbox is signed afresh. The secret and the configured headers' values never appear in an
error: a header may hold a token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from ugro_health import __version__
from ugro_health.config_notify import ChannelConfig, Secret, SecretError
from ugro_health.notify.base import DeliveryError, Notification, public_json
from ugro_health.notify.http import post, url_problem

USER_AGENT = f"ugro-health/{__version__}"
SIGNATURE_HEADER = "X-Ugro-Signature"
TIMESTAMP_HEADER = "X-Ugro-Timestamp"
# Ours, whatever the configured headers say: the document and its signature are the channel's.
_RESERVED = frozenset(
    {"content-type", "content-length", "host", "x-ugro-signature", "x-ugro-timestamp"}
)
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


def encode(notification: Notification) -> bytes:
    """The exact bytes posted: the public v1 document, compact UTF-8 JSON.

    A non-finite ``value`` (NaN, infinity) is sent as null: JSON has no such numbers and a
    strict receiver would refuse the whole document.
    """
    doc = public_json(notification)
    for alert in doc["alerts"]:
        value = alert.get("value")
        if isinstance(value, float) and not math.isfinite(value):
            alert["value"] = None
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret`` (UTF-8)."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def header_problem(name: str, value: str) -> str | None:
    """Why a configured header cannot be sent, naming the header but never its value."""
    if not _TOKEN_RE.match(name):
        return f"header name {name!r} is not a valid HTTP header name"
    if name.lower() in _RESERVED:
        return f"header {name} is set by the channel and cannot be configured"
    if any((ord(char) < 32 and char != "\t") or ord(char) == 127 for char in value):
        return f"header {name} has a control character (a line break?) in its value"
    if any(ord(char) > 255 for char in value):
        return f"header {name} has a character that HTTP headers cannot carry (Latin-1 only)"
    return None


class WebhookChannel:
    """POSTs each notification to ``url``; signs it when a ``secret`` is configured."""

    def __init__(self, config: ChannelConfig, clock: Callable[[], float] = time.time) -> None:
        options = config.options
        self.name = config.name
        self._url: str = options["url"]
        self._secret: Secret | None = options.get("secret")
        self._headers: Mapping[str, str | Secret] = dict(options.get("headers") or {})
        self._timeout: float = float(options.get("timeout") or 10.0)
        self._verify: bool = bool(options.get("tls_verify", True))
        self._ca_file: str | None = options.get("ca_file")
        self._clock = clock

    def __repr__(self) -> str:
        return f"WebhookChannel(name={self.name!r})"

    def send(self, notification: Notification, timeout: float) -> None:
        problem = url_problem(self._url)
        if problem is not None:
            raise DeliveryError(f"channel {self.name}: url {problem}", permanent=True)
        body = encode(notification)
        headers = self.headers(body)
        try:
            post(
                self._url,
                body,
                headers,
                timeout=min(timeout, self._timeout),
                verify=self._verify,
                ca_file=self._ca_file,
            )
        except DeliveryError as exc:
            # A token in the URL's path or query must not come back in a receiver's error page.
            raise DeliveryError(
                scrub(str(exc), self._url), retry_after=exc.retry_after, permanent=exc.permanent
            ) from None

    def headers(self, body: bytes) -> dict[str, str]:
        """The request's headers for ``body``: configured ones, then ours, then the signature."""
        headers: dict[str, str] = {"User-Agent": USER_AGENT}
        for name, configured in self._headers.items():
            value = (
                reveal_secret(self.name, configured)
                if isinstance(configured, Secret)
                else configured
            )
            problem = header_problem(name, value)
            if problem is not None:
                raise DeliveryError(f"channel {self.name}: {problem}", permanent=True)
            if name.lower() == "user-agent":
                headers.pop("User-Agent", None)
            headers[name] = value
        headers["Content-Type"] = "application/json"
        if self._secret is not None:
            key = reveal_secret(self.name, self._secret)
            timestamp = int(self._clock())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = signature(key, timestamp, body)
        return headers


def reveal_secret(channel: str, secret: Secret) -> str:
    """A secret's value, or a DeliveryError naming its source (never its value). Not permanent:
    a variable or a file can be fixed while the notification waits in the outbox."""
    try:
        value = secret.reveal()
    except SecretError as exc:
        raise DeliveryError(f"channel {channel}: secret not available: {exc}") from None
    if not value:
        raise DeliveryError(f"channel {channel}: secret {secret.shown()} is empty")
    return value


def scrub(message: str, url: str) -> str:
    """``message`` without the URL, its path or any long part of it (a receiver's error page
    may echo the request line)."""
    parts = urlsplit(url)
    pieces: list[str] = [url, parts.path, parts.query]
    pieces += re.split(r"[/?&=]", f"{parts.path}?{parts.query}")
    for piece in sorted((p for p in pieces if len(p) >= 8), key=len, reverse=True):
        message = message.replace(piece, "<redacted>")
    return message
