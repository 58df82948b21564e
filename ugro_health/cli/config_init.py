"""The text of ``ugro-health config init``'s starter file, and the hosts it can start from.

Pure functions (reading ``~/.ssh/config`` aside): host names in, YAML text out. ``~/.ssh/config``
is scanned for its ``Host`` lines only, without paramiko (which stays in ``transport``); the
transport still resolves HostName, User, Port and the rest at connect time.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ugro_health.config import HOST_RE, NODE_NAME_RE, ConfigError, expand_node_pattern

_WILDCARDS = frozenset("*?!")
_MAX_INCLUDE_DEPTH = 8


@dataclass(frozen=True, slots=True)
class NodeEntry:
    name: str  # a node name, or a range such as gpu[01-16]
    host: str | None = None  # set when the host itself is not a valid node name


def node_entries(hosts: list[str]) -> tuple[list[NodeEntry], list[str]]:
    """One entry per distinct usable host, and a reason for each host that was skipped.

    A host that is a valid node name (or range) is the node's name; any other host name gets a
    sanitized ``name`` and the original as ``host``. A host whose node an earlier host already
    gives is skipped (``gpu02`` after ``gpu[01-03]``); a range keeps the nodes no earlier host
    gives (``gpu[02-05]`` after ``gpu[01-03]`` becomes ``gpu[04-05]``)."""
    entries: list[NodeEntry] = []
    skipped: list[str] = []
    owner: dict[str, str] = {}  # node name -> the host that gave it
    given: set[str] = set()
    for host in hosts:
        if host in given:
            skipped.append(f"skipping {host!r}: given twice")
            continue
        given.add(host)
        entry = _entry(host)
        if entry is None:
            skipped.append(f"skipping {host!r}: not a host name")
            continue
        names = expand_node_pattern(entry.name)
        taken = [name for name in names if name in owner]
        if taken:
            first = taken[0]
            if len(taken) == len(names):
                skipped.append(
                    f"skipping {host!r}: node {first!r} already comes from {owner[first]!r}"
                )
                continue
            names = [name for name in names if name not in owner]
            entry = NodeEntry(name=_fold(names))
            verb = "comes" if len(taken) == 1 else "come"
            skipped.append(
                f"keeping {entry.name!r} of {host!r}: {', '.join(taken)} already {verb} from "
                f"{owner[first]!r}"
            )
        owner.update(dict.fromkeys(names, host))
        entries.append(entry)
    return entries, skipped


def _fold(names: list[str]) -> str:
    """Node names back into one range pattern: ``gpu4, gpu5`` -> ``gpu[4-5]``."""
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(names))


def _entry(host: str) -> NodeEntry | None:
    try:
        expand_node_pattern(host)
        return NodeEntry(name=host)
    except ConfigError:
        pass
    if not HOST_RE.match(host):
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", host).strip("-._")
    if not name or not NODE_NAME_RE.match(name):
        return None
    return NodeEntry(name=name, host=host)


def ssh_config_hosts(path: Path, depth: int = 0) -> list[str]:
    """The concrete ``Host`` names of an ssh_config file and its ``Include``s, in order;
    patterns (``*``, ``?``, ``!``) are skipped. An unreadable file has none."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    hosts: list[str] = []
    for line in lines:
        words = _words(line)
        if len(words) < 2:
            continue
        keyword, args = words[0].lower(), words[1:]
        if keyword == "host":
            hosts += [a for a in args if not _WILDCARDS.intersection(a)]
        elif keyword == "include" and depth < _MAX_INCLUDE_DEPTH:
            for pattern in args:
                for included in _include_paths(pattern):
                    hosts += ssh_config_hosts(included, depth + 1)
    return list(dict.fromkeys(hosts))


_KEYWORD_RE = re.compile(r"^\s*([A-Za-z]+)\s*(?:=|\s)\s*(.*)$")


def _words(line: str) -> list[str]:
    """``Keyword arg ...`` or ``Keyword=arg`` as words, without comments or quotes."""
    match = _KEYWORD_RE.match(line.split("#", 1)[0])
    if match is None:
        return []
    return [match.group(1), *(w.strip('"') for w in match.group(2).split())]


def _include_paths(pattern: str) -> list[Path]:
    """ssh_config(5): a relative ``Include`` is relative to ``~/.ssh``."""
    expanded = os.path.expanduser(pattern)
    if not os.path.isabs(expanded):
        expanded = os.path.join(os.path.expanduser("~/.ssh"), expanded)
    return [Path(p) for p in sorted(glob.glob(expanded)) if os.path.isfile(p)]


def _scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain when it reads back unchanged, else double-quoted."""
    try:
        plain = yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain = False
    return value if plain else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HEADER = """\
# ugro-health cluster file, written by `ugro-health config init`.
# Check it:        ugro-health config validate
# See the result:  ugro-health config show   (defaults filled in, ~/.ssh/config applied)
# Every option, with its default, is in cluster.example.yaml.

# Any node key, applied to every node unless the node sets it itself.
defaults:
  python: python3          # the node's interpreter (3.6 or newer); nothing is installed
  # user: ubuntu           # default: ~/.ssh/config's User, else your local user
  # identity_file: ~/.ssh/id_ed25519   # default: ~/.ssh/config's IdentityFile, the agent
  # gpus: 8                # expected GPU count; fewer visible is CRITICAL
  # mounts: [/, /data]     # filesystems whose use is checked (default: [/])

ssh:
  connect_timeout: 5       # seconds for each of TCP connect, SSH banner and authentication
  command_timeout: 15      # seconds for one probe run on a node
  accept_new_host_keys: false  # enrol new hosts explicitly: ugro-health check --accept-new

thresholds:
  gpu_temp_warn_c: 80
  gpu_temp_crit_c: 85

# One entry per node; a name such as gpu[01-16] stands for gpu01 ... gpu16. The name is also
# the SSH host unless `host` is given, and ~/.ssh/config is honoured (HostName, User, Port,
# IdentityFile, ProxyJump). `host: localhost` (without a port) polls in-process, without SSH.
nodes:
"""


def starter_text(entries: list[NodeEntry]) -> str:
    """The starter file: commented settings and one node per entry, or this machine alone."""
    lines = [_HEADER.rstrip("\n")]
    if not entries:
        from ugro_health.config import default_config

        local = default_config().nodes[0].name
        lines += [f"  - name: {_scalar(local)}", "    host: localhost    # this machine"]
    for entry in entries:
        lines.append(f"  - name: {_scalar(entry.name)}")
        if entry.host is not None:
            lines.append(f"    host: {_scalar(entry.host)}")
        lines.append("    # gpus: 8")
    return "\n".join(lines) + "\n"
