"""``watch`` when a node's link is cut (packets silently dropped, not refused): its persistent
session times out, the node is isolated while the others stay polled, and when the link comes
back it recovers. Root only: the node is an sshd in its own network namespace behind a veth
pair, and the cut is the node's end of the pair going down (the host's end keeps its route and
drops what it sends, as a pulled cable would; `tc netem` is not in this kernel)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sshd_rig import SshdRig
from watch_rig import running_monitor, wait_for

from ugro_health.config import Config
from ugro_health.engine.breaker import BreakerPolicy, BreakerState
from ugro_health.engine.monitor import CycleResult

pytestmark = [
    pytest.mark.ssh,
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 and not os.environ.get("CI"),
        reason="needs root (network namespaces, tc)",
    ),
]

PORT = 2222


@dataclass
class FarNode:
    """An sshd at ``address``:PORT inside namespace ``netns``, reached over ``link``."""

    netns: str
    link: str  # the node's side of the veth pair, inside the namespace
    address: str

    def cut(self) -> None:
        run("ip", "-n", self.netns, "link", "set", self.link, "down")

    def mend(self) -> None:
        run("ip", "-n", self.netns, "link", "set", self.link, "up")


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def far_node(sshd_rig: SshdRig) -> Iterator[FarNode]:
    tag = os.getpid() % 200
    netns, link, peer = f"ugro-bh-{os.getpid()}", f"ugbh{tag}h", f"ugbh{tag}n"
    host_ip, node_ip = f"10.213.{tag}.1", f"10.213.{tag}.2"
    run("ip", "netns", "add", netns)
    sshd = None
    try:
        run("ip", "link", "add", link, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", peer, "netns", netns)
        run("ip", "addr", "add", f"{host_ip}/30", "dev", link)
        run("ip", "link", "set", link, "up")
        run("ip", "-n", netns, "addr", "add", f"{node_ip}/30", "dev", peer)
        run("ip", "-n", netns, "link", "set", peer, "up")
        run("ip", "-n", netns, "link", "set", "lo", "up")
        config = sshd_rig.root / "sshd_far.conf"
        text = sshd_rig._sshd_config(PORT, sshd_rig.host_key)
        config.write_text(re.sub(r"(?m)^ListenAddress .*$", f"ListenAddress {node_ip}", text))
        log = (sshd_rig.root / "sshd_far.log").open("ab")
        sshd = subprocess.Popen(
            ["ip", "netns", "exec", netns, sshd_rig.sshd, "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=log,
        )
        with sshd_rig.known_hosts.open("a") as fh:
            public = Path(f"{sshd_rig.host_key}.pub").read_text().split()[:2]
            fh.write(f"[{node_ip}]:{PORT} {' '.join(public)}\n")
        wait_for(lambda: _answers(node_ip, PORT), 10, "the namespaced sshd")
        yield FarNode(netns, peer, node_ip)
    finally:
        if sshd is not None:
            sshd.kill()
            sshd.wait()
        subprocess.run(["ip", "netns", "delete", netns], check=False)  # takes the veth along
        subprocess.run(["ip", "link", "delete", link], check=False, capture_output=True)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def events(cycles: list[CycleResult], code: str) -> list[str]:
    return [e.node for c in cycles for e in c.events if e.alert.code == code]


def test_a_cut_link_is_isolated_without_holding_the_others_and_recovers(
    sshd_rig: SshdRig, far_node: FarNode, tmp_path: Path
):
    far = replace(sshd_rig.node_config("node1"), name="far", host=far_node.address, port=PORT)
    nodes = (sshd_rig.node_config("node1"), sshd_rig.node_config("node2"), far)
    config = Config(nodes=nodes, ssh=sshd_rig.settings(connect_timeout=1.0, command_timeout=2.0))
    with running_monitor(
        config, tmp_path, BreakerPolicy(failure_threshold=2, reset_base_s=2.0, reset_max_s=4.0)
    ) as (monitor, cycles):
        wait_for(lambda: len(cycles) >= 2, 30, "two healthy cycles")
        assert all(report.reachable for report in monitor.view.reports.values())
        far_node.cut()
        cut_at = len(cycles)
        wait_for(lambda: "far" in events(cycles, "node_isolated"), 40, "far isolated")
        assert events(cycles, "node_isolated") == ["far"]
        during = cycles[cut_at:]
        # The near nodes were polled in every round and answered; no round waited longer
        # than one node's budget (4 connect phases + the command) for the silent one.
        full = [c for c in during if "node1" in c.polled]
        assert full and all("node2" in c.polled for c in full)
        assert all(c.duration_s < 4 * 1.0 + 2.0 + 1.0 for c in during), [
            round(c.duration_s, 2) for c in during
        ]
        far_report = monitor.view.reports["far"]
        assert not far_report.reachable and far_report.error is not None
        assert far_report.error.kind.value in ("timeout", "skipped"), far_report.error
        assert monitor.view.reports["node1"].reachable and monitor.view.reports["node2"].reachable
        far_node.mend()
        wait_for(lambda: "far" in events(cycles, "node_recovered"), 40, "far recovered")
        assert monitor.breakers["far"].state is BreakerState.CLOSED
        wait_for(lambda: monitor.view.reports["far"].reachable, 10, "a good poll of far")
