"""Channels by type, and which notices each channel hears.

Imports ``config_notify``, ``notify.base`` and (lazily, by type) the channel modules. A new
channel type is a module with a ``<Type>Channel`` class, a line in ``_TYPES`` and its keys in
``config_notify.CHANNEL_KEYS``; nothing else changes.
"""

from __future__ import annotations

import fnmatch
import importlib
import uuid
from collections.abc import Callable, Iterable, Sequence

from ugro_health.config_notify import SEVERITIES, ChannelConfig
from ugro_health.notify.base import EVENT_CODES, RESOLVED, AlertNotice, Channel, Notification

_TYPES = {
    "webhook": ("ugro_health.notify.webhook", "WebhookChannel"),
    "slack": ("ugro_health.notify.slack", "SlackChannel"),
    "email": ("ugro_health.notify.email", "EmailChannel"),
    "exec": ("ugro_health.notify.exec", "ExecChannel"),
    "alertmanager": ("ugro_health.notify.alertmanager", "AlertmanagerChannel"),
}


def build_channel(config: ChannelConfig) -> Channel:
    module, name = _TYPES[config.type]
    cls = getattr(importlib.import_module(module), name)
    channel: Channel = cls(config)
    return channel


def send_timeout(config: ChannelConfig) -> float:
    """The channel's own bound on one send (``timeout``), 30 s where it has none."""
    value = config.options.get("timeout")
    return float(value) if isinstance(value, int | float) else 30.0


def hears(config: ChannelConfig, notice: AlertNotice) -> bool:
    """Whether ``config``'s channel is told about ``notice`` (severity, node and code globs,
    ``send_resolved``; Alertmanager always hears resolutions: it expects them). An event
    (``EVENT_CODES``) is heard whatever the channel's ``min_severity``."""
    if notice.severity not in SEVERITIES:
        return False
    if notice.code in EVENT_CODES:
        if config.type == "alertmanager":
            return False
    elif SEVERITIES.index(notice.severity) < SEVERITIES.index(config.min_severity):
        return False
    if config.nodes and not any(fnmatch.fnmatchcase(notice.node, g) for g in config.nodes):
        return False
    if config.codes and not any(fnmatch.fnmatchcase(notice.code, g) for g in config.codes):
        return False
    return not (
        notice.state == RESOLVED and not config.send_resolved and config.type != "alertmanager"
    )


def route(
    notices: Iterable[AlertNotice],
    channels: Sequence[ChannelConfig],
    cluster: str,
    now: float,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    resend: bool = False,
) -> dict[str, Notification]:
    """One notification per channel with the notices it hears (a dead rack is one message)."""
    notices = list(notices)
    out = {}
    for config in channels:
        mine = tuple(n for n in notices if hears(config, n))
        if mine:
            out[config.name] = Notification(new_id(), cluster, now, mine, resend=resend)
    return out
