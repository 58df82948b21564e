"""A real HTTP(S) server on loopback that records what it receives and misbehaves on request.

For the notification channels (webhook, Slack, Alertmanager's clients) and the outbox:
``HttpReceiver()`` listens on ``127.0.0.1`` (or ``host=``, another loopback address) at once (``receiver.url("/hook")``); every request
is recorded as a ``Received`` (method, path, headers, body, the status it was answered with)
before it is answered. What it answers is a ``Reply``:

- ``receiver.reply(Reply(500))``: the answer from now on (default: 200 ``ok``);
- ``receiver.script(Reply(429, headers={"Retry-After": "7"}), Reply(200))``: the next answers,
  one per request, in order; then the default again;
- ``Reply(hang=True)``: read the request, record it, never answer (until ``close()`` or
  ``release()``): the client must give up on its own deadline;
- ``Reply(drip_s=0.1)``: answer one byte every 0.1 s (status line and headers too): a socket
  timeout alone never fires, only a deadline on the whole request does;
- ``receiver.down()`` / ``receiver.up()``: stop listening (connections are refused), then
  listen again on the same port (``wait_for`` still counts what came before).

``HttpReceiver(tls=self_signed(tmp_path))`` serves HTTPS with a self-signed certificate for
127.0.0.1 and localhost (``TlsFiles.cert`` is the file a client trusts with ``ca_file``); the
handshakes that fail (a client refusing the certificate) are counted in ``tls_failures``.

Use it as a context manager or call ``close()``; it joins its threads. Only loopback.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

MAX_BODY = 16 << 20  # a request body larger than this is refused (413), not buffered


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # record the request, then never answer
    drip_s: float = 0.0  # send the answer one byte at a time, this long apart (a slow receiver)


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int | None  # what it was answered (None: hung)
    at: float  # time.time() when it was recorded

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path


class _Server(http.server.ThreadingHTTPServer):
    # server_close() joins the request threads (each is bounded by the handler's timeout, and
    # hung ones are released first); daemon threads, so a receiver left open by a failing test
    # cannot hold the interpreter at exit.
    daemon_threads = True
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, owner: HttpReceiver, port: int) -> None:
        self.owner = owner
        super().__init__((owner.host, port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.owner.tls_context is not None:
            # The handshake runs in the request's thread (``_Handler.setup``), not here in the
            # accept loop, so a client that stalls in it cannot block other connections.
            sock = self.owner.tls_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away is the tests' business, not stderr's


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = 30  # seconds a silent client may hold a request thread

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            try:
                self.request.do_handshake()
            except (OSError, ssl.SSLError):
                self.server.owner._tls_failed()
                raise
        super().setup()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        owner = self.server.owner
        reply = owner._next_reply()
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = None if reply.hang else reply.status
        owner._record(Received(self.command, self.path, headers, body, status, time.time()))
        if reply.hang:
            owner._released.wait()
            self.close_connection = True
            return
        self.close_connection = True
        if reply.drip_s > 0:
            self._drip(reply)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)

    def _drip(self, reply: Reply) -> None:
        head = [f"HTTP/1.0 {reply.status} {self.responses.get(reply.status, ('',))[0]}"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        head += [f"Content-Length: {len(reply.body)}", "Connection: close", "", ""]
        answer = "\r\n".join(head).encode("latin-1") + reply.body
        released = self.server.owner._released
        for index in range(len(answer)):
            if released.wait(reply.drip_s):
                return
            try:
                self.wfile.write(answer[index : index + 1])
                self.wfile.flush()
            except OSError:
                return  # the client gave up

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HttpReceiver:
    """A recording HTTP(S) server on 127.0.0.1; see the module docstring."""

    def __init__(self, tls: TlsFiles | None = None, port: int = 0, host: str = "127.0.0.1") -> None:
        if not host.startswith("127."):
            raise ValueError("HttpReceiver listens on loopback only (127.0.0.0/8)")
        self.host = host
        self.tls_context: ssl.SSLContext | None = None
        if tls is not None:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(tls.cert, tls.key)
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._default = Reply()
        self._script: deque[Reply] = deque()
        self._released = threading.Event()
        self.tls_failures = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.up()

    # --- what it answers ------------------------------------------------------------------
    def reply(self, reply: Reply) -> None:
        with self._lock:
            self._default = reply

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def release(self) -> None:
        """Let the requests hung so far end (their connections close without an answer)."""
        with self._lock:
            released, self._released = self._released, threading.Event()
        released.set()

    # --- listening ------------------------------------------------------------------------
    def up(self) -> None:
        """Listen (again, on the same port once it has one)."""
        if self._server is not None:
            return
        self._released = threading.Event()
        self._server = _Server(self, self.port)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def down(self) -> None:
        """Stop listening: new connections are refused; hung requests are let go."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        self._released.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def close(self) -> None:
        self.down()

    def __enter__(self) -> HttpReceiver:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- what it got ----------------------------------------------------------------------
    def url(self, path: str = "/", scheme: str | None = None) -> str:
        scheme = scheme or ("https" if self.tls_context is not None else "http")
        return f"{scheme}://{self.host}:{self.port}{path}"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def delivered(self) -> list[Received]:
        """The requests answered with a 2xx."""
        return [r for r in self.received if r.status is not None and 200 <= r.status < 300]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """At least ``count`` requests recorded, or AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = len(self._received)
                    raise AssertionError(f"{got} request(s) received, {count} expected")
                self._lock.wait(left)
            return list(self._received)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self._default

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)
            self._lock.notify_all()

    def _tls_failed(self) -> None:
        with self._lock:
            self.tls_failures += 1
            self._lock.notify_all()


def self_signed(directory: Path, name: str = "receiver") -> TlsFiles:
    """A self-signed certificate (and its key) for 127.0.0.1 and localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ugro-health test receiver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(cert=directory / f"{name}.crt", key=directory / f"{name}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return files
