"""Delivery: from each channel's outbox to its receiver, never on the polling path.

Imports ``notify`` and the standard library. ``deliver_until()`` sends a channel's queue in
order until it is empty, a send fails, or the deadline comes; ``drain()`` does it for every
channel at once, in threads, for ``check`` (which waits up to ``notify.check_wait`` and leaves
the rest queued for the next run); ``Deliverer`` keeps one thread per channel beside ``watch``,
woken when a cycle queues something and when a retry falls due.

A channel that fails stops its own queue only (in order: the next notification waits for the
one before it); the others go on. A channel whose code raises something other than
``DeliveryError`` is treated as a failed send, retried like one, and named in the error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ugro_health.config_notify import ChannelConfig, NotifySettings, SecretError
from ugro_health.notify.base import Channel, DeliveryError
from ugro_health.notify.channels import build_channel, send_timeout
from ugro_health.notify.outbox import Outbox
from ugro_health.store._fs import StoreError

MIN_SEND_S = 0.5  # a send given less time than this is not started
IDLE_WAKE_S = 5.0  # a delivery thread looks at its outbox at least this often


@dataclass(slots=True)
class ChannelResult:
    name: str
    sent: int = 0
    error: str | None = None  # the last failure, one line
    queued: int = 0  # left in the outbox
    busy: bool = False  # another process is sending for this channel


def outboxes(
    state_dir: Path, settings: NotifySettings, clock: Callable[[], float] = time.time
) -> dict[str, Outbox]:
    return {
        c.name: Outbox(state_dir, c.name, settings.outbox_max, clock) for c in settings.channels
    }


def send_one(channel: Channel, config: ChannelConfig, outbox: Outbox, timeout: float) -> str | None:
    """Send the head of ``outbox`` once; None when sent (or nothing to send), else the error."""
    entries = outbox.entries()
    if not entries:
        return None
    head = entries[0].notification
    try:
        channel.send(head, timeout)
    except DeliveryError as exc:
        outbox.failed(head.id, str(exc), exc.retry_after, exc.permanent)
        return str(exc)
    except SecretError as exc:
        outbox.failed(head.id, str(exc))
        return str(exc)
    except Exception as exc:  # a bug in a channel must not stop delivery for good
        error = f"{config.type} channel failed: {exc.__class__.__name__}: {exc}"
        outbox.failed(head.id, error[:300])
        return error
    outbox.delivered(head.id)
    return None


def deliver_until(
    config: ChannelConfig,
    outbox: Outbox,
    deadline: float,
    channel: Channel | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> ChannelResult:
    """Send the queue in order while the head is due, until empty, a failure or ``deadline``
    (``monotonic`` seconds)."""
    result = ChannelResult(config.name)
    try:
        with outbox.sending() as mine:
            if not mine:
                result.busy = True
            else:
                channel = channel or build_channel(config)
                _send_due(config, outbox, deadline, channel, monotonic, result)
    except OSError as exc:  # the send lock (a root-owned file, EMFILE): said, never raised
        result.error = str(StoreError.from_os(f"outbox {config.name} not sent", exc, outbox.path))
    except (StoreError, ImportError) as exc:
        result.error = str(exc)
    result.queued = len(outbox.entries())
    return result


def _send_due(
    config: ChannelConfig,
    outbox: Outbox,
    deadline: float,
    channel: Channel,
    monotonic: Callable[[], float],
    result: ChannelResult,
) -> None:
    while True:
        entries = outbox.entries()
        if not entries or entries[0].wait_s(outbox.clock()) > 0:
            return
        remaining = deadline - monotonic()
        if remaining < MIN_SEND_S:
            return
        error = send_one(channel, config, outbox, min(send_timeout(config), remaining))
        if error is not None:
            result.error = error
            return
        result.sent += 1


def drain(
    state_dir: Path,
    settings: NotifySettings,
    wait_s: float,
    channels: Mapping[str, Channel] | None = None,
) -> list[ChannelResult]:
    """Deliver what every channel has queued, in parallel, for at most ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    boxes = outboxes(state_dir, settings)
    results: dict[str, ChannelResult] = {}

    def run(config: ChannelConfig) -> None:
        given = (channels or {}).get(config.name)
        results[config.name] = deliver_until(config, boxes[config.name], deadline, given)

    threads = [
        threading.Thread(target=run, args=(c,), name=f"notify-{c.name}", daemon=True)
        for c in settings.channels
        if boxes[c.name].load()["entries"]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
    out = []
    for config in settings.channels:
        result = results.get(config.name)
        if result is None:  # nothing queued, or still sending at the deadline
            queued = len(boxes[config.name].entries())
            result = ChannelResult(config.name, queued=queued, busy=queued > 0)
        out.append(result)
    return out


class Deliverer:
    """One delivery thread per channel beside ``watch``: polling never waits on a receiver."""

    def __init__(
        self,
        state_dir: Path,
        settings: NotifySettings,
        channels: Mapping[str, Channel] | None = None,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.boxes = outboxes(state_dir, settings)
        self.channels = dict(channels or {})
        self.on_error = on_error  # (channel, one line): the front's log
        self._stop = threading.Event()
        self._wake = {c.name: threading.Event() for c in settings.channels}
        self._threads: list[threading.Thread] = []
        self.last: dict[str, ChannelResult] = {}

    def start(self) -> None:
        for config in self.settings.channels:
            thread = threading.Thread(
                target=self._loop, args=(config,), name=f"notify-{config.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def kick(self) -> None:
        """Something was queued: look now."""
        for event in self._wake.values():
            event.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the sends in flight (each bounded by its channel's timeout); what is
        still queued stays in the outbox for the next start or the next ``check``."""
        self._stop.set()
        self.kick()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))

    def _loop(self, config: ChannelConfig) -> None:
        outbox, wake = self.boxes[config.name], self._wake[config.name]
        channel = self.channels.get(config.name)
        last_error: str | None = None
        while not self._stop.is_set():
            wake.clear()
            try:
                result = deliver_until(config, outbox, time.monotonic() + 60.0, channel)
            except Exception as exc:  # this thread must outlive any one failure
                result = ChannelResult(config.name, error=f"{exc.__class__.__name__}: {exc}")
            self.last[config.name] = result
            if result.error and result.error != last_error and self.on_error is not None:
                self.on_error(config.name, result.error)
            last_error = result.error
            wake.wait(self._wait_s(outbox))

    def _wait_s(self, outbox: Outbox) -> float:
        try:
            entries = outbox.entries()
        except Exception:
            return IDLE_WAKE_S
        if not entries:
            return IDLE_WAKE_S
        return max(0.05, min(IDLE_WAKE_S, entries[0].wait_s(outbox.clock())))
