"""The SSH transport: stream the probe to a node's Python over one exec channel, read its answer.

The only module (with its helper ``ssh_hostkeys``) that imports paramiko. Imports ``config``,
``model``, ``probe`` (for its source) and ``transport.base``. Every phase has a deadline this
module enforces itself (TCP connect, SSH banner and key exchange, authentication, the command),
each bounded by the caller's overall deadline; a watchdog closes a connection whose phase
overran, so no paramiko call can hang a worker. Failures leave as ``TransportError`` with a
classified ``ErrorKind`` and a one-line message that never carries a secret.
"""

from __future__ import annotations

import enum
import errno
import getpass
import json
import logging
import os
import shlex
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import paramiko

from ugro_health import probe
from ugro_health.config import PYTHON_RE, NodeConfig, SshSettings
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError, check_document, parse_probe_output
from ugro_health.transport.ssh_hostkeys import Identities, KnownHosts, known_hosts_name, open_agent

log = logging.getLogger(__name__)
# paramiko's own log lines. Its errors repeat what we raise as a classified TransportError (and
# come with tracebacks from its thread), so they are off unless this logger is set to a level.
PARAMIKO_LOG = f"{__name__}.paramiko"
if logging.getLogger(PARAMIKO_LOG).level == logging.NOTSET:
    logging.getLogger(PARAMIKO_LOG).setLevel(logging.CRITICAL + 1)

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts",)
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts",)
_POLL_S = 0.05  # how often a waiting loop looks at the clock
_WATCHDOG_GRACE_S = 0.25  # the watchdog is a backstop: our own loops time out first
_CHUNK = 65536
_STDERR_KEEP = 8192


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

    @property
    def target(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return known_hosts_name(self.hostname, self.port, self.host_key_alias)


def resolve(
    node: NodeConfig, settings: SshSettings, ssh_config: paramiko.SSHConfig | None
) -> ResolvedHost:
    """Resolve ``node`` against ``ssh_config``: the node's own keys win, then ssh_config, then
    defaults (port 22, the local user, ``~/.ssh/id_*``). An explicit ``host`` is used as is;
    without one, ssh_config's ``HostName`` maps the node's name."""
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
        hostname=node.host or opts.get("hostname") or alias,
        port=node.port or _port(opts.get("port"), alias),
        user=node.user or opts.get("user") or getpass.getuser(),
        identity_files=identities or DEFAULT_IDENTITIES,
        proxy_jump=None if not jump or jump.lower() == "none" else jump,
        host_key_alias=opts.get("hostkeyalias"),
        identities_only=opts.get("identitiesonly", "no").lower() == "yes",
        known_hosts_files=user_kh + global_kh + extra_kh,
    )


def _lookup(ssh_config: paramiko.SSHConfig | None, alias: str) -> dict[str, Any]:
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


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (one hop) -> (user, host, port)."""
    if "," in spec:
        raise TransportError(
            ErrorKind.SSH_ERROR, f"ProxyJump with more than one hop is not supported: {spec}"
        )
    spec = spec.removeprefix("ssh://")
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if not host or (port is not None and not port.isdigit()):
        raise TransportError(ErrorKind.SSH_ERROR, f"cannot parse ProxyJump {spec!r}")
    return user or None, host, int(port) if port else None


class _Attempt:
    """One ``run_probe`` call: its connections, the phase it is in and that phase's deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.phase = "connection"
        self.budget = 0.0
        self.phase_end = deadline
        self.expired = False
        self._transports: list[paramiko.Transport] = []
        self._lock = threading.Lock()

    def begin(self, phase: str, limit: float) -> float:
        now = time.monotonic()
        self.phase = phase
        self.budget = min(limit, self.deadline - now)
        self.phase_end = now + self.budget
        if self.budget <= 0:
            raise TransportError(ErrorKind.TIMEOUT, f"deadline passed before {phase}")
        return self.budget

    def remaining(self) -> float:
        return self.phase_end - time.monotonic()

    def overdue(self) -> bool:
        return self.expired or time.monotonic() >= self.phase_end

    def timeout_error(self) -> TransportError:
        return TransportError(
            ErrorKind.TIMEOUT, f"timed out after {self.budget:.1f}s waiting for {self.phase}"
        )

    def own(self, transport: paramiko.Transport) -> None:
        with self._lock:
            self._transports.append(transport)
            if self.expired:
                transport.close()

    def close(self, *, expired: bool = False) -> None:
        with self._lock:
            self.expired = self.expired or expired
            transports, self._transports = self._transports, []
        for transport in reversed(transports):  # the target first, then its jump host
            transport.close()


