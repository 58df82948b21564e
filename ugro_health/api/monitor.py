"""``HealthMonitor``: the ``watch`` loop without a terminal, from a thread or from async code.

The loop is the CLI's own (``engine.runs.build_monitor``: adaptive polling, breakers, the alert
lifecycle, recording, job expiry, notification delivery) on a thread of its own. After each
round the monitor's thread turns the engine's ``CycleResult`` into events (``api.events``) and
hands them, without ever blocking, to the handlers' thread (``api.dispatch``) and to the async
event stream (an anyio memory stream, bounded: what a slow reader leaves is dropped, counted).

Stopping: ``stop()`` lets the round in flight finish (it is judged and recorded); ``close()``,
leaving ``with`` / ``async with``, or cancelling the async scope abandons it: every SSH session
is closed at once (which ends the polls), the loop's thread is joined, nothing of the round is
recorded. anyio is imported only by the async entry points.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ugro_health.api.dispatch import Dispatcher
from ugro_health.api.events import (
    AlertEvent,
    BreakerEvent,
    ClusterState,
    CycleEvent,
    JobEvent,
    MonitorEvent,
    cluster_state,
    cycle_events,
)
from ugro_health.api.jobs import JobTracking
from ugro_health.config import Config
from ugro_health.engine.collect import Transports

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from ugro_health.api.async_bridge import EventBridge
    from ugro_health.engine.monitor import CycleResult, Monitor
    from ugro_health.notify.deliver import Deliverer

__all__ = ["HealthMonitor", "MonitorStats"]

log = logging.getLogger("ugro_health.api")

TICK_S = 0.25  # how often the waiting loop looks at the store (jobs started elsewhere)
CLOSE_TIMEOUT_S = 30.0

Handler = Callable[[Any], object]


@dataclass(frozen=True, slots=True)
class MonitorStats:
    """Counters of a ``HealthMonitor``: rounds, handler calls that raised, handler calls and
    stream events dropped because a handler or the stream's reader fell behind.

    Example::

        stats = monitor.stats
        assert stats.handler_errors == 0, "a handler raised: see the ugro_health.api log"
    """

    cycles: int
    handler_calls: int
    handler_errors: int
    handler_dropped: int
    events_dropped: int


class HealthMonitor(JobTracking):
    """Run the ``watch`` loop from Python: blocking (``run``), in the background (``start`` /
    ``close``, or ``with``), or in async code (``async with``), on asyncio or trio.

    ``config`` is a ``Config`` (``make_config``, ``load_config``), a path, or None for the CLI's
    lookup; ``nodes`` names or globs a subset, ``shard`` (``"I/N"``) one shard of it;
    ``state_dir`` defaults as for the CLI, and two monitors in one process need two.
    ``interval_s`` fixes the poll interval (else it adapts to job activity). The handlers get
    ``CycleEvent``, ``AlertEvent``, ``BreakerEvent``, ``JobEvent`` and ``ClusterState``
    (``on_state``, for a cluster-state manager) on a thread of their own; one that raises is
    logged and counted, one that blocks makes later calls drop (``stats``) but never delays a
    round. ``transports`` is a seam for tests.

    Example::

        with ugro_health.HealthMonitor("cluster.yaml", on_alert=print) as monitor:
            with monitor.track_job("llama", nodes=["gpu1", "gpu2"], ranks=16):
                subprocess.run(["torchrun", "train.py"], check=True)

        async with ugro_health.HealthMonitor(config) as monitor:
            async for event in monitor.events():
                if isinstance(event, ugro_health.AlertEvent):
                    print(event.node, event.alert.code)
    """

    def __init__(
        self,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        nodes: str | list[str] | tuple[str, ...] | None = None,
        shard: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        interval_s: float | None = None,
        on_cycle: Callable[[CycleEvent], object] | None = None,
        on_alert: Callable[[AlertEvent], object] | None = None,
        on_breaker: Callable[[BreakerEvent], object] | None = None,
        on_job: Callable[[JobEvent], object] | None = None,
        on_state: Callable[[ClusterState], object] | None = None,
        handler_queue: int = 1000,
        event_buffer: int = 1000,
        transports: Transports | None = None,
    ) -> None:
        from ugro_health import paths
        from ugro_health.api.config import load_config, select
        from ugro_health.engine.runs import build_monitor

        self.config = config if isinstance(config, Config) else load_config(config)
        selected = select(self.config, nodes, shard)
        self.state_dir = paths.state_dir(None if state_dir is None else os.fspath(state_dir))
        if interval_s is not None and not interval_s > 0:
            raise ValueError(f"interval_s must be a positive number of seconds, not {interval_s}")
        if event_buffer < 1:
            raise ValueError(f"event_buffer must be at least 1, not {event_buffer}")
        self.engine: Monitor = build_monitor(
            self.config, selected, Path(self.state_dir), interval_s, transports, log.warning
        )
        self._handlers: dict[type, Handler | None] = {
            CycleEvent: on_cycle,
            AlertEvent: on_alert,
            BreakerEvent: on_breaker,
            JobEvent: on_job,
            ClusterState: on_state,
        }
        for kind, handler in self._handlers.items():
            if handler is not None and inspect.iscoroutinefunction(handler):
                # Called on the handlers' thread, a coroutine would never run: refused, not lost.
                raise TypeError(
                    f"the {kind.__name__} handler is async: handlers are plain functions "
                    "(from async code, read monitor.events() instead)"
                )
        self._dispatcher = Dispatcher("ugro-handlers", handler_queue)
        self._event_buffer = event_buffer
        self._bridge: EventBridge | None = None
        self._breakers: dict[str, str] = {n: b.state.value for n, b in self.engine.breakers.items()}
        self._thread: threading.Thread | None = None
        self._started = False
        self._finished = threading.Event()
        self._deliverer: Deliverer | None = None
        self._max_cycles: int | None = None
        self.error: BaseException | None = None  # what ended the loop, if not a stop

    # -- blocking use -------------------------------------------------------------------------

    def run(self, max_cycles: int | None = None) -> None:
        """Run the loop in this thread until ``stop()`` (from a handler or another thread) or
        ``max_cycles`` rounds.

        Example::

            monitor = ugro_health.HealthMonitor(config, on_cycle=lambda e: print(e.number))
            monitor.run(max_cycles=3)
        """
        self._claim()
        self._run(max_cycles)

    def _run(self, max_cycles: int | None) -> None:
        self._begin()
        try:
            self.engine.run(on_cycle=self._cycle_done, tick_s=TICK_S, max_cycles=max_cycles)
        except BaseException as exc:
            if not self.engine.cancelled.is_set():
                self.error = exc
                raise
        finally:
            self._end()

    def start(self, max_cycles: int | None = None) -> HealthMonitor:
        """Run the loop on a background thread; ``close()`` (or leaving ``with``) ends it.

        Example::

            monitor = ugro_health.HealthMonitor(config, on_alert=print).start()
            ...
            monitor.close()
        """
        self._claim()
        self._launch(max_cycles)
        return self

    def _launch(self, max_cycles: int | None) -> None:
        self._max_cycles = max_cycles
        self._thread = threading.Thread(target=self._background, name="ugro-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end after the round in flight (any thread; it returns at once).

        Example::

            def on_cycle(event):
                if event.number == 10:
                    monitor.stop()
        """
        self.engine.stop()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """End the loop now: abandon the round in flight, close every SSH session, join the
        threads (handlers get up to ``timeout`` to finish). True when all ended in time.

        Example::

            monitor.close()
        """
        self._abandon()
        deadline = time.monotonic() + timeout
        here = threading.current_thread()
        if here is self._thread or self._dispatcher.is_current():
            return False  # from a handler or the loop itself: abandoned, ends on its own
        if self._thread is not None:
            self._thread.join(timeout)
        return self._after_close(deadline)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a ``start``-ed loop to end by itself (``stop``, ``max_cycles``).

        Example::

            monitor.start(max_cycles=5).join()
        """
        if self._thread is not None:
            self._thread.join(timeout)
        return self._finished.is_set()

    def __enter__(self) -> HealthMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- async use ----------------------------------------------------------------------------

    async def __aenter__(self) -> HealthMonitor:
        from ugro_health.api.async_bridge import EventBridge

        self._claim()  # before the bridge: a second `async with` leaves nothing half-open
        self._bridge = EventBridge(self._event_buffer)
        await self._bridge.open()
        self._launch(self._max_cycles)
        return self

    async def __aexit__(self, *exc: object) -> None:
        import anyio

        with anyio.CancelScope(shield=True):  # a cancelled scope still closes everything
            self._abandon()
            deadline = time.monotonic() + CLOSE_TIMEOUT_S
            while not self._finished.is_set() and time.monotonic() < deadline:
                await anyio.sleep(0.02)
            # Never a blocking join on the loop: a stuck handler's thread (a daemon) is left.
            self._after_close(deadline, join_handlers=False)
            if self._bridge is not None:
                await self._bridge.close()

    def events(self) -> MemoryObjectReceiveStream[MonitorEvent]:
        """The async stream of events (inside ``async with``), ending when the loop ends.

        Example::

            async with ugro_health.HealthMonitor(config) as monitor:
                async for event in monitor.events():
                    if isinstance(event, ugro_health.CycleEvent) and event.number == 3:
                        break
        """
        if self._bridge is None:
            raise RuntimeError("events() needs `async with HealthMonitor(...) as monitor`")
        return self._bridge.receive

    async def wait(self) -> None:
        """Wait (cancellably) until the loop ends: ``stop()``, ``max_cycles`` or an error.

        Example::

            async with ugro_health.HealthMonitor(config, on_alert=handle) as monitor:
                await monitor.wait()  # until cancelled or stopped
        """
        import anyio

        while not self._finished.is_set():
            await anyio.sleep(0.05)
        if self.error is not None:  # the loop died: not the same as a stop
            raise self.error

    async def run_async(self, max_cycles: int | None = None) -> None:
        """``run`` for async code: returns when the loop ends; cancelling it closes all.

        Example::

            async with anyio.create_task_group() as tg:
                tg.start_soon(monitor.run_async)
        """
        self._max_cycles = max_cycles
        async with self:
            await self.wait()

    # -- what it knows ------------------------------------------------------------------------

    def state(self) -> ClusterState:
        """Every node's state now (also between rounds; from any thread).

        Example::

            print([(n.name, n.status.label, n.score) for n in monitor.state().nodes])
        """
        return cluster_state(self.engine, time.time())

    @property
    def stats(self) -> MonitorStats:
        """The counters (see ``MonitorStats``).

        Example::

            print(monitor.stats.cycles)
        """
        d = self._dispatcher
        dropped = 0 if self._bridge is None else self._bridge.dropped
        return MonitorStats(self.engine.view.cycles, d.calls, d.errors, d.dropped, dropped)

    # -- internals ------------------------------------------------------------------------------

    def _claim(self) -> None:
        if self._started:
            raise RuntimeError("a HealthMonitor runs once: make a new one to monitor again")
        self._started = True

    def _begin(self) -> None:
        self._dispatcher.start()
        if self.config.notify.channels:
            from ugro_health.notify.deliver import Deliverer

            def on_error(channel: str, error: str) -> None:
                log.warning("notify %s: %s (kept, retried)", channel, error)

            self._deliverer = Deliverer(self.state_dir, self.config.notify, on_error=on_error)
            self.engine.on_queued = self._deliverer.kick
            self._deliverer.start()

    def _background(self) -> None:
        try:
            self._run(self._max_cycles)
        except BaseException:
            log.exception("ugro-health monitor stopped by an error")

    def _cycle_done(self, result: CycleResult) -> None:
        """On the monitor's thread: hand the round's events on, never waiting for anyone."""
        events = cycle_events(self.engine, result, self._breakers)
        for event in events:
            handler = self._handlers.get(type(event))
            if handler is not None:
                self._dispatcher.offer(handler, event)
        if self._bridge is not None:
            self._bridge.offer(events)

    def _end(self) -> None:
        """The loop's thread, at its end: close the sessions, flush handlers, end the stream."""
        self.engine.transports.close()
        if self._deliverer is not None:
            self._deliverer.stop()
        # Closed (abandoned): handlers get their time in close(), not here.
        self._dispatcher.stop(0.0 if self.engine.cancelled.is_set() else 5.0)
        if self._bridge is not None:
            self._bridge.end()
        self._finished.set()

    def _abandon(self) -> None:
        self.engine.cancel()
        for name in self.engine.nodes:  # ends a poll in flight now: its session is closed
            self.engine.transports.forget(name)
        if not self._started:
            self._started = True
            self._finished.set()

    def _after_close(self, deadline: float, join_handlers: bool = True) -> bool:
        # A session a poll opened while the loop was closing: closed here too.
        self.engine.transports.close()
        left = max(0.0, deadline - time.monotonic()) if join_handlers else 0.0
        ended = self._dispatcher.stop(left) if self._dispatcher.alive else True
        return ended and self._finished.is_set()
