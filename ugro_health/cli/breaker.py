"""``ugro-health breaker``: reset a node's circuit breaker by hand.

After a node was isolated and came back, its breaker remembers the openings for a while (a node
that flaps is not polled at full speed at once): a new isolation would wait longer. An operator
who has fixed the node says so here; a running ``watch`` picks the reset up from the state
store within a second and polls the node at once.
"""

from __future__ import annotations

import time

import typer

from ugro_health.cli.context import from_typer
from ugro_health.cli.node_completion import complete_node
from ugro_health.cli.output import console, fail

app = typer.Typer(
    help="Circuit breakers: reset a node's by hand.\n\n"
    "Example: [bold]ugro-health breaker reset gpu2[/bold]",
    no_args_is_help=True,
)


_NODES = typer.Argument(
    ..., metavar="NODE...", help="Configured node names.", autocompletion=complete_node
)


@app.command("reset")
def reset(
    ctx: typer.Context,
    nodes: list[str] = _NODES,
) -> None:
    """Close the nodes' breakers and forget their failures and openings (exit 3 for a node
    that is not configured); a running watch polls them at once.

    Example: [bold]ugro-health breaker reset gpu2[/bold]
    """
    from ugro_health.engine.record import breaker_policy, reset_breakers
    from ugro_health.store._fs import StoreError
    from ugro_health.store.state import StateStore

    app_ctx = from_typer(ctx)
    config = app_ctx.load_config()
    known = {n.name for n in config.nodes}
    unknown = [n for n in nodes if n not in known]
    if unknown:
        fail(f"not configured: {', '.join(unknown)} (see `ugro-health config show`)")
    names = list(dict.fromkeys(nodes))
    try:
        before = reset_breakers(
            StateStore(app_ctx.state_dir), names, breaker_policy(config), time.time()
        )
    except StoreError as exc:
        fail(str(exc))
    for name in names:
        console.print(f"breaker reset: {name} (was {before[name]})", markup=False)
