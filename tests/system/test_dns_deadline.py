"""A name server that never answers: the node is reported as a DNS failure within its
connect timeout, not after glibc's retries (root only: a network namespace whose
resolv.conf points at a silent server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_env  # tests/unit, on pytest's pythonpath
from tmpfs_mount import ROOT_ONLY

pytestmark = ROOT_ONLY

# glibc waits timeout x attempts for a silent server: 15 s here, far past the 1 s budget below.
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:5 attempts:3\n"
SILENT_SERVER = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('127.0.0.1', 53))\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def silent_dns_netns() -> Iterator[str]:
    """A network namespace with loopback up and a UDP name server that reads nothing."""
    name = f"ugro-dns-{os.getpid()}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    server = None
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(RESOLV_CONF)  # `ip netns exec` binds it over /etc
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", SILENT_SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield name
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(etc, ignore_errors=True)
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_silent_name_server_is_a_dns_error_within_the_connect_timeout(
    tmp_path: Path, silent_dns_netns: str
):
    (tmp_path / "cluster.yaml").write_text(
        "ssh: {connect_timeout: 1, command_timeout: 2, ssh_config: ''}\n"
        "nodes:\n"
        "  - name: gpu-dns\n"
        "    host: gpu-dns.ugro-health.test\n"  # not in /etc/hosts: asks the name server
    )
    command = ["check", "--json", "--no-record"]
    started = time.monotonic()
    result = subprocess.run(
        ["ip", "netns", "exec", silent_dns_netns, sys.executable, "-m", "ugro_health", *command],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    doc = json.loads(result.stdout)
    (node,) = doc["nodes"]
    assert result.returncode == 2, result.stderr
    assert node["reachable"] is False
    assert node["error_kind"] == "dns", node["error"]
    assert "gpu-dns.ugro-health.test did not answer within 1.0s" in node["error"]
    assert elapsed < 10, elapsed  # glibc alone would wait 15 s
