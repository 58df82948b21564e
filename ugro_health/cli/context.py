"""The frozen context every command handler receives: where config and state are, and flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ugro_health import paths
from ugro_health.config import Config, NodeConfig

if TYPE_CHECKING:
    from ugro_health.engine.shard import Shard

SHARD_HELP = (
    "Poll only shard I of N (1-based) of the selected nodes: one of N processes that share "
    "the cluster, each node in exactly one (by a hash of its name)."
)


@dataclass(frozen=True, slots=True)
class AppContext:
    config_path: Path | None  # None: built-in default (this machine alone)
    state_dir: Path
    debug: bool = False

    def load_config(self) -> Config:
        from ugro_health.config import default_config, load_config

        if self.config_path is None:
            return default_config()
        config = load_config(self.config_path)
        _warn_inline_secrets(config)
        return config


def _warn_inline_secrets(config: Config) -> None:
    """Secrets written inline in a file others can read: said (never their values)."""
    from ugro_health.config_notify import world_readable

    if config.notify.inline_secrets and world_readable(config.source):
        from ugro_health.cli.output import warn

        keys = ", ".join(config.notify.inline_secrets)
        warn(
            f"{config.source} is readable by others and holds secrets inline ({keys}): "
            "chmod 600 it, or use {env: VAR} or {file: PATH}"
        )


def from_typer(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    if isinstance(obj, AppContext):
        return obj
    # A sub-command invoked without the root callback (tests calling a command directly).
    return AppContext(config_path=paths.find_config(None), state_dir=paths.state_dir(None))


def select_nodes(config: Config, pattern: str | None) -> tuple[NodeConfig, ...]:
    """The nodes matching ``--nodes``; a glob that matches nothing is a usage error (exit 3).

    Each comma-separated glob must match: a typo in ``gpu1,gpu2,gpu3`` would otherwise drop a
    node from the check without a word, and a dead node would pass for a healthy cluster.
    """
    from ugro_health.cli.output import fail

    if pattern is not None and not pattern.strip():  # `--nodes "$UNSET"`: not "every node"
        fail("--nodes is empty: give node names or globs, or leave the option out")
    globs = [p.strip() for p in (pattern or "").split(",") if p.strip()]
    unmatched = [g for g in globs if not config.select(g)]
    if pattern and not globs:
        unmatched = [pattern]
    if unmatched:
        known = ", ".join(n.name for n in config.nodes[:8])
        more = f" and {len(config.nodes) - 8} more" if len(config.nodes) > 8 else ""
        names = ", ".join(repr(g) for g in unmatched)
        fail(f"no node matches {names} (configured: {known}{more})")
    return config.select(pattern)


def shard_option() -> Any:
    """The ``--shard I/N`` option of ``check`` and ``watch``."""
    return typer.Option(None, "--shard", metavar="I/N", help=SHARD_HELP)


def parse_shard_option(text: str | None) -> Shard | None:
    """``--shard`` parsed before any work, or the one-line usage error (exit 3)."""
    if text is None:
        return None
    from ugro_health.cli.output import fail
    from ugro_health.engine.shard import ShardError, parse_shard

    try:
        return parse_shard(text)
    except ShardError as exc:
        fail(str(exc))


def shard_nodes(selected: tuple[NodeConfig, ...], shard: Shard | None) -> tuple[NodeConfig, ...]:
    """The selected nodes this shard owns (all without ``--shard``); a shard that owns none
    is an error: a process polling nothing would pass for a healthy part of the cluster."""
    if shard is None:
        return selected
    owned = shard.select(selected)
    if not owned:
        from ugro_health.cli.output import fail

        fail(
            f"--shard {shard.label}: no node of the {len(selected)} selected falls in this "
            "shard (fewer shards, or more nodes)"
        )
    return owned
