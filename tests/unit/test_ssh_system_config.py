"""The system-wide ssh_config read after the user's file, as ``ssh`` without ``-F`` reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugro_health.config import NodeConfig
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_config_eval import SshConfig
from ugro_health.transport.ssh_resolve import load_ssh_config, resolve

DEBIAN = """\
Include /etc/ssh/ssh_config.d/*.conf
Host *
#   ForwardAgent no
    SendEnv LANG LC_*
    HashKnownHosts yes
    GSSAPIAuthentication yes
"""  # Debian 12's /etc/ssh/ssh_config, comments cut


def both(user: str, system: str) -> SshConfig:
    config = SshConfig("user", text=user, system="system", system_text=system)
    assert config.error is None, config.error
    return config


def test_the_first_value_obtained_wins_across_the_two_files() -> None:
    config = both("Host gpu1\n    User ollie\n", "Host *\n    User root\n    Port 2200\n")
    gpu1 = resolve(NodeConfig(name="gpu1"), config)
    other = resolve(NodeConfig(name="db1"), config)
    assert (gpu1.user, gpu1.port, other.user) == ("ollie", 2200, "root")
    assert dict(gpu1.sources) == {"user": "user:2", "port": "system:3"}


def test_debians_system_file_is_honoured_not_refused() -> None:
    # SendEnv (we send no environment) and GSSAPIAuthentication (we authenticate with keys
    # only) change nothing we do: they must not fail every node
    host = resolve(NodeConfig(name="gpu1"), both("", DEBIAN))
    assert host.hash_known_hosts and dict(host.sources) == {"hashknownhosts": "system:5"}


def test_a_directive_refused_in_the_system_file_is_a_per_node_error_naming_it() -> None:
    config = both("Host gpu1\n    Port 2\n", "Host gpu*\n    BindAddress 10.0.0.1\n")
    assert resolve(NodeConfig(name="db1"), config).port == 22
    with pytest.raises(TransportError, match=r"bindaddress 10\.0\.0\.1 \(system:2\)") as info:
        resolve(NodeConfig(name="gpu1"), config)
    assert info.value.kind is ErrorKind.SSH_ERROR


def test_a_bad_line_in_the_system_file_refuses_every_host_as_ssh_does() -> None:
    config = SshConfig("user", text="", system="system", system_text="Host *\n    Port x\n")
    with pytest.raises(TransportError, match="system:2") as info:
        resolve(NodeConfig(name="db1"), config)
    assert info.value.kind is ErrorKind.SSH_ERROR


def test_match_final_in_either_file_makes_a_second_pass_over_both() -> None:
    # the first pass sets HostName in the user file; the system file's `Match final host`
    # sees it only on the second pass, which re-reads the user file too
    config = both(
        "Host gpu1\n    HostName node-gpu1\nMatch final host node-*\n    User finaluser\n",
        "Match final host node-*\n    Port 2022\n",
    )
    host = resolve(NodeConfig(name="gpu1"), config)
    assert (host.hostname, host.user, host.port) == ("node-gpu1", "finaluser", 2022)


def test_the_system_file_is_read_when_the_user_file_is_disabled_or_absent(tmp_path: Path) -> None:
    system = tmp_path / "ssh_config"
    system.write_text("Host *\n    User sysuser\n")
    for user in (None, "", str(tmp_path / "missing")):
        config = load_ssh_config(user, str(system))
        assert config is not None
        assert resolve(NodeConfig(name="a"), config).user == "sysuser"
    assert load_ssh_config(None, None) is None
    assert load_ssh_config(None, str(tmp_path / "absent")) is None  # ssh ignores it too


def test_a_relative_include_in_the_system_file_is_under_etc_ssh(tmp_path: Path) -> None:
    system = tmp_path / "ssh_config"
    system.write_text("Include ugro-test-absent-*.conf\nHost *\n    Port 2\n")
    (tmp_path / "ugro-test-absent-1.conf").write_text("Port 3\n")  # beside it: not read
    config = SshConfig("", system=str(system))
    assert config.error is None
    assert resolve(NodeConfig(name="a"), config).port == 2
