"""A real Prometheus Alertmanager on 127.0.0.1, routing everything to a recording webhook.

For the alertmanager channel's tests and for end-to-end tests of ``watch`` / ``check``::

    rig = AlertmanagerRig.start()          # or: with AlertmanagerRig.start() as rig:
    rig.url                                # the base URL for a channel's ``urls``
    rig.receiver.wait_for(lambda a: ...)   # an alert of the webhook payloads it sent
    rig.channel_entry()                    # a notify.channels item of cluster.yaml
    rig.alerts()                           # GET /api/v2/alerts: what it holds as active
    rig.close()

The binary is Debian's ``prometheus-alertmanager`` (or ``alertmanager`` on PATH). Each rig has
its own storage directory and port, no cluster gossip (``--cluster.listen-address=`` empty) and
short group_wait / group_interval / repeat_interval so that a test sees a notification within
seconds. ``require_alertmanager()`` skips a test without the binary, and fails it when the
environment variable ``CI`` is set, so CI cannot pass by skipping.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CANDIDATES = ("/usr/bin/prometheus-alertmanager", "alertmanager", "prometheus-alertmanager")
READY_TIMEOUT_S = 30.0  # a loaded 2-core CI machine can take a while to start a Go binary


def find_alertmanager() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_alertmanager() -> str:
    """The binary's path; without it the test skips, or fails when CI is set."""
    import pytest

    found = find_alertmanager()
    if found is None:
        reason = "Prometheus Alertmanager not installed (Debian: prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: the Alertmanager tests must run)")
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebhookReceiver:
    """An HTTP server on loopback recording every JSON document POSTed to it."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    document = json.loads(body)
                except ValueError:
                    document = {"_unparsed": body.decode("utf-8", "replace")}
                with receiver._lock:
                    receiver.payloads.append(document)
                    receiver.headers.append(dict(self.headers.items()))
                    receiver._lock.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert in every payload so far, in arrival order."""
        with self._lock:
            return [a for p in self.payloads for a in p.get("alerts", ())]

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first alert (of any payload) matching ``predicate``; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for payload in self.payloads:
                    for alert in payload.get("alerts", ()):
                        if predicate(alert):
                            return dict(alert)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching alert within {timeout:g}s; got {len(self.payloads)} "
                        f"payload(s): {json.dumps(self.payloads)[:2000]}"
                    )
                self._lock.wait(min(left, 0.5))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def _config(receiver_url: str, group_wait: str, group_interval: str, repeat: str) -> str:
    return json.dumps(  # JSON is YAML: no quoting surprises
        {
            "route": {
                "receiver": "test",
                "group_by": ["..."],  # one group per alert: each notified on its own
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat,
            },
            "receivers": [
                {
                    "name": "test",
                    "webhook_configs": [{"url": receiver_url, "send_resolved": True}],
                }
            ],
        },
        indent=2,
    )


def _web_config(user: str, password: str) -> str:
    import bcrypt  # paramiko's dependency; cost 4: a test password, hashed quickly

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return json.dumps({"basic_auth_users": {user: hashed}})


class AlertmanagerRig:
    """One alertmanager process, its storage directory and its webhook receiver."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        receiver: WebhookReceiver,
        port: int,
        proc: Any,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.receiver = receiver
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] = proc
        self.auth_headers: dict[str, str] = {}
        if basic_auth is not None:
            pair = base64.b64encode(":".join(basic_auth).encode()).decode()
            self.auth_headers["Authorization"] = f"Basic {pair}"

    def _get(self, path: str, timeout: float) -> Any:
        request = urllib.request.Request(self.url + path, headers=self.auth_headers)
        return urllib.request.urlopen(request, timeout=timeout)

    @classmethod
    def start(
        cls,
        binary: str | None = None,
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "1s",
        basic_auth: tuple[str, str] | None = None,
    ) -> AlertmanagerRig:
        """Start alertmanager and wait until ``/-/ready`` answers. ``basic_auth``: the one user
        and password its web interface and API demand (``--web.config.file``)."""
        binary = binary or find_alertmanager()
        if binary is None:
            raise RuntimeError("alertmanager binary not found")
        workdir = Path(tempfile.mkdtemp(prefix="ugro-am-"))
        receiver = WebhookReceiver()
        config = workdir / "alertmanager.yml"
        config.write_text(_config(receiver.url, group_wait, group_interval, repeat_interval))
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        if basic_auth is not None:
            (workdir / "web.yml").write_text(_web_config(*basic_auth))
            argv.append(f"--web.config.file={workdir / 'web.yml'}")
        for attempt in range(3):  # the free port may be taken before alertmanager binds it
            port = free_port()
            log = open(workdir / "alertmanager.log", "wb")  # noqa: SIM115 (Popen holds it)
            proc = subprocess.Popen(
                [*argv, f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
            log.close()
            rig = cls(binary, workdir, receiver, port, proc, basic_auth)
            try:
                rig._wait_ready()
                return rig
            except RuntimeError:
                if attempt < 2 and "address already in use" in rig.log():
                    rig._stop()
                    continue
                rig.close()
                raise
            except BaseException:
                rig.close()
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited {self.proc.returncode}: {self.log()}")
            try:
                with self._get("/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"alertmanager not ready within {READY_TIMEOUT_S:g}s: {self.log()}")

    def log(self) -> str:
        try:
            return (self.workdir / "alertmanager.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts Alertmanager holds as active (resolved ones drop)."""
        with self._get("/api/v2/alerts", timeout=10) as answer:
            return list(json.load(answer))

    def wait_alerts(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll GET /api/v2/alerts until ``predicate`` holds; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            alerts = self.alerts()
            if predicate(alerts):
                return alerts
            if time.monotonic() > deadline:
                raise AssertionError(f"alertmanager alerts never matched: {alerts}")
            time.sleep(0.2)

    def channel_entry(self, name: str = "alertmanager", **keys: Any) -> dict[str, Any]:
        """A ``notify.channels`` item of cluster.yaml that sends to this Alertmanager."""
        entry: dict[str, Any] = {"name": name, "type": "alertmanager", "urls": [self.url]}
        return {**entry, **keys}

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        self._stop()
        self.receiver.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> AlertmanagerRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
