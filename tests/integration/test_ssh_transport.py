"""SshTransport against real OpenSSH sshd processes on loopback (see conftest.py's rig)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sshd_rig import PROBE_REQUEST as REQUEST
from sshd_rig import SshdRig

from ugro_health.config import NodeConfig
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError

pytestmark = pytest.mark.ssh


def probe(rig: SshdRig, node: NodeConfig, timeout: float = 20.0, **kwargs: Any) -> dict[str, Any]:
    transport = rig.transport(**kwargs)
    try:
        return transport.run_probe(node, REQUEST, time.monotonic() + timeout)
    finally:
        transport.close()


def probe_error(
    rig: SshdRig, node: NodeConfig, timeout: float = 20.0, **kwargs: Any
) -> tuple[TransportError, float]:
    start = time.monotonic()
    with pytest.raises(TransportError) as info:
        probe(rig, node, timeout, **kwargs)
    return info.value, time.monotonic() - start


def test_probe_round_trip_returns_a_sample(sshd_rig: SshdRig) -> None:
    doc = probe(sshd_rig, sshd_rig.node_config("node1"))
    assert doc["ok"] is True
    assert doc["hostname"] == socket.gethostname()
    assert doc["cpu"]["cores"] == os.cpu_count()


def test_several_nodes_concurrently(sshd_rig: SshdRig) -> None:
    transport = sshd_rig.transport()
    nodes = [sshd_rig.node_config(name) for name in ("node1", "node2", "node3")] * 3
    try:
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            docs = list(
                pool.map(lambda n: transport.run_probe(n, REQUEST, time.monotonic() + 30), nodes)
            )
    finally:
        transport.close()
    assert [d["hostname"] for d in docs] == [socket.gethostname()] * len(nodes)


def test_refused_port_is_refused_quickly(sshd_rig: SshdRig) -> None:
    node = sshd_rig.node_config("node1", port=sshd_rig.refused_port)
    error, elapsed = probe_error(sshd_rig, node)
    assert error.kind is ErrorKind.REFUSED
    assert f"127.0.0.1:{sshd_rig.refused_port}" in error.message
    assert elapsed < 1.0


def test_black_hole_times_out_waiting_for_the_banner(sshd_rig: SshdRig) -> None:
    node = sshd_rig.node_config("node1", port=sshd_rig.blackhole_port)
    settings = sshd_rig.settings(connect_timeout=1.0)
    error, elapsed = probe_error(sshd_rig, node, settings=settings)
    assert error.kind is ErrorKind.TIMEOUT
    assert error.message == "timed out after 1.0s waiting for SSH banner"
    assert 0.9 < elapsed < 1.0 + 2.0


def test_overall_deadline_bounds_every_phase(sshd_rig: SshdRig) -> None:
    node = sshd_rig.node_config("node1", port=sshd_rig.blackhole_port)
    settings = sshd_rig.settings(connect_timeout=10.0)
    error, elapsed = probe_error(sshd_rig, node, timeout=0.5, settings=settings)
    assert error.kind is ErrorKind.TIMEOUT
    assert elapsed < 0.5 + 2.0


def test_changed_host_key_is_refused_even_with_accept_new(sshd_rig: SshdRig) -> None:
    node = sshd_rig.node_config("changed")
    for accept_new in (False, True):
        error, _ = probe_error(sshd_rig, node, accept_new=accept_new)
        assert error.kind is ErrorKind.HOST_KEY_CHANGED
        assert "SHA256:" in error.message


def test_unknown_host_is_refused_then_enrolled_with_accept_new(
    sshd_rig: SshdRig, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"  # does not exist yet
    settings = sshd_rig.settings(known_hosts=str(known_hosts))
    node = sshd_rig.node_config("unknown")

    error, _ = probe_error(sshd_rig, node, settings=settings)
    assert error.kind is ErrorKind.HOST_KEY_UNKNOWN
    assert "--accept-new" in error.message
    assert not known_hosts.exists()

    assert probe(sshd_rig, node, settings=settings, accept_new=True)["ok"] is True
    port = sshd_rig.nodes["unknown"].port
    assert known_hosts.read_text().startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    # Now known: a transport without accept_new connects.
    assert probe(sshd_rig, node, settings=settings)["ok"] is True


def test_concurrent_enrolment_records_a_host_once(sshd_rig: SshdRig, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    transport = sshd_rig.transport(sshd_rig.settings(known_hosts=str(known_hosts)), accept_new=True)
    node = sshd_rig.node_config("unknown")
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            docs = list(
                pool.map(
                    lambda _: transport.run_probe(node, REQUEST, time.monotonic() + 30), range(4)
                )
            )
    finally:
        transport.close()
    assert all(d["ok"] for d in docs)
    assert len(known_hosts.read_text().splitlines()) == 1


def test_enrolment_defaults_to_the_users_known_hosts(
    sshd_rig: SshdRig, _hermetic_ssh: Path
) -> None:
    # HOME is a per-test directory here (conftest), so this is not the developer's ~/.ssh.
    settings = sshd_rig.settings(known_hosts=None)
    node = sshd_rig.node_config("unknown")
    error, _ = probe_error(sshd_rig, node, settings=settings, known_hosts_files=None)
    assert error.kind is ErrorKind.HOST_KEY_UNKNOWN
    assert not (_hermetic_ssh / ".ssh").exists()

    doc = probe(sshd_rig, node, settings=settings, known_hosts_files=None, accept_new=True)
    assert doc["ok"] is True
    ssh_dir = _hermetic_ssh / ".ssh"
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh_dir / "known_hosts").stat().st_mode) == 0o600
    assert f"[127.0.0.1]:{sshd_rig.nodes['unknown'].port} " in (ssh_dir / "known_hosts").read_text()


def test_enrolment_hashes_the_name_under_hash_known_hosts(
    sshd_rig: SshdRig, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    config = sshd_rig.write_ssh_config(tmp_path / "ssh_config", "Host *\n    HashKnownHosts yes\n")
    settings = sshd_rig.settings(known_hosts=str(known_hosts), ssh_config=str(config))
    node = sshd_rig.node_config("unknown")
    assert probe(sshd_rig, node, settings=settings, accept_new=True)["ok"] is True
    text = known_hosts.read_text()
    assert text.startswith("|1|") and "127.0.0.1" not in text
    # OpenSSH's own tools find the hashed entry, and so does the next run without enrolment
    name = f"[127.0.0.1]:{sshd_rig.nodes['unknown'].port}"
    found = subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(known_hosts)], capture_output=True, text=True
    )
    assert found.returncode == 0 and "ssh-ed25519" in found.stdout, found
    assert probe(sshd_rig, node, settings=settings)["ok"] is True


def test_hashed_known_hosts_entries_are_honoured(sshd_rig: SshdRig, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    shutil.copy(sshd_rig.known_hosts, known_hosts)
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    assert "127.0.0.1" not in known_hosts.read_text()
    settings = sshd_rig.settings(known_hosts=str(known_hosts))
    assert probe(sshd_rig, sshd_rig.node_config("node2"), settings=settings)["ok"] is True


def test_wrong_user_key_fails_authentication(sshd_rig: SshdRig) -> None:
    node = sshd_rig.node_config("node1", identity_file=str(sshd_rig.wrong_key))
    error, _ = probe_error(sshd_rig, node)
    assert error.kind is ErrorKind.AUTH_FAILED
    assert f"{sshd_rig.user}@127.0.0.1" in error.message
    assert str(sshd_rig.wrong_key) in error.message


def test_missing_interpreter_is_a_probe_failure(sshd_rig: SshdRig) -> None:
    node = sshd_rig.node_config("node1", python="/nonexistent/python3")
    error, _ = probe_error(sshd_rig, node)
    assert error.kind is ErrorKind.PROBE_FAILED
    assert "not found" in error.message
    assert "/nonexistent/python3" in error.message


def test_garbage_output_is_invalid(sshd_rig: SshdRig) -> None:
    node = sshd_rig.node_config("node1", python=sshd_rig.garbage_python)
    error, _ = probe_error(sshd_rig, node)
    assert error.kind is ErrorKind.PROBE_INVALID
    assert "hello" in error.message


def test_oversized_output_is_invalid(sshd_rig: SshdRig) -> None:
    node = sshd_rig.node_config("node1", python=sshd_rig.flood_python)
    error, _ = probe_error(sshd_rig, node)
    assert error.kind is ErrorKind.PROBE_INVALID
    assert "exceeded" in error.message


def test_hanging_command_times_out_by_the_command_deadline(sshd_rig: SshdRig) -> None:
    node = sshd_rig.node_config("node1", python=sshd_rig.hang_python)
    settings = sshd_rig.settings(command_timeout=1.0)
    error, elapsed = probe_error(sshd_rig, node, settings=settings)
    assert error.kind is ErrorKind.TIMEOUT
    assert error.message == "timed out after 1.0s waiting for probe output"
    assert elapsed < 1.0 + 2.0


def test_ssh_config_alias_supplies_host_port_user_and_key(
    sshd_rig: SshdRig, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host rig-alias\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sshd_rig.nodes['node3'].port}\n"
        f"    User {sshd_rig.user}\n"
        f"    IdentityFile {sshd_rig.key}\n"
    )
    node = NodeConfig(name="rig-alias", python="/usr/bin/python3")
    settings = sshd_rig.settings(ssh_config=str(config))
    assert probe(sshd_rig, node, settings=settings)["ok"] is True


def test_proxy_jump_from_node_config(sshd_rig: SshdRig) -> None:
    jump = f"{sshd_rig.user}@127.0.0.1:{sshd_rig.nodes['node1'].port}"
    node = sshd_rig.node_config("node2", proxy_jump=jump)
    assert probe(sshd_rig, node)["ok"] is True


def test_proxy_jump_from_ssh_config(sshd_rig: SshdRig, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host bastion\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sshd_rig.nodes['node1'].port}\n"
        f"    User {sshd_rig.user}\n"
        f"    IdentityFile {sshd_rig.key}\n"
        "Host inner\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sshd_rig.nodes['node3'].port}\n"
        f"    User {sshd_rig.user}\n"
        f"    IdentityFile {sshd_rig.key}\n"
        "    ProxyJump bastion\n"
    )
    node = NodeConfig(name="inner", python="/usr/bin/python3")
    settings = sshd_rig.settings(ssh_config=str(config))
    assert probe(sshd_rig, node, settings=settings)["ok"] is True


def test_proxy_jump_to_a_closed_port_is_unreachable(sshd_rig: SshdRig) -> None:
    jump = f"{sshd_rig.user}@127.0.0.1:{sshd_rig.nodes['node1'].port}"
    node = sshd_rig.node_config("node2", port=sshd_rig.refused_port, proxy_jump=jump)
    error, _ = probe_error(sshd_rig, node)
    assert error.kind is ErrorKind.UNREACHABLE
    assert error.message == (
        f"jump host 127.0.0.1 could not connect to 127.0.0.1:{sshd_rig.refused_port}"
    )


def outgoing_ports(process: Any, *, children: bool = True) -> set[int]:
    """Remote ports of the established TCP connections of ``process`` (and its children)."""
    import psutil

    ports = set()
    for proc in [process, *(process.children(recursive=True) if children else ())]:
        try:
            connections = proc.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        for conn in connections:
            if conn.raddr and conn.status == psutil.CONN_ESTABLISHED:
                ports.add(conn.raddr.port)
    return ports


def test_proxy_jump_through_two_hops(sshd_rig: SshdRig) -> None:
    import psutil

    port = {name: sshd_rig.nodes[name].port for name in ("node1", "node2", "node3")}
    hops = ",".join(f"{sshd_rig.user}@127.0.0.1:{port[name]}" for name in ("node1", "node2"))
    transport = sshd_rig.transport(persistent=True)
    try:
        doc = transport.run_probe(
            sshd_rig.node_config("node3", proxy_jump=hops), REQUEST, time.monotonic() + 20
        )
        assert doc["ok"] is True
        # We hold one TCP connection, to the first hop; it connects to the second, and the
        # second to the target.
        # (the rig's sshd processes are our children: leave them out)
        ours = outgoing_ports(psutil.Process(), children=False) & set(port.values())
        assert ours == {port["node1"]}
        node1 = psutil.Process(sshd_rig.nodes["node1"].process.pid)
        node2 = psutil.Process(sshd_rig.nodes["node2"].process.pid)
        assert port["node2"] in outgoing_ports(node1)
        assert port["node3"] in outgoing_ports(node2)
    finally:
        transport.close()


def test_a_dead_second_hop_is_reported_by_the_first(sshd_rig: SshdRig) -> None:
    hops = f"{sshd_rig.user}@127.0.0.1:{sshd_rig.nodes['node1'].port},127.0.0.1:{sshd_rig.refused_port}"
    error, _ = probe_error(sshd_rig, sshd_rig.node_config("node3", proxy_jump=hops))
    assert error.kind is ErrorKind.UNREACHABLE
    assert error.message == (
        f"jump host 127.0.0.1 could not connect to 127.0.0.1:{sshd_rig.refused_port}"
    )


RELAY = Path(__file__).with_name("proxy_relay.py")


def test_proxy_command_is_the_transport_and_wins_over_a_later_proxy_jump(
    sshd_rig: SshdRig, tmp_path: Path
) -> None:
    marker = tmp_path / "relay.log"
    port = sshd_rig.nodes["node1"].port
    config = sshd_rig.write_ssh_config(
        tmp_path / "ssh_config",
        "Host via-proxy\n"
        "    HostName 127.0.0.1\n"
        f"    ProxyCommand python3 {RELAY} %h %p {marker}  # tokens expanded\n"
        "Host *\n"
        "    ProxyJump nobody@unreachable.invalid\n",
    )
    settings = sshd_rig.settings(ssh_config=str(config))
    node = sshd_rig.node_config("node1", host="via-proxy")
    assert probe(sshd_rig, node, settings=settings)["ok"] is True
    assert marker.read_text().split("\n")[0] == f"127.0.0.1 {port}"


def test_a_failing_proxy_command_is_never_bypassed(sshd_rig: SshdRig, tmp_path: Path) -> None:
    config = sshd_rig.write_ssh_config(
        tmp_path / "ssh_config", "Host via-proxy\n    HostName 127.0.0.1\n    ProxyCommand false\n"
    )
    settings = sshd_rig.settings(ssh_config=str(config))
    node = sshd_rig.node_config("node1", host="via-proxy")
    error, _ = probe_error(sshd_rig, node, settings=settings)
    assert error.kind is ErrorKind.SSH_ERROR
    assert str(error) == "ProxyCommand exited with status 1", error  # once: never retried


def test_a_failing_proxy_command_says_why_in_one_line(sshd_rig: SshdRig, tmp_path: Path) -> None:
    script = tmp_path / "no-route"
    script.write_text("#!/bin/sh\nprintf 'noise\\n\\033[31moops-no-route\\n' >&2\nexit 3\n")
    script.chmod(0o755)
    config = sshd_rig.write_ssh_config(
        tmp_path / "ssh_config", f"Host via-proxy\n    ProxyCommand {script} %h\n"
    )
    settings = sshd_rig.settings(ssh_config=str(config))
    node = sshd_rig.node_config("node1", host="via-proxy")
    error, _ = probe_error(sshd_rig, node, settings=settings)
    assert error.kind is ErrorKind.SSH_ERROR
    assert str(error) == "ProxyCommand exited with status 3: noise [31moops-no-route", error


def test_proxy_commands_are_paced_like_connections(sshd_rig: SshdRig, tmp_path: Path) -> None:
    """At most ssh.max_startups ProxyCommands through one command line (one bastion) are
    between their start and the SSH banner at once: sshd's MaxStartups applies to them too."""
    marker, gate = tmp_path / "relay.log", tmp_path / "gate"
    config = sshd_rig.write_ssh_config(
        tmp_path / "ssh_config",
        "Host via-proxy-*\n"
        "    HostName 127.0.0.1\n"
        f"    ProxyCommand python3 {RELAY} %h %p {marker} {gate}\n",
    )
    transport = sshd_rig.transport(sshd_rig.settings(ssh_config=str(config), max_startups=2))
    one = sshd_rig.node_config("node1")
    nodes = [replace(one, name=f"n{i}", host=f"via-proxy-{i}") for i in range(6)]
    try:
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            docs = list(
                pool.map(lambda n: transport.run_probe(n, REQUEST, time.monotonic() + 60), nodes)
            )
    finally:
        transport.close()
    assert [d["ok"] for d in docs] == [True] * len(nodes)
    assert len(marker.read_text().splitlines()) == len(nodes)
    now, most = (int(x) for x in gate.read_text().split())
    assert (now, most) in ((0, 1), (0, 2)), (now, most)  # 6 at once without pacing
