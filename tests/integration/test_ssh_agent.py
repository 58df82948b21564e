"""Authentication through an ssh-agent: a real one, and a hung one that must not hang us.

The hung agents are real AF_UNIX servers started here (``StuckAgent``): one accepts and never
answers (a confirm prompt nobody confirms, a broken forwarded agent); one lists a key and never
signs (a FIDO key waiting for a touch).
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CALM_THRESHOLDS, cli_env
from sshd_rig import PROBE_REQUEST as REQUEST
from sshd_rig import SshdRig

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError

pytestmark = pytest.mark.ssh

_REQUEST_IDENTITIES = 11
_IDENTITIES_ANSWER = 12
_AGENT_FAILURE = 5


class StuckAgent:
    """An agent socket that never answers; with ``keys`` it lists them and never signs."""

    def __init__(self, path: Path, keys: tuple[bytes, ...] = (), refuse: bool = False) -> None:
        self.path = path
        self.keys = keys
        self.refuse = refuse  # answer SSH_AGENT_FAILURE to the key listing (a locked agent)
        self.requests: list[int] = []  # the message type of each request received
        self.open = 0  # client connections not closed by the client
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                self.open += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while header := conn.recv(4, socket.MSG_WAITALL):
                body = conn.recv(struct.unpack(">I", header)[0], socket.MSG_WAITALL)
                with self._lock:
                    self.requests.append(body[0])
                if body[0] == _REQUEST_IDENTITIES and self.refuse:
                    conn.sendall(_frame(bytes([_AGENT_FAILURE])))
                elif body[0] == _REQUEST_IDENTITIES and self.keys:
                    conn.sendall(_frame(_identities_answer(self.keys)))
                # anything else: never answered
        except OSError:
            return  # closed by close()
        with self._lock:
            self.open -= 1  # the client closed its end

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for conn in self._conns:
                conn.close()


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _identities_answer(keys: tuple[bytes, ...]) -> bytes:
    body = bytes([_IDENTITIES_ANSWER]) + struct.pack(">I", len(keys))
    for blob in keys:
        body += _frame(blob) + _frame(b"stuck-agent key")
    return body


def public_blob(rig: SshdRig) -> bytes:
    return base64.b64decode(Path(f"{rig.key}.pub").read_text().split()[1])


@pytest.fixture
def agent_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Start a ``StuckAgent`` and point SSH_AUTH_SOCK at it."""
    agents: list[StuckAgent] = []

    def start(keys: tuple[bytes, ...] = (), refuse: bool = False) -> StuckAgent:
        agent = StuckAgent(tmp_path / f"agent{len(agents)}.sock", keys, refuse)
        agents.append(agent)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.path))
        return agent

    yield start
    for agent in agents:
        agent.close()


