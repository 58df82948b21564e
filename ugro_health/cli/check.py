"""``ugro-health check``: poll every node once, print, record, exit with the worst status."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from typer._click.exceptions import UsageError

from ugro_health.cli.context import from_typer, select_nodes
from ugro_health.cli.export import TEXTFILE_HELP, textfile_dir, write_metrics_textfile
from ugro_health.cli.node_completion import nodes_glob_option
from ugro_health.cli.output import console, fail, use_nagios, warn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ugro_health.config import Config, NodeConfig
    from ugro_health.engine.jobs import Job
    from ugro_health.engine.slurm import SlurmLink
    from ugro_health.model import Alert, ClusterReport


def check_command(
    ctx: typer.Context,
    nodes: str | None = nodes_glob_option(
        "Only nodes matching these comma-separated globs, e.g. 'gpu0*,gpu-master'."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the ugro-health/v1 JSON document."),
    nagios: bool = typer.Option(False, "--nagios", help="Print one Nagios line with perfdata."),
    no_record: bool = typer.Option(
        False, "--no-record", help="Do not append this run to the history store."
    ),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        "-t",
        min=0.1,
        metavar="SECONDS",
        help="Bound the whole run: a node still unanswered is reported timed out, one whose "
        "turn has not come, not polled.",
    ),
    accept_new: bool = typer.Option(
        False,
        "--accept-new",
        help="Enrol hosts whose key is not yet known (like ssh's accept-new); a changed key "
        "is still refused.",
    ),
    textfile: str | None = typer.Option(None, "--textfile", metavar="DIR", help=TEXTFILE_HELP),
    slurm_act: bool = typer.Option(
        False,
        "--slurm-act",
        help="Drain and resume nodes in Slurm as watch does (for cron; needs slurm.enabled).",
    ),
) -> None:
    """Poll the cluster once and exit 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN.

    Example: [bold]ugro-health check --nodes 'gpu*' --json | jq .status[/bold]  or, from
    cron, [bold]ugro-health check --textfile /var/lib/prometheus/node-exporter[/bold]
    """
    from ugro_health.engine.collect import Transports, collect_cluster

    if nagios:
        use_nagios()
        if as_json:
            raise UsageError("--json and --nagios cannot be used together", ctx=ctx)
    if textfile is not None and nodes is not None:
        # node_exporter serves the file as the whole cluster: a subset would make the other
        # nodes vanish from Prometheus (and fire their absence alerts).
        raise UsageError("--textfile writes the whole cluster: it cannot take --nodes", ctx=ctx)
    if slurm_act and no_record:
        # The drain and resume counts are kept in the state: a run that records nothing
        # would act on one poll.
        raise UsageError(
            "--slurm-act counts polls in the state: it cannot take --no-record", ctx=ctx
        )
    app = from_typer(ctx)
    config = app.load_config()
    if slurm_act and not (config.slurm.enabled and config.slurm.manage):
        fail("--slurm-act: Slurm drain and resume is off (slurm.enabled and slurm.manage)")
    selected = select_nodes(config, nodes)
    textfile_to = textfile_dir(textfile)
    transports = Transports(config, accept_new=accept_new)
    jobs = _active_jobs(app.state_dir, recording=not no_record)
    started = time.monotonic()
    slurm = _slurm_link(app.state_dir, config, selected)
    if slurm is not None and timeout is not None:
        slurm.client.deadline = started + timeout  # --timeout bounds Slurm's part too
    if slurm is not None and config.slurm.jobs:
        # A hung squeue takes at most a quarter of the run from the poll.
        jobs.extend(_slurm_jobs(slurm, None if timeout is None else timeout / 4))
    try:
        report = collect_cluster(config, selected, transports, timeout=timeout, jobs=jobs)
    finally:
        transports.close()
    cluster = None
    if slurm_act and slurm is not None:
        report, cluster = _slurm_step(slurm, report)
    report = _judge_alerts(app.state_dir, config, report, record=not no_record, cluster=cluster)
    if not no_record and config.notify.channels:
        left = None if timeout is None else timeout - (time.monotonic() - started)
        _deliver(app.state_dir, config, left)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    elif nagios:
        from ugro_health.render.nagios import nagios_line

        print(nagios_line(report, config.thresholds))
    else:
        from ugro_health.render.table import check_table

        console.print(check_table(report))
    if textfile_to is not None:
        not_written = write_metrics_textfile(textfile_to, list(selected), report, len(jobs))
        if not_written is not None:
            fail(not_written)
    raise typer.Exit(report.status.exit_code)


def _active_jobs(state_dir: Path, recording: bool) -> list[Job]:
    """Active jobs from the state store, for rank checks; an unreadable store means none."""
    from ugro_health.engine.jobs import active_jobs
    from ugro_health.store.state import DAMAGED_PREFIX, StateStore

    loaded = StateStore(state_dir).load()
    # Damaged records are said once: by the record's write, which repairs the file.
    if loaded.warning and not (recording and loaded.warning.startswith(DAMAGED_PREFIX)):
        warn(loaded.warning)
    return active_jobs(loaded.state)


def _slurm_link(
    state_dir: Path, config: Config, selected: Sequence[NodeConfig]
) -> SlurmLink | None:
    if not config.slurm.enabled:
        return None
    from ugro_health.engine.slurm import SlurmLink
    from ugro_health.store.state import StateStore

    return SlurmLink(config, StateStore(state_dir), nodes=[n.name for n in selected])


def _slurm_jobs(slurm: SlurmLink, timeout: float | None) -> list[Job]:
    """Running Slurm jobs, for rank checks; Slurm not answering is said, and means none."""
    from ugro_health.integrations.slurm import SlurmError

    try:
        return slurm.read_jobs(timeout)
    except SlurmError as exc:
        warn(f"slurm: running jobs unknown: {exc}")
        return []


def _slurm_step(
    slurm: SlurmLink, report: ClusterReport
) -> tuple[ClusterReport, list[Alert] | None]:
    """Drain and resume after this poll; the actions go on their nodes as INFO alerts."""
    from dataclasses import replace

    slurm.step([n for n in report.nodes if n.polled])
    events, problems = slurm.take_events()
    for problem in problems:
        warn(problem)
    by_node: dict[str, list[Alert]] = {}
    for name, alert in events:
        by_node.setdefault(name, []).append(alert)
    nodes = tuple(
        replace(n, alerts=(*n.alerts, *by_node[n.name])) if n.name in by_node else n
        for n in report.nodes
    )
    if slurm.guard is not None:
        warn(f"CRITICAL {slurm.guard.message}")
    if not slurm.stepped:  # Slurm unread: no verdict on the guard either way
        return replace(report, nodes=nodes), None
    return replace(report, nodes=nodes), [slurm.guard] if slurm.guard is not None else []


def _judge_alerts(
    state_dir: Path,
    config: Config,
    report: ClusterReport,
    record: bool,
    cluster: list[Alert] | None = None,
) -> ClusterReport:
    """Record the run and move the alert lifecycle (queueing notifications) in the same state
    write; with ``--no-record`` only show the states the alerts would have."""
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
        from ugro_health.store.state import StateStore

        alerting.preview(StateStore(state_dir).load().state, report.nodes, report.generated_at)
    return alerting.annotate(report)


def _deliver(state_dir: Path, config: Config, left_s: float | None) -> None:
    """Deliver what is queued for up to ``notify.check_wait`` (and the run's --timeout);
    what is left stays queued for the next run or a running ``watch``."""
    from ugro_health.notify.deliver import drain

    wait = config.notify.check_wait_s if left_s is None else min(config.notify.check_wait_s, left_s)
    for result in drain(state_dir, config.notify, max(wait, 0.0)):
        if result.error:
            queued = f"; {result.queued} queued for the next run" if result.queued else ""
            warn(f"notify {result.name}: {result.error}{queued}")
