"""The two runs every front builds the same way: ``check``'s one poll and ``watch``'s monitor.

Shared by the CLI (``cli/check.py``, ``cli/watch.py``) and the Python API (``ugro_health.api``),
so that both drive one engine. Imports ``config``, ``engine``, ``store`` and ``notify``; never
``cli`` or ``render``. Problems that a front shows as warnings (a damaged store, an outbox that
overflowed, a delivery that failed) go to its ``warn`` callable: nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ugro_health.config import Config, NodeConfig, WatchSettings
from ugro_health.engine.breaker import BreakerPolicy
from ugro_health.engine.collect import Transports, collect_cluster
from ugro_health.engine.jobs import Job
from ugro_health.engine.monitor import Monitor
from ugro_health.engine.scheduler import PollPolicy
from ugro_health.engine.slurm import SlurmLink, check_step, read_jobs_or_warn
from ugro_health.model import Alert, ClusterReport
from ugro_health.store.state import StateStore

Warn = Callable[[str], None]


def poll_policy(watch: WatchSettings, interval_s: float | None = None) -> PollPolicy:
    """The scheduler's policy from ``watch:`` settings; ``interval_s`` fixes the interval."""
    return PollPolicy(
        active_interval_s=watch.active_interval_s,
        recent_interval_s=watch.recent_interval_s,
        warm_interval_s=watch.warm_interval_s,
        idle_interval_s=watch.idle_interval_s,
        max_interval_s=watch.max_interval_s,
        problem_interval_s=watch.problem_interval_s,
        fixed_interval_s=interval_s,
    )


def breaker_policy(watch: WatchSettings) -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=watch.failure_threshold,
        reset_base_s=watch.reset_base_s,
        reset_max_s=watch.reset_max_s,
    )


def build_monitor(
    config: Config,
    nodes: Sequence[NodeConfig],
    state_dir: Path,
    interval_s: float | None = None,
    transports: Transports | None = None,
    warn: Warn | None = None,
) -> Monitor:
    """``watch``'s loop over ``nodes``, with persistent SSH sessions (``monitor.transports``,
    which the caller closes when the loop is done), and Slurm when ``slurm.enabled`` (its
    thread runs while the loop does). The open-file limit is raised for ``nodes`` first
    (``warn`` says when it cannot be)."""
    open_files(config, nodes, warn, persistent=True)
    store = StateStore(state_dir)
    return Monitor(
        config,
        nodes,
        store,
        transports or Transports(config, persistent=True),
        poll_policy(config.watch, interval_s),
        breaker_policy(config.watch),
        slurm=slurm_link(config, store, nodes),
    )


def open_files(
    config: Config, nodes: Sequence[NodeConfig], warn: Warn | None, persistent: bool
) -> None:
    """Raise the soft open-file limit if the SSH nodes need more (``engine.fdlimit``); a hard
    limit too low for them is one warning, and the run goes on."""
    from ugro_health.engine import fdlimit
    from ugro_health.engine.collect import MAX_PERSISTENT_WORKERS

    remote = sum(1 for node in nodes if not node.is_local)
    workers = max(1, config.ssh.max_workers)
    if persistent:
        workers = max(workers, min(remote, MAX_PERSISTENT_WORKERS))
    limit = fdlimit.ensure(remote, workers, persistent)
    line = None if limit is None else fdlimit.warning(limit, remote, workers, persistent)
    if line is not None and warn is not None:
        warn(line)


def slurm_link(config: Config, store: StateStore, nodes: Sequence[NodeConfig]) -> SlurmLink | None:
    """The Slurm link acting on ``nodes`` (None unless ``slurm.enabled``)."""
    if not config.slurm.enabled:
        return None
    return SlurmLink(config, store, nodes=[n.name for n in nodes])


def check_once(
    config: Config,
    nodes: Sequence[NodeConfig],
    state_dir: Path,
    warn: Warn,
    *,
    record: bool = True,
    timeout: float | None = None,
    accept_new: bool = False,
    slurm_act: bool = False,
) -> tuple[ClusterReport, int]:
    """``check``: poll ``nodes`` once, record the run and move the alert lifecycle (unless
    ``record`` is false), deliver what that queued for up to ``notify.check_wait``; the report
    with each alert's lifecycle state, and how many jobs were active. With ``slurm.enabled``
    the jobs running in Slurm count too; ``slurm_act`` drains and resumes after the poll
    (needs ``record``: the counts are kept in the state)."""
    open_files(config, nodes, warn, persistent=False)
    transports = Transports(config, accept_new=accept_new)
    jobs = _active_jobs(state_dir, warn, recording=record)
    started = time.monotonic()
    slurm = slurm_link(config, StateStore(state_dir), nodes)
    if slurm is not None:
        if timeout is not None:
            slurm.client.deadline = started + timeout  # the run's timeout bounds Slurm too
        if config.slurm.jobs:
            # A hung squeue takes at most a quarter of the run from the poll.
            jobs.extend(read_jobs_or_warn(slurm, warn, None if timeout is None else timeout / 4))
    try:
        report = collect_cluster(config, nodes, transports, timeout=timeout, jobs=jobs)
    finally:
        transports.close()
    cluster = None
    if slurm_act and record and slurm is not None:
        report, cluster = check_step(slurm, report, warn)
    report = _judge_alerts(state_dir, config, report, warn, record=record, cluster=cluster)
    if record and config.notify.channels:
        left = None if timeout is None else timeout - (time.monotonic() - started)
        _deliver(state_dir, config, left, warn)
    return report, len(jobs)


def _active_jobs(state_dir: Path, warn: Warn, recording: bool) -> list[Job]:
    """Active jobs from the state store, for rank checks; an unreadable store means none."""
    from ugro_health.engine.jobs import active_jobs
    from ugro_health.store.state import DAMAGED_PREFIX

    loaded = StateStore(state_dir).load()
    # Damaged records are said once: by the record's write, which repairs the file.
    if loaded.warning and not (recording and loaded.warning.startswith(DAMAGED_PREFIX)):
        warn(loaded.warning)
    return active_jobs(loaded.state)


def _judge_alerts(
    state_dir: Path,
    config: Config,
    report: ClusterReport,
    warn: Warn,
    record: bool,
    cluster: list[Alert] | None = None,
) -> ClusterReport:
    """Record the run and move the alert lifecycle (queueing notifications) in the same state
    write; with ``record`` false only show the states the alerts would have."""
    from ugro_health.engine.alerting import Alerting

    alerting = Alerting(state_dir, config)
    if record:
        from ugro_health.engine.record import record_report

        change = alerting.change(report.nodes, report.generated_at, cluster)
        for problem in record_report(state_dir, config, report, change):
            warn(problem)
        for problem in alerting.warnings:
            warn(problem)
        if alerting.dropped:
            warn(f"notify: outbox full, {alerting.dropped} oldest notification(s) dropped")
    else:
        alerting.preview(StateStore(state_dir).load().state, report.nodes, report.generated_at)
    return alerting.annotate(report)


def _deliver(state_dir: Path, config: Config, left_s: float | None, warn: Warn) -> None:
    """Deliver what is queued for up to ``notify.check_wait`` (and the run's timeout); what
    is left stays queued for the next run or a running ``watch``."""
    from ugro_health.notify.deliver import drain

    wait = config.notify.check_wait_s if left_s is None else min(config.notify.check_wait_s, left_s)
    for result in drain(state_dir, config.notify, max(wait, 0.0)):
        if result.error:
            queued = f"; {result.queued} queued for the next run" if result.queued else ""
            warn(f"notify {result.name}: {result.error}{queued}")
