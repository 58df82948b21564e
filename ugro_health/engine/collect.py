"""Fan the probe out over a bounded thread pool and turn every outcome into a ``NodeReport``.

Imports ``config``, ``model``, ``transport`` and ``engine.scoring``; never ``cli`` or
``render``. Nothing a node does raises out of ``collect_cluster``: each node's failure is a
report with a classified error, and a node that is still running when the run's deadline passes is
reported as timed out while the others are reported on time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ugro_health.config import Config, NodeConfig
from ugro_health.engine import POLL_THREAD_PREFIX
from ugro_health.engine.fdlimit import explain
from ugro_health.engine.jobs import Job, job_ranks, patterns_for, rank_alerts
from ugro_health.engine.scoring import error_alert, judge
from ugro_health.model import (
    ClusterReport,
    ErrorKind,
    NodeError,
    NodeReport,
    NodeSample,
    Status,
    printable,
    worst_status,
)
from ugro_health.transport.base import EXCHANGE_KEY, Transport, TransportError

CPU_WINDOW_S = 0.2  # one-shot CPU/network window: the probe's whole run, at least this long
MAX_OUTPUT_BYTES = 2_000_000
MAX_PERSISTENT_WORKERS = 256


@dataclass
class Transports:
    """Picks the transport for each node; the SSH one (and paramiko) only when needed."""

    config: Config
    accept_new: bool = False
    persistent: bool = False  # watch: keep SSH sessions and remote probes alive across cycles
    _local: Transport | None = None
    _ssh: Transport | None = None
    _pool: ThreadPoolExecutor | None = None
    _pool_workers: int = 0
    _budgets: dict[str, float] = field(default_factory=dict)

    def pool(self, workers: int) -> ThreadPoolExecutor:
        """The poll threads, kept from run to run (``watch``: no thread starts per cycle)."""
        if self._pool is None or self._pool_workers < workers:  # threads start lazily
            self.discard_pool()
            self._pool = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=POLL_THREAD_PREFIX
            )
            self._pool_workers = workers
        return self._pool

    def discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def for_node(self, node: NodeConfig) -> Transport:
        if node.is_local:
            if self._local is None:
                from ugro_health.transport.local import LocalTransport

                self._local = LocalTransport()
            return self._local
        if self._ssh is None:
            from ugro_health.transport.ssh import SshTransport

            if self.persistent:
                self._ssh = SshTransport(
                    self.config.ssh, accept_new=self.accept_new, persistent=True
                )
            else:
                self._ssh = SshTransport(self.config.ssh, accept_new=self.accept_new)
        return self._ssh

    def budget(self, node: NodeConfig) -> float:
        """The longest ``node`` may take: ``node_budget``, plus the connect phases (forward,
        banner, authentication) of each jump host before it."""
        budget = self._budgets.get(node.name)
        if budget is None:  # once per node: ssh_config does not change during a run
            hops = 0
            if not node.is_local:
                from ugro_health.transport.ssh import SshTransport

                transport = self.for_node(node)
                hops = transport.jump_hops(node) if isinstance(transport, SshTransport) else 0
            budget = node_budget(self.config) + 3 * hops * self.config.ssh.connect_timeout
            self._budgets[node.name] = budget
        return budget

    def forget(self, node: str) -> None:
        """Drop what is kept for ``node`` (its breaker opened)."""
        for transport in (self._local, self._ssh):
            if transport is not None:
                transport.forget(node)

    def close(self) -> None:
        self.discard_pool()
        for transport in (self._local, self._ssh):
            if transport is not None:
                transport.close()


def probe_request(config: Config, node: NodeConfig, match: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "op": "sample",
        "mounts": list(node.mounts),
        "window_s": CPU_WINDOW_S,
        "subcheck_timeout_s": max(0.5, min(3.0, config.ssh.command_timeout / 3)),
        "match": list(match),
        "max_output_bytes": MAX_OUTPUT_BYTES,
    }


def poll_node(
    config: Config,
    node: NodeConfig,
    transport: Transport,
    deadline: float,
    jobs: Sequence[Job] = (),
    clock: Callable[[], float] = time.time,
) -> NodeReport:
    """Probe one node and judge it; every failure becomes a report, never an exception."""
    started_wall, started = clock(), time.monotonic()
    match = patterns_for(node.name, jobs, config.job_match)
    try:
        sent = time.time()  # the real clock: skew is a physical measurement (see _exchange)
        doc = transport.run_probe(node, probe_request(config, node, match), deadline)
        exchange = _exchange(doc, sent)
        sample = NodeSample.from_probe(doc)
    except TransportError as exc:
        error = NodeError(exc.kind, explain(exc.message), exc.at_deadline)
        return failed_report(node.name, error, started_wall, started)
    except Exception as exc:  # a bug in one node's path must not lose the others
        error = NodeError(ErrorKind.PROBE_INVALID, f"{type(exc).__name__}: {exc}")
        return failed_report(node.name, error, started_wall, started)
    try:
        return _judged(config, node, sample, jobs, exchange, started_wall, started)
    except Exception as exc:  # an answer well-formed enough to parse but not to judge
        error = NodeError(ErrorKind.PROBE_INVALID, f"{type(exc).__name__}: {exc}")
        return failed_report(node.name, error, started_wall, started)


def _exchange(doc: dict[str, Any], sent: float) -> tuple[float, float]:
    """When the request left and the answer came: the transport's own stamps when it gave
    them (tighter: without connecting), else around the whole ``run_probe``."""
    stamped = doc.pop(EXCHANGE_KEY, None)
    if isinstance(stamped, tuple) and len(stamped) == 2:
        return float(stamped[0]), float(stamped[1])
    return sent, time.time()


def clock_skew(node_time: float, exchange: tuple[float, float]) -> tuple[float, float]:
    """The node's clock minus ours, and how far off that may be: the node stamped its answer
    somewhere between the request leaving and the answer arriving, so the skew is measured
    against their midpoint, give or take half the round trip. Not against when the answer is
    judged: at 256 nodes, the control host's own queueing made that seconds late."""
    sent, received = exchange
    return node_time - (sent + received) / 2, max(0.0, received - sent) / 2


