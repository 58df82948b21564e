"""ssh_config's ProxyCommand as a transport: the command's stdin and stdout as a socket.

Part of the SSH transport; imported by ``transport.ssh_connect`` only; standard library only.
The command runs as ``ssh`` runs it (``$SHELL -c "exec COMMAND"``, tokens already expanded) in a
session of its own, with one end of a socket pair as its stdin and stdout; paramiko talks to the
other end, so its deadlines and the watchdog work as for TCP. Closing the socket ends the command.
The last few KiB of its stderr are kept: a command that exits is reported with its status and
its own words (``ssh`` shows them on the terminal), never as a server that dropped us.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import threading
from typing import Any

STDERR_KEEP = 4096  # bytes of the command's stderr kept for its error message
_REASON_MAX = 300  # characters of that text in the one-line error
_EXIT_WAIT_S = 0.5  # the socket's EOF can come a moment before the exit status


class ProxySocket(socket.socket):
    """Our end of the socket pair; ``close`` also stops the proxy command."""

    process: subprocess.Popen[bytes] | None = None
    stderr_tail: bytes = b""
    _reader: threading.Thread | None = None
    _ended: tuple[int, bool] | None = None  # (exit status, whether we signalled it) once closed

    def close(self) -> None:
        super().close()
        process, self.process = self.process, None
        if process is None:
            return
        signalled = process.poll() is None
        if signalled:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except OSError:
                pass  # gone already
        try:
            status = process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            status = process.wait()
        # A command that had exited on its own keeps its status even if the signal raced it.
        self._ended = (status, signalled and status < 0)

    def _keep_stderr(self, stream: io.BufferedReader) -> None:
        with stream:
            for chunk in iter(lambda: stream.read1(STDERR_KEEP), b""):
                self.stderr_tail = (self.stderr_tail + chunk)[-STDERR_KEEP:]

    def exit_reason(self) -> str | None:
        """``ProxyCommand exited with status N: <its last stderr>`` once the command has
        exited (waiting a moment for it), else None: the command is still relaying."""
        process = self.process
        if process is None:
            if self._ended is None or self._ended[1]:
                return None  # never started, or ended by our own close
            status = self._ended[0]
        else:
            try:
                status = process.wait(timeout=_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                return None
        if self._reader is not None:
            self._reader.join(timeout=_EXIT_WAIT_S)  # its stderr is closed: the rest is there
        how = f"status {status}" if status >= 0 else f"signal {-status}"
        text = self.stderr_tail.decode("utf-8", "replace")
        words = " ".join("".join(c if c.isprintable() else " " for c in text).split())
        if len(words) > _REASON_MAX:
            words = "..." + words[-_REASON_MAX:]
        return f"ProxyCommand exited with {how}" + (f": {words}" if words else "")


def proxy_socket(command: str) -> ProxySocket:
    """Start ``command`` and return a connected socket to its stdin/stdout."""
    ours, theirs = socket.socketpair()
    shell = os.environ.get("SHELL") or "/bin/sh"
    try:
        process = subprocess.Popen(
            [shell, "-c", f"exec {command}"],
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=subprocess.PIPE,
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
    assert process.stderr is not None
    sock._reader = threading.Thread(
        target=sock._keep_stderr, args=(process.stderr,), name="proxy-stderr", daemon=True
    )
    sock._reader.start()
    return sock


def proxy_exit(sock: Any) -> str | None:
    """Why the ProxyCommand behind ``sock`` ended (see ``ProxySocket.exit_reason``), or None
    when ``sock`` is no ProxyCommand's or the command still runs."""
    return sock.exit_reason() if isinstance(sock, ProxySocket) else None


def pacing_key(template: str) -> str:
    """The pacing key of a ProxyCommand: its unexpanded template (``ssh -W %h:%p bastion``),
    so every node that goes through the same command line shares one bastion's MaxStartups.
    A template that names its hop by a token (``%h-gw``) groups more nodes than one sshd: the
    safe direction, slower, never dropped."""
    return f"proxy:{template}"
