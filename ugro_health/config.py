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

DEFAULT_XID_CRITICAL = (13, 31, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 119, 120)
DEFAULT_JOB_MATCH = (
    r"torchrun",
    r"torch\.distributed",
    r"deepspeed",
    r"accelerate launch",
    r"python[0-9.]* .*train[^ ]*\.py",
)


class ConfigError(Exception):
    """A problem in a configuration file; ``str()`` is one line naming file, line and key."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
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
    gpu_mem_warn_pct: float = 95.0
    mem_warn_pct: float = 90.0
    mem_crit_pct: float = 95.0
    disk_warn_pct: float = 90.0
    disk_crit_pct: float = 95.0
    swap_warn_pct: float = 50.0
    cpu_warn_pct: float = 95.0
    load_warn_per_core: float = 2.0
    zombie_warn: int = 20
    clock_skew_warn_s: float = 2.0
    net_errors_warn_per_s: float = 1.0
    score_warn: int = 70  # below: the node is at least WARNING
    xid_critical: tuple[int, ...] = DEFAULT_XID_CRITICAL


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
    job_match: tuple[str, ...] = DEFAULT_JOB_MATCH
    source: str | None = None  # path of the file, None for the built-in default
    history_retention_h: float = 24.0
    history_max_mb: float = 512.0

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
