"""Nodes behind one jump host share one connection to it, as OpenSSH's ControlMaster does.

A ``FaultProxy`` stands in front of the jump host's real sshd and counts the TCP connections it
accepts: a bastion must see one session for all the nodes behind it, not one per node, in
``check`` (one-shot) and across ``watch``'s ticks (persistent sessions). A cut of that shared
connection fails every node of that tick with a clear error, and the next tick opens exactly one
new connection; one node failing (refused, a black hole, a timeout) never closes it under the
others; a two-hop chain shares both hops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fault_proxy import FaultProxy
from sshd_rig import PROBE_REQUEST as REQUEST
from sshd_rig import SshdRig
from watch_rig import wait_for

from ugro_health.config import NodeConfig
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError

pytestmark = pytest.mark.ssh

NODES = 6


def enrol(rig: SshdRig, proxy: FaultProxy) -> None:
    """File the rig's host key for the proxy's port (known_hosts entries are per port)."""
    with rig.known_hosts.open("a") as fh:
        public = Path(f"{rig.host_key}.pub").read_text().split()[:2]
        fh.write(f"[127.0.0.1]:{proxy.port} {' '.join(public)}\n")


@pytest.fixture
def bastion(sshd_rig: SshdRig) -> Iterator[FaultProxy]:
    """node1's sshd as the jump host, behind a counting proxy."""
    with FaultProxy(sshd_rig.nodes["node1"].port) as proxy:
        enrol(sshd_rig, proxy)
        yield proxy


def behind(rig: SshdRig, jump: str, count: int = NODES, **overrides: Any) -> list[NodeConfig]:
    """``count`` node entries (node2's and node3's sshd, alternately) behind ``jump``."""
    targets = ("node2", "node3")
    return [
        replace(
            rig.node_config(targets[i % 2], proxy_jump=jump, **overrides),
            name=f"behind{i}",
        )
        for i in range(count)
    ]


def spec(rig: SshdRig, proxy: FaultProxy) -> str:
    return f"{rig.user}@127.0.0.1:{proxy.port}"


def poll_all(transport: Any, nodes: list[NodeConfig], budget: float = 30.0) -> list[Any]:
    """One round: every node at once, each its answer or its TransportError."""

    def one(node: NodeConfig) -> Any:
        try:
            return transport.run_probe(node, REQUEST, time.monotonic() + budget)
        except TransportError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return list(pool.map(one, nodes))


def ok(results: list[Any]) -> bool:
    return all(isinstance(r, dict) and r["ok"] is True for r in results)


def transport_threads(before: set[threading.Thread]) -> list[str]:
    """paramiko reader threads started since ``before`` and still running."""
    return [
        t.name
        for t in threading.enumerate()
        if t not in before and t.is_alive() and isinstance(t, paramiko.Transport)
    ]


def test_one_shot_nodes_behind_one_jump_host_open_one_connection_to_it(
    sshd_rig: SshdRig, bastion: FaultProxy
) -> None:
    # Round trips of 0.2 s make the jump host's handshake last a second or more: every poll
    # thread asks for it while the first one is still connecting (one handshake, not six).
    bastion.set(delay_s=0.1)
    before = set(threading.enumerate())
    transport = sshd_rig.transport(sshd_rig.settings(connect_timeout=10.0))
    try:
        results = poll_all(transport, behind(sshd_rig, spec(sshd_rig, bastion)), budget=60)
        assert ok(results), results
        assert bastion.accepted == 1
    finally:
        transport.close()
    wait_for(lambda: not transport_threads(before), 15, "paramiko's threads to end")
    wait_for(lambda: bastion.live() == 0, 15, "the jump connection to close")


def test_watch_sessions_keep_one_jump_connection_over_ticks(
    sshd_rig: SshdRig, bastion: FaultProxy
) -> None:
    before = set(threading.enumerate())
    transport = sshd_rig.transport(persistent=True)
    nodes = behind(sshd_rig, spec(sshd_rig, bastion))
    try:
        for _ in range(3):
            results = poll_all(transport, nodes)
            assert ok(results), results
        assert bastion.accepted == 1
        assert bastion.live() == 1
        assert len(sshd_rig.sessions("node1")) == 1  # one sshd session on the bastion
        # Nodes leaving one by one keep it open for the others; the last one closes it.
        for node in nodes[:-1]:
            transport.forget(node.name)
        assert ok(poll_all(transport, nodes[-1:]))
        assert bastion.live() == 1
        transport.forget(nodes[-1].name)
        wait_for(lambda: bastion.live() == 0, 15, "the last node to close the jump connection")
        assert ok(poll_all(transport, nodes[:2]))  # and the next one opens a new one
        assert bastion.accepted == 2
    finally:
        transport.close()
    wait_for(lambda: not transport_threads(before), 15, "paramiko's threads to end")
    wait_for(lambda: bastion.live() == 0, 15, "the jump connection to close")


