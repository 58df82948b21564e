"""The outbox: each channel's notifications on disk until delivered, in order, bounded.

Imports ``notify.base``, ``store._fs`` and the standard library. One JSON document per channel,
``<state dir>/outbox/<channel>.json``::

    {"v": 1, "channel": name, "entries": [{"n": <notification>, "enqueued_at", "attempts",
     "next_try", "last_error"}], "dropped": overflowed, "rejected": refused for good,
     "sent": delivered, "last_success", "last_error", "last_error_at", "last_resend"}

Every change is a read-modify-write under ``flock`` on ``<channel>.lock`` with an atomic
replace, as ``state.json``: a ``watch`` killed with SIGKILL, or a cron ``check`` beside it,
loses nothing. A notification leaves the outbox only after its channel accepted it (at least
once; a crash between the two sends it again) or refused it for good. Above ``max_entries`` the
oldest are dropped and counted. Only one process sends for a channel at a time (``sending()``,
a second lock held across the send), so ``check`` and ``watch`` do not both send the head.

A damaged outbox file is set aside as ``<channel>.json.corrupt-<time>`` and reported.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from ugro_health.notify.base import Notification
from ugro_health.store._fs import (
    LOCK_TIMEOUT_S,
    StoreError,
    ensure_private_dir,
    exclusive_lock,
    open_private,
    replace_atomically,
)

OUTBOX_DIR = "outbox"
VERSION = 1
BACKOFF_FIRST_S = 5.0
BACKOFF_MAX_S = 300.0
RETRY_AFTER_MAX_S = 3600.0  # a receiver asking for more is asked again after an hour


class Entry(NamedTuple):
    notification: Notification
    attempts: int
    next_try: float
    last_error: str | None

    def wait_s(self, now: float) -> float:
        """Seconds until this entry may be tried, 0 when due. A wait longer than any this
        outbox sets means the clock was stepped back after it was set: due now, not a stall
        for as long as the step."""
        wait = self.next_try - now
        return 0.0 if wait <= 0 or wait > RETRY_AFTER_MAX_S + BACKOFF_MAX_S else wait


def backoff_s(attempts: int) -> float:
    """Wait after the ``attempts``-th failure: 5 s doubling to 5 min, with 10 % jitter so that
    many channels do not retry in step."""
    base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempts - 1))
    return base * random.uniform(0.9, 1.1)


def _empty(channel: str) -> dict[str, Any]:
    return {
        "v": VERSION,
        "channel": channel,
        "entries": [],
        "dropped": 0,
        "rejected": 0,
        "sent": 0,
        "last_success": None,
        "last_error": None,
        "last_error_at": None,
        "last_resend": None,
    }


class Outbox:
    def __init__(
        self,
        state_dir: Path,
        channel: str,
        max_entries: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(state_dir) / OUTBOX_DIR
        self.channel = channel
        self.path = self.directory / f"{channel}.json"
        self.max_entries = max_entries
        self.clock = clock
        self.warning: str | None = None  # a damaged file set aside by the last change

    # -- reading ------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """The document as it is now (no lock; a reader's view); missing or damaged -> empty."""
        doc, _problem = self._read()
        return doc

    def entries(self) -> list[Entry]:
        return [_entry(e) for e in self.load()["entries"]]

    # -- changes -------------------------------------------------------------------------------

    def put(self, notifications: Sequence[Notification]) -> int:
        """Append; returns how many of the oldest were dropped to stay within the bound."""
        now = self.clock()
        dropped = 0

        def add(doc: dict[str, Any]) -> None:
            nonlocal dropped
            for n in notifications:
                doc["entries"].append(
                    {
                        "n": n.to_json(),
                        "enqueued_at": now,
                        "attempts": 0,
                        "next_try": now,
                        "last_error": None,
                    }
                )
            over = len(doc["entries"]) - self.max_entries
            if over > 0:
                del doc["entries"][:over]
                doc["dropped"] += over
                dropped = over

        if notifications:
            self._update(add)
        return dropped

    def delivered(self, notification_id: str) -> None:
        now = self.clock()

        def done(doc: dict[str, Any]) -> None:
            _remove(doc, notification_id)
            doc["sent"] += 1
            doc["last_success"] = now

        self._update(done)

    def failed(
        self,
        notification_id: str,
        error: str,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        """A send failed: retry later (backoff, or the receiver's ``retry_after``), or drop it
        (``permanent``: the receiver refused it for good) and count it."""
        now = self.clock()

        def note(doc: dict[str, Any]) -> None:
            doc["last_error"], doc["last_error_at"] = error, now
            if permanent:
                if _remove(doc, notification_id):
                    doc["rejected"] += 1
                return
            for entry in doc["entries"]:
                if entry["n"]["id"] == notification_id:
                    entry["attempts"] += 1
                    wait = backoff_s(entry["attempts"])
                    if retry_after is not None:
                        wait = min(max(retry_after, 0.0), RETRY_AFTER_MAX_S)
                    entry["next_try"] = now + wait
                    entry["last_error"] = error
                    break

        self._update(note)

    def resent(self, at: float) -> None:
        self._update(lambda doc: doc.__setitem__("last_resend", at))

    # -- one sender at a time ------------------------------------------------------------------

    @contextmanager
    def sending(self) -> Iterator[bool]:
        """Yields True while this process is the channel's only sender, False if another is."""
        ensure_private_dir(self.directory)
        fd = open_private(self.directory / f"{self.channel}.send.lock", os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    # -- internals -------------------------------------------------------------------------------

    def _read(self) -> tuple[dict[str, Any], str | None]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _empty(self.channel), None
        except OSError as exc:
            return _empty(self.channel), f"not read: {exc.strerror}"
        try:
            doc = json.loads(raw)
            _check(doc)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError) as exc:
            return _empty(self.channel), f"damaged ({exc.__class__.__name__})"
        return doc, None

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        self.warning = None
        try:
            ensure_private_dir(self.directory)
            with exclusive_lock(self.directory / f"{self.channel}.lock", LOCK_TIMEOUT_S):
                doc, problem = self._read()
                if problem is not None and self.path.exists():
                    aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self.clock())}")
                    os.replace(self.path, aside)
                    self.warning = f"outbox {self.channel}: {problem}; kept as {aside}"
                change(doc)
                _write(self.path, doc)
        except OSError as exc:
            raise StoreError.from_os(f"outbox {self.channel} not saved", exc, self.path) from None


def _check(doc: Any) -> None:
    """Raise unless ``doc`` is an outbox document whose every entry can be read back."""
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise ValueError("not an outbox document")
    for key in ("dropped", "rejected", "sent"):
        if not isinstance(doc.get(key), int):
            raise TypeError(key)
    for entry in doc["entries"]:
        _entry(entry)


def _entry(raw: dict[str, Any]) -> Entry:
    return Entry(
        notification=Notification.from_json(raw["n"]),
        attempts=int(raw["attempts"]),
        next_try=float(raw["next_try"]),
        last_error=raw.get("last_error"),
    )


def _remove(doc: dict[str, Any], notification_id: str) -> bool:
    before = len(doc["entries"])
    doc["entries"] = [e for e in doc["entries"] if e["n"]["id"] != notification_id]
    return len(doc["entries"]) < before


def _write(path: Path, doc: dict[str, Any]) -> None:
    replace_atomically(path, json.dumps(doc, separators=(",", ":"), allow_nan=False).encode())
