"""SshTransport(persistent=True) against real sshd: one connection and one live probe per node.

The rig's sshd processes run on this machine, so the tests look at them from outside: the
per-connection sshd children of a node's listener count its SSH connections, and the probe
interpreters under it are the remote probe processes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sshd_rig import PROBE_REQUEST as REQUEST
from sshd_rig import REMOTE_PYTHON, SshdRig

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError

pytestmark = pytest.mark.ssh


@pytest.fixture
def rig(sshd_rig: SshdRig) -> Iterator[SshdRig]:
    """The session rig, with a node of this test's own that it may stop and restart."""
    if "persist" not in sshd_rig.nodes:
        sshd_rig.start_node("persist")
    elif sshd_rig.nodes["persist"].process.poll() is not None:
        sshd_rig.restart_node("persist")
    yield sshd_rig


def tick(transport: Any, node: Any, timeout: float = 15.0) -> dict[str, Any]:
    return transport.run_probe(node, REQUEST, time.monotonic() + timeout)


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_ticks_reuse_one_connection_and_one_probe_process(rig: SshdRig) -> None:
    node = rig.node_config("persist")
    transport = rig.transport(persistent=True)
    try:
        first = tick(transport, node)
        assert first["ok"] is True
        assert first["cpu"]["util_pct"] is not None  # the first tick sampled over its window
        sessions = [p.pid for p in rig.sessions("persist")]
        probes = [p.pid for p in rig.probe_processes("persist")]
        assert len(sessions) == 1
        assert len(probes) == 1
        for _ in range(5):
            time.sleep(0.06)  # the probe measures CPU between ticks at least 50 ms apart
            doc = tick(transport, node)
            assert doc["ok"] is True
            assert doc["cpu"]["util_pct"] is not None
        assert [p.pid for p in rig.sessions("persist")] == sessions
        assert [p.pid for p in rig.probe_processes("persist")] == probes
    finally:
        transport.close()
    # close() asked the probe to exit and closed the connection.
    assert wait_for(lambda: not rig.sessions("persist"))


def test_nodes_tick_in_parallel_each_with_its_own_session(rig: SshdRig) -> None:
    names = ("node1", "node2", "node3", "persist")
    nodes = [rig.node_config(name) for name in names]
    transport = rig.transport(persistent=True)
    try:
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            for _ in range(3):
                docs = list(pool.map(lambda n: tick(transport, n), nodes))
                assert all(doc["ok"] for doc in docs)
        for name in names:
            assert len(rig.probe_processes(name)) == 1
    finally:
        transport.close()


def test_a_killed_probe_is_restarted_by_the_next_tick(rig: SshdRig) -> None:
    node = rig.node_config("persist")
    transport = rig.transport(persistent=True)
    try:
        assert tick(transport, node)["ok"] is True
        (old,) = rig.probe_processes("persist")
        sessions = [p.pid for p in rig.sessions("persist")]
        os.kill(old.pid, signal.SIGKILL)
        old.wait(timeout=5)

        assert tick(transport, node)["ok"] is True  # no error reported for the restart

        (new,) = rig.probe_processes("persist")
        assert new.pid != old.pid
        assert [p.pid for p in rig.sessions("persist")] == sessions  # same connection
    finally:
        transport.close()


def test_a_probe_killed_just_before_the_tick_is_restarted(rig: SshdRig) -> None:
    # No pause between the kill and the tick: the tick may find the channel open, write its
    # request and only then read EOF; it retries once on a fresh probe.
    node = rig.node_config("persist")
    transport = rig.transport(persistent=True)
    try:
        for _ in range(3):
            assert tick(transport, node)["ok"] is True
            (old,) = rig.probe_processes("persist")
            os.kill(old.pid, signal.SIGKILL)
            assert tick(transport, node)["ok"] is True
    finally:
        transport.close()


def test_a_stopped_node_fails_fast_and_reconnects_when_back(rig: SshdRig) -> None:
    node = rig.node_config("persist")
    transport = rig.transport(persistent=True)
    try:
        assert tick(transport, node)["ok"] is True
        rig.stop_node("persist")

        start = time.monotonic()
        with pytest.raises(TransportError) as info:
            tick(transport, node)
        assert time.monotonic() - start < 1.0
        assert info.value.kind is ErrorKind.REFUSED

        rig.restart_node("persist")
        assert tick(transport, node)["ok"] is True
        assert len(rig.sessions("persist")) == 1
        assert len(rig.probe_processes("persist")) == 1
    finally:
        transport.close()


