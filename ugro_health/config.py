"""cluster.yaml -> frozen dataclasses, with errors that name the file, the line and the key.

Imports only ``model``-free standard library, PyYAML and ClusterShell's NodeSet (for
``gpu[01-16]`` ranges). ``~/.ssh/config`` is *not* read here: the SSH transport resolves each
node against it at connect time, so that ``config show`` and the transport agree (see
``transport.ssh.resolve``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

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


class ConfigError(Exception):
    """A problem in a configuration file; ``str()`` is one line naming file, line and key."""

    def __init__(
        self, message: str, path: str | None = None, line: int | None = None, key: str | None = None
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.key = key
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


@dataclass(frozen=True, slots=True)
class SshSettings:
    connect_timeout: float = 5.0  # TCP connect, banner and authentication, each
    command_timeout: float = 15.0  # one probe run, from exec to the last byte
    max_workers: int = 32
    keepalive_s: float = 15.0
    known_hosts: str | None = None  # extra known_hosts file besides ~/.ssh and /etc/ssh
    ssh_config: str | None = "~/.ssh/config"  # None/"" disables ~/.ssh/config
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
    xid_critical: tuple[int, ...] = DEFAULT_XID_CRITICAL


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
    mounts: tuple[str, ...] = ("/",)
    tags: tuple[str, ...] = ()
    proxy_jump: str | None = None

    @property
    def is_local(self) -> bool:
        if self.transport == "local":
            return True
        if self.transport == "ssh":
            return False
        return (self.host or self.name) in LOCAL_HOSTS and self.port is None

    @property
    def ssh_host(self) -> str:
        return self.host or self.name


@dataclass(frozen=True, slots=True)
class Config:
    nodes: tuple[NodeConfig, ...]
    ssh: SshSettings = field(default_factory=SshSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    watch: WatchSettings = field(default_factory=WatchSettings)
    job_match: tuple[str, ...] = DEFAULT_JOB_MATCH
    source: str | None = None  # path of the file, None for the built-in default
    history_retention_h: float = 24.0
    history_max_mb: float = 4096.0

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

_NODE_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "host": (str,),
    "port": (int,),
    "user": (str,),
    "identity_file": (str,),
    "python": (str,),
    "transport": (str,),
    "gpus": (int,),
    "mounts": (list,),
    "tags": (list,),
    "proxy_jump": (str,),
}
_TOP_KEYS = ("defaults", "ssh", "thresholds", "watch", "nodes", "jobs", "history")
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


_SCALARS = yaml.SafeLoader("")  # only its scalar constructors are used


class _Doc:
    """A YAML document as plain values plus the line of every key path, for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: dict[tuple[str | int, ...], int] = {}

    def error(self, where: tuple[str | int, ...], message: str) -> ConfigError:
        line = None
        probe = where
        while probe and line is None:
            line = self.lines.get(probe)
            probe = probe[:-1]
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in where).replace(".[", "[")
        return ConfigError(message, self.path, line, key or None)

    def convert(self, node: yaml.Node, where: tuple[str | int, ...]) -> Any:
        self.lines.setdefault(where, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self.error(where, "keys must be plain names")
                self.lines[(*where, key)] = key_node.start_mark.line + 1
                if key in out:
                    raise self.error((*where, key), "duplicate key")
                out[key] = self.convert(value_node, (*where, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*where, i)) for i, item in enumerate(node.value)]
        return _SCALARS.construct_object(node)