def _judged(
    config: Config,
    node: NodeConfig,
    sample: NodeSample,
    jobs: Sequence[Job],
    exchange: tuple[float, float],
    started_wall: float,
    started: float,
) -> NodeReport:
    duration = time.monotonic() - started
    skew, uncertainty = None, 0.0
    if sample.time is not None:
        skew, uncertainty = clock_skew(sample.time, exchange)
    verdict = judge(sample, node, config.thresholds, skew, uncertainty)
    job_alerts = rank_alerts(node.name, sample, jobs)
    alerts = (*verdict.alerts, *job_alerts)
    return NodeReport(
        name=node.name,
        status=worst_status(a.severity.status for a in alerts),
        # Missing ranks count against the process component (weight 0.15 of the score).
        score=max(0, verdict.score - 10 * len(job_alerts)),
        polled_at=started_wall,
        duration_s=duration,
        sample=sample,
        alerts=alerts,
        clock_skew_s=skew,
        jobs=tuple(job_ranks(node.name, sample, jobs)),
    )


SIGNAL_SLICE_S = 0.5  # the longest a Ctrl-C waits to be noticed during a poll


def _wait_all(
    futures: Iterable[Future[NodeReport]], until: float
) -> tuple[set[Future[NodeReport]], set[Future[NodeReport]]]:
    """``wait`` for all until ``until`` (monotonic), in slices: a SIGINT that the kernel hands
    to a poll thread reaches Python's handler only when the main thread wakes up, and a
    single long wait would hold Ctrl-C for the whole run."""
    while True:
        remaining = until - time.monotonic()
        done, pending = wait(futures, timeout=max(0.0, min(remaining, SIGNAL_SLICE_S)))
        if not pending or remaining <= SIGNAL_SLICE_S:
            return done, pending


def _report_done(on_report: Callable[[NodeReport], None], future: Future[NodeReport]) -> None:
    if not future.cancelled() and future.exception() is None:
        on_report(future.result())


def failed_report(name: str, error: NodeError, polled_at: float, started: float) -> NodeReport:
    # The message may quote the node (its stderr, its answer): never its control characters.
    error = NodeError(error.kind, printable(error.message), error.at_deadline)
    return NodeReport(
        name=name,
        # Unreachable is CRITICAL; a node never tried is UNKNOWN: nothing was learnt about it.
        status=Status.UNKNOWN if error.kind is ErrorKind.NOT_POLLED else Status.CRITICAL,
        score=None,
        polled_at=polled_at,
        duration_s=time.monotonic() - started,
        alerts=(error_alert(error),),
        error=error,
    )


