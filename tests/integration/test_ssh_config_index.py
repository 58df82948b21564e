"""SshConfig's Host index: the same answers as walking every section, from fewer sections."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ugro_health.transport.ssh_config_eval import SshConfig

TEXT = """
Host *
    ServerAliveInterval 10
Host gpu01
    HostName 10.0.0.1
    Port 2201
    IdentityFile ~/.ssh/gpu01
Host gpu02 gpu03
    HostName 10.0.0.2
Host gpu0?
    User wild
    IdentityFile ~/.ssh/wild
Host !gpu02 gpu*
    Port 2222
Match host 10.0.0.2
    User matched
Host gpu01
    User late
    Port 9999
Host bastion
    HostName bastion.example.com
Match final host 10.0.0.1
    HostKeyAlias final-%h
Host 10.0.0.2
    IdentitiesOnly yes
"""

NAMES = ["gpu01", "gpu02", "gpu03", "gpu04", "gpu10", "bastion", "other", "GPU01"]


@pytest.mark.parametrize("name", NAMES)
def test_lookup_matches_the_full_walk(name: str) -> None:
    indexed = SshConfig("ssh_config", text=TEXT)
    full = SshConfig("ssh_config", text=TEXT, local=indexed.local)
    full.indexed = False
    assert replace(indexed.lookup(name), local=full.local) == full.lookup(name)


def test_literal_blocks_of_other_hosts_are_skipped() -> None:
    text = "".join(f"Host node{i:03d}\n    Port {1000 + i}\n" for i in range(500))
    config = SshConfig("ssh_config", text=text)
    assert config.lookup("node123").port == 1123
    assert config.root is not None
    assert config.root.general == [0]  # the lines before the first Host only
    assert config.root.sections_for("node123") == [0, 124]


def test_an_unknown_keyword_anywhere_is_an_error_for_every_host() -> None:
    config = SshConfig("ssh_config", text="Host a\n    Frobnicate yes\nHost b\n    Port 2\n")
    with pytest.raises(ValueError, match="ssh_config:2: Bad configuration option: frobnicate"):
        config.lookup("b")
    ignored = SshConfig("c", text="IgnoreUnknown frob*\nHost a\n    Frobnicate yes\n")
    assert ignored.lookup("b").port == 22
