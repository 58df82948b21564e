"""The ``slack`` channel: one message per notification to a Slack incoming webhook.

May import ``notify.base``, ``notify.http``, ``notify.webhook``, ``config_notify`` and the
standard library.

The message is ``text`` (the summary line: what a phone's notification and a screen reader
show) and ``blocks``: a header with the summary, a context line (cluster, count, time), then
one section per alert (severity, node, GPU, state, times, value, message, code), critical and
firing ones first. Slack refuses a message over its limits (HTTP 400 ``invalid_blocks``), and
a refusal is permanent, so the payload is cut to fit: at most 50 blocks, 150 characters in the
header, 3,000 in a section, 4,000 in ``text`` (Slack's advice; it truncates at 40,000) and
12,000 in all the blocks together (Slack answers ``msg_blocks_too_long`` somewhere above about
13,000, a limit it does not document); alerts that do not fit are counted in a last block.

Text from nodes is escaped (``&``, ``<``, ``>``) wherever Slack parses it (``text``, the
mrkdwn sections and context) so that an alert message cannot mention ``@channel`` or forge a
link; the header is ``plain_text``, which Slack does not parse, and stays as it is.

The webhook URL is a secret: it is read at send time and scrubbed from every error
(``notify.http`` already names only the host).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ugro_health.config_notify import ChannelConfig, Secret
from ugro_health.notify.base import (
    FLAPPING,
    RESOLVED,
    AlertNotice,
    DeliveryError,
    Notification,
    iso,
    summary_line,
)
from ugro_health.notify.http import post, url_problem
from ugro_health.notify.webhook import USER_AGENT, reveal_secret, scrub

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000
MAX_TEXT = 4000
MAX_BLOCKS_CHARS = 12000
_NOTICE_RESERVE = 120  # characters kept for the "not shown" block
_RANK = {"critical": 0, "warning": 1, "info": 2}
_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,4}$")


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: only ``&``, ``<`` and ``>`` (in that order)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, ending in ``…`` when cut (never inside an entity)."""
    if len(text) <= limit:
        return text
    return _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"


def payload(notification: Notification) -> dict[str, Any]:
    """The JSON object posted to the incoming webhook."""
    summary = summary_line(notification)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(cut(summary, MAX_HEADER))},
        _context(_context_line(notification)),
    ]
    if notification.test and not notification.alerts:
        blocks.append(_section("A test from `ugro-health notify test`: this channel works."))
    used = sum(_chars(block) for block in blocks)
    alerts = sorted(notification.alerts, key=_order)
    shown = 0
    for index, alert in enumerate(alerts):
        block = _section(alert_text(alert))
        more = index + 1 < len(alerts)
        room = MAX_BLOCKS - len(blocks) - (1 if more else 0)
        if room < 1 or used + _chars(block) > MAX_BLOCKS_CHARS - _NOTICE_RESERVE:
            break
        blocks.append(block)
        used += _chars(block)
        shown += 1
    if shown < len(alerts):
        left = len(alerts) - shown
        blocks.append(
            _context(f"…and {left} more alert(s) not shown ({len(alerts)} in all, Slack's limits)")
        )
    return {"text": cut(escape(summary), MAX_TEXT), "blocks": blocks}


def alert_text(alert: AlertNotice) -> str:
    """One alert as a section's mrkdwn: who and how bad, when, then what."""
    label, emoji = alert.severity.upper(), _EMOJI.get(alert.severity, ":large_blue_circle:")
    state = "still firing" if alert.repeat else "firing"
    if alert.state == RESOLVED:
        label, emoji, state = "RESOLVED", ":white_check_mark:", f"was {alert.severity}"
    elif alert.state == FLAPPING:
        emoji, state = ":warning:", "flapping"
    where = f"*{escape(alert.node)}*"
    if alert.gpu is not None:
        where += f" GPU {alert.gpu}"
    if alert.subject:
        where += f" `{escape(alert.subject)}`"
    when = [f"since {_date(alert.starts_at)}"]
    if alert.ends_at is not None:
        when.append(f"resolved {_date(alert.ends_at)}")
    if alert.value is not None:
        when.append(f"value {escape(str(alert.value))}")
    head = f"{emoji} *{label}* · {where} · {state}\n{' · '.join(when)}\n"
    tail = f" (`{escape(alert.code)}`)"
    room = MAX_SECTION - len(head) - len(tail)
    return cut(head + cut(escape(alert.message), max(room, 1)) + tail, MAX_SECTION)


class SlackChannel:
    """Posts each notification as one message to a Slack incoming webhook (a secret URL)."""

    def __init__(self, config: ChannelConfig) -> None:
        options = config.options
        self.name = config.name
        self._url: Secret = options["url"]
        self._timeout: float = float(options.get("timeout") or 10.0)
        self._verify: bool = bool(options.get("tls_verify", True))
        self._ca_file: str | None = options.get("ca_file")

    def __repr__(self) -> str:
        return f"SlackChannel(name={self.name!r})"

    def send(self, notification: Notification, timeout: float) -> None:
        url = reveal_secret(self.name, self._url)
        problem = url_problem(url)
        if problem is not None:
            # Not permanent: the variable or file holding the URL can be fixed meanwhile.
            raise DeliveryError(f"channel {self.name}: the URL {self._url.shown()} {problem}")
        body = json.dumps(payload(notification), ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        try:
            post(
                url,
                body,
                headers,
                timeout=min(timeout, self._timeout),
                verify=self._verify,
                ca_file=self._ca_file,
            )
        except DeliveryError as exc:
            raise DeliveryError(
                scrub(str(exc), url), retry_after=exc.retry_after, permanent=exc.permanent
            ) from None


def _order(alert: AlertNotice) -> tuple[int, int]:
    return (alert.state == RESOLVED, _RANK.get(alert.severity, 3))


def _context_line(notification: Notification) -> str:
    count = len(notification.alerts)
    parts = [
        f"cluster *{cut(escape(notification.cluster), 200)}*",
        f"{count} alert{'' if count == 1 else 's'}",
        _date(notification.created_at),
    ]
    if notification.test:
        parts.append("test")
    if notification.resend:
        parts.append("resend")
    return " · ".join(parts)


def _date(epoch: float) -> str:
    """Slack's date token: shown in the reader's own time zone, ISO-8601 UTC as the fallback."""
    return f"<!date^{int(epoch)}^{{date_short_pretty}} {{time_secs}}|{iso(epoch)}>"


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text or "ugro-health", "emoji": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _chars(block: dict[str, Any]) -> int:
    texts: Sequence[dict[str, Any]] = block.get("elements") or [block["text"]]
    return sum(len(item["text"]) for item in texts)
