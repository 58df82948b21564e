"""Shell completion of node names (from the configuration the command line would load), job
names (from the state store it would read) and ``history --metric`` values.

Used as Typer ``autocompletion=`` callbacks. They run on every TAB, so they never raise and
never print: a missing or broken cluster file or store simply offers no names.
"""

from __future__ import annotations

from typing import Any

import typer

from ugro_health import paths


def configured_names(ctx: typer.Context) -> list[str]:
    """Node names of the file ``--config`` (on the line being completed), ``UGRO_HEALTH_CONFIG``
    or the default lookup finds; none when it is missing or invalid."""
    try:
        from ugro_health.config import default_config, load_config

        explicit = ctx.find_root().params.get("config")
        path = paths.find_config(explicit if isinstance(explicit, str) else None)
        config = default_config() if path is None else load_config(path)
        return [node.name for node in config.nodes]
    except Exception:  # completion must never fail the user's shell
        return []


def complete_node(ctx: typer.Context, incomplete: str) -> list[str]:
    """One node name."""
    return [name for name in configured_names(ctx) if name.startswith(incomplete)]


def complete_node_list(ctx: typer.Context, incomplete: str) -> list[str]:
    """A comma-separated list: complete its last element, keeping the ones before it and not
    offering them again (``gpu1,g`` -> ``gpu1,gpu2``)."""
    head, comma, last = incomplete.rpartition(",")
    taken = set(head.split(",")) if head else set()
    prefix = head + comma
    return [
        prefix + name
        for name in configured_names(ctx)
        if name.startswith(last) and name not in taken
    ]


def nodes_glob_option(help_text: str) -> Any:
    """The ``--nodes GLOB`` option of ``check`` and ``watch``, completing node names."""
    return typer.Option(
        None,
        "--nodes",
        "-n",
        metavar="GLOB",
        help=help_text,
        autocompletion=complete_node_list,
    )


def complete_metric(incomplete: str) -> list[str]:
    """``history --metric``: the metrics the history summarises."""
    from ugro_health.store.summary import METRICS

    return [name for name in METRICS if name.startswith(incomplete)]


def complete_active_job(ctx: typer.Context, incomplete: str) -> list[str]:
    """``jobs finish``: the active jobs of the store ``--state-dir`` (or the default) names."""
    try:
        from ugro_health.engine.jobs import active_jobs
        from ugro_health.store.state import StateStore

        explicit = ctx.find_root().params.get("state_dir")
        directory = paths.state_dir(explicit if isinstance(explicit, str) else None)
        jobs = active_jobs(StateStore(directory).load().state)
        return sorted(job.name for job in jobs if job.name.startswith(incomplete))
    except Exception:  # completion must never fail the user's shell
        return []
