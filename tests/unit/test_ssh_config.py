"""ssh_config read as OpenSSH reads it: the cases issue 9 found resolved differently from ssh.

Each expectation here is what ``ssh -G`` (OpenSSH 9.2) prints for the same file; the
differential test (tests/integration/test_ssh_config_differential.py) checks many more.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ugro_health.config import NodeConfig
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_config import SshConfigError, argv_split, match_pattern
from ugro_health.transport.ssh_config_eval import Local, SshConfig
from ugro_health.transport.ssh_resolve import resolve

LOCAL = Local("me", "/home/me", 1000, "ctl.example.com")


def lookup(text: str, alias: str) -> object:
    return SshConfig("cfg", text=text, local=LOCAL).lookup(alias)


def test_include_relative_to_dot_ssh_glob_and_inside_a_host_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh" / "conf.d").mkdir(parents=True)
    (tmp_path / ".ssh" / "conf.d" / "a.conf").write_text("Host gpu1\n  HostName 10.0.0.1\n")
    (tmp_path / ".ssh" / "conf.d" / "b.conf").write_text("Host gpu1\n  User bob\n  Port 2201\n")
    (tmp_path / "abs.conf").write_text("IdentityFile /keys/%h\n")
    config = tmp_path / ".ssh" / "config"
    config.write_text(f"Include conf.d/*.conf\nHost gpu1\n  Include {tmp_path}/abs.conf\n")
    host = SshConfig(str(config), local=LOCAL).lookup("gpu1")
    assert (host.hostname, host.user, host.port) == ("10.0.0.1", "bob", 2201)
    assert host.identity_files == ("/keys/%h",)
    assert host.sources["hostname"] == f"{tmp_path}/.ssh/conf.d/a.conf:2"
    assert SshConfig(str(config), local=LOCAL).lookup("gpu2").identity_files == ()


def test_proxy_command_and_proxy_jump_first_obtained_wins() -> None:
    text = "Host a\n  ProxyCommand nc %h %p\nHost *\n  ProxyJump bastion\n"
    host = lookup(text, "a")
    assert (host.proxy_command, host.proxy_jump) == ("nc %h %p", None)  # type: ignore[attr-defined]
    assert lookup(text, "b").proxy_jump == "bastion"  # type: ignore[attr-defined]


def test_match_before_the_block_setting_user_sees_the_default_on_the_first_pass() -> None:
    text = "Match user bob\n  Port 2222\nHost gpu1\n  User bob\n"
    assert lookup(text, "gpu1").port == 22  # type: ignore[attr-defined]
    final = "Match final user bob\n  Port 2222\nHost gpu1\n  User bob\n"
    assert lookup(final, "gpu1").port == 2222  # type: ignore[attr-defined]


def test_host_patterns_have_no_character_classes_and_comments_end_the_line() -> None:
    assert not match_pattern("gpu1", "gpu[12]")
    assert match_pattern("gpu[12]", "gpu[12]")
    text = "Host web # gpu1\n  User web\nHost gpu1\n  User one # a comment\n"
    host = lookup(text, "gpu1")
    assert host.user == "one"  # type: ignore[attr-defined]
    assert argv_split('a "b c" d\\ e #x') == ["a", "b c", "d e"]


def test_tokens_tilde_and_lowercased_hostname() -> None:
    text = "Host Gpu1\n  HostName Node-%h.LAN\n  Port 2200\n  User bob\n  IdentityFile ~/k/%n_%p_%r_%%\n  IdentityFile a/~/b\n"
    host = SshConfig("cfg", text=text, local=LOCAL).lookup("Gpu1")
    assert host.hostname == "node-gpu1.lan"
    paths = [host.expand_path(p, "IdentityFile") for p in host.identity_files]
    assert paths == ["/home/me/k/Gpu1_2200_bob_%", "a/~/b"]
    with pytest.raises(SshConfigError, match="unknown token %z"):
        host.expand_path("/k/%z", "IdentityFile")


def test_known_hosts_defaults_include_the_2_files() -> None:
    host = lookup("", "x")
    assert host.user_known_hosts == (  # type: ignore[attr-defined]
        "/home/me/.ssh/known_hosts",
        "/home/me/.ssh/known_hosts2",
    )
    assert host.global_known_hosts == (  # type: ignore[attr-defined]
        "/etc/ssh/ssh_known_hosts",
        "/etc/ssh/ssh_known_hosts2",
    )


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("ProxyUseFdpass yes", "proxyusefdpass"),
        ("CanonicalizeHostname yes", "canonicalizehostname"),
        ("KnownHostsCommand /bin/kh %h", "knownhostscommand"),
        ("ProxyCommand -", "proxycommand -"),
        ("ProxyCommand nc %h %x", "unknown token %x"),
    ],
)
def test_a_directive_we_cannot_honour_is_a_node_error(
    tmp_path: Path, line: str, needle: str
) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(f"Host gpu1\n  {line}\n")
    config = SshConfig(str(path))
    with pytest.raises(TransportError, match=needle) as info:
        resolve(NodeConfig(name="gpu1"), config)
    assert info.value.kind is ErrorKind.SSH_ERROR
    if "token" not in needle:
        assert f"{path}:2" in str(info.value)
    assert resolve(NodeConfig(name="gpu2"), config).hostname == "gpu2"


def test_a_bad_line_fails_every_node_as_ssh_does(tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text("Host other\n  Port twenty\n")
    with pytest.raises(TransportError, match=r"ssh_config:2: port"):
        resolve(NodeConfig(name="gpu1"), SshConfig(str(path)))


def test_strict_host_key_checking_is_reported_not_obeyed() -> None:
    host = resolve(
        NodeConfig(name="a"),
        SshConfig("cfg", text="StrictHostKeyChecking no\n", local=LOCAL),
    )
    assert host.strict_host_key_checking == "no"


def test_node_user_and_port_come_first_like_ssh_command_line_options() -> None:
    config = SshConfig("cfg", text="Match user bob\n  Port 2222\nHost *\n  User alice\n")
    host = resolve(NodeConfig(name="a", user="bob"), config)
    assert (host.user, host.port) == ("bob", 2222)
    assert dict(host.sources)["port"] == "cfg:2"
    assert os.path.isabs(host.user_known_hosts[0])


def test_proxy_jump_none_blocks_a_later_jump_but_not_a_later_command() -> None:
    # what ssh -G (9.2) prints for these files
    text = "ProxyJump none\nProxyCommand nc %h %p\nProxyJump j2\n"
    host = lookup(text, "a")
    assert (host.proxy_jump, host.proxy_command) == (None, "nc %h %p")  # type: ignore[attr-defined]
    host = lookup("ProxyCommand none\nProxyJump j1\n", "a")
    assert (host.proxy_jump, host.proxy_command) == (None, None)  # type: ignore[attr-defined]
