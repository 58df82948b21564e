"""Host-name lookup with a deadline.

``socket.getaddrinfo`` has no timeout: with an unresponsive name server glibc waits
``timeout x attempts`` per server (10 s and more with the defaults), and a node thread stuck
there would be reported only when the whole run's deadline passes, as a plain timeout. The
lookup runs in a daemon thread instead; the caller waits at most its phase's budget and gets a
DNS error naming the host. A lookup left behind finishes on its own and is discarded.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError

AddrInfo = tuple[Any, ...]


def _is_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])  # fe80::1%eth0 carries a scope
    except ValueError:
        return False
    return True


def lookup(name: str, port: int, timeout: float) -> list[AddrInfo]:
    """``getaddrinfo(name, port, SOCK_STREAM)`` that gives up after ``timeout`` seconds.

    Raises ``socket.gaierror`` for a name that does not resolve and a DNS ``TransportError``
    for a lookup that did not answer in time.
    """
    if _is_literal(name):  # nothing to look up: no thread
        return socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    box: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the waiting caller
            box.append(exc)
        done.set()

    threading.Thread(target=run, name=f"ugro-dns-{name}", daemon=True).start()
    if not done.wait(max(0.0, timeout)):
        raise TransportError(
            ErrorKind.DNS, f"DNS lookup of {name} did not answer within {timeout:.1f}s"
        )
    (result,) = box
    if isinstance(result, UnicodeError):  # an empty or over-long label: never sent
        raise socket.gaierror(socket.EAI_NONAME, f"invalid host name {name!r}")
    if isinstance(result, BaseException):
        raise result
    return list(result)
