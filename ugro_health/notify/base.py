"""What every channel shares: the notification document, the channel interface, its errors.

May import ``model``, ``config_notify`` and the standard library. A channel knows only how to
send one grouped ``Notification``; the lifecycle (``engine.lifecycle``), the outbox and the
retries (``notify.outbox``, ``notify.deliver``) live once, outside the channels.

The JSON document (``Notification.to_json``, schema ``ugro-health/notification/v1``) is what
the webhook channel posts and the exec channel writes to its command's stdin; its field names
are a public interface: add, never rename.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

NOTIFICATION_SCHEMA = "ugro-health/notification/v1"
# What an alert in a notification says happened.
FIRING, RESOLVED, FLAPPING = "firing", "resolved", "flapping"
# One-shot events, not conditions: what ugro-health did in Slurm. Each is told once, to every
# channel whose node and code globs match whatever its min_severity (a drained node is news
# to whoever hears about that node), except Alertmanager, which tracks conditions only.
EVENT_CODES = frozenset({"slurm_drained", "slurm_resumed", "slurm_skipped", "slurm_released"})
_RANK = {"critical": 3, "warning": 2, "info": 1}


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """One alert in a notification."""

    node: str
    code: str
    severity: str  # critical | warning | info
    message: str
    state: str  # firing | resolved | flapping
    starts_at: float  # when it first held (epoch seconds)
    ends_at: float | None = None  # when it resolved
    value: float | str | None = None
    gpu: int | None = None
    subject: str | None = None
    repeat: bool = False  # a reminder of a still-firing alert (repeat_interval)

    @property
    def fingerprint(self) -> str:
        """Stable across polls: the same alert on the same node (Alertmanager's identity)."""
        gpu = "" if self.gpu is None else str(self.gpu)
        return f"{self.node}/{self.code}/{gpu}/{self.subject or ''}"

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "state": self.state,
            "value": self.value,
            "gpu": self.gpu,
            "subject": self.subject,
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "repeat": self.repeat,
            "fingerprint": self.fingerprint,
            "_t": [self.starts_at, self.ends_at],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertNotice:
        starts, ends = data["_t"]
        return cls(
            node=str(data["node"]),
            code=str(data["code"]),
            severity=str(data["severity"]),
            message=str(data["message"]),
            state=str(data["state"]),
            starts_at=float(starts),
            ends_at=None if ends is None else float(ends),
            value=data.get("value"),
            gpu=data.get("gpu"),
            subject=data.get("subject"),
            repeat=bool(data.get("repeat")),
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """One grouped notification for one channel: the alerts of one cycle that it should hear."""

    id: str
    cluster: str
    created_at: float
    alerts: tuple[AlertNotice, ...]
    test: bool = False  # sent by `notify test`
    resend: bool = False  # a periodic resend of what is firing (Alertmanager)

    @property
    def severity(self) -> str:
        """The worst severity among the alerts."""
        if not self.alerts:
            return "info"
        return max((a.severity for a in self.alerts), key=lambda s: _RANK.get(s, 0))

    @property
    def status(self) -> str:
        """firing if anything fires (or flaps), else resolved."""
        return RESOLVED if all(a.state == RESOLVED for a in self.alerts) else FIRING

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": NOTIFICATION_SCHEMA,
            "id": self.id,
            "cluster": self.cluster,
            "created_at": iso(self.created_at),
            "status": self.status,
            "severity": self.severity,
            "test": self.test,
            "resend": self.resend,
            "summary": summary_line(self),
            "alerts": [a.to_json() for a in self.alerts],
            "_t": self.created_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notification:
        return cls(
            id=str(data["id"]),
            cluster=str(data["cluster"]),
            created_at=float(data["_t"]),
            alerts=tuple(AlertNotice.from_json(a) for a in data["alerts"]),
            test=bool(data.get("test")),
            resend=bool(data.get("resend")),
        )


def public_json(notification: Notification) -> dict[str, Any]:
    """The document receivers get: ``to_json`` without the outbox's private ``_t`` fields."""
    doc = notification.to_json()
    doc.pop("_t")
    for alert in doc["alerts"]:
        alert.pop("_t")
    return doc


def summary_line(notification: Notification) -> str:
    """One line for a subject or a chat message, e.g. ``CRITICAL gpu1: GPU 0 at 91 C``."""
    alerts = notification.alerts
    if notification.test:
        return "test notification from ugro-health"
    if not alerts:
        return "nothing to report"
    label = "RESOLVED" if notification.status == RESOLVED else notification.severity.upper()
    if any(a.state == FLAPPING for a in alerts) and len(alerts) == 1:
        label = "FLAPPING"
    if len(alerts) == 1:
        return f"{label} {alerts[0].node}: {alerts[0].message}"
    nodes = sorted({a.node for a in alerts})
    shown = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
    return f"{label} {len(alerts)} alerts on {len(nodes)} node(s): {shown}"


def alert_line(alert: AlertNotice) -> str:
    """One line per alert in a message body."""
    state = {FIRING: "", RESOLVED: "resolved: ", FLAPPING: "flapping: "}.get(alert.state, "")
    if alert.repeat:
        state = "still firing: "
    where = f" GPU {alert.gpu}" if alert.gpu is not None else ""
    return f"[{alert.severity.upper()}] {alert.node}{where} {state}{alert.message} ({alert.code})"


class DeliveryError(Exception):
    """A send failed; one line, never a secret. ``retry_after``: the receiver's own wait
    (HTTP 429/503 ``Retry-After``); ``permanent``: retrying cannot help (HTTP 400, 404)."""

    def __init__(
        self, message: str, retry_after: float | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class Channel(Protocol):
    """A receiver: sends one notification within ``timeout`` seconds or raises DeliveryError."""

    name: str

    def send(self, notification: Notification, timeout: float) -> None: ...
