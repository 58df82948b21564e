"""The text of ``ugro-health config init``'s starter file, and the hosts it can start from.

Pure functions (reading ``~/.ssh/config`` aside): host names in, YAML text out. ``~/.ssh/config``
is read for its ``Host`` names by the transport's own ssh_config reader (pure, no paramiko), so
Include and comments are read as ssh reads them; HostName, User, Port and the rest are resolved
at connect time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ugro_health.config import HOST_RE, NODE_NAME_RE, ConfigError, expand_node_pattern


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


def ssh_config_hosts(path: Path) -> list[str]:
    """The concrete ``Host`` names of an ssh_config file and its ``Include``s, in order, read
    by the transport's ssh_config reader (OpenSSH's rules); patterns (``*``, ``?``, ``!``) are
    skipped. A missing file has none; a file ssh would refuse raises ``ValueError``."""
    from ugro_health.transport.ssh_config import ConfigFile, is_literal, parse_file

    if not path.is_file():
        return []

    def names(config: ConfigFile) -> list[str]:
        found: list[str] = []
        for section in config.sections:
            found += [h for h in section.host or () if is_literal(h)]
            for line in section.body:
                for child in getattr(line, "files", ()):
                    found += names(child)
        return found

    return list(dict.fromkeys(names(parse_file(str(path), user_config=True))))


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
