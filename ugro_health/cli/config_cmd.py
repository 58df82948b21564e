"""``ugro-health config``: validate a cluster file, show the effective settings, write a starter.

CLI only: parsing and checking live in ``config``; ``show`` asks the SSH transport's own
``resolve()`` (imported lazily) where each node will connect, so that what it prints is what
``check`` and ``watch`` will use. ``init``'s file text comes from ``cli.config_init``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from ugro_health.cli.context import from_typer
from ugro_health.cli.output import err_console, fail, warn
from ugro_health.config import ConfigError, read_config_text, validate_config

if TYPE_CHECKING:
    from ugro_health.config import Config, NodeConfig

app = typer.Typer(
    help="Check, show and start cluster files.\n\n"
    "Example: [bold]ugro-health config init gpu1 gpu2 && ugro-health config validate[/bold]",
    no_args_is_help=True,
)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@app.command("validate")
def validate(
    ctx: typer.Context,
    path: str | None = typer.Argument(
        None, metavar="PATH", help="The file to check (default: the one --config finds)."
    ),
) -> None:
    """Report every problem in a cluster file, one per line; exit 0 if valid, else 3.

    Example: [bold]ugro-health config validate cluster.yaml[/bold]
    """
    from ugro_health.config import parse_config

    target = Path(path) if path else from_typer(ctx).config_path
    if target is None:
        fail("no cluster file found (pass PATH or --config); the built-in default is valid")
    text = read_config_text(target)
    problems = validate_config(text, str(target))
    if problems:
        for problem in problems:
            print(problem.one_line())
        err_console.print(f"{target}: {_plural(len(problems), 'problem')}", markup=False)
        raise typer.Exit(3)
    config = parse_config(text, str(target))
    print(f"{target}: OK, {_plural(len(config.nodes), 'node')}")


@app.command("show")
def show(
    ctx: typer.Context,
    path: str | None = typer.Argument(
        None, metavar="PATH", help="The file to show (default: the one --config finds)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of YAML."),
) -> None:
    """Print every setting with its default filled in, and where each node connects.

    Each node's `connect` is resolved like the SSH transport does it: the node's own keys, then
    ~/.ssh/config read as OpenSSH reads it, then defaults; `set_by` names the file:line that set
    each ssh_config value.

    Example: [bold]ugro-health config show --json | jq '.nodes[].connect'[/bold]
    """
    from ugro_health.config import load_config

    config = load_config(Path(path)) if path else from_typer(ctx).load_config()
    document = effective_document(config)
    if as_json:
        print(json.dumps(document, indent=2))
        return
    source = config.source or "the built-in default (no cluster file found)"
    print(f"# Effective configuration from {source}, defaults filled in.")
    print(yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=96), end="")


def effective_document(config: Config) -> dict[str, Any]:
    """The configuration as the file's keys with every default filled in, plus per node where
    it connects; plain lists and dicts, for JSON and YAML alike."""
    from ugro_health.transport.ssh_resolve import load_ssh_config

    ssh_config = load_ssh_config(config.ssh.ssh_config, config.ssh.system_ssh_config)
    return _plain(
        {
            "source": config.source,
            "ssh": asdict(config.ssh),
            "thresholds": asdict(config.thresholds),
            "watch": asdict(config.watch),
            "jobs": {"match": config.job_match},
            "history": {
                "retention_hours": config.history_retention_h,
                "max_size_mb": config.history_max_mb,
            },
            "alerts": asdict(config.alerts),
            "notify": _notify_document(config),
            "slurm": _slurm_document(config),
            "nodes": [
                {**asdict(node), "connect": _connect(node, config, ssh_config)}
                for node in config.nodes
            ],
        }
    )


def _slurm_document(config: Config) -> dict[str, Any]:
    """``slurm:`` with the file's own keys (``drain.after``, not the field names)."""
    s = config.slurm
    return {
        "enabled": s.enabled,
        "jobs": s.jobs,
        "manage": s.manage,
        "dry_run": s.dry_run,
        "node_names": dict(s.node_names),
        "scontrol": s.scontrol,
        "sinfo": s.sinfo,
        "squeue": s.squeue,
        "timeout": s.timeout_s,
        "jobs_interval": s.jobs_interval_s,
        "drain": {"codes": list(s.drain_codes), "after": s.drain_after},
        "resume": {"after": s.resume_after},
        "reason_prefix": s.reason_prefix,
        "guard": {
            "max_drained_fraction": s.max_drained_fraction,
            "unreachable_fraction": s.unreachable_fraction,
        },
    }


