"""resolve(): a node's SSH destination after ~/.ssh/config, and ProxyJump parsing."""

from __future__ import annotations

import getpass
import os

import pytest

from ugro_health.config import NodeConfig, SshSettings
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh import DEFAULT_IDENTITIES, parse_jump, resolve
from ugro_health.transport.ssh_config_eval import SshConfig

SSH_CONFIG = SshConfig(
    "ssh_config",
    text="""
Host gpu1
    HostName 10.0.0.11
    Port 2201
    User ollie
    IdentityFile /keys/gpu1
    ProxyJump bastion.example.com
    HostKeyAlias gpu1-key
Host direct
    ProxyJump none
    IdentitiesOnly yes
    UserKnownHostsFile /kh/one /kh/two
Host *
    IdentityFile /keys/all
""",
)


def test_ssh_config_supplies_what_the_node_leaves_out() -> None:
    host = resolve(NodeConfig(name="gpu1"), SSH_CONFIG)
    assert host.alias == "gpu1"
    assert host.hostname == "10.0.0.11"
    assert host.port == 2201
    assert host.user == "ollie"
    assert host.identity_files == ("/keys/gpu1", "/keys/all")
    assert host.proxy_jump == "bastion.example.com"
    assert host.host_key_alias == "gpu1-key"
    assert host.known_hosts_name == "gpu1-key"


def test_explicit_node_values_win_over_ssh_config() -> None:
    node = NodeConfig(
        name="gpu1",
        port=22,
        user="root",
        identity_file="~/.ssh/cluster",
        proxy_jump="jump@10.0.0.1:2222",
    )
    host = resolve(node, SSH_CONFIG)
    assert (host.hostname, host.port, host.user) == ("10.0.0.11", 22, "root")
    assert host.identity_files == ("~/.ssh/cluster", "/keys/gpu1", "/keys/all")
    assert host.proxy_jump == "jump@10.0.0.1:2222"


def test_an_explicit_host_is_looked_up_as_ssh_would() -> None:
    host = resolve(NodeConfig(name="n1", host="gpu1"), SSH_CONFIG)
    assert host.alias == "gpu1"
    assert (host.hostname, host.port, host.user) == ("10.0.0.11", 2201, "ollie")  # whole block
    address = resolve(NodeConfig(name="n2", host="10.0.0.99"), SSH_CONFIG)
    assert address.hostname == "10.0.0.99"  # no block of its own: used as it is


def test_defaults_without_ssh_config() -> None:
    host = resolve(NodeConfig(name="gpu7"), None)
    assert (host.hostname, host.port, host.user) == ("gpu7", 22, getpass.getuser())
    assert host.identity_files == DEFAULT_IDENTITIES
    assert host.proxy_jump is None
    assert host.known_hosts_name == "gpu7"
    home = os.path.expanduser("~")
    assert host.user_known_hosts == (f"{home}/.ssh/known_hosts", f"{home}/.ssh/known_hosts2")
    assert host.global_known_hosts == ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
    assert (host.check_host_ip, host.host_key_algorithms) == (False, None)


def test_proxy_jump_none_identities_only_and_known_hosts_files() -> None:
    host = resolve(NodeConfig(name="direct", port=2222), SSH_CONFIG)
    assert host.proxy_jump is None
    assert host.identities_only is True
    assert host.identity_files == ("/keys/all",)
    assert host.known_hosts_name == "[direct]:2222"
    assert host.user_known_hosts == ("/kh/one", "/kh/two")
    assert host.global_known_hosts == ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


def test_known_hosts_name_for_ipv6_on_another_port() -> None:
    host = resolve(NodeConfig(name="v6", host="[fe80::1]", port=2222), None)
    assert host.known_hosts_name == "[fe80::1]:2222"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("bastion", (None, "bastion", None)),
        ("me@bastion", ("me", "bastion", None)),
        ("me@bastion:2222", ("me", "bastion", 2222)),
        ("ssh://me@bastion:2222", ("me", "bastion", 2222)),
        ("[::1]:2222", (None, "::1", 2222)),
        ("me@[fe80::2]", ("me", "fe80::2", None)),
    ],
)
def test_parse_jump(spec: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_jump(spec) == expected


@pytest.mark.parametrize("spec", ["a,b", "me@host:port", "me@"])
def test_parse_jump_rejects(spec: str) -> None:
    with pytest.raises(TransportError) as info:
        parse_jump(spec)
    assert info.value.kind is ErrorKind.SSH_ERROR


def test_bad_port_in_ssh_config_is_an_ssh_error() -> None:
    config = SshConfig("ssh_config", text="Host bad\n    Port twenty-two\n")
    with pytest.raises(TransportError) as info:
        resolve(NodeConfig(name="bad"), config)
    assert info.value.kind is ErrorKind.SSH_ERROR


JUMP_CONFIG = """
Host inner
    HostName 10.0.0.30
    ProxyJump mid
    IdentityFile /keys/inner
Host mid
    HostName 10.0.0.20
    ProxyJump me@bastion:2222
Host bastion
    HostName 203.0.113.1
    IdentityFile /keys/bastion
Host two-hops
    ProxyJump bastion,mid
Host loop-a
    ProxyJump loop-b
Host loop-b
    ProxyJump loop-a
"""


def jump_chain(tmp_path, name: str) -> list[tuple[str, str, int]]:
    from ugro_health.transport.ssh_connect import Connector

    path = tmp_path / "ssh_config"
    path.write_text(JUMP_CONFIG)
    settings = SshSettings(ssh_config=str(path))
    connector = Connector(
        settings, accept_new=False, ssh_config_path=str(path), known_hosts_files=()
    )
    hops = connector.jump_chain(connector.resolve(NodeConfig(name=name)))
    return [(hop.alias, hop.hostname, hop.port) for hop in hops]


def test_the_first_hops_own_proxy_jump_applies_first(tmp_path) -> None:
    assert jump_chain(tmp_path, "inner") == [
        ("bastion", "203.0.113.1", 2222),
        ("mid", "10.0.0.20", 22),
    ]


def test_a_list_of_hops_is_taken_in_order_without_the_later_hops_own_jumps(tmp_path) -> None:
    # ssh -J bastion,mid: mid is reached through bastion, its own ProxyJump does not apply
    assert jump_chain(tmp_path, "two-hops") == [
        ("bastion", "203.0.113.1", 22),
        ("mid", "10.0.0.20", 22),
    ]


def test_a_jump_loop_is_an_error_not_a_hang(tmp_path) -> None:
    with pytest.raises(TransportError, match="ProxyJump to loop-a loops") as info:
        jump_chain(tmp_path, "loop-a")
    assert info.value.kind is ErrorKind.SSH_ERROR


def test_a_hop_without_keys_of_its_own_tries_the_targets(tmp_path) -> None:
    from ugro_health.transport.ssh_connect import Connector

    path = tmp_path / "ssh_config"
    path.write_text(JUMP_CONFIG)
    connector = Connector(
        SshSettings(ssh_config=str(path)),
        accept_new=False,
        ssh_config_path=str(path),
        known_hosts_files=(),
    )
    bastion, mid = connector.jump_chain(connector.resolve(NodeConfig(name="inner")))
    assert bastion.identity_files == ("/keys/bastion",)
    assert mid.identity_files[0] == "/keys/inner"
