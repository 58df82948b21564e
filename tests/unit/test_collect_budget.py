"""How long each node may take: every connect phase (DNS, TCP, banner, auth), the command, and
the forward, banner and auth phases of each jump host before it."""

from __future__ import annotations

from ugro_health.config import Config, NodeConfig, SshSettings
from ugro_health.engine.collect import Transports, node_budget


def test_budgets_count_dns_and_each_jump_host() -> None:
    ssh = SshSettings(connect_timeout=1.0, command_timeout=2.0, ssh_config=None)
    nodes = (
        NodeConfig(name="here", host="localhost", transport="local"),
        NodeConfig(name="direct", host="10.0.0.1"),
        NodeConfig(name="behind", host="10.0.0.2", proxy_jump="me@bastion,me@mid:2222"),
        NodeConfig(name="loop", host="10.0.0.3", proxy_jump="10.0.0.3"),  # itself: refused
    )
    transports = Transports(Config(nodes=nodes, ssh=ssh))
    try:
        assert node_budget(transports.config) == 4 * 1.0 + 2.0
        budgets = {node.name: transports.budget(node) for node in nodes}
    finally:
        transports.close()
    assert budgets == {"here": 6.0, "direct": 6.0, "behind": 6.0 + 2 * 3 * 1.0, "loop": 6.0}
