"""A real OpenSSH sshd test rig on 127.0.0.1: nodes, keys, known_hosts and broken endpoints.

Used by the integration tests (fixture ``sshd_rig`` in ``conftest.py``) and reusable by CLI
end-to-end tests and benchmarks: ``SshdRig.create()`` then ``rig.start_node(name)``, and
``rig.node_config(name)`` / ``rig.settings()`` / ``rig.transport()`` for the pieces the code
under test needs; ``stop_node`` / ``restart_node`` take a node down and back on the same port, and
``sessions`` / ``probe_processes`` show its SSH connections and probe interpreters from outside.
Nothing here reads or writes the developer's ``~/.ssh``.

As root, sshd logs in a dedicated user ``ugrotest`` (created once with ``/bin/sh`` as its shell,
so root's shell start-up never runs); otherwise sshd runs as, and logs in, the current user.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ugro_health.config import NodeConfig, SshSettings

TEST_USER = "ugrotest"
TEST_HOME = "/home/ugrotest"
REMOTE_PYTHON = "/usr/bin/python3"
# A short probe request for the transport tests (a small CPU window keeps them quick).
PROBE_REQUEST: dict[str, Any] = {
    "op": "sample",
    "mounts": ["/"],
    "window_s": 0.05,
    "subcheck_timeout_s": 3.0,
}


def find_sshd() -> str | None:
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    return found if os.access(found, os.X_OK) and shutil.which("ssh-keygen") else None


def free_port() -> int:
    """A port nothing listens on now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_test_user() -> str:
    """Create ``ugrotest`` if missing (idempotent) and make sure sshd sees it as unlocked."""
    import pwd

    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "-m", "-d", TEST_HOME, "-s", "/bin/sh", "-p", "*", TEST_USER],
            check=True,
            capture_output=True,
        )
    # With UsePAM no, sshd refuses an account whose password field starts with "!" (locked).
    shadow = Path("/etc/shadow")
    if shadow.exists():
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == TEST_USER and fields[1].startswith("!"):
                subprocess.run(["usermod", "-p", "*", TEST_USER], check=True, capture_output=True)
    return TEST_USER


