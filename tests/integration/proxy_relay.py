"""A ProxyCommand for the tests: relay stdin/stdout to HOST PORT and note that it ran.

Usage: python3 proxy_relay.py HOST PORT MARKER_FILE [GATE_FILE] (nc is not installed everywhere).
With GATE_FILE, the relay counts itself in from its start until the server's first bytes (the
SSH banner) come back, and GATE_FILE keeps "now most" of such relays at once, so a test can see
how many ProxyCommands were in their unauthenticated phase together.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import sys
import time


def count(gate: str, step: int) -> None:
    with open(gate + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(gate) as f:
                now, most = (int(x) for x in f.read().split())
        except FileNotFoundError:
            now = most = 0
        now += step
        with open(gate, "w") as f:
            f.write(f"{now} {max(now, most)}")


def main() -> None:
    host, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    gate = sys.argv[4] if len(sys.argv) > 4 else None
    with open(marker, "a") as f:
        f.write(f"{host} {port}\n")
    if gate:
        count(gate, 1)
        time.sleep(0.3)  # a slow bastion: relays started together overlap
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    while True:
        ready, _, _ = select.select([stdin, sock], [], [])
        if stdin in ready:
            data = os.read(stdin, 65536)
            if not data:
                return
            sock.sendall(data)
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            if gate:
                count(gate, -1)
                gate = None
            os.write(stdout, data)


if __name__ == "__main__":
    main()
