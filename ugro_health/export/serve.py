"""The two ways out: an HTTP ``/metrics`` endpoint (``watch``) and an atomic textfile (``check``).

Imports ``export.metrics`` and prometheus-client. Failures are ``ExportError`` with a one-line
message for the front to print; nothing here exits.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ugro_health.export.metrics import SnapshotCollector, exposition

DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise: the metrics name every node
DEFAULT_PORT = 9835
TEXTFILE_NAME = "ugro_health.prom"


class ExportError(Exception):
    """A listen address or textfile that cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """``9835``, ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``; the host defaults to
    loopback and the port to ``DEFAULT_PORT``."""
    value = text.strip()
    host, port = value, ""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ExportError(f"--metrics-listen {text!r}: expected [ADDRESS]:PORT")
        port = rest[1:]
    elif value.isdigit():
        host, port = "", value
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    if port and not port.isdigit():
        raise ExportError(f"--metrics-listen {text!r}: the port must be a number")
    number = int(port) if port else DEFAULT_PORT
    if not 0 < number < 65536:
        raise ExportError(f"--metrics-listen {text!r}: the port must be 1-65535")
    return ListenAddress(host or DEFAULT_HOST, number)


class MetricsServer:
    """``/metrics`` served from a daemon thread; every scrape runs ``collector.collect()`` in
    the server's own thread, reading what the poller holds, so it never waits on a poll."""

    def __init__(self, collector: SnapshotCollector, address: ListenAddress) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        try:
            self._httpd: Any
            self._httpd, self._thread = start_http_server(
                address.port, addr=address.host, registry=registry
            )
        except OSError as exc:
            raise ExportError(f"cannot listen on {address} for metrics: {_why(exc)}") from None
        self.address = ListenAddress(address.host, self._httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no interface of this host has that address"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return exc.strerror or str(exc)


def check_textfile_dir(directory: Path) -> None:
    """Refuse a directory the textfile could not be written to, before any poll is spent."""
    if not directory.is_dir():
        raise ExportError(f"--textfile {directory}: not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ExportError(f"--textfile {directory}: not writable")


def write_textfile(directory: Path, collector: SnapshotCollector) -> Path:
    """Write ``DIR/ugro_health.prom`` atomically: node_exporter's textfile collector reads
    either the previous file or the new one whole, never a half-written one."""
    target = directory / TEXTFILE_NAME
    data = exposition(collector)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{TEXTFILE_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # node_exporter often runs as another user
        os.replace(temporary, target)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise ExportError(f"textfile {target} not written: {exc.strerror or exc}") from None
    return target
