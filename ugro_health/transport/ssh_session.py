"""Persistent SSH sessions for ``watch``: one connection and one live probe process per node.

Part of the SSH transport (imports paramiko); imported by ``transport.ssh`` only. Imports
``config``, ``model``, ``probe`` (for its source), ``transport.base``, ``probe_source``,
``ssh_attempt``, ``ssh_connect`` and ``ssh_jump``.

Per node a ``Session`` keeps an authenticated paramiko transport (with keepalives), its lease on
the jump-host connections it rides (shared with the other nodes behind them), and one exec
channel running the probe's request loop (docs/probe-protocol.md): the source is sent once, then
each tick writes one JSON request line and reads exactly one ``UGRO1`` answer line, skipping noise.
A dead channel or connection is found at the start of a tick (or when a reused channel hits EOF
before answering, which is retried once on a fresh one) and replaced. Any failure is reported as a
classified ``TransportError``; a timeout closes the channel (its state is unknown) and keeps the
connection, any other failure drops the whole session, so the next tick starts clean. A server
that refuses the next channel on the kept connection (``MaxSessions``, with the timed-out probe
still running) gets a new connection within the same tick.

Sessions are locked one per node, so different nodes tick in parallel on the caller's threads.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import socket
import threading
import time
from typing import Any

import paramiko

from ugro_health import probe
from ugro_health.config import NodeConfig, SshSettings
from ugro_health.model import ErrorKind
from ugro_health.transport.base import (
    RESPONSE_PREFIX,
    TransportError,
    check_document,
    find_frame,
    parse_probe_output,
    parse_response_line,
    stamp_exchange,
)
from ugro_health.transport.probe_source import lazy_source
from ugro_health.transport.ssh_attempt import close_quietly
from ugro_health.transport.ssh_connect import Attempt, Connector, Watchdog, classify
from ugro_health.transport.ssh_jump import IDLE_WAKE_S, Lease, blame_jump, close_transport

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 4 * 1024 * 1024  # what one tick reads up to its answer, noise included
_CHUNK = 65536
_STDERR_KEEP = 8192
_NOISE_KEEP = 256
_EXIT_REQUEST = b'{"op": "exit"}\n'
_GOODBYE_TIMEOUT_S = 0.2
# While an answer is awaited, stderr is drained after 1 s, then at doubling gaps up to 4 s (so
# more than the channel's 2 MiB window on stderr delays an answer by seconds, within its
# budget, never stalls it). An answer wakes the wait at once; a fixed 0.1 s poll cost every
# waiting poll thread a wake each 0.1 s (0.8 ms of control CPU per node per cycle at 128 nodes).
_STDERR_POLL_S = 1.0
_STDERR_POLL_MAX_S = 4.0


class _Stale(Exception):
    """The probe's channel ended before answering (the probe process died)."""


class Session:
    """One node's connection and the probe process on its channel; guarded by ``lock``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.transports: list[paramiko.Transport] = []  # the node's own (jump hosts: leases)
        self.leases: list[Lease] = []  # its hold on the shared jump-host connections
        self.channel: paramiko.Channel | None = None
        self.buffer = bytearray()  # stdout read past the last answer line
        self.stderr = bytearray()  # the probe's last words, for error messages
        self.noise = bytearray()  # the start of what it printed that was not an answer
        self.warm = False  # the probe on this channel has answered: it holds CPU counters
        self.closed = False  # forgotten or transport closed: tear down whatever is built
        self.node: NodeConfig | None = None  # the configuration the session was built for
        self._last_request: dict[str, Any] | None = None
        self._last_line = b""

    def encode(self, request: dict[str, Any]) -> bytes:
        """The request line; a warm probe measures CPU and network between ticks, so it is
        asked for no sampling window. Watch repeats the same request: encoded once."""
        if self.warm:
            request = {**request, "window_s": 0}
        if request != self._last_request:
            self._last_request = request
            self._last_line = json.dumps(request).encode() + b"\n"
        return self._last_line

    @property
    def transport(self) -> paramiko.Transport | None:
        return self.transports[0] if self.transports else None

    def close_channel(self) -> None:
        channel, self.channel = self.channel, None
        self.buffer.clear()
        self.warm = False
        if channel is not None:
            close_quietly(channel)

    def close(self) -> None:
        """Close the channel and the connection, then let go of the jump hosts' (the watchdog
        may call this from its thread)."""
        self.close_channel()
        transports, self.transports = self.transports, []
        for transport in transports:
            close_transport(transport)
        leases, self.leases = self.leases, []
        for lease in leases:
            lease.close()

    def goodbye(self) -> None:
        """Ask the probe to exit (best effort, never blocks long), then close everything."""
        channel = self.channel
        if channel is not None and not channel.closed:
            try:
                channel.settimeout(_GOODBYE_TIMEOUT_S)
                channel.sendall(_EXIT_REQUEST)
                channel.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass
        self.close()


class _ChannelOnly:
    """What an overrunning exchange closes: the channel, never the node's connection."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def close(self) -> None:
        channel = self._session.channel
        if channel is not None:
            close_quietly(channel)


