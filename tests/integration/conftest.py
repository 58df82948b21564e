"""Fixtures for integration tests against a real OpenSSH sshd on loopback.

``sshd_rig`` (session) starts the rig once: nodes ``node1``..``node3`` (healthy, recorded in the
rig's known_hosts), ``changed`` (known_hosts records another key) and ``unknown`` (not recorded),
plus ``rig.refused_port`` and ``rig.blackhole_port``. Without sshd the tests skip, except under
CI (env ``CI`` set), where a missing sshd fails them so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_rig import SshdRig, find_sshd

STANDARD_NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="session")
def sshd_rig() -> Iterator[SshdRig]:
    if find_sshd() is None:
        reason = "OpenSSH sshd / ssh-keygen not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: the ssh tests must run)")
        pytest.skip(reason)
    rig = SshdRig.create()
    try:
        for name in STANDARD_NODES:
            rig.start_node(name)
        rig.start_node("changed", host_key=rig.other_host_key, recorded_key=rig.host_key)
        rig.start_node("unknown", record=False)
        yield rig
    finally:
        rig.close()


@pytest.fixture(autouse=True)
def _hermetic_ssh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Keep the developer's ssh-agent and ~/.ssh out of the tests (and the tests out of them).

    ``HOME`` points at an empty per-test directory, so default identities, ~/.ssh/config and
    ~/.ssh/known_hosts resolve there; the fixture's value is that home.
    """
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home
