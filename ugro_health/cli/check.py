"""``ugro-health check``: poll every node once, print, record, exit with the worst status."""

from __future__ import annotations

import json

import typer
from typer._click.exceptions import UsageError

from ugro_health.cli.context import (
    from_typer,
    parse_shard_option,
    select_nodes,
    shard_nodes,
    shard_option,
)
from ugro_health.cli.export import TEXTFILE_HELP, textfile_dir, write_metrics_textfile
from ugro_health.cli.node_completion import nodes_glob_option
from ugro_health.cli.output import console, fail, use_nagios, warn


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
    shard: str | None = shard_option(),
) -> None:
    """Poll the cluster once and exit 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN.

    Example: [bold]ugro-health check --nodes 'gpu*' --json | jq .status[/bold]  or, from
    cron, [bold]ugro-health check --textfile /var/lib/prometheus/node-exporter[/bold]
    """
    from ugro_health.engine.runs import check_once

    if nagios:
        use_nagios()
        if as_json:
            raise UsageError("--json and --nagios cannot be used together", ctx=ctx)
    part = parse_shard_option(shard)
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
    selected = shard_nodes(select_nodes(config, nodes), part)
    textfile_to = textfile_dir(textfile)
    report, active = check_once(
        config,
        selected,
        app.state_dir,
        warn,
        record=not no_record,
        timeout=timeout,
        accept_new=accept_new,
        slurm_act=slurm_act,
    )
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    elif nagios:
        from ugro_health.render.nagios import nagios_line

        print(nagios_line(report, config.thresholds))
    else:
        from ugro_health.render.table import check_table

        console.print(check_table(report))
    if textfile_to is not None:
        where = None if part is None else (part.index, part.count)
        not_written = write_metrics_textfile(textfile_to, list(selected), report, active, where)
        if not_written is not None:
            fail(not_written)
    raise typer.Exit(report.status.exit_code)
