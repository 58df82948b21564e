"""One bounded call over SSH: its phase, that phase's deadline, and what to close if it overruns.

Part of the SSH transport (imports paramiko, for ``classify``); imported by the
``transport.ssh*`` modules only. Imports ``model``, ``transport.base`` and ``ssh_pacing``.
``Attempt`` is one bounded call (its phase, that phase's deadline and the connections to close
if it overruns); ``Watchdog`` closes the connections of attempts whose phase overran, so no
paramiko call can hang a worker; ``classify`` turns any exception into a one-line
``TransportError`` that never carries a secret.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import threading
import time
from typing import Protocol

import paramiko

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_pacing import Pacer

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting loop looks at the clock
_WATCHDOG_GRACE_S = 0.25  # the watchdog is a backstop: our own loops time out first


class _Closeable(Protocol):
    def close(self) -> None: ...


def close_quietly(thing: _Closeable) -> None:
    """Close ``thing`` (a connection, a channel); one whose carrier died first (a node's
    connection over a reset jump connection) fails to say goodbye over it, and is closed all
    the same."""
    try:
        thing.close()
    except (EOFError, OSError, paramiko.SSHException):
        pass


class Attempt:
    """One bounded call: the phase it is in, that phase's deadline, what to close on overrun."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.phase = "connection"
        self.budget = 0.0
        self.bound_by_deadline = False
        self.phase_end = deadline
        self.expired = False
        self.watched = False  # registered with a Watchdog
        self._owned: list[_Closeable] = []
        self._slot: tuple[Pacer, str] | None = None  # a pacing slot held until authenticated
        self._lock = threading.Lock()

    def begin(self, phase: str, limit: float) -> float:
        now = time.monotonic()
        self.phase = phase
        self.budget = min(limit, self.deadline - now)
        self.bound_by_deadline = self.deadline - now < limit
        self.phase_end = now + self.budget
        if self.budget <= 0:
            raise TransportError(
                ErrorKind.TIMEOUT, f"deadline passed before {phase}", at_deadline=True
            )
        return self.budget

    def remaining(self) -> float:
        return self.phase_end - time.monotonic()

    def overdue(self) -> bool:
        return self.expired or time.monotonic() >= self.phase_end

    def timeout_error(self) -> TransportError:
        return TransportError(
            ErrorKind.TIMEOUT,
            f"timed out after {self.budget:.1f}s waiting for {self.phase}",
            at_deadline=self.bound_by_deadline,
        )

    def explain(self, exc: TransportError) -> TransportError:
        """``exc``, or this phase's timeout when the watchdog closed the connection under it
        (the call then fails with whatever the closed socket gave). A DNS lookup is not
        closed by the watchdog: its own deadline error stands."""
        if self.expired and exc.kind not in (ErrorKind.TIMEOUT, ErrorKind.DNS):
            return self.timeout_error()
        return exc

    def own(self, thing: _Closeable) -> None:
        """Close ``thing`` with this attempt (at once if it has already expired)."""
        with self._lock:
            self._owned.append(thing)
            if self.expired:
                close_quietly(thing)

    def hold(self, pacer: Pacer, key: str, what: str) -> None:
        """Wait (within the node's deadline, not a phase's) for a pacing slot to ``key``."""
        if pacer.acquire(key, 0):
            self._slot = (pacer, key)
            return
        self.begin(f"a connection slot to {what}", math.inf)
        if not pacer.acquire(key, self.remaining()):
            raise self.timeout_error()
        self._slot = (pacer, key)

    def free_slot(self) -> None:
        with self._lock:
            slot, self._slot = self._slot, None
        if slot is not None:
            slot[0].release(slot[1])

    def newest(self) -> _Closeable | None:
        with self._lock:
            return self._owned[-1] if self._owned else None

    def drop(self, thing: _Closeable) -> None:
        """Close ``thing`` now and stop owning it (a failed try that is retried)."""
        with self._lock:
            if thing in self._owned:
                self._owned.remove(thing)
        close_quietly(thing)

    def disown(self, thing: _Closeable) -> None:
        """Stop owning ``thing`` without closing it (a shared jump connection, kept by its pool)."""
        with self._lock:
            if thing in self._owned:
                self._owned.remove(thing)

    def owned(self) -> list[_Closeable]:
        with self._lock:
            return list(self._owned)

    def release(self) -> list[_Closeable]:
        """Hand everything owned to the caller (a session keeps it past this attempt)."""
        with self._lock:
            owned, self._owned = self._owned, []
        return owned

    def close(self, *, expired: bool = False) -> None:
        with self._lock:
            self.expired = self.expired or expired
            owned, self._owned = self._owned, []
        for thing in reversed(owned):  # the target first, then its lease on the jump hosts
            close_quietly(thing)
        self.free_slot()


class Watchdog:
    """One thread that closes the connections of attempts whose phase overran its deadline."""

    def __init__(self) -> None:
        self._attempts: set[Attempt] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def watch(self, attempt: Attempt) -> None:
        with self._cond:
            attempt.watched = True
            idle = not self._attempts
            self._attempts.add(attempt)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="ugro-ssh-watchdog", daemon=True
                )
                self._thread.start()
            if idle:  # otherwise the loop is already polling: no need to wake it
                self._cond.notify()

    def unwatch(self, attempt: Attempt) -> None:
        if not attempt.watched:
            return
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
                self._cond.wait(POLL_S * 2 if self._attempts else None)
                now = time.monotonic()
                overdue = [a for a in self._attempts if now >= a.phase_end + _WATCHDOG_GRACE_S]
                self._attempts.difference_update(overdue)
            for attempt in overdue:
                log.debug("watchdog: closing a connection stuck in %s", attempt.phase)
                attempt.close(expired=True)


_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def classify(exc: BaseException, attempt: Attempt) -> TransportError:
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
