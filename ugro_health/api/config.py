"""Configuration for the Python API: a cluster file, or one built in code, with overrides.

Both go through the same parser as ``cluster.yaml`` (``config.parse_config``), so a value set
from code is checked exactly as the same value in the file would be, and refused with the same
one-line ``ConfigError``. Imports ``config``, ``paths`` and PyYAML (on use).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from ugro_health.config import Config, ConfigError, NodeConfig

__all__ = ["load_config", "make_config", "select"]

# base_interval_s sets the adaptive levels as multiples of the busiest one: 1, 2, 4 and 8 times
# it are the defaults' 5, 10, 20 and 40 s.
_LEVELS = (
    ("active_interval_s", 1),
    ("recent_interval_s", 2),
    ("warm_interval_s", 4),
    ("idle_interval_s", 8),
)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    base_interval_s: float | None = None,
    max_interval_s: float | None = None,
    max_workers: int | None = None,
    thresholds: Mapping[str, Any] | None = None,
    watch: Mapping[str, Any] | None = None,
    ssh: Mapping[str, Any] | None = None,
) -> Config:
    """Read a cluster file (or find it as the CLI does), then apply overrides.

    Without ``path``: ``$UGRO_HEALTH_CONFIG``, ``./cluster.yaml``,
    ``$XDG_CONFIG_HOME/ugro-health/cluster.yaml``, else the built-in default (this machine).
    ``base_interval_s`` is the poll interval while a job runs; the quieter levels become 2, 4
    and 8 times it (as the defaults 5/10/20/40 s are), all capped by ``max_interval_s``.
    ``max_workers`` sizes the poll pool (``ssh.max_workers``); ``thresholds``, ``watch`` and
    ``ssh`` take any key of those sections (e.g. ``{"score_critical": 40}``) and win over the
    interval keywords. A bad file or value raises ``ConfigError`` (one line, naming the key).

    Example::

        config = ugro_health.load_config("cluster.yaml", max_interval_s=30,
                                         thresholds={"gpu_temp_crit_c": 83})
    """
    from ugro_health import paths
    from ugro_health.config import default_config
    from ugro_health.config import load_config as load_file

    found = paths.find_config(None if path is None else os.fspath(path))
    config = default_config() if found is None else load_file(found)
    sections = _sections(base_interval_s, max_interval_s, max_workers, thresholds, watch, ssh)
    if not sections:
        return config
    base = {
        "ssh": _plain(config.ssh),
        "thresholds": _plain(config.thresholds),
        "watch": _plain(config.watch),
    }
    for name, values in sections.items():
        base[name].update(values)
    checked = _parse({**base, "nodes": ["overrides"]}, "<overrides>")
    return replace(config, ssh=checked.ssh, thresholds=checked.thresholds, watch=checked.watch)


def make_config(
    nodes: Sequence[str | Mapping[str, Any]],
    *,
    defaults: Mapping[str, Any] | None = None,
    base_interval_s: float | None = None,
    max_interval_s: float | None = None,
    max_workers: int | None = None,
    thresholds: Mapping[str, Any] | None = None,
    watch: Mapping[str, Any] | None = None,
    ssh: Mapping[str, Any] | None = None,
    **sections: Any,
) -> Config:
    """Build a configuration in code, as if it were this ``cluster.yaml``.

    ``nodes`` are names (``"gpu[01-04]"`` expands) or mappings of node keys; ``defaults``
    applies to every node; the overrides are ``load_config``'s; other sections of the file
    (``alerts``, ``notify``, ``jobs``, ``history``) go as keywords. Raises ``ConfigError``.

    Example::

        config = ugro_health.make_config(
            ["localhost", {"name": "gpu[01-02]", "gpus": 8}],
            defaults={"user": "ubuntu"},
            base_interval_s=2,
            thresholds={"score_critical": 40},
        )
    """
    doc: dict[str, Any] = {"nodes": [n if isinstance(n, str) else dict(n) for n in nodes]}
    if defaults:
        doc["defaults"] = dict(defaults)
    doc.update({key: value for key, value in sections.items() if value is not None})
    overrides = _sections(base_interval_s, max_interval_s, max_workers, thresholds, watch, ssh)
    for name, values in overrides.items():
        doc[name] = {**(doc.get(name) or {}), **values}
    config = _parse(doc, "<make_config>")
    return replace(config, source=None)


def select(
    config: Config, nodes: str | Sequence[str] | None, shard: str | None = None
) -> tuple[NodeConfig, ...]:
    """The configured nodes named in ``nodes`` (names, or comma-separated globs in a string);
    all of them for None. Raises ``ValueError`` for a name or glob that matches none, since a
    typo would otherwise leave a node out without a word. ``shard`` (``"I/N"``, as the CLI's
    ``--shard``) keeps the selected nodes of that shard, a ``ValueError`` when it holds none."""
    selected = _named(config, nodes)
    if shard is None:
        return selected
    from ugro_health.engine.shard import parse_shard

    part = parse_shard(shard)
    owned = part.select(selected)
    if not owned:
        raise ValueError(f"shard {part.label} holds none of the {len(selected)} selected nodes")
    return owned


def _named(config: Config, nodes: str | Sequence[str] | None) -> tuple[NodeConfig, ...]:
    if nodes is None:
        return config.nodes
    patterns = [p.strip() for p in nodes.split(",")] if isinstance(nodes, str) else list(nodes)
    patterns = [p for p in patterns if p]
    if not patterns:
        raise ValueError("no nodes given: name nodes or globs, or pass None for all")
    unmatched = [p for p in patterns if not config.select(p)]
    if unmatched:
        known = ", ".join(n.name for n in config.nodes[:8])
        more = f" and {len(config.nodes) - 8} more" if len(config.nodes) > 8 else ""
        names = ", ".join(repr(p) for p in unmatched)
        raise ValueError(f"no node matches {names} (configured: {known}{more})")
    return config.select(",".join(patterns))


def _sections(
    base_interval_s: float | None,
    max_interval_s: float | None,
    max_workers: int | None,
    thresholds: Mapping[str, Any] | None,
    watch: Mapping[str, Any] | None,
    ssh: Mapping[str, Any] | None,
) -> dict[str, dict[str, Any]]:
    """The override keywords as sections of a cluster file (explicit section keys win)."""
    out: dict[str, dict[str, Any]] = {}
    levels: dict[str, Any] = {}
    if base_interval_s is not None:
        levels = {key: _times(base_interval_s, factor) for key, factor in _LEVELS}
    if max_interval_s is not None:
        levels["max_interval_s"] = max_interval_s
    if levels or watch:
        out["watch"] = {**levels, **(watch or {})}
    if max_workers is not None or ssh:
        workers = {} if max_workers is None else {"max_workers": max_workers}
        out["ssh"] = {**workers, **(ssh or {})}
    if thresholds:
        out["thresholds"] = dict(thresholds)
    return out


def _times(value: Any, factor: int) -> Any:
    # Passed through unchanged when not a number: the parser then names the key it is for.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return value * factor


def _plain(settings: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def _parse(doc: Mapping[str, Any], where: str) -> Config:
    import yaml

    from ugro_health.config import parse_config

    try:
        text = yaml.safe_dump(dict(doc), sort_keys=False)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not a configuration value: {exc}".splitlines()[0], where) from None
    try:
        return parse_config(text, where)
    except ConfigError as exc:
        # The line is the generated document's, which the caller never saw: the key says where.
        raise ConfigError(exc.message, where, None, exc.key) from None