def _parse_yaml(text: str, path: str) -> tuple[dict[str, Any], _Doc]:
    doc = _Doc(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", path, line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path) from None
    if root is None:
        raise ConfigError("the file is empty; it needs at least a `nodes:` list", path, 1)
    data = doc.convert(root, ())
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping with a `nodes:` list", path, 1)
    return data, doc


def _check_keys(
    doc: _Doc,
    data: Mapping[str, Any],
    allowed: Mapping[str, tuple[type, ...]] | tuple[str, ...],
    where: tuple[str | int, ...],
) -> None:
    for key, value in data.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise doc.error((*where, key), f"unknown key{hint}")
        if isinstance(allowed, Mapping):
            _check_type(doc, value, allowed[key], (*where, key))


def _check_type(
    doc: _Doc, value: Any, types: tuple[type, ...], where: tuple[str | int, ...]
) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "list": "a list",
            "bool": "true or false",
            "NoneType": "null",
        }
        wanted = " or ".join(names[t.__name__] for t in types if not (t is int and float in types))
        raise doc.error(where, f"must be {wanted}, not {_describe(value)}")


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _section(doc: _Doc, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error((name,), f"must be a mapping, not {_describe(value)}")
    return value


def _node_from(doc: _Doc, raw: Any, defaults: Mapping[str, Any], index: int) -> list[NodeConfig]:
    where: tuple[str | int, ...] = ("nodes", index)
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise doc.error(where, f"a node must be a mapping with a `name`, not {_describe(raw)}")
    _check_keys(doc, raw, _NODE_KEYS, where)
    if "name" not in raw:
        raise doc.error(where, "a node needs a `name`")
    merged = {**defaults, **raw}
    names = _expand(doc, str(raw["name"]), (*where, "name"))
    if len(names) > 1 and "host" in raw:
        raise doc.error((*where, "host"), "a node range cannot share one `host`; omit it")
    return [_build_node(doc, merged, name, where) for name in names]


def _expand(doc: _Doc, pattern: str, where: tuple[str | int, ...]) -> list[str]:
    names = [pattern]
    if "[" in pattern:
        from ClusterShell.NodeSet import NodeSet, NodeSetException

        try:
            names = list(NodeSet(pattern))
        except NodeSetException as exc:
            raise doc.error(where, f"invalid node range {pattern!r}: {exc}") from None
    for name in names:
        if not NODE_NAME_RE.match(name):
            raise doc.error(
                where, f"invalid node name {name!r}: use letters, digits, '.', '_' and '-'"
            )
    return names


def _build_node(
    doc: _Doc, merged: Mapping[str, Any], name: str, where: tuple[str | int, ...]
) -> NodeConfig:
    def key_where(key: str) -> tuple[str | int, ...]:
        return (*where, key) if (*where, key) in doc.lines else ("defaults", key)

    host = merged.get("host")
    if host is not None and not HOST_RE.match(host):
        raise doc.error(key_where("host"), f"invalid host {host!r}")
    port = merged.get("port")
    if port is not None and not 1 <= port <= 65535:
        raise doc.error(key_where("port"), f"port {port} is out of range 1-65535")
    python = merged.get("python", "python3")
    if not PYTHON_RE.match(python):
        raise doc.error(key_where("python"), f"invalid interpreter path {python!r}")
    transport = merged.get("transport", "auto")
    if transport not in ("auto", "ssh", "local"):
        raise doc.error(key_where("transport"), "must be one of auto, ssh, local")
    gpus = merged.get("gpus")
    if gpus is not None and gpus < 0:
        raise doc.error(key_where("gpus"), "must be 0 or more")
    mounts = _str_list(doc, merged.get("mounts", ["/"]), key_where("mounts"))
    for mount in mounts:
        if not mount.startswith("/"):
            raise doc.error(key_where("mounts"), f"mount {mount!r} must be an absolute path")
    return NodeConfig(
        name=name,
        host=host,
        port=port,
        user=merged.get("user"),
        identity_file=merged.get("identity_file"),
        python=python,
        transport=transport,
        gpus=gpus,
        mounts=tuple(mounts),
        tags=tuple(_str_list(doc, merged.get("tags", []), key_where("tags"))),
        proxy_jump=merged.get("proxy_jump"),
    )


def _str_list(doc: _Doc, value: Any, where: tuple[str | int, ...]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise doc.error(where, f"must be a list of strings, not {_describe(value)}")
    return list(value)


def _settings(
    doc: _Doc, data: Mapping[str, Any], name: str, cls: type, keys: Mapping[str, tuple[type, ...]]
) -> Any:
    section = _section(doc, data, name)
    _check_keys(doc, section, keys, (name,))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    for key, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise doc.error((name, key), "must not be negative")
    return replace(cls(), **values)


def parse_config(text: str, path: str = "<config>") -> Config:
    """Parse and validate a cluster file's text; raises ``ConfigError`` on the first problem."""
    data, doc = _parse_yaml(text, path)
    _check_keys(doc, data, _TOP_KEYS, ())
    defaults = _section(doc, data, "defaults")
    _check_keys(doc, defaults, {k: v for k, v in _NODE_KEYS.items() if k != "name"}, ("defaults",))
    ssh = _settings(doc, data, "ssh", SshSettings, _SSH_KEYS)
    if ssh.max_workers < 1:
        raise doc.error(("ssh", "max_workers"), "must be at least 1")
    thresholds = _settings(doc, data, "thresholds", Thresholds, _THRESHOLD_KEYS)
    if not all(isinstance(x, int) for x in thresholds.xid_critical):
        raise doc.error(("thresholds", "xid_critical"), "must be a list of integers")
    watch = _settings(doc, data, "watch", WatchSettings, _WATCH_KEYS)
    for key in ("active_interval_s", "max_interval_s", "problem_interval_s", "reset_base_s"):
        if getattr(watch, key) <= 0:
            raise doc.error(("watch", key), "must be more than zero")
    if watch.failure_threshold < 1:
        raise doc.error(("watch", "failure_threshold"), "must be at least 1")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise doc.error(("nodes",), "must be a non-empty list of nodes")
    nodes: list[NodeConfig] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_nodes):
        for node in _node_from(doc, raw, defaults, index):
            if node.name in seen:
                raise doc.error(
                    ("nodes", index, "name"),
                    f"duplicate node {node.name!r} (first at nodes[{seen[node.name]}])",
                )
            seen[node.name] = index
            nodes.append(node)
    jobs = _section(doc, data, "jobs")
    _check_keys(doc, jobs, _JOB_KEYS, ("jobs",))
    match = tuple(_str_list(doc, jobs.get("match", list(DEFAULT_JOB_MATCH)), ("jobs", "match")))
    for pattern in match:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise doc.error(("jobs", "match"), f"invalid pattern {pattern!r}: {exc}") from None
    history = _section(doc, data, "history")
    _check_keys(doc, history, _HISTORY_KEYS, ("history",))
    return Config(
        nodes=tuple(nodes),
        ssh=ssh,
        thresholds=thresholds,
        watch=watch,
        job_match=match,
        source=path,
        history_retention_h=float(history.get("retention_hours", 24.0)),
        history_max_mb=float(history.get("max_size_mb", 4096.0)),
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a cluster file; every failure is a one-line ``ConfigError``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", str(p)) from None
    return parse_config(text, str(p))
