"""``ugro-health silence``: stop notifications for some nodes or alert codes for a while.

A silenced alert is still judged and shown (``check``, ``status`` and ``watch`` mark it
silenced); only its notifications stop. One that still fires when its silence ends is told
then. The silences live in the state store (``engine.silences``).
"""

from __future__ import annotations

import getpass
import json
import os
import time

import typer
from rich.table import Table

from ugro_health.cli.context import from_typer
from ugro_health.cli.output import console, fail, warn

app = typer.Typer(
    help="Silences: notify nobody about some nodes or alert codes for a while.\n\n"
    "Example: [bold]ugro-health silence add --nodes gpu1 --for 2h --comment 'fan swap'[/bold]",
    no_args_is_help=True,
)


def _globs(option: str, text: str | None) -> tuple[str, ...]:
    from ugro_health.config_notify import glob_problem

    if text is None:
        return ()
    globs = tuple(g.strip() for g in text.split(","))
    for glob in globs:
        problem = glob_problem(glob)
        if problem:
            fail(f"{option}: bad glob {glob!r}: {problem}")
    return globs


def _stamp(at: float) -> str:
    from ugro_health.render.common import utc_stamp

    return utc_stamp(at)


@app.command("add")
def add(
    ctx: typer.Context,
    nodes: str | None = typer.Option(
        None,
        "--nodes",
        "-n",
        metavar="GLOBS",
        help="Comma-separated node globs, e.g. 'gpu1,rack2-*'.",
    ),
    code: str | None = typer.Option(
        None, "--code", metavar="GLOBS", help="Comma-separated alert-code globs, e.g. 'gpu_temp_*'."
    ),
    duration: str = typer.Option(
        ..., "--for", metavar="DURATION", help="How long, e.g. 30m, 2h, 1d."
    ),
    comment: str = typer.Option(..., "--comment", "-m", help="Why: shown by `silence list`."),
) -> None:
    """Silence the alerts of the matching nodes (and codes), from now for DURATION.

    Example: [bold]ugro-health silence add --nodes 'gpu1' --code 'gpu_temp_*' --for 2h
    --comment "fan swap"[/bold]
    """
    from ugro_health.config_notify import parse_duration_s
    from ugro_health.engine.silences import add_silence
    from ugro_health.store._fs import StoreError
    from ugro_health.store.state import StateStore

    if nodes is None and code is None:
        fail("give --nodes or --code (or both); --nodes '*' silences every node")
    seconds = parse_duration_s(duration)
    if seconds is None or seconds <= 0:
        fail(f"--for: not a duration: {duration!r} (e.g. 30m, 2h, 1d)")
    node_globs, code_globs = _globs("--nodes", nodes), _globs("--code", code)
    app_ctx = from_typer(ctx)
    config = app_ctx.load_config()
    if node_globs and not any(config.select(g) for g in node_globs):
        warn(f"--nodes {nodes!r} matches no configured node (kept: it applies if one is added)")
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    try:
        silence = add_silence(
            StateStore(app_ctx.state_dir),
            node_globs,
            code_globs,
            seconds,
            comment,
            user,
            time.time(),
        )
    except StoreError as exc:
        fail(str(exc))
    what = f"nodes {','.join(node_globs) or '*'}, codes {','.join(code_globs) or '*'}"
    print(f"silence {silence.id}: {what} until {_stamp(silence.ends_at)}")


@app.command("list")
def list_command(
    ctx: typer.Context,
    show_all: bool = typer.Option(False, "--all", help="Also the expired ones (kept a week)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """The silences in force, soonest to end first.

    Example: [bold]ugro-health silence list[/bold]
    """
    from ugro_health.engine.silences import list_silences
    from ugro_health.render.common import printable
    from ugro_health.store._fs import StoreError
    from ugro_health.store.state import StateStore

    now = time.time()
    try:
        silences = list_silences(StateStore(from_typer(ctx).state_dir), now, show_all)
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps([{**s.to_json(), "active": s.active(now)} for s in silences], indent=2))
        return
    if not silences:
        print("no silences" + ("" if show_all else " in force"))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NODES", "CODES", "UNTIL", "BY", "COMMENT"):
        table.add_column(column)
    for s in silences:
        until = _stamp(s.ends_at) + ("" if s.ends_at > now else " (expired)")
        table.add_row(
            s.id,
            printable(",".join(s.nodes) or "*"),
            printable(",".join(s.codes) or "*"),
            until,
            printable(s.created_by),
            printable(s.comment),
        )
    console.print(table)


_IDS = typer.Argument(..., metavar="ID...", help="Silence ids (see `silence list`).")


@app.command("expire")
def expire(
    ctx: typer.Context,
    ids: list[str] = _IDS,
) -> None:
    """End silences now (exit 3 for an id that does not exist); alerts still firing are
    notified at the next poll.

    Example: [bold]ugro-health silence expire 3f9a2c1b[/bold]
    """
    from ugro_health.engine.silences import expire_silences
    from ugro_health.store._fs import StoreError
    from ugro_health.store.state import StateStore

    try:
        found = expire_silences(StateStore(from_typer(ctx).state_dir), ids, time.time())
    except StoreError as exc:
        fail(str(exc))
    for sid, silence in found.items():
        if silence is not None:
            print(f"silence {sid}: expired")
    unknown = [sid for sid, s in found.items() if s is None]
    if unknown:
        fail(f"no such silence: {', '.join(unknown)} (see `ugro-health silence list --all`)")
