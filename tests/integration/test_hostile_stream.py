"""What a node's login shell or probe puts around the answer must not hide it or stall it, and
``check`` (one-shot) and ``watch`` (persistent session) judge the same stream the same way.

The node is a real sshd; the stand-in interpreters are shell scripts set as the node's
``python:``: what they print reaches the channel exactly as a login shell's noise would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sshd_rig import PROBE_REQUEST as REQUEST
from sshd_rig import REMOTE_PYTHON, SshdRig

from ugro_health.config import Config
from ugro_health.engine.collect import Transports, collect_cluster
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError

pytestmark = pytest.mark.ssh


@pytest.fixture
def rig(sshd_rig: SshdRig) -> Iterator[SshdRig]:
    if "stream" not in sshd_rig.nodes:
        sshd_rig.start_node("stream")
    elif sshd_rig.nodes["stream"].process.poll() is not None:
        sshd_rig.restart_node("stream")
    yield sshd_rig


def wrapper(rig: SshdRig, name: str, before: str) -> str:
    """An interpreter that runs ``before`` (shell) and then the real python with its args."""
    path = rig.root / name
    path.write_text(f'#!/bin/sh\n{before}\nexec {REMOTE_PYTHON} "$@"\n')
    path.chmod(0o755)
    return str(path)


def both_ways(rig: SshdRig, python: str, ticks: int = 3) -> list[Any]:
    """The one-shot answer, then ``ticks`` persistent answers (or the errors raised)."""
    node = rig.node_config("stream", python=python)
    results: list[Any] = []
    for persistent in (False, True):
        transport = rig.transport(persistent=persistent)
        try:
            for _ in range(ticks if persistent else 1):
                try:
                    results.append(transport.run_probe(node, REQUEST, time.monotonic() + 20))
                except TransportError as exc:
                    results.append(exc)
        finally:
            transport.close()
    return results


def test_login_noise_without_a_newline_does_not_hide_the_answer(rig: SshdRig) -> None:
    # `printf "motd "` in a shell rc: the first frame follows the noise on the same line.
    python = wrapper(rig, "motd_python", 'printf "motd "')
    for result in both_ways(rig, python):
        assert isinstance(result, dict), result
        assert result["ok"] is True


def test_a_stderr_flood_before_the_answer_is_drained_in_watch_as_in_check(rig: SshdRig) -> None:
    # 3 MiB on stderr before the probe starts: more than the channel's window, so stderr must
    # be drained while the answer is awaited, in the persistent session as in one-shot.
    python = wrapper(rig, "stderr_python", "head -c 3145728 /dev/zero | tr '\\0' e >&2")
    for result in both_ways(rig, python, ticks=2):
        assert isinstance(result, dict), result
        assert result["ok"] is True


def test_a_million_empty_gpus_is_invalid_quickly_and_cheaply(rig: SshdRig) -> None:
    # Under the 4 MiB output cap, but a million objects: refused before any is built.
    answer = rig.root / "gpus_answer.txt"
    gpus = b"{}," * 999_999 + b"{}"
    answer.write_bytes(b'UGRO1 {"ok": true, "probe_version": 1, "gpus": [' + gpus + b"]}\n")
    python = wrapper(rig, "gpus_python", f"cat > /dev/null &\ncat {answer}\nexit 0")
    config = Config(nodes=(rig.node_config("stream", python=python),), ssh=rig.settings())
    transports = Transports(config)
    try:
        report = collect_cluster(config, config.nodes, transports)
    finally:
        transports.close()
    (node,) = report.nodes
    # Not a timeout: judged within the node's budget (docs/benchmarks.md has the cost).
    assert node.error is not None and node.error.kind is ErrorKind.PROBE_INVALID, node
    assert "limit" in node.error.message
    assert len(json.dumps(report.to_json())) < 10_000


def test_an_endless_line_is_invalid_in_watch_as_in_check(rig: SshdRig) -> None:
    # 5 MB without a newline or a marker: past the 4 MiB output cap either way.
    results = both_ways(rig, rig.flood_python, ticks=1)
    for result in results:
        assert isinstance(result, TransportError), result
        assert result.kind is ErrorKind.PROBE_INVALID
        assert result.message == "probe output exceeded 4194304 bytes"
