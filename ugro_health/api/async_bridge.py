"""From the monitor's thread to an async reader: a bounded anyio memory stream, fed on the loop.

The monitor's thread never waits here: ``offer`` hands the events to the event loop with the
loop's own non-blocking thread-safe call (asyncio's ``call_soon_threadsafe``, trio's
``TrioToken.run_sync_soon``) and returns, even while the loop is busy; on the loop, an event
that finds the stream full is dropped and counted. Imported only by async entry points.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from ugro_health.api.events import MonitorEvent


class EventBridge:
    def __init__(self, size: int) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[MonitorEvent](size)
        self.dropped = 0
        self._call_soon: Callable[..., Any] | None = None

    async def open(self) -> None:
        """On the loop: remember how to reach it from another thread."""
        import asyncio

        try:
            self._call_soon = asyncio.get_running_loop().call_soon_threadsafe
            return
        except RuntimeError:  # not asyncio: trio (anyio's other backend)
            pass
        import trio

        self._call_soon = trio.lowlevel.current_trio_token().run_sync_soon

    def offer(self, events: list[MonitorEvent]) -> None:
        """From a foreign thread: queue ``events`` for the stream, without waiting."""
        if not self._schedule(self._send_all, events):
            self.dropped += len(events)

    def end(self) -> None:
        """From a foreign thread: end the stream after what was offered (``async for`` ends)."""
        self._schedule(self.send.close)

    async def close(self) -> None:
        """On the loop: end the stream, both ends."""
        self.send.close()
        self.receive.close()

    def _schedule(self, fn: Callable[..., Any], *args: Any) -> bool:
        if self._call_soon is None:
            return False
        try:
            self._call_soon(fn, *args)
        except Exception:  # the loop has ended (asyncio: closed; trio: RunFinishedError)
            return False
        return True

    def _send_all(self, events: list[MonitorEvent]) -> None:
        for event in events:
            try:
                self.send.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.dropped += 1  # ended, or nobody will ever read it
