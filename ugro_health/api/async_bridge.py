"""From the monitor's thread to an async reader: a bounded anyio memory stream behind a portal.

The monitor's thread never waits here: ``offer`` schedules the sends on the event loop (a
``BlockingPortal`` task) and returns; on the loop, an event that finds the stream full is
dropped and counted. Works on asyncio and trio (anyio). Imported only by async entry points.
"""

from __future__ import annotations

import anyio
from anyio.from_thread import BlockingPortal

from ugro_health.api.events import MonitorEvent


class EventBridge:
    def __init__(self, size: int) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[MonitorEvent](size)
        self.portal = BlockingPortal()
        self.dropped = 0

    async def open(self) -> None:
        await self.portal.__aenter__()

    def offer(self, events: list[MonitorEvent]) -> None:
        """From a foreign thread: queue ``events`` for the stream, without waiting."""
        try:
            self.portal.start_task_soon(self._send_all, events)
        except RuntimeError:  # the portal is closed: nobody reads any more
            self.dropped += len(events)

    def end(self) -> None:
        """From a foreign thread: end the stream after what was offered (``async for`` ends)."""
        try:
            self.portal.start_task_soon(self._end)
        except RuntimeError:
            pass

    async def close(self) -> None:
        """On the loop: end the stream and the portal."""
        self.send.close()
        await self.portal.__aexit__(None, None, None)

    async def _send_all(self, events: list[MonitorEvent]) -> None:
        for event in events:
            try:
                self.send.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.dropped += 1  # ended, or nobody will ever read it

    async def _end(self) -> None:
        self.send.close()
