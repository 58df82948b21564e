"""The SSH transport: stream the probe to a node's Python over one exec channel, read its answer.

With its helpers ``ssh_resolve`` (where to connect), ``ssh_attempt`` (deadlines, watchdog,
error classification), ``ssh_connect`` (connecting, authentication), ``ssh_jump`` (jump-host
connections shared by the nodes behind them) and ``ssh_hostkeys`` (known_hosts and keys),
the only code that imports paramiko. Imports ``config``, ``model``, ``probe`` (for its source)
and ``transport.base``. Every phase has a deadline, each bounded by the caller's overall
deadline; failures leave as ``TransportError`` with a classified ``ErrorKind`` and a one-line
message that never carries a secret.
"""

from __future__ import annotations

import enum
import json
import time
from typing import Any

import paramiko

from ugro_health.config import PYTHON_RE, NodeConfig, SshSettings
from ugro_health.model import ErrorKind
from ugro_health.transport.base import (
    TransportError,
    check_document,
    parse_probe_output,
    stamp_exchange,
)
from ugro_health.transport.ssh_config_eval import SshConfig
from ugro_health.transport.ssh_connect import (
    PARAMIKO_LOG,
    POLL_S,
    Attempt,
    Connector,
    Watchdog,
    classify,
)
from ugro_health.transport.ssh_jump import blame_jump
from ugro_health.transport.ssh_resolve import (
    DEFAULT_IDENTITIES,
    ResolvedHost,
    jump_chain,
    parse_jump,
    resolve,
)
from ugro_health.transport.ssh_session import (
    Sessions,
    probe_command,
    probe_failed,
    probe_prelude,
)

__all__ = [
    "DEFAULT_IDENTITIES",
    "MAX_OUTPUT_BYTES",
    "PARAMIKO_LOG",
    "ResolvedHost",
    "SshTransport",
    "jump_chain",
    "parse_jump",
    "resolve",
]

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
_CHUNK = 65536
_STDERR_KEEP = 8192


class _FromSettings(enum.Enum):
    TOKEN = 0


class SshTransport:
    """Runs the probe on nodes over SSH; safe to call from many threads at once.

    One-shot by default: each ``run_probe`` connects, runs a fresh probe process and
    disconnects. With ``persistent=True`` (``watch``) each node keeps its connection and one live
    probe process across calls (``ssh_session``); ``forget(name)`` drops one node's session and
    ``close()`` all of them.
    """

    def __init__(
        self,
        settings: SshSettings,
        *,
        accept_new: bool = False,
        ssh_config_path: str | _FromSettings | None = _FromSettings.TOKEN,
        known_hosts_files: list[str] | None = None,
        persistent: bool = False,
    ) -> None:
        self.settings = settings
        self.accept_new = accept_new or settings.accept_new_host_keys
        # an explicit ssh_config_path is read as `ssh -F path` reads it: without the system file
        from_settings = isinstance(ssh_config_path, _FromSettings)
        path = (
            settings.ssh_config if isinstance(ssh_config_path, _FromSettings) else ssh_config_path
        )
        self._connector = Connector(
            settings,
            accept_new=self.accept_new,
            ssh_config_path=path,
            system_ssh_config=settings.system_ssh_config if from_settings else None,
            known_hosts_files=(tuple(known_hosts_files) if known_hosts_files is not None else None),
        )
        self._watchdog = Watchdog()
        self._sessions = Sessions(settings, self._connector, self._watchdog) if persistent else None

    @property
    def persistent(self) -> bool:
        return self._sessions is not None

    def run_probe(
        self, node: NodeConfig, request: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        if not PYTHON_RE.match(node.python):
            raise TransportError(ErrorKind.PROBE_FAILED, f"invalid python path {node.python!r}")
        if self._sessions is not None:
            return self._sessions.run(node, request, deadline)
        target = self._connector.resolve(node)
        attempt = Attempt(deadline)
        self._watchdog.watch(attempt)
        try:
            transport = self._connector.open(attempt, target)
            return self._run_command(attempt, transport, node.python, request)
        except TransportError as exc:
            error = blame_jump(attempt.explain(exc), attempt.owned())
            if error is not exc:
                raise error from exc
            raise
        except Exception as exc:
            raise blame_jump(classify(exc, attempt), attempt.owned()) from exc
        finally:
            self._watchdog.unwatch(attempt)
            attempt.close()

    def jump_hops(self, node: NodeConfig) -> int:
        """How many jump hosts stand before ``node`` (each costs its own connect phases);
        0 when its ProxyJump cannot be resolved (connecting will say why)."""
        try:
            return len(self._connector.jump_chain(self._connector.resolve(node)))
        except TransportError:
            return 0

    def forget(self, node_name: str) -> None:
        """Drop ``node_name``'s persistent session (e.g. its breaker opened); a no-op when
        one-shot. Its next ``run_probe`` connects and starts the probe anew."""
        if self._sessions is not None:
            self._sessions.forget(node_name)

    def close(self) -> None:
        """Close every persistent session (asking each probe to exit first), the shared
        jump-host connections and the watchdog."""
        if self._sessions is not None:
            self._sessions.close()
        self._connector.close()
        self._watchdog.stop()

    def ssh_config(self) -> SshConfig | None:
        """The parsed ssh_config file (once per transport), None when disabled or absent."""
        return self._connector.ssh_config()

    def _run_command(
        self, attempt: Attempt, transport: paramiko.Transport, python: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        attempt.begin("probe output", self.settings.command_timeout)
        channel = transport.open_session(timeout=attempt.remaining())
        channel.exec_command(probe_command(python))
        payload = probe_prelude() + json.dumps(request).encode() + b"\n"
        sent = time.time()
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
                raise probe_failed(python, status, err) from None
            raise
        return check_document(stamp_exchange(doc, sent))


def _read_output(attempt: Attempt, channel: paramiko.Channel) -> tuple[bytes, bytes, int]:
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
            channel.status_event.wait(min(left, POLL_S))
            continue
        channel.settimeout(min(left, POLL_S))
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
