"""``check()``: one poll of the cluster from Python, the CLI's ``check`` without printing.

The same run as ``ugro-health check`` (``engine.runs.check_once``): poll, judge, record the
history and the alert lifecycle, deliver what that queued. Warnings the CLI prints (a damaged
store, a failed delivery) go to the ``ugro_health.api`` logger. Imports ``api.config`` and
``engine.runs`` (on use).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ugro_health.config import Config
from ugro_health.model import ClusterReport

__all__ = ["check"]

log = logging.getLogger("ugro_health.api")


def check(
    config: Config | str | os.PathLike[str] | None = None,
    nodes: str | Sequence[str] | None = None,
    *,
    record: bool = True,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    accept_new: bool = False,
    shard: str | None = None,
) -> ClusterReport:
    """Poll the nodes once and return the report ``check`` renders (``report.to_json()`` is
    its ``--json`` document, ``report.status.exit_code`` its exit code).

    ``config`` is a ``Config``, a path, or None for the CLI's lookup; ``nodes`` are names or
    globs (a ``ValueError`` when one matches nothing); ``record=False`` is ``--no-record``;
    ``timeout`` bounds the whole run; ``accept_new`` enrols unknown host keys; ``shard``
    (``"I/N"``) polls only that shard of the selected nodes, as ``--shard``. Nothing a node
    does raises: an unreachable node is a CRITICAL ``NodeReport`` with its ``error``.

    Example::

        report = ugro_health.check("cluster.yaml", nodes="gpu*", timeout=30)
        for node in report.nodes:
            print(node.name, node.status.label, node.score)
    """
    from ugro_health import paths
    from ugro_health.api.config import load_config, select
    from ugro_health.engine.runs import check_once

    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout}")
    cluster = config if isinstance(config, Config) else load_config(config)
    selected = select(cluster, nodes, shard)
    where = paths.state_dir(None if state_dir is None else os.fspath(state_dir))
    report, _ = check_once(
        cluster,
        selected,
        Path(where),
        log.warning,
        record=record,
        timeout=timeout,
        accept_new=accept_new,
    )
    return report
