"""Where and as whom to connect for a node: its own keys, then ssh_config, then defaults.

Part of the SSH transport; imported by the ``transport.ssh*`` modules and ``cli.config_cmd``.
Imports ``config``, ``model``, ``transport.base``, ``transport.ssh_hostkeys`` and the pure
ssh_config reader ``transport.ssh_config_eval`` (OpenSSH's own rules, see there). Pure lookups:
nothing here opens a connection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from ugro_health.config import NodeConfig
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_config import Option, SshConfigError
from ugro_health.transport.ssh_config_eval import Local, SshConfig
from ugro_health.transport.ssh_hostkeys import known_hosts_name

log = logging.getLogger(__name__)

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


@dataclass(frozen=True, slots=True)
class ResolvedHost:
    """Where and as whom to connect for one node, after ``~/.ssh/config`` and the system file."""

    alias: str  # what was looked up in ssh_config: the node's host, else its name
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    proxy_jump: str | None = None
    host_key_alias: str | None = None
    identities_only: bool = False
    hash_known_hosts: bool = False  # ssh_config's HashKnownHosts: enrol hashed names
    user_known_hosts: tuple[str, ...] = DEFAULT_USER_KNOWN_HOSTS
    global_known_hosts: tuple[str, ...] = DEFAULT_GLOBAL_KNOWN_HOSTS
    check_host_ip: bool = False
    host_key_algorithms: str | None = None  # raw ssh_config value, e.g. "+ssh-rsa"
    strict_host_key_checking: str = "ask"  # reported only: "no" never makes us accept a key
    proxy_command: str | None = None  # tokens expanded; run by the shell as ssh runs it
    proxy_template: str | None = None  # ProxyCommand as written: its pacing key (ssh_proxy)
    connect_timeout: float | None = None
    server_alive_interval: float | None = None
    sources: tuple[tuple[str, str], ...] = ()  # (ssh_config keyword, "file:line") pairs

    @property
    def target(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return known_hosts_name(self.hostname, self.port, self.host_key_alias)


def resolve(node: NodeConfig, ssh_config: SshConfig | None) -> ResolvedHost:
    """Resolve ``node`` against ``ssh_config`` as ``ssh`` resolves ``ssh -l user -p port -J
    jump alias``: the node's own keys come first (and so win), then ssh_config, then OpenSSH's
    defaults. The node's ``host`` (else its name) is the alias: its blocks apply whole, HostName
    included. A directive ugro-health cannot honour is an error for this node, never skipped."""
    alias = node.ssh_host
    config = ssh_config or _empty()
    preset = tuple(
        Option("cluster.yaml", key, value)
        for key, value in (
            ("user", node.user),
            ("port", str(node.port) if node.port else None),
            ("proxyjump", node.proxy_jump),
        )
        if value
    )
    try:
        host = config.lookup(alias, preset)
        identities = tuple(host.expand_path(p, "IdentityFile") for p in host.identity_files)
        proxy_command = host.expanded_proxy_command()
    except SshConfigError as exc:
        raise TransportError(ErrorKind.SSH_ERROR, f"ssh config for {alias}: {exc}") from None
    if host.refused:
        raise TransportError(
            ErrorKind.SSH_ERROR,
            f"ssh config for {alias}: ugro-health cannot honour {host.refused[0]}",
        )
    own = (node.identity_file,) if node.identity_file else ()
    return ResolvedHost(
        alias=alias,
        hostname=host.hostname,
        port=host.port,
        user=host.user,
        identity_files=tuple(dict.fromkeys(own + identities)) or DEFAULT_IDENTITIES,
        proxy_jump=host.proxy_jump,
        host_key_alias=host.host_key_alias,
        identities_only=host.identities_only,
        hash_known_hosts=host.hash_known_hosts,
        user_known_hosts=host.user_known_hosts,
        global_known_hosts=host.global_known_hosts,
        check_host_ip=host.check_host_ip,
        host_key_algorithms=host.host_key_algorithms,
        strict_host_key_checking=host.strict_host_key_checking,
        proxy_command=proxy_command,
        proxy_template=host.proxy_command,
        connect_timeout=host.connect_timeout,
        server_alive_interval=host.server_alive_interval or None,
        sources=tuple(sorted(host.sources.items())),
    )


def _empty() -> SshConfig:
    """No ssh_config: OpenSSH's defaults alone (``ssh -F none``), for today's HOME and user."""
    return SshConfig("(no ssh_config)", text="", local=Local.here())


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


def load_ssh_config(path: str | None, system: str | None = None) -> SshConfig | None:
    """The user's ssh_config file then the system-wide one, each read once (Includes too), as
    ``ssh`` without ``-F`` reads them; None when both are empty or absent. A file ssh would
    refuse is kept with its error, so that every node reports it."""
    full = os.path.expanduser(path) if path else ""
    user = full if full and os.path.isfile(full) else ""
    if not user and not (system and os.path.isfile(system)):
        return None
    return SshConfig(user, system=system or None)
