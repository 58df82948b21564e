"""``ugro-health jobs``: register training-job activity that drives polling and rank checks."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from ugro_health.cli.context import from_typer
from ugro_health.cli.node_completion import complete_active_job, complete_node_list
from ugro_health.cli.output import console, fail, warn

if TYPE_CHECKING:
    from ugro_health.config import Config
    from ugro_health.engine.jobs import Job
    from ugro_health.store.state import StateStore

app = typer.Typer(
    help="Training-job activity: start, finish and list jobs.\n\n"
    "Example: [bold]ugro-health jobs start llama --nodes gpu1,gpu2 --ranks 8 && torchrun ...; "
    "ugro-health jobs finish llama[/bold]",
    no_args_is_help=True,
)


@app.command("start")
def start(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., metavar="NAME", help="Job name: letters, digits, '.', '_', '-'."
    ),
    nodes: str = typer.Option(
        ...,
        "--nodes",
        "-n",
        metavar="NODES",
        help="Comma-separated node names, e.g. gpu1,gpu2.",
        autocompletion=complete_node_list,
    ),
    ranks: int | None = typer.Option(
        None, "--ranks", min=1, help="Rank processes expected per node."
    ),
    match: str | None = typer.Option(
        None,
        "--match",
        metavar="REGEX",
        help="Pattern for the job's processes (default: torchrun, deepspeed, accelerate, ...).",
    ),
    ttl: str | None = typer.Option(
        None, "--ttl", metavar="DURATION", help="Finish the job automatically after e.g. 12h."
    ),
) -> None:
    """Register an active job (exit 3 if it exists or a node is unknown).

    Example: [bold]ugro-health jobs start llama --nodes gpu1,gpu2 --ranks 8 --ttl 2d[/bold]
    """
    from ugro_health.engine.jobs import JobError, start_job
    from ugro_health.store._fs import StoreError
    from ugro_health.store.state import StateStore
    from ugro_health.store.summary import parse_duration

    app_ctx = from_typer(ctx)
    config = app_ctx.load_config()
    try:
        ttl_s = parse_duration(ttl) if ttl else None
    except ValueError as exc:
        fail(f"--ttl: {exc}")
    names = [n.strip() for n in nodes.split(",") if n.strip()]
    store = StateStore(app_ctx.state_dir)
    try:
        job = start_job(
            store,
            name,
            names,
            time.time(),
            [n.name for n in config.nodes],
            ranks=ranks,
            match=match,
            ttl_s=ttl_s,
        )
    except (JobError, StoreError) as exc:
        _warn_repaired(store)
        fail(str(exc))
    _warn_repaired(store)
    console.print(f"job {job.name} started on {', '.join(job.nodes)}", markup=False)


@app.command("finish")
def finish(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., metavar="NAME", help="The job to finish.", autocompletion=complete_active_job
    ),
) -> None:
    """Mark a job finished (exit 3 if there is no such active job).

    Example: [bold]ugro-health jobs finish llama[/bold]
    """
    from ugro_health.engine.jobs import JobError, finish_job
    from ugro_health.store._fs import StoreError
    from ugro_health.store.state import StateStore

    app_ctx = from_typer(ctx)
    store = StateStore(app_ctx.state_dir)
    try:
        job = finish_job(store, name, time.time())
    except (JobError, StoreError) as exc:
        _warn_repaired(store)
        fail(str(exc))
    _warn_repaired(store)
    took = (job.finished_at or 0.0) - job.started_at
    if job.finish_reason == "ttl":
        console.print(f"job {job.name} had already finished: its TTL ran out after {_age(took)}")
    else:
        console.print(f"job {job.name} finished after {_age(took)}", markup=False)


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the jobs as JSON."),
) -> None:
    """Show active and recently finished jobs with their nodes, age and health; with
    slurm.enabled, also the jobs running in Slurm on configured nodes (SOURCE slurm).

    Example: [bold]ugro-health jobs list --json[/bold]
    """
    from ugro_health.config import ConfigError
    from ugro_health.engine.jobs import jobs_of
    from ugro_health.store.state import StateStore

    app_ctx = from_typer(ctx)
    store = StateStore(app_ctx.state_dir)
    loaded = store.load()
    if loaded.warning:
        warn(loaded.warning)
    now = time.time()
    jobs = jobs_of(loaded.state)
    try:  # the registered jobs are listed from the state whatever the file says
        jobs += _slurm_jobs(app_ctx.load_config(), store)
    except ConfigError as exc:
        warn(f"{exc}; jobs running in Slurm not listed")
    jobs.sort(key=lambda j: (not j.active, -j.started_at))
    nodes_state = loaded.state.get("nodes") or {}
    if as_json:
        docs = [
            {
                **j.to_json(),
                "active": j.active,
                "health": {n: (nodes_state.get(n) or {}).get("status") for n in j.nodes},
            }
            for j in jobs
        ]
        print(json.dumps({"schema": "ugro-health/v1", "jobs": docs}, indent=2))
        return
    if not jobs:
        console.print("no jobs")
        return
    from ugro_health.render.layout import Trimmed

    console.print(Trimmed(_jobs_table(jobs, nodes_state, now)))


def _jobs_table(jobs: list[Job], nodes_state: dict[str, Any], now: float) -> Table:
    from ugro_health.render.common import printable

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("JOB", "SOURCE", "STATE", "AGE", "RANKS", "NODES"):
        table.add_column(column)
    for job in jobs:
        state = "active" if job.active else f"done ({job.finish_reason})"
        health = ", ".join(
            f"{n}:{(nodes_state.get(n) or {}).get('status') or '?'}" for n in job.nodes
        )
        end = job.finished_at if job.finished_at is not None else now
        table.add_row(
            printable(job.name),
            job.source,
            state,
            _age(max(0.0, end - job.started_at)),
            str(job.ranks or "—"),
            health,
        )
    return table


def _slurm_jobs(config: Config, store: StateStore) -> list[Job]:
    """The jobs running in Slurm (slurm.enabled and slurm.jobs); Slurm not answering is one
    warning, and the registered jobs are still listed."""
    if not (config.slurm.enabled and config.slurm.jobs):
        return []
    from ugro_health.engine.slurm import SlurmLink, read_jobs_or_warn

    return read_jobs_or_warn(SlurmLink(config, store), warn)


def _age(seconds: float) -> str:
    from ugro_health.model import human_duration

    return human_duration(seconds)


def _warn_repaired(store: StateStore) -> None:
    """The one line saying what the write dropped from a damaged state.json, if it did."""
    if store.last_warning:
        warn(store.last_warning)