def bounded(call: Callable[[], Any], limit: float) -> Any:
    """``call()``'s result or exception, failing the test if it has not returned by ``limit``
    (it is left running in a daemon thread, so a hang fails the test, not the suite)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert outcome, f"still waiting after {limit}s"
    return outcome[0]


def test_a_silent_agent_does_not_stop_a_key_file_from_working(
    sshd_rig: SshdRig, agent_socket: Callable[..., StuckAgent]
) -> None:
    agent_socket()
    transport = sshd_rig.transport()
    node = sshd_rig.node_config("node1")
    try:
        for _ in range(2):
            doc = bounded(lambda: transport.run_probe(node, REQUEST, time.monotonic() + 8), 10)
            assert isinstance(doc, dict) and doc["ok"] is True, doc
    finally:
        transport.close()


def test_a_silent_agent_is_reported_within_the_deadline(
    sshd_rig: SshdRig, agent_socket: Callable[..., StuckAgent]
) -> None:
    agent = agent_socket()
    transport = sshd_rig.transport(sshd_rig.settings(connect_timeout=1.5))
    node = sshd_rig.node_config("node1", identity_file=str(sshd_rig.wrong_key))
    try:
        for _ in range(2):
            start = time.monotonic()
            error = bounded(lambda: transport.run_probe(node, REQUEST, time.monotonic() + 8), 5)
            assert time.monotonic() - start < 1.5 + 1.0
            assert isinstance(error, TransportError), error
            assert error.kind is ErrorKind.AUTH_FAILED
            assert str(sshd_rig.wrong_key) in error.message  # the key file was tried
            assert f"ssh-agent at {agent.path} did not answer within" in error.message
    finally:
        transport.close()
    assert agent.requests == [_REQUEST_IDENTITIES]  # asked once per transport, not per node


def test_an_agent_that_refuses_to_list_its_keys_is_named_in_auth_failed(
    sshd_rig: SshdRig, agent_socket: Callable[..., StuckAgent]
) -> None:
    agent = agent_socket(refuse=True)
    transport = sshd_rig.transport(sshd_rig.settings(connect_timeout=1.5))
    node = sshd_rig.node_config("node1", identity_file=str(sshd_rig.wrong_key))
    try:
        for _ in range(2):  # the second node hears the same reason, not an empty agent
            error = bounded(lambda: transport.run_probe(node, REQUEST, time.monotonic() + 8), 5)
            assert isinstance(error, TransportError), error
            assert error.kind is ErrorKind.AUTH_FAILED, error.message
            assert f"ssh-agent at {agent.path} failed: could not get keys" in error.message
    finally:
        transport.close()


def test_an_agent_that_never_signs_is_reported_and_let_go(
    sshd_rig: SshdRig, agent_socket: Callable[..., StuckAgent]
) -> None:
    agent = agent_socket(keys=(public_blob(sshd_rig),))
    transport = sshd_rig.transport(sshd_rig.settings(connect_timeout=1.5))
    node = sshd_rig.node_config("node1", identity_file=str(sshd_rig.wrong_key))
    try:
        start = time.monotonic()
        error = bounded(lambda: transport.run_probe(node, REQUEST, time.monotonic() + 8), 5)
        assert time.monotonic() - start < 1.5 + 1.0
    finally:
        transport.close()
    assert isinstance(error, TransportError), error
    assert error.kind is ErrorKind.AUTH_FAILED, error.message
    assert "agent:ssh-ed25519" in error.message
    assert f"ssh-agent at {agent.path} did not answer within" in error.message
    # paramiko's thread that asked for the signature gave up its connection too.
    deadline = time.monotonic() + 2
    while agent.open and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.open == 0


def test_a_real_agent_signs_for_a_node(
    sshd_rig: SshdRig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        env = {"SSH_AUTH_SOCK": str(sock), "PATH": "/usr/bin:/bin"}
        subprocess.run(["ssh-add", "-q", str(sshd_rig.key)], env=env, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        transport = sshd_rig.transport()
        node = sshd_rig.node_config("node2", identity_file=str(sshd_rig.wrong_key))
        try:
            for _ in range(2):
                assert transport.run_probe(node, REQUEST, time.monotonic() + 10)["ok"] is True
        finally:
            transport.close()
    finally:
        agent.terminate()
        agent.wait(timeout=5)


def test_check_exits_with_a_silent_agent(
    sshd_rig: SshdRig, tmp_path: Path, agent_socket: Callable[..., StuckAgent]
) -> None:
    agent = agent_socket()
    port = sshd_rig.nodes["node1"].port
    config = tmp_path / "cluster.yaml"
    config.write_text(
        CALM_THRESHOLDS
        + f"defaults:\n  user: {sshd_rig.user}\n  python: /usr/bin/python3\n"
        + "ssh:\n  connect_timeout: 1.5\n  command_timeout: 5\n  ssh_config: ''\n"
        + f"  known_hosts: {sshd_rig.known_hosts}\n"
        + "nodes:\n"
        + f"  - {{name: good, host: 127.0.0.1, port: {port}, identity_file: {sshd_rig.key}}}\n"
        + f"  - {{name: agent-only, host: 127.0.0.1, port: {port},"
        + f" identity_file: {sshd_rig.wrong_key}}}\n"
    )
    env = cli_env(tmp_path, {"HOME": str(tmp_path), "SSH_AUTH_SOCK": str(agent.path)})
    command = [sys.executable, "-m", "ugro_health", "--config", str(config)]
    result = subprocess.run(
        [*command, "check", "--json", "--no-record", "--timeout", "8"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    nodes = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert result.returncode == 2
    assert nodes["good"]["status"] == "ok"
    assert nodes["agent-only"]["error_kind"] == "auth_failed"
    assert "did not answer" in nodes["agent-only"]["error"]