class _Watchdog:
    """One thread that closes the connections of attempts whose phase overran its deadline."""

    def __init__(self) -> None:
        self._attempts: set[_Attempt] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def watch(self, attempt: _Attempt) -> None:
        with self._cond:
            self._attempts.add(attempt)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="ugro-ssh-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def unwatch(self, attempt: _Attempt) -> None:
        with self._cond:
            self._attempts.discard(attempt)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                self._cond.wait(_POLL_S * 2 if self._attempts else None)
                now = time.monotonic()
                overdue = [a for a in self._attempts if now >= a.phase_end + _WATCHDOG_GRACE_S]
                self._attempts.difference_update(overdue)
            for attempt in overdue:
                log.debug("watchdog: closing a connection stuck in %s", attempt.phase)
                attempt.close(expired=True)


class _FromSettings(enum.Enum):
    TOKEN = 0


class SshTransport:
    """Runs the probe on nodes over SSH; safe to call from many threads at once."""

    def __init__(
        self,
        settings: SshSettings,
        *,
        accept_new: bool = False,
        ssh_config_path: str | _FromSettings | None = _FromSettings.TOKEN,
        known_hosts_files: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.accept_new = accept_new or settings.accept_new_host_keys
        path = (
            settings.ssh_config if isinstance(ssh_config_path, _FromSettings) else ssh_config_path
        )
        self._ssh_config_path = path or None
        self._ssh_config: paramiko.SSHConfig | None = None
        self._ssh_config_loaded = False
        self._known_hosts_override = (
            tuple(known_hosts_files) if known_hosts_files is not None else None
        )
        self._known = KnownHosts()
        self._identities = Identities(DEFAULT_IDENTITIES)
        self._lock = threading.Lock()
        self._watchdog = _Watchdog()

    def run_probe(
        self, node: NodeConfig, request: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        if not PYTHON_RE.match(node.python):
            raise TransportError(ErrorKind.PROBE_FAILED, f"invalid python path {node.python!r}")
        target = resolve(node, self.settings, self.ssh_config())
        attempt = _Attempt(deadline)
        self._watchdog.watch(attempt)
        try:
            transport = self._open(attempt, target)
            return self._run_command(attempt, transport, node.python, request)
        except TransportError as exc:
            if attempt.expired and exc.kind is not ErrorKind.TIMEOUT:
                raise attempt.timeout_error() from exc
            raise
        except Exception as exc:
            raise _classify(exc, attempt) from exc
        finally:
            self._watchdog.unwatch(attempt)
            attempt.close()

    def close(self) -> None:
        self._watchdog.stop()

    def ssh_config(self) -> paramiko.SSHConfig | None:
        """The parsed ssh_config file (once per transport), None when disabled or absent."""
        with self._lock:
            if not self._ssh_config_loaded:
                self._ssh_config = _load_ssh_config(self._ssh_config_path)
                self._ssh_config_loaded = True
            return self._ssh_config

    # -- connecting -----------------------------------------------------------------------

    def _open(self, attempt: _Attempt, target: ResolvedHost) -> paramiko.Transport:
        if not target.proxy_jump:
            return self._connect(attempt, target, self._tcp(attempt, target, ""), "")
        jump = self._resolve_jump(target)
        via = f" (jump host {jump.alias})"
        jump_transport = self._connect(attempt, jump, self._tcp(attempt, jump, via), via)
        attempt.begin(
            f"forwarding to {target.hostname}:{target.port}{via}", self.settings.connect_timeout
        )
        try:
            channel = jump_transport.open_channel(
                "direct-tcpip",
                (target.hostname, target.port),
                ("127.0.0.1", 0),
                timeout=attempt.remaining(),
            )
        except paramiko.ChannelException as exc:
            raise _forward_error(exc, target, jump) from exc
        return self._connect(attempt, target, channel, "")

    def _resolve_jump(self, target: ResolvedHost) -> ResolvedHost:
        assert target.proxy_jump
        user, host, port = parse_jump(target.proxy_jump)
        jump = resolve(
            NodeConfig(name=host, port=port, user=user), self.settings, self.ssh_config()
        )
        if jump.proxy_jump:
            raise TransportError(
                ErrorKind.SSH_ERROR, f"nested ProxyJump via {jump.alias} is not supported"
            )
        if jump.identity_files == DEFAULT_IDENTITIES:  # none configured: try the node's keys
            jump = replace(
                jump,
                identity_files=tuple(dict.fromkeys(target.identity_files + DEFAULT_IDENTITIES)),
            )
        return jump

    def _tcp(self, attempt: _Attempt, host: ResolvedHost, via: str) -> socket.socket:
        name = host.hostname.strip("[]")
        attempt.begin(f"TCP connect to {name}:{host.port}{via}", self.settings.connect_timeout)
        last: OSError | None = None
        for family, kind, proto, _, addr in socket.getaddrinfo(
            name, host.port, type=socket.SOCK_STREAM
        ):
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
        self, attempt: _Attempt, host: ResolvedHost, sock: Any, via: str
    ) -> paramiko.Transport:
        transport = paramiko.Transport(sock)
        attempt.own(transport)
        transport.set_log_channel(PARAMIKO_LOG)
        # Our own loop enforces the phase deadline; paramiko's timeouts are only a backstop.
        transport.banner_timeout = transport.handshake_timeout = self.settings.connect_timeout + 5
        files = self._known_hosts_files(host)
        options = transport.get_security_options()
        options.key_types = self._known.preferred_key_types(
            host.known_hosts_name, files, tuple(options.key_types)
        )
        self._handshake(attempt, transport, via)
        enrol = self._enrol_path(host) if self.accept_new else None
        self._known.verify(
            host.known_hosts_name,
            transport.get_remote_server_key(),
            files,
            enrol_path=enrol,
            what=host.target + via,
        )
        self._authenticate(attempt, transport, host, via)
        transport.set_keepalive(max(1, round(self.settings.keepalive_s)))
        return transport

    def _handshake(self, attempt: _Attempt, transport: paramiko.Transport, via: str) -> None:
        attempt.begin(f"SSH banner{via}", self.settings.connect_timeout)
        done = threading.Event()
        transport.start_client(event=done)
        while not done.wait(max(0.0, min(attempt.remaining(), _POLL_S))):
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

    def _known_hosts_files(self, host: ResolvedHost) -> tuple[str, ...]:
        if self._known_hosts_override is None:
            return host.known_hosts_files
        extra = (self.settings.known_hosts,) if self.settings.known_hosts else ()
        return self._known_hosts_override + extra

    def _enrol_path(self, host: ResolvedHost) -> str:
        if self.settings.known_hosts:
            return self.settings.known_hosts
        return (self._known_hosts_override or host.known_hosts_files)[0]

    # -- authentication -------------------------------------------------------------------

    def _authenticate(
        self, attempt: _Attempt, transport: paramiko.Transport, host: ResolvedHost, via: str
    ) -> None:
        attempt.begin(f"authentication{via}", self.settings.connect_timeout)
        tried: list[str] = []
        keys = self._identities.keys_for(host.identity_files, tried)
        agent = None if host.identities_only else open_agent()
        try:
            if agent is not None:
                keys += [(f"agent:{k.get_name()}", k) for k in agent.get_keys()]
            for label, key in keys:
                if not transport.is_active() or attempt.remaining() <= 0:
                    break
                tried.append(label)
                transport.auth_timeout = attempt.remaining()
                try:
                    transport.auth_publickey(host.user, key)
                except paramiko.BadAuthenticationType as exc:
                    raise TransportError(
                        ErrorKind.AUTH_FAILED,
                        f"{host.target}{via} does not accept public keys "
                        f"(allows: {', '.join(exc.allowed_types)})",
                    ) from exc
                except paramiko.AuthenticationException:
                    continue
                if transport.is_authenticated():
                    return
        finally:
            if agent is not None:
                agent.close()
        if attempt.overdue():
            raise attempt.timeout_error()
        raise TransportError(
            ErrorKind.AUTH_FAILED,
            f"authentication failed for {host.user}@{host.hostname}{via} "
            f"(tried: {', '.join(tried) or 'no keys found'})",
        )

    # -- the command ----------------------------------------------------------------------

    def _run_command(
        self, attempt: _Attempt, transport: paramiko.Transport, python: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        attempt.begin("probe output", self.settings.command_timeout)
        channel = transport.open_session(timeout=attempt.remaining())
        channel.exec_command(shlex.quote(python) + " -c " + shlex.quote(probe.BOOTSTRAP))
        src = probe.source_bytes()
        payload = b"%d\n" % len(src) + src + json.dumps(request).encode() + b"\n"
        try:
            channel.settimeout(max(attempt.remaining(), 0.001))
            channel.sendall(payload)
            channel.shutdown_write()
        except TimeoutError:
            raise attempt.timeout_error() from None
        except OSError:
            pass  # the command ended without reading its input: its exit status says why
        out, err, status = _read_output(attempt, channel)
        channel.close()
        if status == -1 and not transport.is_active():
            raise TransportError(ErrorKind.SSH_ERROR, "connection lost while the probe ran")
        try:
            doc = parse_probe_output(out)
        except TransportError:
            if status != 0:
                raise _probe_failed(python, status, err) from None
            raise
        return check_document(doc)


def _read_output(attempt: _Attempt, channel: paramiko.Channel) -> tuple[bytes, bytes, int]:
    """Drain stdout and stderr until EOF and exit status, within the phase deadline."""
    out, err = bytearray(), bytearray()
    stdout_done = False
    while True:
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(_CHUNK)
            del err[:-_STDERR_KEEP]
        if stdout_done and channel.exit_status_ready():
            return bytes(out), bytes(err), channel.recv_exit_status()
        left = attempt.remaining()
        if left <= 0:
            raise attempt.timeout_error()
        if stdout_done:
            channel.status_event.wait(min(left, _POLL_S))
            continue
        channel.settimeout(min(left, _POLL_S))
        try:
            data = channel.recv(_CHUNK)
        except TimeoutError:
            continue
        if not data:
            stdout_done = True
        out += data
        if len(out) > MAX_OUTPUT_BYTES:
            raise TransportError(
                ErrorKind.PROBE_INVALID, f"probe output exceeded {MAX_OUTPUT_BYTES} bytes"
            )


def _probe_failed(python: str, status: int, err: bytes) -> TransportError:
    lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    last = lines[-1][:200] if lines else "no error output"
    if status == 127:
        message = f"python interpreter {python!r} was not found on the node ({last})"
    elif status == 126:
        message = f"python interpreter {python!r} is not executable on the node ({last})"
    elif status == -1:
        message = f"probe ended without an exit status ({last})"
    else:
        message = f"probe exited with status {status}: {last}"
    return TransportError(ErrorKind.PROBE_FAILED, message)


def _forward_error(
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


_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def _classify(exc: BaseException, attempt: _Attempt) -> TransportError:
    """One exception from any phase -> a classified, one-line error."""
    if isinstance(exc, TimeoutError) or attempt.overdue():
        return attempt.timeout_error()
    during = f" during {attempt.phase}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return TransportError(ErrorKind.REFUSED, f"connection refused{during}")
    if isinstance(exc, socket.gaierror):
        return TransportError(ErrorKind.DNS, f"cannot resolve host{during}: {text}")
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return TransportError(ErrorKind.UNREACHABLE, f"{text}{during}")
    if isinstance(exc, paramiko.AuthenticationException):
        return TransportError(ErrorKind.AUTH_FAILED, f"{text}{during}")
    if isinstance(exc, EOFError | ConnectionResetError):
        return TransportError(ErrorKind.SSH_ERROR, f"connection closed by the server{during}")
    return TransportError(ErrorKind.SSH_ERROR, f"{text}{during}")


def _load_ssh_config(path: str | None) -> paramiko.SSHConfig | None:
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