def test_a_hung_probe_times_out_at_the_deadline_and_the_next_tick_starts_clean(
    rig: SshdRig,
) -> None:
    settings = rig.settings(command_timeout=1.0)
    transport = rig.transport(settings, persistent=True)
    try:
        hung = rig.node_config("persist", python=rig.hang_python)
        start = time.monotonic()
        with pytest.raises(TransportError) as info:
            tick(transport, hung)
        elapsed = time.monotonic() - start
        assert info.value.kind is ErrorKind.TIMEOUT
        assert info.value.message == "timed out after 1.0s waiting for probe output"
        assert 0.9 < elapsed < 1.0 + 1.0

        # The overall deadline bounds a tick too.
        start = time.monotonic()
        with pytest.raises(TransportError) as info:
            tick(transport, hung, timeout=0.5)
        assert info.value.kind is ErrorKind.TIMEOUT
        assert time.monotonic() - start < 0.5 + 1.0

        # A healthy interpreter on the same node: the tick starts a fresh probe and answers.
        assert tick(transport, rig.node_config("persist"))["ok"] is True
    finally:
        transport.close()


def test_a_missing_interpreter_is_a_probe_failure(rig: SshdRig) -> None:
    transport = rig.transport(persistent=True)
    try:
        node = rig.node_config("persist", python="/nonexistent/python3")
        with pytest.raises(TransportError) as info:
            tick(transport, node)
        assert info.value.kind is ErrorKind.PROBE_FAILED
        assert "not found" in info.value.message
    finally:
        transport.close()


def test_noise_before_the_answer_is_skipped(rig: SshdRig) -> None:
    chatty = rig.root / "chatty_python"
    chatty.write_text(f'#!/bin/sh\necho "welcome to the node"\nexec {REMOTE_PYTHON} "$@"\n')
    chatty.chmod(0o755)
    transport = rig.transport(persistent=True)
    try:
        node = rig.node_config("persist", python=str(chatty))
        for _ in range(3):
            assert tick(transport, node)["ok"] is True
    finally:
        transport.close()


def test_forget_drops_the_session(rig: SshdRig) -> None:
    node = rig.node_config("persist")
    transport = rig.transport(persistent=True)
    try:
        assert tick(transport, node)["ok"] is True
        (old,) = rig.probe_processes("persist")
        transport.forget("persist")
        assert wait_for(lambda: not rig.probe_processes("persist"))
        assert wait_for(lambda: not rig.sessions("persist"))
        transport.forget("persist")  # forgetting an unknown node is a no-op
        assert tick(transport, node)["ok"] is True
        (new,) = rig.probe_processes("persist")
        assert new.pid != old.pid
    finally:
        transport.close()


def test_warm_ticks_ask_for_no_sampling_window(rig: SshdRig) -> None:
    # The window (here 2 s) is slept only on a probe's first tick; later ones measure
    # between ticks and answer at once.
    node = rig.node_config("persist")
    transport = rig.transport(persistent=True)
    slow = {**REQUEST, "window_s": 2.0}
    try:
        start = time.monotonic()
        transport.run_probe(node, slow, time.monotonic() + 15)
        assert time.monotonic() - start >= 2.0
        start = time.monotonic()
        transport.run_probe(node, slow, time.monotonic() + 15)
        assert time.monotonic() - start < 1.0
    finally:
        transport.close()


def test_garbage_output_is_invalid_as_under_check(rig: SshdRig) -> None:
    # The same judgement as one-shot `check` (test_ssh_transport's garbage test).
    transport = rig.transport(persistent=True)
    try:
        node = rig.node_config("persist", python=rig.garbage_python)
        with pytest.raises(TransportError) as info:
            tick(transport, node)
        assert info.value.kind is ErrorKind.PROBE_INVALID
        assert info.value.message == "no probe answer in output: 'hello'"
    finally:
        transport.close()


def test_a_tick_behind_an_overrunning_one_gives_up_at_its_own_deadline(rig: SshdRig) -> None:
    settings = rig.settings(command_timeout=3.0)
    transport = rig.transport(settings, persistent=True)
    hung = rig.node_config("persist", python=rig.hang_python)
    try:
        before = {p.pid for p in rig.sessions("persist")}
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(tick, transport, hung)
            # Once it has connected, the first tick holds the node's session.
            assert wait_for(lambda: {p.pid for p in rig.sessions("persist")} - before)
            start = time.monotonic()
            with pytest.raises(TransportError) as info:
                tick(transport, hung, timeout=0.5)
            assert time.monotonic() - start < 0.5 + 0.5
            assert info.value.kind is ErrorKind.TIMEOUT
            assert info.value.message == "previous poll of this node still running"
            with pytest.raises(TransportError) as info:
                first.result(timeout=10)
            assert info.value.message == "timed out after 3.0s waiting for probe output"
    finally:
        transport.close()
