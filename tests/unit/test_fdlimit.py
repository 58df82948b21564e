"""The open-file limit: raised for the node count when the hard limit allows, one warning with
the fix when it does not, and a node that finds no descriptor left fails with that fix named.

Each case runs a child process started with a low soft and hard ``RLIMIT_NOFILE``
(``preexec_fn``), so the limits of the test runner itself are never touched.
"""

from __future__ import annotations

import json
import re
import resource
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_helpers import CALM_THRESHOLDS, cli_env

from ugro_health.engine import fdlimit
from ugro_health.engine.fdlimit import Limit


def limited(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def ssh_cluster(home: Path, count: int, port: int | list[int], **ssh: object) -> Path:
    """``count`` SSH nodes on ``port`` of loopback (or each on its own of ``port``)."""
    ports = port if isinstance(port, list) else [port] * count
    nodes = "".join(f"  - name: n{i:04d}\n    port: {ports[i]}\n" for i in range(count))
    settings = "".join(f"  {k}: {v}\n" for k, v in ssh.items())
    path = home / "cluster.yaml"
    path.write_text(
        CALM_THRESHOLDS
        + "defaults:\n  host: 127.0.0.1\n  transport: ssh\n"
        + f"ssh:\n  ssh_config: ''\n  known_hosts: {home / 'known_hosts'}\n{settings}"
        + "nodes:\n"
        + nodes
    )
    return path


CHILD = textwrap.dedent(
    """
    import resource, sys
    from ugro_health.config import load_config
    from ugro_health.engine.runs import open_files

    config = load_config(sys.argv[1])
    open_files(config, config.nodes, lambda line: print("WARN", line), sys.argv[2] == "watch")
    print("LIMIT", *resource.getrlimit(resource.RLIMIT_NOFILE))
    """
)


def run_child(home: Path, cluster: Path, run: str, soft: int, hard: int) -> tuple[int, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(cluster), run],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limited(soft, hard),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    soft_after = int(next(line for line in lines if line.startswith("LIMIT")).split()[1])
    return soft_after, [line[5:] for line in lines if line.startswith("WARN ")]


def test_the_soft_limit_is_raised_when_the_hard_allows(tmp_path: Path):
    cluster = ssh_cluster(tmp_path, 500, 22, max_workers=32)
    soft, warnings = run_child(tmp_path, cluster, "watch", 256, 8192)
    need = fdlimit.needed(500, 256, persistent=True)  # watch's pool: a thread per node, to 256
    assert soft == 2 * need and warnings == []
    # check holds its workers' connections at once, not one per node: 256 is enough.
    assert run_child(tmp_path, cluster, "check", 256, 8192) == (256, [])


def test_the_soft_limit_stops_at_the_hard_one(tmp_path: Path):
    cluster = ssh_cluster(tmp_path, 500, 22)
    soft, warnings = run_child(tmp_path, cluster, "watch", 256, 900)
    assert soft == 900 and warnings == []  # 900 is enough, though not the headroom wanted


def test_a_hard_limit_too_low_is_one_warning_with_the_fix(tmp_path: Path):
    cluster = ssh_cluster(tmp_path, 500, 22)
    soft, warnings = run_child(tmp_path, cluster, "watch", 300, 300)
    assert soft == 300
    assert warnings == [
        "open-file limit 300 (hard 300) is below the 820 descriptors 500 nodes need: about "
        "284 of the 500 nodes fit, the others fail with 'Too many open files'; raise it with "
        "`ulimit -n` (systemd: LimitNOFILE=)"
    ]


def test_local_nodes_cost_no_descriptor(tmp_path: Path):
    nodes = "".join(f"  - name: l{i}\n    transport: local\n" for i in range(500))
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("nodes:\n" + nodes)
    assert run_child(tmp_path, cluster, "watch", 128, 128) == (128, [])


def test_the_estimate_and_what_fits():
    assert fdlimit.needed(1000, 256, persistent=True) == 1000 + 256 + fdlimit.BASE
    assert fdlimit.needed(1000, 32, persistent=False) == 32 + 32 + fdlimit.BASE
    assert fdlimit.needed(3, 32, persistent=False) == 3 + 3 + fdlimit.BASE
    limit = Limit(needed=1320, soft_before=1024, soft=1024, hard=1024)
    line = fdlimit.warning(limit, 1000, 256, persistent=True)
    assert line is not None and "the 1000 nodes fit with little to spare" in line
    line = fdlimit.warning(Limit(1320, 512, 512, 512), 1000, 256, persistent=True)
    assert line is not None and "about 496 of the 1000 nodes fit, the others fail" in line
    assert fdlimit.warning(Limit(100, 50, 200, 200), 10, 10, persistent=True) is None


def test_explain_adds_the_fix_to_a_descriptor_shortage_only():
    message = "[Errno 24] Too many open files during TCP connect to 127.0.0.1:22"
    assert fdlimit.explain(message) == (
        f"{message} (the open-file limit: raise it with `ulimit -n` (systemd: LimitNOFILE=))"
    )
    assert fdlimit.explain(fdlimit.explain(message)) == fdlimit.explain(message)
    assert fdlimit.explain("connection refused during TCP connect") == (
        "connection refused during TCP connect"
    )


# --- the commands ----------------------------------------------------------------------------


@pytest.fixture
def blackholes() -> Iterator[list[int]]:
    """40 ports that accept TCP connections (the kernel's backlog) and never speak SSH, so
    every connection holds its socket until the banner times out; one port per node, since
    connections to one endpoint are paced (a few at a time, for sshd's MaxStartups)."""
    servers = [socket.create_server(("127.0.0.1", 0), backlog=8) for _ in range(40)]
    try:
        yield [int(s.getsockname()[1]) for s in servers]
    finally:
        for server in servers:
            server.close()


def test_check_with_too_few_descriptors_warns_once_and_names_the_fix_per_node(
    tmp_path: Path, blackholes: list[int]
):
    cluster = ssh_cluster(tmp_path, 40, blackholes, max_workers=32, connect_timeout=3)
    result = subprocess.run(
        [sys.executable, "-m", "ugro_health", "check", "--no-record", "--json"],
        cwd=tmp_path,
        env=cli_env(tmp_path, {"UGRO_HEALTH_CONFIG": str(cluster)}),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limited(24, 24),
    )
    assert result.returncode == 2, result.stderr  # the nodes are CRITICAL, nothing crashed
    warning = [line for line in result.stderr.splitlines() if "open-file limit" in line]
    assert warning == [
        "ugro-health: warning: open-file limit 24 (hard 24) is below the 128 descriptors 40 "
        "nodes need: about 8 of the 32 parallel connections fit, the others fail with 'Too many "
        "open files'; raise it with `ulimit -n` (systemd: LimitNOFILE=)"
    ]
    errors = [n["error"] for n in json.loads(result.stdout)["nodes"]]
    assert len(errors) == 40 and all(errors)
    starved = [e for e in errors if "Too many open files" in e]
    assert starved, errors  # 32 connections at once cannot all fit in 24 descriptors
    fix = "(the open-file limit: raise it with `ulimit -n` (systemd: LimitNOFILE=))"
    assert all(e.endswith(fix) for e in starved)


def test_watch_raises_its_soft_limit_for_its_nodes(tmp_path: Path):
    with socket.socket() as sock:  # a port nothing listens on: each poll is refused at once
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cluster = ssh_cluster(tmp_path, 60, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ugro_health", "watch", "--headless", "--interval", "5"],
        cwd=tmp_path,
        env=cli_env(tmp_path, {"UGRO_HEALTH_CONFIG": str(cluster)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limited(64, 4096),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert " watching 60 node(s); " in first
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
    assert (int(soft), int(hard)) == (2 * fdlimit.needed(60, 60, persistent=True), 4096)
    assert "open-file limit" not in err and proc.returncode == 0
