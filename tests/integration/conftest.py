"""Fixtures for integration tests against real daemons on loopback (OpenSSH sshd, Slurm).

``sshd_rig`` (session) starts the rig once: nodes ``node1``..``node3`` (healthy, recorded in the
rig's known_hosts), ``changed`` (known_hosts records another key) and ``unknown`` (not recorded),
plus ``rig.refused_port`` and ``rig.blackhole_port``. Without sshd the tests skip, except under
CI (env ``CI`` set), where a missing sshd fails them so CI cannot pass by skipping.

``slurm_rig`` (session) starts a real Slurm (munged, slurmctld, slurmd ``gpu01``/``gpu02``) on
loopback; ``slurm`` is that rig reset before each test. Without root or the Slurm binaries they
skip, and under CI they fail, the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_rig import SlurmRig, missing_requirements
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


@pytest.fixture(scope="session")
def slurm_rig() -> Iterator[SlurmRig]:
    """munged, slurmctld and slurmd ``gpu01``/``gpu02`` on loopback, started once per session.

    Skips without root or without the Slurm/munge binaries, except under CI, where it fails.
    """
    reason = missing_requirements()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: the Slurm tests must run)")
        pytest.skip(reason)
    rig = SlurmRig.start()
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def slurm(slurm_rig: SlurmRig) -> SlurmRig:
    """The session's Slurm rig, reset first: no jobs, every node resumed and idle."""
    slurm_rig.reset()
    return slurm_rig