class Sessions:
    """The persistent sessions of one ``SshTransport``, by node name."""

    def __init__(self, settings: SshSettings, connector: Connector, watchdog: Watchdog) -> None:
        self.settings = settings
        self._connector = connector
        self._watchdog = watchdog
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def run(self, node: NodeConfig, request: dict[str, Any], deadline: float) -> dict[str, Any]:
        """One tick on ``node``: the probe's answer to ``request``, or a TransportError."""
        with self._lock:
            session = self._sessions.get(node.name)
            if session is None:
                session = self._sessions[node.name] = Session(node.name)
        # A tick still running past its deadline (it should not) must not pile up the next
        # ticks' threads behind it: they wait for it only until their own deadline.
        if not session.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TransportError(ErrorKind.TIMEOUT, "previous poll of this node still running")
        try:
            return self._run_locked(session, node, request, deadline)
        finally:
            session.lock.release()

    def _run_locked(
        self, session: Session, node: NodeConfig, request: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        # The watchdog is armed only while connecting or starting the probe (_ensure): a
        # tick on a live session waits in calls that time out by themselves.
        attempt = Attempt(deadline)
        try:
            doc = self._tick(session, attempt, node, request)
            # A probe that reports its own failure is alive and in step: keep the session.
            return check_document(doc)
        except TransportError as exc:
            error = attempt.explain(exc)
        except Exception as exc:
            error = classify(exc, attempt)
        finally:
            self._watchdog.unwatch(attempt)
            attempt.close()
            if session.closed:  # forgotten meanwhile: leave nothing open behind
                session.close()
        error = blame_jump(error, session.leases)
        if error.kind is ErrorKind.PROBE_FAILED and session.warm:
            pass  # the probe answered ok:false (check_document); the session is in step
        elif error.kind is ErrorKind.TIMEOUT and attempt.phase == "probe output":
            session.close_channel()  # the probe may still be busy; the connection is fine
        else:
            session.close()
        raise error

    def forget(self, name: str) -> None:
        """Drop ``name``'s session: close its probe and connection (next tick starts anew)."""
        with self._lock:
            session = self._sessions.pop(name, None)
        if session is None:
            return
        session.closed = True
        if session.lock.acquire(blocking=False):
            try:
                session.goodbye()
            finally:
                session.lock.release()
        else:  # a tick is running: closing its connection ends that tick promptly
            for transport in list(session.transports):
                close_transport(transport)

    def close(self) -> None:
        with self._lock:
            names = list(self._sessions)
        for name in names:
            self.forget(name)

    def __len__(self) -> int:
        return len(self._sessions)

    # -- one tick -------------------------------------------------------------------------

    def _tick(
        self, session: Session, attempt: Attempt, node: NodeConfig, request: dict[str, Any]
    ) -> dict[str, Any]:
        while True:
            started = self._ensure(session, attempt, node)
            try:
                doc = self._exchange(session, attempt, session.encode(request))
            except _Stale:
                if started:  # a probe that dies on its first request: report why
                    raise self._died(session, node.python) from None
                session.close_channel()  # it died between ticks: start a fresh one, once
                continue
            session.warm = True
            return doc

    def _ensure(self, session: Session, attempt: Attempt, node: NodeConfig) -> bool:
        """Reconnect and restart the probe as needed; True when a probe was started now."""
        if session.node is not node and session.node != node:  # first tick, or reloaded
            session.close()
            session.node = node
        channel = session.channel
        if channel is not None and (
            channel.closed or channel.eof_received or channel.exit_status_ready()
        ):
            session.close_channel()
        transport = session.transport
        if transport is not None and not transport.is_active():
            session.close()
        if session.channel is not None:
            return False
        self._watchdog.watch(attempt)
        fresh = session.transport is None
        if fresh:
            self._connect(session, attempt, node)
        try:
            channel = self._open_channel(session, attempt)
        except paramiko.ChannelException:
            if fresh:
                raise
            # sshd refused a session on a connection that had one (MaxSessions): the probe of
            # a timed-out tick still holds it there, closed on our side, until it exits. A new
            # connection starts with no session; closing the old one ends that probe's input.
            log.debug("%s: session refused on the old connection, reconnecting", node.name)
            session.close()
            self._connect(session, attempt, node)
            channel = self._open_channel(session, attempt)
        session.channel = channel
        session.stderr.clear()
        session.noise.clear()
        channel.exec_command(probe_command(node.python))
        channel.settimeout(max(attempt.remaining(), 0.001))
        try:
            channel.sendall(probe_prelude())
        except OSError:
            pass  # the command ended without reading its input: the exchange finds out why
        attempt.release()
        return True

    def _connect(self, session: Session, attempt: Attempt, node: NodeConfig) -> None:
        """Open ``session``'s connection (and its lease on the jump hosts' connections)."""
        self._connector.open(attempt, self._connector.resolve(node))
        owned = attempt.release()
        session.transports = [t for t in owned if isinstance(t, paramiko.Transport)]
        session.leases = [t for t in owned if isinstance(t, Lease)]
        wake = min(IDLE_WAKE_S, max(1.0, self.settings.keepalive_s))
        for transport in session.transports:
            if isinstance(transport.sock, socket.socket):
                transport.sock.settimeout(wake)

    def _open_channel(self, session: Session, attempt: Attempt) -> paramiko.Channel:
        attempt.own(session)  # until the probe runs, an overrun closes the whole session
        attempt.begin("probe start", self.settings.command_timeout)
        assert session.transport is not None
        return session.transport.open_session(timeout=attempt.remaining())

    def _exchange(self, session: Session, attempt: Attempt, request: bytes) -> dict[str, Any]:
        """Send one request line and read lines until the answer; ``_Stale`` on EOF."""
        channel = session.channel
        assert channel is not None
        attempt.begin("probe output", self.settings.command_timeout)
        if attempt.watched:  # a probe started in this tick: the watchdog may close its channel
            attempt.own(_ChannelOnly(session))
        self._drain_stderr(session)
        sent = time.time()
        try:
            channel.settimeout(max(attempt.remaining(), 0.001))
            channel.sendall(request)
        except TimeoutError:
            raise attempt.timeout_error() from None
        except OSError:
            raise _Stale() from None
        buffer = session.buffer
        skipped = 0  # noise read in this exchange: with the frame, bounded as check's output is
        while True:
            begin = buffer.find(RESPONSE_PREFIX)
            # Bytes before the marker are noise (a login shell's, on lines of their own or
            # not): their start is kept for the error message of a probe that never answers.
            # Without a marker yet, all but a tail that may begin one are noise.
            cut = begin if begin >= 0 else max(0, len(buffer) - len(RESPONSE_PREFIX) + 1)
            session.noise += buffer[: min(cut, max(0, _NOISE_KEEP - len(session.noise)))]
            del buffer[:cut]
            skipped += cut
            frame = find_frame(buffer) if begin >= 0 else None
            if frame is not None:
                line = bytes(buffer[: frame[1]])
                del buffer[: frame[1]]
                doc = parse_response_line(line)
                assert doc is not None  # the line starts with the marker
                if attempt.watched:
                    attempt.release()
                return stamp_exchange(doc, sent)
            if skipped + len(buffer) > MAX_LINE_BYTES:
                raise TransportError(
                    ErrorKind.PROBE_INVALID, f"probe output exceeded {MAX_LINE_BYTES} bytes"
                )
            buffer += self._receive(session, channel, attempt)

    def _receive(self, session: Session, channel: paramiko.Channel, attempt: Attempt) -> bytes:
        """The next stdout bytes; ``_Stale`` on EOF. Stderr is drained meanwhile: stdout and
        stderr share the channel's window, so a probe (or shell) writing more to stderr than
        the window holds would stall its answer behind the unread bytes."""
        wait = _STDERR_POLL_S
        while True:
            self._drain_stderr(session)
            left = attempt.remaining()
            if left <= 0:
                raise attempt.timeout_error()
            channel.settimeout(min(left, wait))
            try:
                data = channel.recv(_CHUNK)
            except TimeoutError:
                wait = min(wait * 2, _STDERR_POLL_MAX_S)
                continue
            if not data:
                raise _Stale()
            return data

    def _drain_stderr(self, session: Session) -> None:
        channel = session.channel
        while channel is not None and channel.recv_stderr_ready():
            session.stderr += channel.recv_stderr(_CHUNK)
            del session.stderr[:-_STDERR_KEEP]

    def _died(self, session: Session, python: str) -> TransportError:
        """Why a probe that was just started ended without answering."""
        channel = session.channel
        status = -1
        if channel is not None:
            channel.status_event.wait(0.5)
            self._drain_stderr(session)
            if channel.exit_status_ready():
                status = channel.recv_exit_status()
        transport = session.transport
        if status == -1 and (transport is None or not transport.is_active()):
            return TransportError(ErrorKind.SSH_ERROR, "connection lost while the probe ran")
        if status == 0:  # it ended well without an answer: judged as one-shot output is
            try:
                parse_probe_output(bytes(session.noise + session.buffer))
            except TransportError as exc:
                return exc
        return probe_failed(python, status, bytes(session.stderr))


@functools.cache
def probe_prelude() -> bytes:
    """What the bootstrap reads before the first request: the source's length, the source (its
    functions compiled on first call, ``probe_source``)."""
    src = lazy_source(probe.source_bytes())
    return b"%d\n" % len(src) + src


def probe_command(python: str) -> str:
    """The fixed remote command line: the validated interpreter, quoted, and the bootstrap."""
    return shlex.quote(python) + " -c " + shlex.quote(probe.BOOTSTRAP)


def probe_failed(python: str, status: int, err: bytes) -> TransportError:
    """The error for a probe process that ended without answering."""
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
