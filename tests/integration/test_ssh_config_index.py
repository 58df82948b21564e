"""IndexedSshConfig: the same answers as paramiko's SSHConfig.lookup, from fewer blocks."""

from __future__ import annotations

import paramiko
import pytest

from ugro_health.transport.ssh_resolve import IndexedSshConfig

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
"""

NAMES = ["gpu01", "gpu02", "gpu03", "gpu04", "gpu10", "bastion", "other", "GPU01"]


@pytest.mark.parametrize("name", NAMES)
def test_lookup_matches_paramiko(name: str) -> None:
    config = paramiko.SSHConfig.from_text(TEXT)
    assert dict(IndexedSshConfig(config).lookup(name)) == dict(config.lookup(name))


def test_literal_blocks_of_other_hosts_are_skipped() -> None:
    text = "".join(f"Host node{i:03d}\n    Port {1000 + i}\n" for i in range(500))
    index = IndexedSshConfig(paramiko.SSHConfig.from_text(text))
    assert index.lookup("node123")["port"] == "1123"
    assert len(index._general) == 1  # paramiko's implicit `Host *` block only


def test_canonicalization_falls_back_to_every_block() -> None:
    text = "Host a\n    CanonicalizeHostname yes\n    CanonicalDomains example.com\n"
    config = paramiko.SSHConfig.from_text(text + "Host b.example.com\n    Port 2\n")
    index = IndexedSshConfig(config)
    assert index._general == [] and index._by_name == {}
    assert dict(index.lookup("b")) == dict(config.lookup("b"))
