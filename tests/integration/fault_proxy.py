"""A TCP fault proxy on loopback: put it between the SSH transport and a rig sshd, then misbehave.

``tc netem`` is not in every kernel (not in CI's): latency, stalls, resets, cuts and slow links
come from this proxy instead. ``FaultProxy(target_port)`` listens on ``proxy.port``; each
accepted connection is forwarded to ``127.0.0.1:target_port`` by two pump threads (one per
direction). The behaviour is a ``Faults`` value, switched at runtime with ``proxy.set(...)``:

- ``delay_s``: one-way latency added to every chunk in both directions (chunks keep their order
  and are released when due, so it is latency, not a throughput cap);
- ``stall``: stop forwarding (in both directions) without closing; bytes wait, ends when cleared;
- ``rate_bps``: a bandwidth cap per direction (bytes per second);
- ``cut_after``: after this many bytes from the server on one connection, close both sides
  (FIN; an RST with ``cut_rst``);
- ``reset_first``: the next N accepted connections are reset (RST) before anything is sent;
- ``loss``: packet loss as a TCP stream sees it. A proxy cannot drop IP packets (the kernel's
  TCP under it retransmits on loopback at once), so each chunk is, with probability ``loss``,
  held back for a retransmission timeout drawn from ``loss_delay_s`` (seeded: ``seed`` of the
  proxy), order kept (a held chunk holds those behind it, as TCP's in-order delivery does).

``proxy.accepted`` counts connections, ``proxy.retransmitted`` the chunks held back by ``loss``, ``proxy.last_from_server`` is how many bytes the server
sent on the last one that ended. ``proxy.reset_all()`` resets every live connection (SO_LINGER 0, so the peer reads ECONNRESET).
Bounded: at most ``max_connections`` live connections (more are reset at once); ``close()``
stops everything and joins the threads.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

_CHUNK = 16384
_TICK_S = 0.02
_QUEUE_MAX = 1 << 20  # bytes held per direction (a stall, a slow link) before reading stops


@dataclass(frozen=True, slots=True)
class Faults:
    delay_s: float = 0.0
    stall: bool = False
    rate_bps: float | None = None
    cut_after: int | None = None
    cut_rst: bool = False  # the cut is a reset, not a close
    reset_first: int = 0
    loss: float = 0.0  # probability that a chunk waits for a retransmission timeout
    loss_delay_s: tuple[float, float] = (0.2, 1.0)  # that timeout, drawn uniformly


def _reset(sock: socket.socket) -> None:
    """Close with an RST, not a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Link:
    """One proxied connection: client <-> server, a reader and a writer per direction."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client, self.server = client, server
        self.closed = threading.Event()
        self.from_server = 0
        self._ended = 0
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True),
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        """Read ``src`` into a queue of (due time, bytes), send what is due to ``dst``; pass a
        clean EOF on as a half-close. The link closes when both directions ended or one failed.
        """
        queue: deque[tuple[float, bytes]] = deque()
        src.settimeout(_TICK_S)
        eof = False
        try:
            while not self.closed.is_set():
                queued = sum(len(data) for _, data in queue)
                if not eof and queued < _QUEUE_MAX:  # else TCP pushes back on the sender
                    try:
                        data = src.recv(_CHUNK)
                    except TimeoutError:
                        data = None
                    if data == b"":
                        eof = True
                    elif data:
                        due = time.monotonic() + self.proxy.faults.delay_s
                        queue.append((due + self.proxy.retransmission_delay(), data))
                else:
                    time.sleep(_TICK_S)
                if not self._send_due(queue, dst, downstream):
                    return
                if eof and not queue:
                    dst.shutdown(socket.SHUT_WR)
                    break
        except OSError:
            self.close()
            return
        with self._lock:
            self._ended += 1
            both = self._ended == 2
        if both:
            self.close()

    def _send_due(self, queue: deque[tuple[float, bytes]], dst: socket.socket, down: bool) -> bool:
        """Send what is due under the current faults; False once the link was cut."""
        while queue and not self.closed.is_set():
            faults = self.proxy.faults
            due, data = queue[0]
            if faults.stall or due > time.monotonic():
                return True
            if down and faults.cut_after is not None:
                room = faults.cut_after - self.from_server
                if room < len(data):
                    dst.sendall(data[: max(0, room)])
                    self.from_server += max(0, room)
                    self.close(rst=faults.cut_rst)
                    return False
            queue.popleft()
            if faults.rate_bps:
                time.sleep(len(data) / faults.rate_bps)
            dst.sendall(data)
            if down:
                self.from_server += len(data)
        return True

    def close(self, *, rst: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.proxy.last_from_server = self.from_server
        for sock in (self.client, self.server):
            if rst:
                _reset(sock)
            else:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port`` under the current ``faults``."""

    def __init__(self, target_port: int, max_connections: int = 64, seed: int = 11) -> None:
        self.target_port = target_port
        self.retransmitted = 0
        self._rng = random.Random(seed)
        self.max_connections = max_connections
        self.faults = Faults()
        self.accepted = 0
        self.last_from_server = 0  # bytes the server sent on the last connection that ended
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(_TICK_S * 5)
        self.port = int(self._listener.getsockname()[1])
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    def set(self, **changes: Any) -> None:
        """Switch behaviour now (e.g. ``set(stall=True)``, ``set(delay_s=0.3)``)."""
        with self._lock:
            self.faults = replace(self.faults, **changes)

    def retransmission_delay(self) -> float:
        """0, or (with probability ``loss``) a retransmission timeout for the next chunk."""
        with self._lock:
            faults = self.faults
            if not faults.loss or self._rng.random() >= faults.loss:
                return 0.0
            self.retransmitted += 1
            return self._rng.uniform(*faults.loss_delay_s)

    def clear(self) -> None:
        with self._lock:
            self.faults = Faults()

    def reset_all(self) -> None:
        """Reset every live connection (both sides read a connection reset)."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close(rst=True)

    def live(self) -> int:
        with self._lock:
            self._links = [link for link in self._links if not link.closed.is_set()]
            return len(self._links)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self.faults.reset_first > 0:
                    self.faults = replace(self.faults, reset_first=self.faults.reset_first - 1)
                    _reset(client)
                    continue
            if self.live() >= self.max_connections:
                _reset(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, server)
            with self._lock:
                self._links.append(link)

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()
            for thread in link.threads:
                thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