def _notify_document(config: Config) -> dict[str, Any]:
    """``notify:`` with every secret shown as where it comes from, never its value."""
    from ugro_health.config_notify import SENSITIVE_HEADER_RE

    settings = config.notify
    channels = []
    for channel in settings.channels:
        options = {k: _redacted(v) for k, v in channel.options.items()}
        if isinstance(channel.options.get("headers"), dict):
            options["headers"] = {
                name: "<redacted>" if SENSITIVE_HEADER_RE.search(name) else _redacted(value)
                for name, value in channel.options["headers"].items()
            }
        common = {f: getattr(channel, f) for f in ("name", "type", "min_severity", "nodes")}
        common.update(codes=channel.codes, send_resolved=channel.send_resolved)
        channels.append({**common, **options})
    return {
        "cluster": settings.cluster,
        "outbox_max": settings.outbox_max,
        "check_wait": settings.check_wait_s,
        "channels": channels,
    }


def _redacted(value: Any) -> Any:
    from ugro_health.config_notify import Secret

    return value.shown() if isinstance(value, Secret) else value


def _connect(node: NodeConfig, config: Config, ssh_config: Any) -> Any:
    """``local (in-process)``, or the SSH target after ``~/.ssh/config``, or why it can't be
    resolved."""
    if node.is_local:
        return "local (in-process)"
    from ugro_health.transport.base import TransportError
    from ugro_health.transport.ssh import jump_chain, resolve

    def lookup(n: NodeConfig) -> Any:
        return resolve(n, ssh_config)

    try:
        target = lookup(node)
        hops = jump_chain(target, lookup)
    except TransportError as exc:
        return f"error: {exc}"
    return {
        "host": target.hostname,
        "port": target.port,
        "user": target.user,
        "identity_files": target.identity_files,
        "proxy_jump": target.proxy_jump,
        "via": [f"{hop.user}@{hop.hostname}:{hop.port}" for hop in hops],
        "proxy_command": target.proxy_command,
        "identities_only": target.identities_only,
        "user_known_hosts": target.user_known_hosts,
        "global_known_hosts": target.global_known_hosts,
        "check_host_ip": target.check_host_ip,
        "host_key_alias": target.host_key_alias,
        "hash_known_hosts": target.hash_known_hosts,
        "strict_host_key_checking": target.strict_host_key_checking,
        "connect_timeout": target.connect_timeout,
        "server_alive_interval": target.server_alive_interval,
        "host_key_algorithms": target.host_key_algorithms,
        "set_by": dict(target.sources),  # ssh_config keyword -> file:line that set it
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@app.command("init")
def init(
    hosts: Annotated[  # Annotated: a list default would be shared between calls (B008)
        list[str] | None,
        typer.Argument(
            metavar="HOSTS", help="SSH hosts to monitor, e.g. gpu1 gpu[02-16] 10.0.0.5."
        ),
    ] = None,
    from_ssh_config: bool = typer.Option(
        False,
        "--from-ssh-config",
        help="Add every concrete Host of ~/.ssh/config (patterns are skipped).",
    ),
    output: str = typer.Option(
        "cluster.yaml", "--output", "-o", metavar="PATH", help="Where to write; - for stdout."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter cluster file (this machine alone when no host is given).

    Example: [bold]ugro-health config init --from-ssh-config[/bold]
    """
    from ugro_health.cli.config_init import node_entries, ssh_config_hosts, starter_text

    wanted = list(hosts or [])
    if from_ssh_config:
        try:
            found = ssh_config_hosts(Path("~/.ssh/config").expanduser())
        except ValueError as exc:
            fail(f"cannot read ~/.ssh/config: {exc}")
        if not found:
            fail("~/.ssh/config has no concrete Host entries to add")
        wanted += found
    entries, skipped = node_entries(wanted)
    for reason in skipped:
        warn(reason)
    if wanted and not entries:
        fail("no usable host names given")
    text = starter_text(entries)
    problems = validate_config(text, output)
    if problems:  # our own template is wrong: never write a file `validate` would reject
        fail(f"internal error: the starter file is invalid: {problems[0].one_line()}")
    _write(output, text, force)


def _write(output: str, text: str, force: bool) -> None:
    if output == "-":
        print(text, end="")
        return
    path = Path(output).expanduser()
    try:
        with path.open("w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        fail(f"{path} exists; pass --force to overwrite it")
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror or exc}", str(path)) from None
    err_console.print(
        f"wrote {path}; check it with: ugro-health config validate {path}", markup=False
    )
