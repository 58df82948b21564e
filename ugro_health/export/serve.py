"""The two ways out: an HTTP ``/metrics`` endpoint (``watch``) and an atomic textfile (``check``).

Imports ``export``, ``store._fs`` (the atomic write) and the standard library. The endpoint is
a small ``http.server`` serving the fast renderer's text (prometheus-client's own server would
encode with its generic encoder, too slow for a large cluster: see ``export.text``); the
textfile is written by prometheus-client's encoder. Failures are ``ExportError`` with a
one-line message for the front to print; nothing here exits.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ugro_health.export.metrics import SnapshotCollector, client_exposition
from ugro_health.export.text import CONTENT_TYPE
from ugro_health.store._fs import replace_atomically

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


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, status, kind = self.server.collector.exposition(), 200, CONTENT_TYPE
        elif path == "/":
            body, status, kind = b"ugro-health exporter: see /metrics\n", 200, "text/plain"
        else:
            body, status, kind = b"not found: try /metrics\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would drown watch's own log


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a scrape in progress never holds watch's exit
    collector: SnapshotCollector

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that hung up mid-answer is its own business; anything else is one line on
        stderr (socketserver's default is a traceback in watch's log)."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            sys.stderr.write(f"ugro-health: metrics scrape failed: {error!r}\n")


class MetricsServer:
    """``/metrics`` served from a daemon thread; every scrape builds the families in the
    server's own thread from what the poller holds, so it never waits on or starts a poll."""

    def __init__(self, collector: SnapshotCollector, address: ListenAddress) -> None:
        try:
            family = socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0][0]
        except socket.gaierror as exc:
            raise ExportError(f"cannot listen on {address} for metrics: {exc.strerror}") from None
        server_class = type("_Bound", (_Server,), {"address_family": family})
        try:
            self._httpd: _Server = server_class((address.host, address.port), _Handler)
        except OSError as exc:
            raise ExportError(f"cannot listen on {address} for metrics: {_why(exc)}") from None
        self._httpd.collector = collector
        self.address = ListenAddress(address.host, self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

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


def textfile_name(shard: tuple[int, int] | None = None) -> str:
    """``ugro_health.prom``; under ``--shard 2/4``, ``ugro_health_shard_2_of_4.prom``, so that
    the shards' files lie side by side in node_exporter's directory."""
    if shard is None:
        return TEXTFILE_NAME
    return f"ugro_health_shard_{shard[0]}_of_{shard[1]}.prom"


def write_textfile(
    directory: Path, collector: SnapshotCollector, name: str = TEXTFILE_NAME
) -> Path:
    """Write ``DIR/ugro_health.prom`` (or ``name``) atomically: node_exporter's textfile
    collector reads either the previous file or the new one whole, never a half-written one."""
    target = directory / name
    data = client_exposition(collector)
    try:
        replace_atomically(target, data, 0o644)  # node_exporter often runs as another user
    except OSError as exc:
        raise ExportError(f"textfile {target} not written: {exc.strerror or exc}") from None
    return target
