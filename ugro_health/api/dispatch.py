"""Run a monitor's handlers on a thread of their own, so that none can break or stall it.

The monitor's thread only ``offer``s (never blocks): calls wait in a bounded queue for the
dispatcher thread. A handler that raises is logged and counted; one that blocks holds only
the dispatcher, and what arrives meanwhile beyond the queue's room is dropped and counted. The
thread is a daemon, and ``stop`` waits for it only so long: a handler stuck for good never
holds up the monitor's shutdown nor the interpreter's exit. Standard library only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ugro_health.api")

_STOP = object()


class Dispatcher:
    """One daemon thread calling handlers in the order they were offered."""

    def __init__(self, name: str, size: int = 1000) -> None:
        if size < 1:
            raise ValueError(f"the handler queue must hold at least 1 call, not {size}")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.errors = 0  # handler calls that raised
        self.dropped = 0  # handler calls dropped because the queue was full
        self.calls = 0  # handler calls made (raised or not)

    def start(self) -> None:
        self._thread.start()

    def offer(self, handler: Callable[[Any], object], event: object) -> bool:
        """Queue ``handler(event)``; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((handler, event))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False
        return True

    def stop(self, timeout: float) -> bool:
        """Let the queued calls run, then end the thread; False if it did not end in time
        (a handler is stuck: it is left behind, a daemon, and its queue is dropped)."""
        deadline = time.monotonic() + timeout
        self._closing.set()  # a handler stuck now ends the thread when it returns
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.05)
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        if self._thread.is_alive() and not self.is_current():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def is_current(self) -> bool:
        """Whether the caller is this dispatcher's thread (a handler)."""
        return threading.current_thread() is self._thread

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            handler, event = item
            try:
                handler(event)
            except Exception:
                with self._lock:
                    self.errors += 1
                name = getattr(handler, "__qualname__", repr(handler))
                log.exception("ugro-health handler %s raised (the monitor goes on)", name)
            finally:
                with self._lock:
                    self.calls += 1
            if self._closing.is_set() and self._queue.empty():
                return  # stop() found the queue full: its sentinel never got in
