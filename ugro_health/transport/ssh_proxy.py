"""ssh_config's ProxyCommand as a transport: the command's stdin and stdout as a socket.

Part of the SSH transport; imported by ``transport.ssh_connect`` only; standard library only.
The command runs as ``ssh`` runs it (``$SHELL -c "exec COMMAND"``, tokens already expanded) in a
session of its own, with one end of a socket pair as its stdin and stdout; paramiko talks to the
other end, so its deadlines and the watchdog work as for TCP. Closing the socket ends the command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess


class ProxySocket(socket.socket):
    """Our end of the socket pair; ``close`` also stops the proxy command."""

    process: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        super().close()
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except OSError:
                pass  # gone already
        if process is not None:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def proxy_socket(command: str) -> ProxySocket:
    """Start ``command`` and return a connected socket to its stdin/stdout."""
    ours, theirs = socket.socketpair()
    shell = os.environ.get("SHELL") or "/bin/sh"
    try:
        process = subprocess.Popen(
            [shell, "-c", f"exec {command}"],
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    sock = ProxySocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    sock.process = process
    return sock
