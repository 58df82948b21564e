"""A simulated cluster for benchmarks: sshd processes on loopback, named node01..nodeNN.

Reuses the integration tests' sshd rig (``tests/integration/sshd_rig.py``): one login user, one
user key, one known_hosts file. ``SimCluster.start(nodes, sshd=...)`` starts ``sshd`` OpenSSH
servers (by default one per node) and writes:

- ``ssh_config``: ``Host nodeNN`` -> ``127.0.0.1``, the port of the sshd it maps to, the rig's
  user, key and known_hosts, ``IdentitiesOnly yes``; OpenSSH (pdsh) and ugro-health both read it;
- ``cluster.yaml``: the nodes by name, ``ssh.ssh_config`` and ``ssh.known_hosts`` pointing at
  the files above, and each node's ``python:``, which is its node side.

The node side (``node_side``): ``"probe"`` runs the real probe (``python: /usr/bin/python3``),
so every tick scans this machine's /proc and the nodes' CPU is the probe's; ``"sim"`` runs the
simulator (``ugro_health/sim``: recorded H100 outputs, the probe's own protocol; see
``tests/integration/sim_rig.py``) through a small per-node wrapper, ~0.4 ms of CPU per tick,
so a benchmark of the control host is not drowned by its nodes on this machine's few cores.

With fewer sshd than nodes, node aliases share servers round-robin; each node still gets its own
connection and its own probe process. Everything lives in one temporary directory, removed by
``close()``. Needs OpenSSH's sshd; as root the rig logs in a dedicated user ``ugrotest``.
``env()`` is the environment for the processes a benchmark times: no ssh-agent, this cluster's
state directory, and bytecode caching on (as after ``pip install``) even where the calling
environment sets ``PYTHONDONTWRITEBYTECODE``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from sim_rig import sim_pythons  # noqa: E402
from sshd_rig import REMOTE_PYTHON, SshdRig  # noqa: E402

from ugro_health.config import Config, load_config  # noqa: E402
from ugro_health.engine.collect import Transports  # noqa: E402
from ugro_health.sim import model  # noqa: E402
from ugro_health.sim.transport import SimTransport  # noqa: E402

NODE_SIDES = ("sim", "probe")


def in_process(config: Config, node_side: str) -> Transports:
    """``Transports`` for benchmarks of in-process (``transport: local``) nodes: the real probe
    (``"probe"``), or the simulator answering for them in-process (``"sim"``, a steady story)."""
    if node_side == "probe":
        return Transports(config)
    names = [node.name for node in config.nodes]
    return Transports(config, _local=SimTransport(model.SimCluster(names)))


def node_names(count: int) -> list[str]:
    width = max(2, len(str(count)))
    return [f"node{i:0{width}d}" for i in range(1, count + 1)]


@dataclass
class SimCluster:
    rig: SshdRig
    names: list[str]
    ports: dict[str, int]  # node name -> the port of the sshd it maps to
    ssh_config: Path
    cluster_yaml: Path
    state_dir: Path
    node_side: str

    @classmethod
    def start(
        cls, nodes: int, sshd: int | None = None, max_workers: int = 64, node_side: str = "probe"
    ) -> SimCluster:
        if node_side not in NODE_SIDES:
            raise ValueError(f"node side must be one of {', '.join(NODE_SIDES)}: {node_side!r}")
        rig = SshdRig.create()
        try:
            servers = [rig.start_node(f"sshd{i:03d}") for i in range(min(sshd or nodes, nodes))]
            names = node_names(nodes)
            ports = {name: servers[i % len(servers)].port for i, name in enumerate(names)}
            ssh_config = rig.root / "ssh_config"
            ssh_config.write_text("".join(_host_block(rig, n, p) for n, p in ports.items()))
            cluster_yaml = rig.root / "cluster.yaml"
            pythons = sim_pythons(rig, names) if node_side == "sim" else {}
            cluster_yaml.write_text(_cluster_yaml(rig, ssh_config, names, max_workers, pythons))
            state_dir = rig.root / "state"
            state_dir.mkdir(mode=0o700)
        except BaseException:
            rig.close()
            raise
        return cls(rig, names, ports, ssh_config, cluster_yaml, state_dir, node_side)

    @property
    def config(self) -> Config:
        return load_config(self.cluster_yaml)

    def pdsh_range(self, count: int | None = None) -> str:
        """``node[01-NN]`` for the first ``count`` nodes, as pdsh's -w takes it."""
        names = self.names[: count or len(self.names)]
        return f"node[{names[0][4:]}-{names[-1][4:]}]"

    def install(self, name: str, text: str) -> str:
        """A file readable on every node (they share this machine), for pdsh's side."""
        path = self.rig.root / name
        path.write_text(text)
        path.chmod(0o644)
        return str(path)

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for child processes: no ssh-agent, this cluster's state directory."""
        drop = ("SSH_AUTH_SOCK", "PYTHONDONTWRITEBYTECODE")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["UGRO_HEALTH_STATE_DIR"] = str(self.state_dir)
        # Bytecode is cached, as after `pip install`, in a directory of this cluster's own.
        env["PYTHONPYCACHEPREFIX"] = str(self.rig.root / "pycache")
        env.update(extra)
        return env

    def close(self) -> None:
        self.rig.close()

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _host_block(rig: SshdRig, name: str, port: int) -> str:
    return (
        f"Host {name}\n"
        "    HostName 127.0.0.1\n"
        f"    Port {port}\n"
        f"    User {rig.user}\n"
        f"    IdentityFile {rig.key}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {rig.known_hosts}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
    )


def _cluster_yaml(
    rig: SshdRig, ssh_config: Path, names: list[str], max_workers: int, pythons: dict[str, str]
) -> str:
    """``pythons``: each node's own ``python:`` (the simulator's wrappers); else the probe's."""
    lines = [
        "ssh:",
        f"  ssh_config: {ssh_config}",
        f"  known_hosts: {rig.known_hosts}",
        "  connect_timeout: 10",
        "  command_timeout: 20",
        f"  max_workers: {max_workers}",
        "defaults:",
        f"  python: {REMOTE_PYTHON}",
        "nodes:",
    ]
    for name in names:
        lines.append(f"  - name: {name}")
        if name in pythons:
            lines.append(f"    python: {pythons[name]}")
    return "\n".join(lines) + "\n"