def _keygen(path: Path, comment: str, kind: str = "ed25519") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _public_key(private: Path) -> str:
    """``type base64`` of a key pair's public half, without the comment."""
    kind, blob = Path(f"{private}.pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@dataclass
class RigNode:
    name: str
    port: int
    host_key: Path
    process: subprocess.Popen[bytes]
    log: Path


class SshdRig:
    """sshd processes on loopback sharing one login user, user key and known_hosts file."""

    def __init__(self, root: Path, sshd: str) -> None:
        self.root = root
        self.sshd = sshd
        self.user = ensure_test_user() if os.geteuid() == 0 else getpass.getuser()
        self.key = _keygen(root / "id_user", "ugro-rig-user")
        self.wrong_key = _keygen(root / "id_wrong", "ugro-rig-wrong")
        self.host_key = _keygen(root / "host_key", "ugro-rig-host")
        self.other_host_key = _keygen(root / "host_key_other", "ugro-rig-other-host")
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text(_public_key(self.key) + "\n")
        self.authorized_keys.chmod(0o644)
        self.known_hosts = root / "known_hosts"
        self.known_hosts.touch(mode=0o600)
        self.nodes: dict[str, RigNode] = {}
        self.refused_port = free_port()
        self._blackhole = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.blackhole_port = int(self._blackhole.getsockname()[1])
        self.garbage_python = _script(root / "garbage_python", "echo hello\nexit 0")
        self.hang_python = _script(root / "hang_python", "exec sleep 20")
        self.flood_python = _script(root / "flood_python", "head -c 5000000 /dev/zero | tr '\\0' x")

    @classmethod
    def create(cls, sshd: str | None = None) -> SshdRig:
        sshd = sshd or find_sshd()
        if sshd is None:
            raise RuntimeError("OpenSSH sshd / ssh-keygen not found")
        # A directory the login user can traverse (pytest's tmp dirs are 0700 root).
        root = Path(tempfile.mkdtemp(prefix="ugro-rig-"))
        root.chmod(0o755)
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privsep directory
        return cls(root, sshd)

    def start_node(
        self,
        name: str,
        *,
        host_key: Path | None = None,
        record: bool = True,
        recorded_key: Path | None = None,
        extra_host_keys: tuple[Path, ...] = (),
        options: tuple[str, ...] = (),
    ) -> RigNode:
        """Start one sshd; ``record`` files ``recorded_key`` (default: its real key) in
        known_hosts under ``[127.0.0.1]:port``; ``extra_host_keys`` are served beside
        ``host_key``; ``options`` are sshd_config lines that win over the rig's own (e.g.
        ``"MaxSessions 1"``). A node of the same name is stopped first."""
        if name in self.nodes and self.nodes[name].process.poll() is None:
            self.stop_node(name)  # else its sshd would outlive the rig
        host_key = host_key or self.host_key
        port = free_port()
        config = self.root / f"sshd_{name}.conf"
        config.write_text(self._sshd_config(port, host_key, extra_host_keys, options))
        log = self.root / f"sshd_{name}.log"
        node = RigNode(name, port, host_key, self._spawn(config, log), log)
        self.nodes[name] = node
        _wait_for_banner(node)
        if record:
            with self.known_hosts.open("a") as fh:
                fh.write(f"[127.0.0.1]:{port} {_public_key(recorded_key or host_key)}\n")
        return node

    def _spawn(self, config: Path, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as log_fh:
            return subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=log_fh,
            )

    def stop_node(self, name: str) -> None:
        """Take node ``name`` down as a crash would: its sshd, every session and process under
        it (so established connections die too), killed at once. ``restart_node`` brings it back.
        """
        import psutil

        node = self.nodes[name]
        try:
            tree = [psutil.Process(node.process.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for process in tree:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        node.process.wait(timeout=5)
        psutil.wait_procs(tree, timeout=5)

    def restart_node(self, name: str) -> RigNode:
        """Start node ``name`` again on its old port, with its old config and host key."""
        node = self.nodes[name]
        if node.process.poll() is None:
            self.stop_node(name)
        node.process = self._spawn(self.root / f"sshd_{name}.conf", node.log)
        _wait_for_banner(node)
        return node

    def sessions(self, name: str) -> list[Any]:
        """The per-connection sshd processes of node ``name`` (one per open SSH connection)."""
        import psutil

        return psutil.Process(self.nodes[name].process.pid).children()

    def probe_processes(self, name: str) -> list[Any]:
        """The probe interpreters running under node ``name``'s sshd, as psutil processes."""
        import psutil

        found = []
        for child in psutil.Process(self.nodes[name].process.pid).children(recursive=True):
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue  # exited, not yet reaped: its cmdline reads empty
                cmdline = child.cmdline()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            python = bool(cmdline) and "python" in os.path.basename(cmdline[0])
            if python and "ugro_probe" in " ".join(cmdline):
                found.append(child)
        return found

    def _sshd_config(
        self,
        port: int,
        host_key: Path,
        extra: tuple[Path, ...] = (),
        options: tuple[str, ...] = (),
    ) -> str:
        # Most keywords keep their first value, some (MaxStartups) their last: an option
        # replaces the rig's own line for its keyword.
        replaced = {line.split()[0].lower() for line in options}
        lines = self._rig_config(port, host_key, extra)
        return "\n".join(
            [*options, *(ln for ln in lines if ln.split()[0].lower() not in replaced), ""]
        )

    def _rig_config(self, port: int, host_key: Path, extra: tuple[Path, ...] = ()) -> list[str]:
        return [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            *(f"HostKey {key}" for key in (host_key, *extra)),
            "PidFile none",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "StrictModes no",
            "UsePAM no",
            "LogLevel ERROR",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowTcpForwarding yes",
            "PermitTTY no",
            "PrintMotd no",
            "UseDNS no",
            "MaxStartups 200",
            "MaxSessions 50",
        ]

    def node_config(self, name: str, **overrides: Any) -> NodeConfig:
        """A NodeConfig for rig node ``name`` (host, port, user, key, python all explicit)."""
        node = NodeConfig(
            name=name,
            host="127.0.0.1",
            port=self.nodes[name].port,
            user=self.user,
            identity_file=str(self.key),
            python=REMOTE_PYTHON,
            transport="ssh",
        )
        return replace(node, **overrides)

    def settings(self, **overrides: Any) -> SshSettings:
        """SshSettings with short timeouts, the rig's known_hosts and no ssh_config files."""
        base = SshSettings(
            connect_timeout=3.0,
            command_timeout=10.0,
            keepalive_s=5.0,
            known_hosts=str(self.known_hosts),
            ssh_config=None,
            system_ssh_config=None,
        )
        return replace(base, **overrides)

    def transport(self, settings: SshSettings | None = None, **kwargs: Any) -> Any:
        """An SshTransport that reads only the rig's known_hosts (never ~/.ssh or /etc/ssh)."""
        from ugro_health.transport.ssh import SshTransport

        kwargs.setdefault("known_hosts_files", [])
        return SshTransport(settings or self.settings(), **kwargs)

    def write_ssh_config(self, path: Path, text: str) -> Path:
        path.write_text(text)
        return path

    def close(self) -> None:
        for node in self.nodes.values():
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes.values():
            try:
                node.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=5)
        self._blackhole.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_for_banner(node: RigNode, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if node.process.poll() is not None:
            raise RuntimeError(f"sshd {node.name} exited: {node.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", node.port), timeout=1.0) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"sshd {node.name} sent no banner on port {node.port} within {timeout}s")
