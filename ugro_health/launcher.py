"""The launcher API: tell ugro-health that a training job runs, from Python.

    import ugro_health

    with ugro_health.track_job("llama-70b", nodes=["gpu1", "gpu2"], ranks=8):
        subprocess.run(["torchrun", "--nnodes", "2", "--nproc_per_node", "8", "train.py"],
                       check=True)

The job is registered on entry and finished on exit, also when the body raises. It writes the
same state store as ``ugro-health jobs``, so a running ``watch`` polls every 5 s meanwhile and
checks that the ranks' processes are alive. A crashed launcher that never reaches ``__exit__``
is covered by ``ttl`` and by the grace period after the job's processes disappear.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ugro_health import paths
from ugro_health.engine.jobs import Job, JobError, finish_job, start_job
from ugro_health.store.state import StateStore

__all__ = ["JobError", "track_job"]


@contextmanager
def track_job(
    name: str,
    nodes: Sequence[str],
    *,
    ranks: int | None = None,
    match: str | None = None,
    ttl_s: float | None = None,
    config: str | Path | None = None,
    state_dir: str | Path | None = None,
) -> Iterator[Job]:
    """Register job ``name`` on ``nodes`` for the duration of the ``with`` block.

    ``config`` and ``state_dir`` follow the CLI's lookup order when not given. Raises
    ``JobError`` (before the body runs) for an unknown node, a bad name or a job that is
    already active. A running ``watch`` (or ``HealthMonitor``) sees it within a tick.

    Example::

        with ugro_health.track_job("llama", nodes=["gpu1", "gpu2"], ranks=16):
            subprocess.run(["torchrun", "train.py"], check=True)
    """
    from ugro_health.config import default_config, load_config

    config_path = paths.find_config(str(config) if config is not None else None)
    cluster = default_config() if config_path is None else load_config(config_path)
    store = StateStore(paths.state_dir(str(state_dir) if state_dir is not None else None))
    job = start_job(
        store,
        name,
        list(nodes),
        time.time(),
        [n.name for n in cluster.nodes],
        ranks=ranks,
        match=match,
        ttl_s=ttl_s,
    )
    try:
        yield job
    finally:
        try:
            finish_job(store, name, time.time())
        except JobError:
            pass  # already finished by hand, by its TTL or by the grace period