def _poll_in_turn(
    config: Config,
    node: NodeConfig,
    transport: Transport,
    budget: float,
    run_deadline: float,
    jobs: Sequence[Job],
    clock: Callable[[], float],
) -> NodeReport:
    """``poll_node`` with the node's own deadline counted from when a worker takes it up, so
    a node queued behind slow ones still gets its whole budget (within the run's)."""
    now = time.monotonic()
    if run_deadline - now <= 0:
        return failed_report(node.name, _not_polled(), clock(), now)
    deadline = min(now + budget, run_deadline)
    report = poll_node(config, node, transport, deadline, jobs, clock)
    cut_short = (
        deadline < now + budget
        and report.error is not None
        and report.error.kind is ErrorKind.TIMEOUT
        and report.error.at_deadline
    )
    if cut_short:  # the run's time, not the node's, ran out: nothing was learnt about it
        error = NodeError(
            ErrorKind.NOT_POLLED,
            f"not polled to the end: the run's time left it {deadline - now:.1f}s of its"
            f" {budget:.1f}s (raise --timeout)",
        )
        return failed_report(node.name, error, report.polled_at, now)
    return report


def _not_polled() -> NodeError:
    return NodeError(
        ErrorKind.NOT_POLLED,
        "not polled: the run's time ran out before its turn (raise ssh.max_workers, or --timeout)",
    )


def node_budget(config: Config) -> float:
    """The longest one node may take without jump hosts: the DNS, TCP, banner and auth phases
    (``connect_timeout`` each), then the command."""
    return 4 * config.ssh.connect_timeout + config.ssh.command_timeout


def collect_cluster(
    config: Config,
    nodes: Sequence[NodeConfig],
    transports: Transports,
    timeout: float | None = None,
    jobs: Sequence[Job] = (),
    clock: Callable[[], float] = time.time,
    on_report: Callable[[NodeReport], None] | None = None,
) -> ClusterReport:
    """Poll ``nodes`` concurrently; the report lists them in configuration order.

    ``on_report`` (called from a poll thread) gets each node's report as soon as it is done,
    so a live display need not wait for the slowest node.

    Each node gets ``node_budget`` from when a worker takes it up. The run lasts at most as
    many budgets as there are waves of workers, or ``timeout``: a node still running then is
    reported timed out, one not yet started as not polled (UNKNOWN, and not recorded).
    """
    started_wall, started = clock(), time.monotonic()
    budgets = {node.name: transports.budget(node) for node in nodes}
    if timeout is not None:
        budgets = {name: min(timeout, budget) for name, budget in budgets.items()}
    longest = max(budgets.values(), default=node_budget(config))
    reports: dict[str, NodeReport] = {}
    workers = max(1, config.ssh.max_workers)
    if transports.persistent:
        # A persistent tick is mostly waiting for the answer: a thread per node sends every
        # request at once, which measured cheaper than waves (docs/benchmarks.md, watch cycles).
        workers = max(workers, min(len(nodes), MAX_PERSISTENT_WORKERS))
    waves = max(1, -(-len(nodes) // workers))
    run_budget = waves * longest if timeout is None else min(timeout, waves * longest)
    run_deadline = started + run_budget
    pool = transports.pool(workers)
    finished = False
    try:
        futures: dict[Future[NodeReport], NodeConfig] = {
            pool.submit(
                _poll_in_turn,
                config,
                node,
                transports.for_node(node),
                budgets[node.name],
                run_deadline,
                jobs,
                clock,
            ): node
            for node in nodes
        }
        if on_report is not None:
            for future in futures:
                future.add_done_callback(partial(_report_done, on_report))
        # One wait for all (a FIRST_COMPLETED loop re-arms every pending future each time).
        done, pending = _wait_all(futures, run_deadline + 0.5)
        for future in done:
            reports[futures[future].name] = future.result()
        for future in pending:
            node = futures[future]
            if future.cancel():  # never started
                error = _not_polled()
            else:
                error = NodeError(ErrorKind.TIMEOUT, f"no answer within {budgets[node.name]:.1f}s")
            reports[node.name] = failed_report(node.name, error, started_wall, started)
        finished = not pending
    finally:
        if not finished:
            # Threads still running finish by their own deadline; do not wait for them, and
            # do not let the next run queue behind them: it gets a fresh pool.
            transports.discard_pool()
    return ClusterReport(
        generated_at=started_wall,
        nodes=tuple(reports[n.name] for n in nodes),
        duration_s=time.monotonic() - started,
    )
