"""Where and as whom to connect for a node: its own keys, then ``~/.ssh/config``, then defaults.

Part of the SSH transport (imports paramiko for its ``SSHConfig`` parser); imported by the
``transport.ssh*`` modules only. Imports ``config``, ``model``, ``transport.base`` and
``transport.ssh_hostkeys``. Pure lookups: nothing here opens a connection.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import paramiko

from ugro_health.config import NodeConfig, SshSettings
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_hostkeys import known_hosts_name

log = logging.getLogger(__name__)

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


@dataclass(frozen=True, slots=True)
class ResolvedHost:
    """Where and as whom to connect for one node, after ``~/.ssh/config``."""

    alias: str  # what was looked up in ssh_config: the node's host, else its name
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    proxy_jump: str | None = None
    host_key_alias: str | None = None
    identities_only: bool = False
    known_hosts_files: tuple[str, ...] = ()
    hash_known_hosts: bool = False  # ssh_config's HashKnownHosts: enrol hashed names
    user_known_hosts: tuple[str, ...] = DEFAULT_USER_KNOWN_HOSTS  # UserKnownHostsFile
    global_known_hosts: tuple[str, ...] = DEFAULT_GLOBAL_KNOWN_HOSTS  # GlobalKnownHostsFile
    check_host_ip: bool = False  # CheckHostIP (OpenSSH 9's default: no)
    host_key_algorithms: str | None = None  # HostKeyAlgorithms as written (+, -, ^ or a list)
    # StrictHostKeyChecking as written; shown only: ugro-health applies `yes`, or `accept-new`
    # with --accept-new, whatever it says (`no` and `ask` never accept a key silently here)
    strict_host_key_checking: str = "ask"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return known_hosts_name(self.hostname, self.port, self.host_key_alias)


def resolve(
    node: NodeConfig,
    settings: SshSettings,
    ssh_config: paramiko.SSHConfig | IndexedSshConfig | None,
) -> ResolvedHost:
    """Resolve ``node`` against ``ssh_config``: the node's own keys win, then ssh_config, then
    defaults (port 22, the local user, ``~/.ssh/id_*``). The node's ``host`` (else its name) is
    what one would type after ``ssh``: its ssh_config block applies whole, HostName included."""
    alias = node.ssh_host
    opts = _lookup(ssh_config, alias)
    identities = tuple(
        dict.fromkeys(
            ([node.identity_file] if node.identity_file else [])
            + list(opts.get("identityfile", []))
        )
    )
    jump = node.proxy_jump or opts.get("proxyjump")
    user_kh = tuple(opts.get("userknownhostsfile", "").split()) or DEFAULT_USER_KNOWN_HOSTS
    global_kh = tuple(opts.get("globalknownhostsfile", "").split()) or DEFAULT_GLOBAL_KNOWN_HOSTS
    extra_kh = (settings.known_hosts,) if settings.known_hosts else ()
    return ResolvedHost(
        alias=alias,
        hostname=opts.get("hostname") or alias,
        port=node.port or _port(opts.get("port"), alias),
        user=node.user or opts.get("user") or getpass.getuser(),
        identity_files=identities or DEFAULT_IDENTITIES,
        proxy_jump=None if not jump or jump.lower() == "none" else jump,
        host_key_alias=opts.get("hostkeyalias"),
        identities_only=opts.get("identitiesonly", "no").lower() == "yes",
        known_hosts_files=user_kh + global_kh + extra_kh,
        hash_known_hosts=opts.get("hashknownhosts", "no").lower() == "yes",
        user_known_hosts=user_kh,
        global_known_hosts=global_kh,
        check_host_ip=opts.get("checkhostip", "no").lower() == "yes",
        host_key_algorithms=opts.get("hostkeyalgorithms") or None,
        strict_host_key_checking=opts.get("stricthostkeychecking", "ask").lower(),
    )


def _lookup(ssh_config: paramiko.SSHConfig | IndexedSshConfig | None, alias: str) -> dict[str, Any]:
    if ssh_config is None:
        return {}
    try:
        return dict(ssh_config.lookup(alias))
    except Exception as exc:  # e.g. `Match exec` without invoke, a bad %-token
        raise TransportError(ErrorKind.SSH_ERROR, f"ssh config for {alias}: {exc}") from exc


def _port(value: str | None, alias: str) -> int:
    if not value:
        return 22
    try:
        return int(value)
    except ValueError:
        raise TransportError(
            ErrorKind.SSH_ERROR, f"ssh config for {alias}: bad Port {value!r}"
        ) from None


MAX_JUMPS = 8  # jump hosts in one chain, nested ones included


def split_jumps(spec: str) -> list[str]:
    """``ProxyJump a,b,c`` -> the hops in order; an empty hop is an error."""
    hops = [hop.strip() for hop in spec.split(",")]
    if not all(hops):
        raise TransportError(ErrorKind.SSH_ERROR, f"cannot parse ProxyJump {spec!r}")
    return hops


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """One hop, ``[ssh://][user@]host[:port]`` -> (user, host, port)."""
    spec = spec.removeprefix("ssh://")
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if not host or "," in host or (port is not None and not port.isdigit()):
        raise TransportError(ErrorKind.SSH_ERROR, f"cannot parse ProxyJump {spec!r}")
    return user or None, host, int(port) if port else None


def jump_chain(
    target: ResolvedHost, lookup: Callable[[NodeConfig], ResolvedHost]
) -> list[ResolvedHost]:
    """The jump hosts to ``target``, first hop first, as OpenSSH chooses them.

    ``ProxyJump a,b`` goes through ``a`` then ``b``. The first hop's own ProxyJump (from
    ssh_config, via ``lookup``) applies in turn, the later hops' do not (ssh runs
    ``ssh -J a -W ... b``). A hop without an IdentityFile of its own tries the target's keys too.
    """
    chain: list[ResolvedHost] = []
    seen = {(target.alias, target.port)}  # one host:port twice in a chain is a loop
    host = target
    while host.proxy_jump:
        hops: list[ResolvedHost] = []
        for spec in split_jumps(host.proxy_jump):
            user, name, port = parse_jump(spec)
            hop = lookup(NodeConfig(name=name, port=port, user=user))
            if hop.identity_files == DEFAULT_IDENTITIES:  # none configured
                keys = tuple(dict.fromkeys(target.identity_files + DEFAULT_IDENTITIES))
                hop = replace(hop, identity_files=keys)
            if (hop.alias, hop.port) in seen or len(chain) + len(hops) >= MAX_JUMPS:
                raise TransportError(
                    ErrorKind.SSH_ERROR,
                    f"ProxyJump to {target.alias} loops or takes more than {MAX_JUMPS}"
                    f" hops (at {hop.alias})",
                )
            seen.add((hop.alias, hop.port))
            hops.append(hop)
        chain[:0] = hops
        host = hops[0]
    return chain


_WILDCARDS = frozenset("*?[!")


class IndexedSshConfig:
    """A parsed ssh_config whose lookups skip the ``Host`` blocks that cannot apply.

    paramiko tests every block on every lookup (and calls ``getpass.getuser()`` for each one
    that does not match), so a file with a block per node costs O(nodes) per lookup and
    O(nodes²) per cluster: 0.7 ms a lookup at 32 blocks, 20 ms at 1000. A block whose patterns
    are all literal names applies to exactly those names; the others (wildcards, negations,
    ``Match``) are kept for every lookup, in file order, so the result is paramiko's own.
    """

    def __init__(self, config: paramiko.SSHConfig) -> None:
        self.config = config
        blocks: list[dict[str, Any]] = list(getattr(config, "_config", None) or [])
        self._general: list[int] = []
        self._by_name: dict[str, list[int]] = {}
        if any("canonicalizehostname" in block.get("config", {}) for block in blocks):
            blocks = []  # a canonical re-lookup may match any block: keep paramiko's way
        self._blocks = blocks
        for index, block in enumerate(blocks):
            hosts = block.get("host") or []
            if block.get("matches") or not hosts or any(_WILDCARDS & set(h) for h in hosts):
                self._general.append(index)
            else:
                for name in dict.fromkeys(hosts):
                    self._by_name.setdefault(name, []).append(index)

    def lookup(self, alias: str) -> Any:
        if not self._blocks:  # paramiko's layout changed: use its own lookup
            return self.config.lookup(alias)
        indices = sorted(self._general + self._by_name.get(alias, []))
        subset = paramiko.SSHConfig()
        subset._config = [self._blocks[i] for i in indices]  # type: ignore[attr-defined]
        return subset.lookup(alias)


def load_ssh_config(path: str | None) -> paramiko.SSHConfig | None:
    """The parsed ssh_config file, None when ``path`` is empty, absent or unparseable."""
    if not path:
        return None
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        return None
    try:
        return paramiko.SSHConfig.from_path(full)
    except (OSError, ValueError, paramiko.SSHException) as exc:
        log.warning("ignoring ssh config %s: %s", path, exc)
        return None
