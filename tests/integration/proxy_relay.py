"""A ProxyCommand for the tests: relay stdin/stdout to HOST PORT and note that it ran.

Usage: python3 proxy_relay.py HOST PORT MARKER_FILE (nc is not installed everywhere).
"""

from __future__ import annotations

import os
import select
import socket
import sys


def main() -> None:
    host, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(marker, "a") as f:
        f.write(f"{host} {port}\n")
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
            os.write(stdout, data)


if __name__ == "__main__":
    main()
