"""Shared connections to jump hosts: nodes behind one ProxyJump chain ride one connection per hop.

Part of the SSH transport (imports paramiko); imported by ``transport.ssh``, ``ssh_connect`` and
``ssh_session``. Imports ``model``, ``transport.base``, ``ssh_attempt`` and ``ssh_resolve``.

As OpenSSH's ControlMaster does, every node whose chain starts with the same jump host gets its
direct-tcpip channel over one authenticated connection to it, so a bastion sees one session,
not one per node (and its ``MaxStartups`` one handshake). A hop is identified by the chain up to
it, each host as resolved (hostname, port, user, keys, host-key alias, ProxyCommand...: what
decides the connection), so a second hop is shared by the nodes behind that same first hop.

A ``JumpPool`` keeps one ``_Shared`` per hop. The first node that needs it opens it, within its
own deadline and pacing; the others wait for that one handshake (each within its own deadline)
and share its result, success or error. A node holds a ``Lease`` on the hops it rides (its
``Attempt`` owns it, then its persistent session): closing a lease, even from the watchdog,
never closes a shared connection that others use; the last lease released closes it. A
connection found dead (``is_active()`` false) is replaced by the next node that asks for it.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any

import paramiko

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_attempt import Attempt, classify, close_quietly
from ugro_health.transport.ssh_resolve import ResolvedHost

log = logging.getLogger(__name__)

# paramiko's reader thread wakes every 0.1 s by default to look for a close or a due keepalive:
# ~90 µs of CPU a wake, 0.9 ms per idle connection per second. A kept connection wakes it at
# most this often (keepalives are then sent up to this much late); close_transport wakes it.
IDLE_WAKE_S = 5.0
_LOST_WAIT_S = 0.5  # how long a node that lost its connection lets the jump's catch up
_LOST_POLL_S = 0.02


def close_transport(transport: paramiko.Transport) -> None:
    """Close ``transport`` and wake its reader thread now (it may wait up to IDLE_WAKE_S)."""
    sock = transport.sock
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    close_quietly(transport)


# SSH_MSG_CHANNEL_WINDOW_ADJUST (93) to SSH_MSG_CHANNEL_FAILURE (100): each names the channel
# it is for (the peer's number) in its first field.
_CHANNEL_MESSAGES = range(93, 101)
_MSG_CHANNEL_CLOSE = 97


class ChannelSafeTransport(paramiko.Transport):
    """paramiko's transport, sending nothing for a channel once it sent that channel's CLOSE.

    paramiko builds a channel's data packet (or window adjustment) under the channel's lock and
    sends it after letting go, so another thread closing the channel meanwhile can put its
    CLOSE on the wire first. OpenSSH frees a channel once CLOSE went both ways and ends the
    whole connection on a packet for a channel it no longer has ("data packet referred to
    nonexistent channel"): on a jump connection shared by many nodes, one node's connection
    ending would cut every other node's. Checked and sent under one lock, in wire order.
    """

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self._wire_lock = threading.Lock()
        self._closed_remote: set[int] = set()  # the peer's channel numbers we sent CLOSE for

    def _send_message(self, data: paramiko.Message) -> None:
        raw = data.asbytes()
        if not raw or raw[0] not in _CHANNEL_MESSAGES:
            super()._send_message(data)  # type: ignore[misc]
            return
        recipient = int.from_bytes(raw[1:5], "big")
        with self._wire_lock:
            if recipient in self._closed_remote:  # written after its CLOSE: gone with it
                log.debug("dropped a message for closed channel %d", recipient)
                return
            if raw[0] == _MSG_CHANNEL_CLOSE:
                self._closed_remote.add(recipient)
            super()._send_message(data)  # type: ignore[misc]

    def _parse_channel_open_success(self, m: paramiko.Message) -> None:
        # the peer reuses a freed channel's number for a new channel
        server_channel = int.from_bytes(m.asbytes()[4:8], "big")
        with self._wire_lock:
            self._closed_remote.discard(server_channel)
        super()._parse_channel_open_success(m)  # type: ignore[misc]


def hop_key(host: ResolvedHost) -> Hashable:
    """What decides the connection to ``host``: all of it but how it was named and where each
    value came from (two names for one bastion, same user and keys, share one connection)."""
    return replace(host, alias="", sources=())


class _Shared:
    """One hop's connection: being opened, open, or failed (then out of the pool)."""

    def __init__(self, key: tuple[Hashable, ...], name: str) -> None:
        self.key = key
        self.name = name  # the jump host as its opener named it
        self.ready = threading.Event()
        self.transport: paramiko.Transport | None = None
        self.error: TransportError | None = None
        self.users = 0  # leases holding it (guarded by the pool's lock)

    def usable(self) -> bool:
        """Still worth waiting for or riding: connecting, or connected and alive."""
        if not self.ready.is_set():
            return True
        return self.transport is not None and self.transport.is_active()


class Lease:
    """A node's hold on the shared hops it rides; ``close()`` lets go of them (once)."""

    def __init__(self, pool: JumpPool) -> None:
        self._pool = pool
        self._held: list[_Shared] = []
        self._closed = False
        self._lock = threading.Lock()

    def add(self, shared: _Shared) -> bool:
        """Hold ``shared``; False (and not held) when this lease was closed meanwhile."""
        with self._lock:
            if not self._closed:
                self._held.append(shared)
                return True
        return False

    def lost(self, wait_s: float = 0.0) -> str | None:
        """The first hop whose connection died under this lease, as named; None when none.
        A node can meet the end of a connection first (its write to a reset socket fails)
        while the connection's reader thread has not marked it inactive yet: ``wait_s`` gives
        that thread time to catch up."""
        with self._lock:
            held = list(self._held)
        until = time.monotonic() + wait_s
        while True:
            for shared in held:
                transport = shared.transport
                if transport is not None and (
                    not transport.is_active() or transport.saved_exception is not None
                ):
                    return shared.name
            if not held or time.monotonic() >= until:
                return None
            time.sleep(_LOST_POLL_S)

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, []
            self._closed = True
        for shared in reversed(held):  # the last hop first: it rides the one before
            self._pool.release(shared)


class JumpPool:
    """The shared jump-host connections of one ``Connector``, by hop chain; thread-safe."""

    def __init__(self) -> None:
        self._current: dict[tuple[Hashable, ...], _Shared] = {}
        self._lock = threading.Lock()

    def lease(self) -> Lease:
        return Lease(self)

    def get(
        self,
        attempt: Attempt,
        lease: Lease,
        key: tuple[Hashable, ...],
        name: str,
        open_hop: Callable[[], paramiko.Transport],
    ) -> paramiko.Transport:
        """The live connection for ``key`` (jump host ``name``), held by ``lease``: opened now
        with ``open_hop``, or the one another node is opening, waited for within ``attempt``'s
        deadline. The opener's failure is every waiter's, but for one that only the opener's
        own deadline caused: a waiter with time left then tries itself."""
        while True:
            shared, opener = self._join(lease, key, name)
            if opener:
                return self._open(attempt, shared, open_hop)
            if not shared.ready.is_set():
                attempt.begin(f"the shared connection (jump host {name})", math.inf)
                if not shared.ready.wait(max(0.0, attempt.remaining())):
                    raise attempt.timeout_error()
            if shared.transport is not None:
                return shared.transport
            error = shared.error
            assert error is not None
            if not (error.at_deadline and time.monotonic() < attempt.deadline):
                raise TransportError(error.kind, error.message, at_deadline=error.at_deadline)

    def _join(self, lease: Lease, key: tuple[Hashable, ...], name: str) -> tuple[_Shared, bool]:
        with self._lock:
            shared = self._current.get(key)
            opener = shared is None or not shared.usable()
            if opener:
                shared = self._current[key] = _Shared(key, name)
            assert shared is not None
            shared.users += 1
        if not lease.add(shared):  # the node's attempt was closed (watchdog) meanwhile
            self.release(shared)
            raise TransportError(ErrorKind.SSH_ERROR, "connection closed while waiting")
        return shared, opener

    def _open(
        self, attempt: Attempt, shared: _Shared, open_hop: Callable[[], paramiko.Transport]
    ) -> paramiko.Transport:
        try:
            transport = open_hop()
        except BaseException as exc:  # the waiters' error: as the opener's caller will see it
            error = exc if isinstance(exc, TransportError) else classify(exc, attempt)
            shared.error = attempt.explain(error)
            self._retire(shared)
            shared.ready.set()
            raise
        with self._lock:
            orphan = shared.users == 0
            shared.transport = transport
        shared.ready.set()
        if orphan:  # every holder left while it connected
            close_transport(transport)
        return transport

    def release(self, shared: _Shared) -> None:
        """One holder less; the last one closes the connection."""
        with self._lock:
            shared.users -= 1
            last = shared.users == 0
            if last and self._current.get(shared.key) is shared:
                del self._current[shared.key]
            transport = shared.transport if last else None
        if transport is not None:
            close_transport(transport)

    def _retire(self, shared: _Shared) -> None:
        with self._lock:
            if self._current.get(shared.key) is shared:
                del self._current[shared.key]

    def close(self) -> None:
        """Close every shared connection now (the transport is closing): nodes still riding
        one fail at once; their leases, closed with them, only let go."""
        with self._lock:
            shared, self._current = list(self._current.values()), {}
        for one in shared:
            if one.transport is not None:
                close_transport(one.transport)

    def __len__(self) -> int:
        with self._lock:
            return len(self._current)


def blame_jump(error: TransportError, held: list[Any]) -> TransportError:
    """``error``, naming the jump host whose connection died under it (it took the node's
    connection, and every other node's behind it, with it) when one of ``held`` says so.
    Only a lost connection (SSH_ERROR) is looked into, with a short wait (``Lease.lost``)."""
    if error.kind is not ErrorKind.SSH_ERROR or "jump host" in error.message:
        return error
    leases = [h for h in held if isinstance(h, Lease)]
    lost = next((name for lease in leases if (name := lease.lost(_LOST_WAIT_S))), None)
    if lost is None:
        return error
    return TransportError(error.kind, f"{error.message} (connection to jump host {lost} lost)")
