"""Pacing new SSH connections per sshd endpoint, and when to retry one dropped before its banner.

Part of the SSH transport; imported by ``transport.ssh_connect`` only. Imports ``model`` and
``transport.base``. sshd drops connections at random once ``MaxStartups`` (10:30:100 by default)
are unauthenticated at once: 64 nodes behind one sshd (a bastion used as ProxyJump, or many
names for one address) would lose some of them with "connection reset" before the SSH banner
and report healthy nodes CRITICAL. A ``Pacer`` lets at most ``limit`` connections to one
endpoint be in their unauthenticated phases at once; ``backoff`` says how long to wait before
trying a dropped one again, or None when the node's remaining time does not allow it.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError

RETRY_LIMIT = 4  # tries after the first: a server that resets every connection is reported
_BACKOFF_BASE_S = 0.1
_BACKOFF_MAX_S = 1.0
_RETRY_MARGIN_S = 0.5  # a retry must leave at least this much for the new connection


class Pacer:
    """At most ``limit`` connections per endpoint key between TCP connect and authentication."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._gates: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, timeout: float) -> bool:
        """Take a slot for ``key``; False when none came free within ``timeout`` seconds."""
        with self._lock:
            gate = self._gates.get(key)
            if gate is None:
                gate = self._gates[key] = threading.BoundedSemaphore(self.limit)
        return gate.acquire(timeout=max(0.0, timeout))

    def release(self, key: str) -> None:
        with self._lock:
            gate = self._gates[key]
        gate.release()


def backoff(retry: int, deadline: float) -> float | None:
    """The jittered wait before try ``retry + 1`` (retry counts from 0), or None when retries
    are used up or the wait and a new connection would not fit before ``deadline``."""
    if retry >= RETRY_LIMIT:
        return None
    # Jitter spreads the retries of nodes dropped together, so they do not return together.
    delay = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2**retry) * random.uniform(0.5, 1.5)
    if time.monotonic() + delay + _RETRY_MARGIN_S >= deadline:
        return None
    return delay


def endpoint_key(addr: tuple[Any, ...]) -> str:
    """``address:port`` of a resolved sockaddr (``[v6]:port``): what one sshd listens on."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def dropped_before_banner(exc: BaseException, phase: str, via: str, banner: str | None) -> bool:
    """Whether ``exc`` is a connection the server accepted, then closed or reset before its
    banner (a reset can even come back from ``connect()`` itself, on loopback). ``banner`` is
    the new connection's remote version ("" before any; None when it never got that far)."""
    if isinstance(exc, ConnectionResetError):
        return phase.startswith(("TCP connect", "SSH banner"))
    return (
        isinstance(exc, TransportError)
        and exc.kind is ErrorKind.SSH_ERROR
        and phase == f"SSH banner{via}"
        and banner == ""
    )
