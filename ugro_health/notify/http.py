"""One HTTP POST with a deadline, for the webhook, Slack and Alertmanager channels.

Standard library only (urllib, ssl). TLS certificates are verified unless a channel says
``tls_verify: false``; ``ca_file`` adds a private CA. Redirects are not followed (a POST
silently turned into a GET would look delivered). Errors are ``DeliveryError`` lines that name
the receiver by host and port only: a Slack URL is itself a secret.

How an answer is classified:
- 2xx: delivered;
- 408, 425, 429 and 5xx: retried later, no sooner than the receiver's ``Retry-After``;
- any other status (400, 401, 403, 404, 413...): refused for good (``permanent``): retrying the
  same request cannot succeed, and it would hold up the channel's queue behind it;
- no answer (refused, reset, timed out, DNS): retried later.
"""

from __future__ import annotations

import email.utils
import http.client
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

from ugro_health.notify.base import DeliveryError

RETRIED_STATUSES = frozenset({408, 425, 429})
MAX_ERROR_BODY = 200  # characters of a refusal's body quoted in the error


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx becomes an HTTPError below


def receiver(url: str) -> str:
    """``host:port`` of a URL, for messages (never its path or query, which may be secret)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def url_problem(url: str) -> str | None:
    """Why ``post`` cannot use ``url`` (scheme, host, port, spaces), or None; never quotes it.

    ``urllib`` raises ``ValueError`` or quotes the URL's path for such URLs, and a URL from a
    secret (Slack's) must be refused before it reaches an error message.
    """
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        return "contains spaces or control characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "is not an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "holds credentials (user:password@): use the channel's credential options"
    try:
        parts.port  # noqa: B018 (the property parses the port and raises on a bad one)
    except ValueError:
        return "has a bad port"
    return None


def tls_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    verify: bool = True,
    ca_file: str | None = None,
) -> int:
    """POST ``body``; the status (2xx) or ``DeliveryError``, within ``timeout`` in all.

    urllib's timeout bounds each socket operation, not the request: a receiver that drips its
    answer a byte at a time would hold the send for ever. So the request runs in a daemon
    thread and is abandoned at the deadline (its socket times out on its own).
    """
    outcome: list[int | BaseException] = []
    worker = threading.Thread(
        target=_post_into,
        args=(outcome, url, body, headers, timeout, verify, ca_file),
        name="notify-post",
        daemon=True,
    )
    worker.start()
    worker.join(max(timeout, 0.1))
    if not outcome:
        raise DeliveryError(f"{receiver(url)} did not answer within {timeout:g}s")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _post_into(
    outcome: list[int | BaseException],
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    verify: bool,
    ca_file: str | None,
) -> None:
    try:
        outcome.append(_post(url, body, headers, timeout, verify, ca_file))
    except BaseException as exc:  # handed to the caller's thread, raised there
        outcome.append(exc)


def _post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    verify: bool,
    ca_file: str | None,
) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    for key, value in headers.items():
        request.add_header(key, value)
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if url.startswith("https:"):
        handlers.append(urllib.request.HTTPSHandler(context=tls_context(verify, ca_file)))
    opener = urllib.request.build_opener(*handlers)
    where = receiver(url)
    try:
        with opener.open(request, timeout=max(timeout, 0.1)) as answer:
            answer.read(65536)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        raise _refusal(exc, where) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            why = reason.verify_message
            raise DeliveryError(f"TLS certificate of {where} not trusted: {why}") from None
        raise DeliveryError(f"{where} not reached: {_why(reason)}") from None
    except TimeoutError:
        raise DeliveryError(f"{where} did not answer within {timeout:g}s") from None
    except http.client.InvalidURL:  # its message quotes the URL, which may hold a secret
        raise DeliveryError(f"{where}: not a usable URL", permanent=True) from None
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"{where} failed: {_why(exc)}") from None


def _refusal(exc: urllib.error.HTTPError, where: str) -> DeliveryError:
    status = exc.code
    try:
        text = exc.read(MAX_ERROR_BODY).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        text = ""
    text = " ".join(text.split())[:MAX_ERROR_BODY]
    detail = f": {text}" if text else ""
    retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
    if status in RETRIED_STATUSES or status >= 500:
        return DeliveryError(f"HTTP {status} from {where}{detail}", retry_after=retry_after)
    return DeliveryError(f"HTTP {status} from {where}{detail}", permanent=True)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _why(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or reason.__class__.__name__
