"""Job tracking on a ``HealthMonitor``: register a job, poll its nodes now, finish it.

The same store writes as ``ugro-health jobs`` and ``ugro_health.track_job``
(``engine.jobs``); the monitor's loop is woken with its nodes due at once
(``Monitor.poll_now``), so a job's ranks are checked on its first seconds, not an interval
later. Imports ``config`` and ``engine`` only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from ugro_health.config import Config
from ugro_health.engine.jobs import Job, JobError
from ugro_health.engine.monitor import Monitor


class JobTracking:
    """``start_job``, ``finish_job`` and ``track_job`` for a class with ``engine`` and
    ``config`` (``HealthMonitor``)."""

    engine: Monitor
    config: Config

    def start_job(
        self,
        name: str,
        nodes: list[str] | tuple[str, ...] | None = None,
        *,
        ranks: int | None = None,
        match: str | None = None,
        ttl_s: float | None = None,
    ) -> Job:
        """Register job ``name`` (on all monitored nodes by default) and poll its nodes now.
        Raises ``JobError`` for an unknown node, a bad name or a job already active.

        Example::

            monitor.start_job("llama", ["gpu1", "gpu2"], ranks=16, ttl_s=86400)
        """
        from ugro_health.engine.jobs import start_job

        chosen = list(self.engine.nodes) if nodes is None else list(nodes)
        known = [n.name for n in self.config.nodes]
        job = start_job(self.engine.store, name, chosen, time.time(), known, ranks, match, ttl_s)
        self.engine.poll_now(job.nodes)
        return job

    def finish_job(self, name: str) -> Job:
        """Mark job ``name`` finished; raises ``JobError`` when it is not active.

        Example::

            monitor.finish_job("llama")
        """
        from ugro_health.engine.jobs import finish_job

        job = finish_job(self.engine.store, name, time.time())
        self.engine.poll_now(())
        return job

    @contextmanager
    def track_job(
        self,
        name: str,
        nodes: list[str] | tuple[str, ...] | None = None,
        *,
        ranks: int | None = None,
        match: str | None = None,
        ttl_s: float | None = None,
    ) -> Iterator[Job]:
        """``start_job`` on entry, ``finish_job`` on exit (also when the body raises).

        Example::

            with monitor.track_job("llama", ["gpu1"], ranks=8):
                subprocess.run(["torchrun", "--nproc_per_node", "8", "train.py"], check=True)
        """
        job = self.start_job(name, nodes, ranks=ranks, match=match, ttl_s=ttl_s)
        try:
            yield job
        finally:
            try:
                self.finish_job(name)
            except JobError:
                pass  # already finished by hand, by its TTL or by the grace period
