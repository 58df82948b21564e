"""``ugro-health notify``: send a test notification; show each channel's delivery state.

``test`` sends straight to the receivers (not through the outbox), so its answer is the
receiver's own; ``status`` reads the outboxes (``notify.outbox``) and touches no network.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import typer
from rich.table import Table

from ugro_health.cli.context import from_typer
from ugro_health.cli.output import console, fail

app = typer.Typer(
    help="Notification channels: test them, see their delivery state.\n\n"
    "Example: [bold]ugro-health notify test && ugro-health notify status[/bold]",
    no_args_is_help=True,
)


def _stamp(at: Any) -> str:
    from ugro_health.render.common import utc_stamp

    return utc_stamp(at) if isinstance(at, int | float) else "-"


@app.command("test")
def test(
    ctx: typer.Context,
    channel: str | None = typer.Argument(
        None, metavar="CHANNEL", help="One channel by name (default: every channel)."
    ),
) -> None:
    """Send a test notification to each channel and say, per channel, that it was accepted
    or why not; exit 0 if all accepted it, 1 if any did not, 3 for an unknown channel.

    Example: [bold]ugro-health notify test ops-slack[/bold]
    """
    from ugro_health.notify.base import Notification
    from ugro_health.notify.channels import send_timeout

    config = from_typer(ctx).load_config()
    channels = list(config.notify.channels)
    if not channels:
        fail("no notification channels configured (see `notify:` in cluster.example.yaml)")
    if channel is not None:
        channels = [c for c in channels if c.name == channel]
        if not channels:
            names = ", ".join(c.name for c in config.notify.channels)
            fail(f"no channel named {channel!r} (configured: {names})")
    note = Notification(uuid.uuid4().hex, config.notify.cluster, time.time(), (), test=True)
    results: dict[str, str | None] = {}
    took: dict[str, float] = {}

    def send(config_: Any) -> None:
        from ugro_health.notify.base import DeliveryError
        from ugro_health.notify.channels import build_channel

        started = time.monotonic()
        try:
            build_channel(config_).send(note, send_timeout(config_))
            results[config_.name] = None
        except DeliveryError as exc:
            results[config_.name] = str(exc)
        except Exception as exc:  # a channel bug, or an unreadable secret: said, not raised
            results[config_.name] = f"{exc.__class__.__name__}: {exc}"
        took[config_.name] = time.monotonic() - started

    threads = [threading.Thread(target=send, args=(c,), daemon=True) for c in channels]
    for thread in threads:
        thread.start()
    for thread, config_ in zip(threads, channels, strict=True):
        thread.join(send_timeout(config_) + 5.0)
    failed = 0
    for config_ in channels:
        name = config_.name
        if name not in results:
            results[name] = "no answer before its timeout"
        if results[name] is None:
            print(f"ok      {name} ({config_.type}): accepted in {took[name]:.2f}s")
        else:
            failed += 1
            print(f"FAILED  {name} ({config_.type}): {results[name]}")
    raise typer.Exit(1 if failed else 0)


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Each channel's last success, last error and outbox depth (no network).

    Example: [bold]ugro-health notify status --json | jq '.channels[].queued'[/bold]
    """
    from ugro_health.notify.deliver import outboxes

    app_ctx = from_typer(ctx)
    config = app_ctx.load_config()
    boxes = outboxes(app_ctx.state_dir, config.notify)
    rows = []
    for channel in config.notify.channels:
        doc = boxes[channel.name].load()
        entries = doc["entries"]
        rows.append(
            {
                "name": channel.name,
                "type": channel.type,
                "queued": len(entries),
                "oldest_queued_at": entries[0]["enqueued_at"] if entries else None,
                "next_try_at": entries[0]["next_try"] if entries else None,
                "sent": doc["sent"],
                "dropped": doc["dropped"],
                "rejected": doc["rejected"],
                "last_success_at": doc["last_success"],
                "last_error": doc["last_error"],
                "last_error_at": doc["last_error_at"],
            }
        )
    if as_json:
        print(json.dumps({"cluster": config.notify.cluster, "channels": rows}, indent=2))
        return
    if not rows:
        print("no notification channels configured")
        return
    _print_table(rows)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from ugro_health.render.common import printable

    table = Table(box=None, pad_edge=False)
    for column in ("CHANNEL", "TYPE", "QUEUED", "SENT", "DROPPED", "LAST SUCCESS"):
        table.add_column(column, no_wrap=True)
    table.add_column("LAST ERROR")
    for row in rows:
        error = "-"
        if row["last_error"]:
            error = f"{_stamp(row['last_error_at'])} {printable(row['last_error'])}"
        dropped = row["dropped"] + row["rejected"]
        table.add_row(
            row["name"],
            row["type"],
            str(row["queued"]),
            str(row["sent"]),
            str(dropped),
            _stamp(row["last_success_at"]),
            error,
        )
    console.print(table)
