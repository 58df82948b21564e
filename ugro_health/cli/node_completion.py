"""Shell completion of node names, from the configuration the command line would load.

Used as Typer ``autocompletion=`` callbacks on ``--nodes`` and the ``history`` NODE argument.
They run on every TAB, so they never raise and never print: a missing or broken cluster file
simply offers no names.
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