def test_a_cut_jump_connection_fails_the_tick_and_the_next_opens_one_new(
    sshd_rig: SshdRig, bastion: FaultProxy
) -> None:
    transport = sshd_rig.transport(persistent=True)
    nodes = behind(sshd_rig, spec(sshd_rig, bastion))
    try:
        assert ok(poll_all(transport, nodes))
        assert bastion.accepted == 1
        # The bastion goes away: its connection is reset, and so is every new one.
        bastion.set(reset_first=10_000)
        bastion.reset_all()
        results = poll_all(transport, nodes, budget=15)
        assert all(isinstance(r, TransportError) for r in results), results
        for error in results:
            assert error.kind is ErrorKind.SSH_ERROR, error.message
            assert "jump host 127.0.0.1" in error.message, error.message
            assert "\n" not in error.message
        # It is back: the next tick reconnects every node through one new connection.
        bastion.clear()
        accepted = bastion.accepted
        assert ok(poll_all(transport, nodes))
        assert bastion.accepted == accepted + 1
        assert bastion.live() == 1
    finally:
        transport.close()


def test_a_reset_between_ticks_is_healed_by_one_new_connection(
    sshd_rig: SshdRig, bastion: FaultProxy
) -> None:
    transport = sshd_rig.transport(persistent=True)
    nodes = behind(sshd_rig, spec(sshd_rig, bastion))
    try:
        assert ok(poll_all(transport, nodes))
        bastion.reset_all()
        wait_for(lambda: bastion.live() == 0, 15, "the reset to land")
        time.sleep(0.5)  # paramiko's reader threads see their connections end
        assert ok(poll_all(transport, nodes))
        assert bastion.accepted == 2
        assert bastion.live() == 1
    finally:
        transport.close()


def test_one_failing_node_does_not_close_the_shared_connection(
    sshd_rig: SshdRig, bastion: FaultProxy
) -> None:
    jump = spec(sshd_rig, bastion)
    good = behind(sshd_rig, jump, 4)
    refused = replace(good[0], name="refused", port=sshd_rig.refused_port)
    silent = replace(good[0], name="silent", port=sshd_rig.blackhole_port)  # no banner, ever
    hanging = replace(good[0], name="hanging", python=sshd_rig.hang_python)
    settings = sshd_rig.settings(connect_timeout=2.0, command_timeout=2.0)
    # One-shot (check): one connection per round, closed with its last node. Persistent
    # (watch): one for both rounds.
    for persistent, per_round in ((False, 1), (True, 0)):
        transport = sshd_rig.transport(settings, persistent=persistent)
        accepted = bastion.accepted
        try:
            for round_ in range(2):
                results = poll_all(transport, [*good, refused, silent, hanging], budget=20)
                assert ok(results[:4]), results
                kinds = [r.kind if isinstance(r, TransportError) else r for r in results[4:]]
                assert kinds == [ErrorKind.UNREACHABLE, ErrorKind.TIMEOUT, ErrorKind.TIMEOUT]
                assert bastion.accepted == accepted + 1 + round_ * per_round
        finally:
            transport.close()


def test_a_short_deadline_bounds_the_wait_for_a_shared_connection(
    sshd_rig: SshdRig, bastion: FaultProxy
) -> None:
    bastion.set(stall=True)  # the first node waits the whole connect timeout for a banner
    transport = sshd_rig.transport(sshd_rig.settings(connect_timeout=6.0))
    slow, quick = behind(sshd_rig, spec(sshd_rig, bastion), 2)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(transport.run_probe, slow, REQUEST, time.monotonic() + 30)
            wait_for(lambda: bastion.accepted == 1, 15, "the first node to connect")
            start = time.monotonic()
            with pytest.raises(TransportError) as info:
                transport.run_probe(quick, REQUEST, start + 1.0)
            took = time.monotonic() - start
            assert info.value.kind is ErrorKind.TIMEOUT
            assert "jump host 127.0.0.1" in info.value.message
            assert took < 4.0, f"waited {took:.1f}s past a 1 s deadline"
            with pytest.raises(TransportError) as slow_info:
                first.result(timeout=60)
            assert slow_info.value.kind is ErrorKind.TIMEOUT
            assert "SSH banner (jump host 127.0.0.1)" in slow_info.value.message
        assert bastion.accepted == 1  # the quick node never opened a connection of its own
    finally:
        transport.close()


def test_a_two_hop_chain_shares_both_hops(sshd_rig: SshdRig, bastion: FaultProxy) -> None:
    # node1 (behind ``bastion``) then node3 (behind ``inner``, reached from node1) then node2.
    with FaultProxy(sshd_rig.nodes["node3"].port) as inner:
        enrol(sshd_rig, inner)
        hops = f"{spec(sshd_rig, bastion)},{spec(sshd_rig, inner)}"
        nodes = [
            replace(sshd_rig.node_config("node2", proxy_jump=hops), name=f"deep{i}")
            for i in range(4)
        ]
        transport = sshd_rig.transport(persistent=True)
        try:
            for _ in range(2):
                assert ok(poll_all(transport, nodes))
            assert (bastion.accepted, inner.accepted) == (1, 1)
        finally:
            transport.close()
        wait_for(lambda: inner.live() == 0, 15, "the second hop's connection to close")
    wait_for(lambda: bastion.live() == 0, 15, "the first hop's connection to close")
