"""Opening an authenticated SSH connection to a node, every phase under its own deadline.

Part of the SSH transport (imports paramiko); imported by the ``transport.ssh*`` modules only.
Imports ``config``, ``model``, ``transport.base`` and the ``ssh_resolve`` / ``ssh_hostkeys`` /
``ssh_attempt`` helpers. ``Connector`` runs TCP, banner and key exchange, host-key verification
and authentication, each phase bounded by an ``Attempt`` (``ssh_attempt``, re-exported here with
``Watchdog`` and ``classify``), to the node directly or over a direct-tcpip channel of the
connection to its last jump host, which nodes behind the same jump chain share (``ssh_jump``).
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paramiko

from ugro_health.config import NodeConfig, SshSettings
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.dns import lookup
from ugro_health.transport.ssh_attempt import POLL_S, Attempt, Watchdog, classify
from ugro_health.transport.ssh_config_eval import SshConfig
from ugro_health.transport.ssh_hostkeys import AgentError, Identities, KnownHosts, SshAgent
from ugro_health.transport.ssh_jump import IDLE_WAKE_S, ChannelSafeTransport, JumpPool, hop_key
from ugro_health.transport.ssh_known_hosts import host_key_query
from ugro_health.transport.ssh_pacing import (
    Pacer,
    backoff,
    dropped_before_banner,
    endpoint_key,
)
from ugro_health.transport.ssh_proxy import pacing_key, proxy_exit, proxy_socket
from ugro_health.transport.ssh_resolve import (
    DEFAULT_IDENTITIES,
    ResolvedHost,
    jump_chain,
    load_ssh_config,
    resolve,
)

log = logging.getLogger(__name__)
# paramiko's own log lines. Its errors repeat what we raise as a classified TransportError (and
# come with tracebacks from its thread), so they are off unless this logger is set to a level.
PARAMIKO_LOG = "ugro_health.transport.ssh.paramiko"
if logging.getLogger(PARAMIKO_LOG).level == logging.NOTSET:
    logging.getLogger(PARAMIKO_LOG).setLevel(logging.CRITICAL + 1)

__all__ = ["PARAMIKO_LOG", "POLL_S", "Attempt", "Connector", "Watchdog", "classify"]


class _Transport(ChannelSafeTransport):
    """paramiko's client transport (nothing sent for a closed channel: ``ChannelSafeTransport``),
    acknowledging the server's unsolicited messages at once.

    Right after authentication OpenSSH's sshd sends a ``hostkeys-00`` global request and debug
    messages that want no reply. Nothing of ours is sent before their delayed ACK timer (40 ms
    on Linux), so the next answer (the session channel's confirmation) waits behind them under
    sshd's Nagle: 40 ms per connection. A quick ACK releases it; it costs a syscall, no packet.
    """

    def _parse_debug(self, m: paramiko.Message) -> None:
        super()._parse_debug(m)  # type: ignore[misc]
        self._ack_now()

    def _parse_global_request(self, m: paramiko.Message) -> None:
        super()._parse_global_request(m)  # type: ignore[misc]
        self._ack_now()

    def _ack_now(self) -> None:
        if _QUICKACK is not None and isinstance(self.sock, socket.socket):  # not via a jump
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
# AES-GCM first: one authenticated-encryption call per packet, where paramiko's default
# aes128-ctr + hmac-sha2-256 also computes the MAC and compares it byte by byte in Python (a
# third of a persistent tick's receive cost). Servers without GCM get paramiko's order.
_AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _prefer(first: tuple[str, ...], available: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(a for a in first if a in available) + tuple(a for a in available if a not in first)


class Connector:
    """Resolves nodes and opens authenticated connections; safe to share between threads.

    ssh_config, known_hosts files and private keys are each parsed once per connector.
    """

    def __init__(
        self,
        settings: SshSettings,
        *,
        accept_new: bool,
        ssh_config_path: str | None,
        known_hosts_files: tuple[str, ...] | None,
        system_ssh_config: str | None = None,
    ) -> None:
        self.settings = settings
        self.accept_new = accept_new
        self._ssh_config_path = ssh_config_path or None
        self._system_ssh_config = system_ssh_config or None
        self._ssh_config: SshConfig | None = None
        self._ssh_config_loaded = False
        self._known_hosts_override = known_hosts_files
        self._known = KnownHosts()
        self._identities = Identities(DEFAULT_IDENTITIES)
        self._agent = SshAgent(settings.connect_timeout)
        self._pacer = Pacer(settings.max_startups)
        self._jumps = JumpPool()
        self._lock = threading.Lock()

    def ssh_config(self) -> SshConfig | None:
        """The parsed ssh_config file (once per connector), None when disabled or absent."""
        with self._lock:
            if not self._ssh_config_loaded:
                self._ssh_config = load_ssh_config(self._ssh_config_path, self._system_ssh_config)
                self._ssh_config_loaded = True
            return self._ssh_config

    def resolve(self, node: NodeConfig) -> ResolvedHost:
        self.ssh_config()
        return resolve(node, self._ssh_config)

    def open(self, attempt: Attempt, target: ResolvedHost) -> paramiko.Transport:
        """An authenticated transport to ``target``; ``attempt`` owns it and a lease on the
        shared connections to its jump hosts (``_reach``).

        Each hop waits for a pacing slot to its sshd (by address, or by target and jump host)
        and holds it until authenticated; a connection dropped before the banner is retried.
        """
        hops = self.jump_chain(target)
        if not hops:
            return self._hop(attempt, target, "", lambda: self._tcp(attempt, target, ""))
        jump = self._reach(attempt, hops)
        endpoint = hops[0].target
        for host in [*hops[1:], target]:
            endpoint = f"{host.hostname}:{host.port} via {endpoint}"
        forward = functools.partial(self._forward, attempt, jump, hops[-1], target, endpoint)
        return self._hop(attempt, target, "", forward)

    def _reach(self, attempt: Attempt, hops: list[ResolvedHost]) -> paramiko.Transport:
        """The connection to the last of ``hops``, each hop shared with every node behind the
        same chain up to it (``JumpPool``): opened by the first node that needs it, waited
        for by the others within their own deadlines. ``attempt`` owns the lease on them."""
        lease = self._jumps.lease()
        attempt.own(lease)
        transport: paramiko.Transport | None = None
        endpoint = hops[0].target
        for index, host in enumerate(hops):
            via = f" (jump host {host.alias})"
            if transport is None:
                open_sock: Callable[[], Any] = functools.partial(self._tcp, attempt, host, via)
            else:
                endpoint = f"{host.hostname}:{host.port} via {endpoint}"
                previous = hops[index - 1]
                open_sock = functools.partial(
                    self._forward, attempt, transport, previous, host, endpoint
                )
            transport = self._jumps.get(
                attempt,
                lease,
                tuple(hop_key(hop) for hop in hops[: index + 1]),
                host.alias,
                functools.partial(self._open_shared, attempt, host, via, open_sock),
            )
        assert transport is not None
        return transport

    def _open_shared(
        self, attempt: Attempt, host: ResolvedHost, via: str, open_sock: Callable[[], Any]
    ) -> paramiko.Transport:
        """One jump hop's connection for the pool: no longer this attempt's to close."""
        transport = self._hop(attempt, host, via, open_sock)
        attempt.disown(transport)
        if isinstance(transport.sock, socket.socket):  # its reader thread wakes less often
            transport.sock.settimeout(min(IDLE_WAKE_S, max(1.0, self.settings.keepalive_s)))
        return transport

    def close(self) -> None:
        """Close the shared jump-host connections (the nodes' own belong to their callers)."""
        self._jumps.close()

    def _hop(
        self, attempt: Attempt, host: ResolvedHost, via: str, open_sock: Callable[[], Any]
    ) -> paramiko.Transport:
        """Connect one hop over what ``open_sock`` opens (which takes the pacing slot), and
        try again after a short jittered wait when the server drops it before its banner
        (sshd's MaxStartups), as long as the node's deadline allows."""
        for retry in itertools.count():
            sock = None
            try:
                sock = open_sock()
                return self._connect(attempt, host, sock, via)
            except (TransportError, ConnectionResetError) as exc:
                failed = attempt.newest()
                banner = failed.remote_version if isinstance(failed, paramiko.Transport) else None
                if attempt.overdue():
                    raise
                if (ended := proxy_exit(sock)) is not None:  # its own failure, not MaxStartups
                    raise TransportError(ErrorKind.SSH_ERROR, f"{ended}{via}") from exc
                if not dropped_before_banner(exc, attempt.phase, via, banner):
                    raise
                delay = backoff(retry, attempt.deadline)
                if delay is None:
                    if not retry:
                        raise
                    error = exc if isinstance(exc, TransportError) else classify(exc, attempt)
                    raise TransportError(
                        error.kind, f"{error.message} ({retry + 1} tries)"
                    ) from exc
                if isinstance(exc, TransportError) and isinstance(failed, paramiko.Transport):
                    attempt.drop(failed)  # the new transport (see dropped_before_banner)
            finally:
                attempt.free_slot()
            log.debug("%s%s dropped before its banner: retrying", host.target, via)
            attempt.begin(f"reconnecting{via}", delay + 1.0)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _forward(
        self,
        attempt: Attempt,
        transport: paramiko.Transport,
        jump: ResolvedHost,
        host: ResolvedHost,
        endpoint: str,
    ) -> paramiko.Channel:
        """A direct-tcpip channel from ``jump`` to ``host``, once a pacing slot is free."""
        via = f" (jump host {jump.alias})"
        attempt.hold(self._pacer, endpoint, endpoint)
        attempt.begin(
            f"forwarding to {host.hostname}:{host.port}{via}", self.settings.connect_timeout
        )
        try:
            return transport.open_channel(
                "direct-tcpip",
                (host.hostname, host.port),
                ("127.0.0.1", 0),
                timeout=attempt.remaining(),
            )
        except paramiko.ChannelException as exc:
            raise forward_error(exc, host, jump) from exc
        except (paramiko.SSHException, EOFError) as exc:
            if transport.is_active() or attempt.overdue():
                raise
            # the shared connection died (the next node to ask opens a new one)
            raise TransportError(
                ErrorKind.SSH_ERROR, f"connection to jump host {jump.alias} lost"
            ) from exc

    def jump_chain(self, target: ResolvedHost) -> list[ResolvedHost]:
        """The jump hosts to ``target``, first hop first (see ``ssh_resolve.jump_chain``)."""
        return jump_chain(target, self.resolve)

    def _tcp(self, attempt: Attempt, host: ResolvedHost, via: str) -> socket.socket:
        if host.proxy_command is not None:  # ssh_config's ProxyCommand: never bypassed
            key = pacing_key(host.proxy_template or host.proxy_command)
            attempt.hold(self._pacer, key, key.replace("proxy:", "ProxyCommand ", 1))
            attempt.begin(f"ProxyCommand to {host.hostname}{via}", self.settings.connect_timeout)
            return proxy_socket(host.proxy_command)
        name = host.hostname.strip("[]")
        attempt.begin(f"DNS lookup of {name}{via}", self.settings.connect_timeout)
        try:
            addresses = lookup(name, host.port, attempt.remaining())
        except TransportError as exc:
            if exc.kind is ErrorKind.DNS and attempt.bound_by_deadline and attempt.overdue():
                raise attempt.timeout_error() from exc  # the caller's time ran out, not DNS's
            raise
        if addresses:  # one slot per resolved sshd endpoint, whatever name led there
            where = endpoint_key(addresses[0][4])
            attempt.hold(self._pacer, where, where + via)
        attempt.begin(f"TCP connect to {name}:{host.port}{via}", self.settings.connect_timeout)
        last: OSError | None = None
        for family, kind, proto, _, addr in addresses:
            if attempt.remaining() <= 0:
                break
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(attempt.remaining())
                sock.connect(addr)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            return sock
        if last is None or isinstance(last, TimeoutError):
            raise attempt.timeout_error()
        raise last

    def _connect(
        self, attempt: Attempt, host: ResolvedHost, sock: Any, via: str
    ) -> paramiko.Transport:
        transport = _Transport(sock)
        attempt.own(transport)
        transport.set_log_channel(PARAMIKO_LOG)
        # Our own loop enforces the phase deadline; paramiko's timeouts are only a backstop.
        transport.banner_timeout = transport.handshake_timeout = self.settings.connect_timeout + 5
        self._handshake(attempt, transport, host, sock, via)
        self._authenticate(attempt, transport, host, via)
        transport.set_keepalive(max(1, round(self.settings.keepalive_s)))
        return transport

    def _handshake(
        self,
        attempt: Attempt,
        transport: paramiko.Transport,
        host: ResolvedHost,
        sock: Any,
        via: str,
    ) -> None:
        """Banner, key exchange and the host-key decision, as ssh makes it (``KnownHosts``):
        the host-key algorithms offered in ssh's order for what is known about the host, then
        the server's key verified, or enrolled under ``--accept-new`` where ssh's accept-new
        would enrol it."""
        user_files, global_files = self._known_hosts_files(host)
        files = user_files + global_files
        # The peer's address for CheckHostIP: a TCP socket only (a jump host's channel or a
        # ProxyCommand's socket pair has none, and ssh turns CheckHostIP off there too).
        tcp = isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6)
        try:
            peer = sock.getpeername()[0] if tcp else None
        except OSError as lost:  # ENOTCONN: reset between connect() and here (MaxStartups too)
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer") from lost
        query = host_key_query(
            host.hostname,
            host.port,
            host.host_key_alias,
            host.check_host_ip,
            peer,
            bool(user_files),
        )
        options = transport.get_security_options()
        options.key_types = self._known.key_types(
            query, files, tuple(options.key_types), host.host_key_algorithms
        )
        options.ciphers = _prefer(_AEAD_CIPHERS, tuple(options.ciphers))
        attempt.begin(f"SSH banner{via}", self.settings.connect_timeout)
        done = threading.Event()
        transport.start_client(event=done)
        while not done.wait(max(0.0, min(attempt.remaining(), POLL_S))):
            if attempt.remaining() <= 0:
                if transport.remote_version:
                    attempt.phase = f"SSH key exchange{via}"
                raise attempt.timeout_error()
        if not transport.is_active():
            exc = transport.get_exception()
            if not transport.remote_version:
                raise TransportError(
                    ErrorKind.SSH_ERROR, f"connection closed before the SSH banner{via}: {exc}"
                )
            raise exc or paramiko.SSHException(f"SSH negotiation failed{via}")
        self._known.verify(
            query,
            transport.get_remote_server_key(),
            files,
            enrol_path=self._enrol_path(user_files) if self.accept_new else None,
            what=host.target + via,
            hashed=host.hash_known_hosts,
        )

    def _known_hosts_files(self, host: ResolvedHost) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(UserKnownHostsFile, GlobalKnownHostsFile) as ssh reads them, ``none`` dropped. The
        ``ssh.known_hosts`` setting is read first of all and enrolled into; an explicit list
        (tests, the API) stands for both of ssh's."""
        extra = (self.settings.known_hosts,) if self.settings.known_hosts else ()
        if self._known_hosts_override is not None:
            return extra + self._known_hosts_override, ()
        user = tuple(f for f in host.user_known_hosts if f.lower() != "none")
        glob = tuple(f for f in host.global_known_hosts if f.lower() != "none")
        return extra + user, glob

    def _enrol_path(self, user_files: tuple[str, ...]) -> str | None:
        """ssh's accept-new writes to the first UserKnownHostsFile; without one, nowhere."""
        return user_files[0] if user_files else None

    def _authenticate(
        self, attempt: Attempt, transport: paramiko.Transport, host: ResolvedHost, via: str
    ) -> None:
        """Key files first, then (unless IdentitiesOnly) the agent's keys: the agent is asked
        only when no file opens the door. A failing agent is named in the error."""
        attempt.begin(f"authentication{via}", self.settings.connect_timeout)
        tried: list[str] = []
        keys = self._identities.keys_for(host.identity_files, tried)
        try:
            if self._try_keys(attempt, transport, host, via, keys, tried):
                return
            if not host.identities_only and transport.is_active() and not attempt.overdue():
                keys = self._agent.keys(attempt.phase_end)
                if self._try_keys(attempt, transport, host, via, keys, tried):
                    return
        except AgentError as exc:
            tried.append(str(exc))
        else:
            if attempt.overdue():
                raise attempt.timeout_error()
        raise TransportError(
            ErrorKind.AUTH_FAILED,
            f"authentication failed for {host.user}@{host.hostname}{via} "
            f"(tried: {', '.join(tried) or 'no keys found'})",
        )

    def _try_keys(
        self,
        attempt: Attempt,
        transport: paramiko.Transport,
        host: ResolvedHost,
        via: str,
        keys: list[tuple[str, paramiko.PKey]],
        tried: list[str],
    ) -> bool:
        """Offer ``keys`` in turn until one is accepted (True); their labels go to ``tried``."""
        for label, key in keys:
            if not transport.is_active() or attempt.remaining() <= 0:
                return False
            tried.append(label)
            transport.auth_timeout = attempt.remaining()
            try:
                transport.auth_publickey(host.user, key)
            except AgentError:
                raise  # the agent failed to sign (in paramiko's thread, which it stopped)
            except paramiko.BadAuthenticationType as exc:
                raise TransportError(
                    ErrorKind.AUTH_FAILED,
                    f"{host.target}{via} does not accept public keys "
                    f"(allows: {', '.join(exc.allowed_types)})",
                ) from exc
            except paramiko.AuthenticationException:
                continue
            if transport.is_authenticated():
                return True
        return False


def forward_error(
    exc: paramiko.ChannelException, target: ResolvedHost, jump: ResolvedHost
) -> TransportError:
    # paramiko keeps only the reason code, not sshd's text ("Connection refused", "No route
    # to host"): a failed connect from the jump host is reported as unreachable.
    where = f"{target.hostname}:{target.port}"
    if exc.code == paramiko.common.OPEN_FAILED_CONNECT_FAILED:
        return TransportError(
            ErrorKind.UNREACHABLE, f"jump host {jump.alias} could not connect to {where}"
        )
    return TransportError(
        ErrorKind.SSH_ERROR, f"jump host {jump.alias} refused forwarding to {where}: {exc.text}"
    )
