"""The ``alertmanager`` channel: alerts posted to Prometheus Alertmanager's v2 API.

``POST <url>/api/v2/alerts`` with a JSON list of postable alerts (``labels``, ``annotations``,
``startsAt``, ``endsAt``), to every URL in ``urls``: an Alertmanager HA set is fed the way
Prometheus feeds it, each member on its own, since the members deduplicate among themselves.
The notification is delivered when at least one member accepted it.

Alertmanager expects its clients to keep telling it what still fires: Prometheus re-sends a
firing alert every ``resend_delay`` with ``endsAt`` four intervals ahead, so an alert whose
sender died resolves by itself a few minutes later, and it sends a resolved alert with
``endsAt`` = the time it resolved. This channel does the same: a firing (or flapping) alert gets
``endsAt`` = send time + 4 x ``resend_interval``; the lifecycle re-sends what fires every
``resend_interval`` (``Notification.resend``). A resolved alert gets its own ``ends_at``.

Labels are the alert's identity (Alertmanager's fingerprint is their hash): ``alertname`` (the
code), ``node`` and ``instance`` (both the node, ``instance`` for the usual routes and
inhibitions), ``severity``, ``cluster``, and ``gpu`` / ``subject`` when set. The rest (message,
value, state, flapping) goes to annotations, which may change without making a new alert.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from ugro_health.config_notify import ChannelConfig, Secret, SecretError
from ugro_health.notify import http
from ugro_health.notify.base import (
    FIRING,
    RESOLVED,
    AlertNotice,
    DeliveryError,
    Notification,
    alert_line,
    iso,
    summary_line,
)

API_PATH = "/api/v2/alerts"
RESEND_FACTOR = 4  # endsAt of a firing alert: this many resend intervals ahead (as Prometheus)
TEST_ALERTNAME = "ugro_health_test"


def am_alerts(notification: Notification, now: float, resend_interval: float) -> list[dict]:
    """The postable alerts (Alertmanager API v2) of ``notification``, sent at ``now``."""
    alerts = [_am_alert(a, notification, now, resend_interval) for a in notification.alerts]
    if notification.test and not alerts:
        alerts.append(_test_alert(notification, now, resend_interval))
    return alerts


def _am_alert(
    alert: AlertNotice, notification: Notification, now: float, resend_interval: float
) -> dict[str, Any]:
    labels = {
        "alertname": alert.code,
        "node": alert.node,
        "instance": alert.node,
        "severity": alert.severity,
        "cluster": notification.cluster,
    }
    if alert.gpu is not None:
        labels["gpu"] = str(alert.gpu)
    if alert.subject:
        labels["subject"] = alert.subject
    annotations = {"summary": alert.message, "description": alert_line(alert), "state": alert.state}
    if alert.value is not None:
        annotations["value"] = str(alert.value)
    if notification.test:
        annotations["test"] = "true"
    if alert.state == RESOLVED:
        ends = alert.ends_at if alert.ends_at is not None else now
    else:
        ends = now + RESEND_FACTOR * resend_interval
    # Alertmanager refuses (HTTP 400) an alert that ends before it starts: a skewed clock or an
    # alert resolved in the instant it fired must still arrive, resolved at its start.
    ends = max(ends, alert.starts_at)
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso(alert.starts_at),
        "endsAt": iso(ends),
    }


def _test_alert(notification: Notification, now: float, resend_interval: float) -> dict:
    """``notify test`` with nothing firing: one info alert that expires by itself."""
    return {
        "labels": {
            "alertname": TEST_ALERTNAME,
            "severity": "info",
            "cluster": notification.cluster,
        },
        "annotations": {"summary": summary_line(notification), "state": FIRING, "test": "true"},
        "startsAt": iso(now),
        "endsAt": iso(now + RESEND_FACTOR * resend_interval),
    }


def api_url(url: str) -> str:
    """The alerts endpoint under an Alertmanager base URL (kept as is if already given)."""
    base = url.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


class AlertmanagerChannel:
    """Posts each notification's alerts to every Alertmanager in ``urls``."""

    def __init__(self, config: ChannelConfig) -> None:
        self.name = config.name
        options = config.options
        self.urls: tuple[str, ...] = tuple(options["urls"])
        self.resend_interval = float(options.get("resend_interval") or 60.0)
        self.username: str | None = options.get("username")
        self.password: Secret | None = options.get("password")
        self.bearer_token: Secret | None = options.get("bearer_token")
        self.tls_verify = bool(options.get("tls_verify", True))
        self.ca_file: str | None = options.get("ca_file")

    def send(self, notification: Notification, timeout: float) -> None:
        if not self.urls:
            raise DeliveryError(f"channel {self.name}: no urls", permanent=True)
        headers = {"Content-Type": "application/json", **self._auth()}
        body = json.dumps(am_alerts(notification, time.time(), self.resend_interval)).encode()
        errors = self._post_all(body, headers, timeout)
        if len(errors) < len(self.urls):
            return  # at least one member has it; the HA set shares it among its members
        raise _all_failed(errors)

    def _auth(self) -> dict[str, str]:
        """The Authorization header, if any; secrets revealed here, at send time only."""
        try:
            if self.bearer_token is not None:
                if self.username or self.password is not None:
                    raise DeliveryError(
                        f"channel {self.name}: bearer_token and username/password both set",
                        permanent=True,
                    )
                return {"Authorization": f"Bearer {self.bearer_token.reveal()}"}
            if self.password is not None and not self.username:
                raise DeliveryError(
                    f"channel {self.name}: password set without username", permanent=True
                )
            if self.username:
                secret = self.password.reveal() if self.password is not None else ""
                pair = f"{self.username}:{secret}".encode()
                return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        except SecretError as exc:
            # Retryable: a secret file put right later lets the queued notifications through.
            raise DeliveryError(f"channel {self.name}: {exc}") from None
        return {}

    def _post_all(
        self, body: bytes, headers: dict[str, str], timeout: float
    ) -> list[DeliveryError]:
        """Post to every URL at once (a hung member must not eat the others' time). Daemon
        threads: one stuck on a member past the deadline never holds up the process's exit."""
        results: dict[int, DeliveryError | None] = {}

        def post_one(index: int, url: str) -> None:
            try:
                http.post(api_url(url), body, headers, timeout, self.tls_verify, self.ca_file)
                results[index] = None
            except DeliveryError as exc:
                results[index] = exc
            except Exception as exc:  # a bad URL (ValueError...): that member's failure only
                results[index] = DeliveryError(f"{http.receiver(url)} failed: {exc}")

        threads = [
            threading.Thread(target=post_one, args=(i, url), name="ugro-am", daemon=True)
            for i, url in enumerate(self.urls)
        ]
        for thread in threads:
            thread.start()
        # http.post's timeout bounds each socket operation, not a slow drip: bound the whole.
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        errors: list[DeliveryError] = []
        for index, url in enumerate(self.urls):
            if index not in results:
                errors.append(DeliveryError(f"{http.receiver(url)} did not answer in time"))
                continue
            error = results[index]
            if error is not None:
                errors.append(error)
        return errors


def _all_failed(errors: list[DeliveryError]) -> DeliveryError:
    """One error for a set where no member accepted: permanent only if every refusal was."""
    count = len(errors)
    what = "the Alertmanager" if count == 1 else f"all {count} Alertmanagers"
    message = f"{what} failed: " + "; ".join(str(e) for e in errors)
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    return DeliveryError(
        message,
        retry_after=min(waits) if waits else None,
        permanent=all(e.permanent for e in errors),
    )
