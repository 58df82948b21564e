"""cluster.yaml -> frozen dataclasses, with errors that name the file, the line and the key.

Imports only the standard library, ``config_yaml`` (YAML with line numbers, and ``ConfigError``,
re-exported here) and ClusterShell's NodeSet (for ``gpu[01-16]`` ranges). ``parse_config`` stops
at the first problem; ``validate_config`` collects them all for ``config validate``.

``~/.ssh/config`` is *not* read here: the SSH transport resolves each node against it at connect
time, so that ``config show`` and the transport agree (see ``transport.ssh_resolve.resolve``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ugro_health.config_notify import AlertRules, NotifySettings, parse_alert_rules, parse_notify
from ugro_health.config_slurm import SlurmSettings, parse_slurm
from ugro_health.config_yaml import (
    ConfigError,
    YamlDoc,
    check_keys,
    parse_yaml,
    section,
    str_list_problem,
)

NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
HOST_RE = re.compile(r"^[A-Za-z0-9_.:%-]+$|^\[[0-9A-Fa-f:.%]+\]$")
PYTHON_RE = re.compile(r"^[A-Za-z0-9_./+-]+$")
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

# XIDs that mean the hardware (not the application) failed; 13/31/43/45 are usually app faults.
DEFAULT_XID_CRITICAL = (48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 119, 120, 140)
DEFAULT_JOB_MATCH = (
    r"torchrun",
    r"torch\.distributed",
    r"deepspeed",
    r"accelerate launch",
    r"python[0-9.]* .*train[^ ]*\.py",
)


@dataclass(frozen=True, slots=True)
class SshSettings:
    connect_timeout: float = 5.0  # DNS, TCP connect, banner and authentication, each
    command_timeout: float = 15.0  # one probe run, from exec to the last byte
    max_workers: int = 32
    # Connections to one sshd (address:port, or one target through one jump host) in their
    # unauthenticated phases at once: below sshd's MaxStartups (10:30:100 by default), whose
    # random drops would otherwise read as unreachable nodes.
    max_startups: int = 8
    keepalive_s: float = 15.0
    known_hosts: str | None = None  # extra known_hosts file besides ~/.ssh and /etc/ssh
    ssh_config: str | None = "~/.ssh/config"  # None/"" disables ~/.ssh/config
    # read after ssh_config, as ssh without -F does; None/"" disables it (ssh -F reads neither)
    system_ssh_config: str | None = "/etc/ssh/ssh_config"
    accept_new_host_keys: bool = False  # enrolment is explicit: `check --accept-new`


@dataclass(frozen=True, slots=True)
class Thresholds:
    gpu_temp_warn_c: float = 80.0
    gpu_temp_crit_c: float = 85.0
    mem_warn_pct: float = 90.0
    mem_crit_pct: float = 95.0
    disk_warn_pct: float = 90.0
    disk_crit_pct: float = 95.0
    swap_warn_pct: float = 50.0
    load_warn_per_core: float = 2.0
    zombie_warn: int = 20
    clock_skew_warn_s: float = 2.0
    net_errors_warn_per_s: float = 1.0
    score_warn: int = 70  # below: the node is at least WARNING
    score_critical: int = 0  # below: the node is CRITICAL (0: never, by the score alone)
    xid_critical: tuple[int, ...] = DEFAULT_XID_CRITICAL
    xid_window_s: float = 86400.0  # older XIDs (by kernel timestamp) are INFO, not alerts


@dataclass(frozen=True, slots=True)
class WatchSettings:
    active_interval_s: float = 5.0  # a training job is active
    recent_interval_s: float = 10.0  # within 30 min of the last job activity
    warm_interval_s: float = 20.0  # within 2 h
    idle_interval_s: float = 40.0
    max_interval_s: float = 60.0  # the adaptive interval never exceeds this
    problem_interval_s: float = 5.0  # WARNING/CRITICAL nodes are re-polled this often
    failure_threshold: int = 3  # consecutive failures that open a node's breaker
    reset_base_s: float = 30.0  # first wait before a half-open trial; doubles per reopening
    reset_max_s: float = 300.0  # the wait never exceeds this
    job_grace_s: float = 300.0  # a job whose processes are gone this long is finished
    stale_after_s: float = 600.0  # `status` marks older data STALE


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    host: str | None = None  # None: the name is the SSH host (and ~/.ssh/config may map it)
    port: int | None = None  # None: ~/.ssh/config, else 22
    user: str | None = None  # None: ~/.ssh/config, else the local user
    identity_file: str | None = None
    python: str = "python3"
    transport: str = "auto"  # auto | ssh | local
    gpus: int | None = None  # expected GPU count
    nvlinks: int | None = None  # expected active NVLinks per GPU (None: only partial loss alerts)
    mounts: tuple[str, ...] = ("/",)
    tags: tuple[str, ...] = ()
    proxy_jump: str | None = None

    @property
    def is_local(self) -> bool:
        if self.transport == "local":
            return True
        if self.transport == "ssh" or self.proxy_jump:  # behind a jump host: its localhost
            return False
        return (self.host or self.name) in LOCAL_HOSTS and self.port is None

    @property
    def ssh_host(self) -> str:
        return self.host or self.name


@dataclass(frozen=True, slots=True)
class Config:
    """A whole cluster file as values (``load_config``, ``make_config``); frozen, so a changed
    copy is made with ``dataclasses.replace``.

    Example::

        config = ugro_health.load_config()
        print([node.name for node in config.nodes], config.thresholds.score_warn)
    """

    nodes: tuple[NodeConfig, ...]
    ssh: SshSettings = field(default_factory=SshSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    watch: WatchSettings = field(default_factory=WatchSettings)
    job_match: tuple[str, ...] = DEFAULT_JOB_MATCH
    source: str | None = None  # path of the file, None for the built-in default
    history_retention_h: float = 24.0
    history_max_mb: float = 4096.0
    alerts: AlertRules = field(default_factory=AlertRules)
    notify: NotifySettings = field(default_factory=NotifySettings)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def node(self, name: str) -> NodeConfig:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def select(self, pattern: str | None) -> tuple[NodeConfig, ...]:
        """Nodes whose name matches any of the comma-separated shell globs in ``pattern``."""
        if not pattern:
            return self.nodes
        import fnmatch

        globs = [p.strip() for p in pattern.split(",") if p.strip()]
        return tuple(n for n in self.nodes if any(fnmatch.fnmatchcase(n.name, g) for g in globs))


def default_config() -> Config:
    """The configuration used when no file is found: this machine, in-process."""
    return Config(nodes=(NodeConfig(name=_local_name(), host="localhost", transport="local"),))


def _local_name() -> str:
    name = os.uname().nodename.split(".")[0] or "localhost"
    return name if NODE_NAME_RE.match(name) else "localhost"


# --- loading -------------------------------------------------------------------------------

_TOP_KEYS = (
    "defaults",
    "ssh",
    "thresholds",
    "watch",
    "nodes",
    "jobs",
    "history",
    "alerts",
    "notify",
    "slurm",
)
_JOB_KEYS = {"match": (list,)}
_HISTORY_KEYS = {"retention_hours": (int, float), "max_size_mb": (int, float)}


def _dataclass_types(cls: type) -> dict[str, tuple[type, ...]]:
    out: dict[str, tuple[type, ...]] = {}
    for f in fields(cls):
        text = str(f.type)
        if "tuple" in text:
            out[f.name] = (list,)
        elif "bool" in text:
            out[f.name] = (bool,)
        elif "float" in text:
            out[f.name] = (int, float)
        elif "int" in text:
            out[f.name] = (int,)
        else:
            out[f.name] = (str, type(None))
    return out


_SSH_KEYS = _dataclass_types(SshSettings)
_THRESHOLD_KEYS = _dataclass_types(Thresholds)
_WATCH_KEYS = _dataclass_types(WatchSettings)


def _settings(
    doc: YamlDoc,
    data: Mapping[str, Any],
    name: str,
    cls: type,
    keys: Mapping[str, tuple[type, ...]],
) -> Any:
    values: dict[str, Any] = {}
    for key, value in check_keys(doc, section(doc, data, name), keys, (name,)).items():
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            doc.problem((name, key), "must not be negative")
            continue
        values[key] = tuple(value) if isinstance(value, list) else value
    return replace(cls(), **values)


def _bounded(
    doc: YamlDoc,
    settings: Any,
    name: str,
    keys: tuple[str, ...],
    ok: Callable[[Any], bool],
    message: str,
) -> Any:
    """``settings`` with each of ``keys`` whose value is not ``ok`` reported and reset."""
    for key in keys:
        if not ok(getattr(settings, key)):
            doc.problem((name, key), message)
            settings = replace(settings, **{key: getattr(type(settings)(), key)})
    return settings


def _job_match(doc: YamlDoc, data: Mapping[str, Any]) -> tuple[str, ...]:
    jobs = check_keys(doc, section(doc, data, "jobs"), _JOB_KEYS, ("jobs",))
    raw = jobs.get("match", list(DEFAULT_JOB_MATCH))
    problem = str_list_problem(raw)
    if problem is not None:
        doc.problem(("jobs", "match"), problem)
        return DEFAULT_JOB_MATCH
    match: list[str] = []
    for pattern in raw:
        try:
            re.compile(pattern)
        except re.error as exc:
            doc.problem(("jobs", "match"), f"invalid pattern {pattern!r}: {exc}")
            continue
        match.append(pattern)
    return tuple(match)


def _ssh(doc: YamlDoc, data: Mapping[str, Any]) -> SshSettings:
    ssh: SshSettings = _settings(doc, data, "ssh", SshSettings, _SSH_KEYS)
    counts = ("max_workers", "max_startups")
    ssh = _bounded(doc, ssh, "ssh", counts, lambda v: v >= 1, "must be at least 1")
    # 0 would leave no time at all: every SSH node would fail before its DNS lookup.
    timeouts = ("connect_timeout", "command_timeout")
    ssh = _bounded(doc, ssh, "ssh", timeouts, lambda v: v > 0, "must be more than zero")
    # ssh reads its system file by absolute path; a relative one would depend on the cwd
    system = ("system_ssh_config",)
    ssh = _bounded(doc, ssh, "ssh", system, lambda v: not v or v.startswith("/"), _ABSOLUTE)
    return ssh


_ABSOLUTE = 'must be an absolute path, or "" to read no system-wide ssh_config'


_PERCENT_KEYS = tuple(f.name for f in fields(Thresholds) if f.name.endswith("_pct"))
_WARN_CRIT = (
    ("gpu_temp_warn_c", "gpu_temp_crit_c"),
    ("mem_warn_pct", "mem_crit_pct"),
    ("disk_warn_pct", "disk_crit_pct"),
    ("score_critical", "score_warn"),  # scores: the critical level is the lower one
)


def _thresholds(doc: YamlDoc, data: Mapping[str, Any]) -> Thresholds:
    thresholds: Thresholds = _settings(doc, data, "thresholds", Thresholds, _THRESHOLD_KEYS)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in thresholds.xid_critical):
        doc.problem(("thresholds", "xid_critical"), "must be a list of integers")
        thresholds = replace(thresholds, xid_critical=DEFAULT_XID_CRITICAL)
    # Negative values are already refused (and reset) by _settings.
    for keys, ok, message in (
        (("xid_window_s",), lambda v: v > 0, "must be more than zero"),
        (_PERCENT_KEYS, lambda v: v <= 100, "must be a percentage, 0 to 100"),
        (("score_warn", "score_critical"), lambda v: v <= 100, "must be 0 to 100 (a score)"),
    ):
        thresholds = _bounded(doc, thresholds, "thresholds", keys, ok, message)
    for warn, crit in _WARN_CRIT:
        thresholds = _warn_not_above_crit(doc, thresholds, warn, crit)
    return thresholds


def _warn_not_above_crit(
    doc: YamlDoc, thresholds: Any, warn: str, crit: str, name: str = "thresholds"
) -> Any:
    """Section ``name``'s ``thresholds``, with the pair reset to its defaults (and reported) if
    warn > crit."""
    low, high = getattr(thresholds, warn), getattr(thresholds, crit)
    if low <= high:
        return thresholds
    written = {key for key in (warn, crit) if (name, key) in doc.lines}
    # Reported where the file sets it: the warning level, unless only the critical one is set.
    where = crit if written == {crit} else warn

    def shown(key: str, value: float) -> str:
        return f"{key} ({value:g}{'' if key in written else ', the default'})"

    doc.problem((name, where), f"{shown(warn, low)} must not be above {shown(crit, high)}")
    fallback = type(thresholds)()
    return replace(thresholds, **{warn: getattr(fallback, warn), crit: getattr(fallback, crit)})


def _build_config(doc: YamlDoc, text: str) -> Config:
    data = check_keys(doc, parse_yaml(text, doc), _TOP_KEYS, ())
    from ugro_health.config_nodes import DEFAULTS_KEYS, parse_nodes

    defaults = check_keys(doc, section(doc, data, "defaults"), DEFAULTS_KEYS, ("defaults",))
    ssh = _ssh(doc, data)
    thresholds = _thresholds(doc, data)
    watch = _settings(doc, data, "watch", WatchSettings, _WATCH_KEYS)
    positive = ("active_interval_s", "max_interval_s", "problem_interval_s", "reset_base_s")
    watch = _bounded(doc, watch, "watch", positive, lambda v: v > 0, "must be more than zero")
    watch = _bounded(
        doc, watch, "watch", ("failure_threshold",), lambda v: v >= 1, "must be at least 1"
    )
    watch = _warn_not_above_crit(doc, watch, "reset_base_s", "reset_max_s", "watch")
    nodes = parse_nodes(doc, data, defaults)
    match = _job_match(doc, data)
    history = check_keys(doc, section(doc, data, "history"), _HISTORY_KEYS, ("history",))
    return Config(
        nodes=tuple(nodes),
        ssh=ssh,
        thresholds=thresholds,
        watch=watch,
        job_match=match,
        source=doc.path,
        history_retention_h=float(history.get("retention_hours", 24.0)),
        history_max_mb=float(history.get("max_size_mb", 4096.0)),
        alerts=parse_alert_rules(doc, data),
        notify=parse_notify(doc, data),
        slurm=_slurm(doc, data, nodes),
    )


def _slurm(doc: YamlDoc, data: Mapping[str, Any], nodes: list[NodeConfig]) -> SlurmSettings:
    settings = parse_slurm(doc, data)
    known = {n.name for n in nodes}
    for name in settings.node_names:
        if name not in known:
            doc.problem(("slurm", "node_names", name), "not a node of this cluster")
    return settings


def parse_config(text: str, path: str = "<config>") -> Config:
    """Parse and validate a cluster file's text; raises ``ConfigError`` for the problem that
    comes first in the file (``validate_config`` lists them all)."""
    doc = YamlDoc(path, collect=True)
    config = _build_config(doc, text)
    if doc.problems:
        raise _in_line_order(doc.problems)[0]
    return config


def validate_config(text: str, path: str = "<config>") -> list[ConfigError]:
    """Every problem in a cluster file's text, in line order; empty when it is valid.

    Invalid YAML (or an empty file, or a top level that is not a mapping) is one problem: nothing
    else can be checked then."""
    doc = YamlDoc(path, collect=True)
    try:
        _build_config(doc, text)
    except ConfigError as fatal:
        return [*doc.problems, fatal]
    return _in_line_order(doc.problems)


def _in_line_order(problems: list[ConfigError]) -> list[ConfigError]:
    return sorted(problems, key=lambda e: e.line if e.line is not None else 0)


def read_config_text(path: str | os.PathLike[str]) -> str:
    """A cluster file's text; every failure is a one-line ``ConfigError``."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", str(p)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a cluster file; every failure is a one-line ``ConfigError``."""
    return parse_config(read_config_text(path), str(Path(path)))


def expand_node_pattern(pattern: str) -> list[str]:
    """The node names a ``name:`` value stands for (``gpu[01-03]`` is three); raises a one-line
    ``ConfigError`` for an invalid name or range."""
    from ugro_health.config_nodes import expand

    return expand(YamlDoc("<name>"), pattern, ())
