"""The network and sshd fault suite: a real sshd behind the suite's own fault proxy.

Each test sets one fault (``fault_proxy.FaultProxy``: latency, stall, reset, cut, slow link) or
one sshd misbehaviour (MaxSessions 1, a re-keyed host, an ancient Python) and checks what the
README promises: a node is reported with a classified one-line error within its budget, never
hangs the caller, and recovers by itself once the fault ends. docs/reliability.md lists the
faults, with the faults covered elsewhere (tests/integration, tests/system) beside these.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy
from sshd_rig import PROBE_REQUEST as REQUEST
from sshd_rig import SshdRig
from watch_rig import running_monitor, wait_for

from ugro_health.config import Config, NodeConfig
from ugro_health.engine.breaker import BreakerPolicy, BreakerState
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError

pytestmark = [pytest.mark.ssh, pytest.mark.slow]


@pytest.fixture
def proxy(sshd_rig: SshdRig) -> Iterator[FaultProxy]:
    with FaultProxy(sshd_rig.nodes["node1"].port) as proxied:
        yield proxied


def via_proxy(rig: SshdRig, proxy: FaultProxy, name: str = "proxied") -> NodeConfig:
    """A node reached through ``proxy`` (node1's sshd; its known_hosts entry is per port)."""
    with rig.known_hosts.open("a") as fh:
        public = Path(f"{rig.host_key}.pub").read_text().split()[:2]
        fh.write(f"[127.0.0.1]:{proxy.port} {' '.join(public)}\n")
    return replace(rig.node_config("node1"), name=name, port=proxy.port)


def probe(transport: Any, node: NodeConfig, budget: float) -> dict[str, Any]:
    return transport.run_probe(node, REQUEST, time.monotonic() + budget)


def failure(transport: Any, node: NodeConfig, budget: float) -> tuple[TransportError, float]:
    start = time.monotonic()
    with pytest.raises(TransportError) as info:
        probe(transport, node, budget)
    return info.value, time.monotonic() - start


def test_latency_each_way_stays_within_the_budget(sshd_rig: SshdRig, proxy: FaultProxy) -> None:
    proxy.set(delay_s=0.3)  # 600 ms round trips: a handful of them to connect and probe
    node = via_proxy(sshd_rig, proxy)
    transport = sshd_rig.transport(sshd_rig.settings(connect_timeout=5.0))
    assert probe(transport, node, 30)["ok"] is True


def test_a_slow_link_still_answers(sshd_rig: SshdRig, proxy: FaultProxy) -> None:
    proxy.set(rate_bps=64_000)  # the probe's source (~100 kB) goes up in a couple of seconds
    node = via_proxy(sshd_rig, proxy)
    transport = sshd_rig.transport(sshd_rig.settings(connect_timeout=5.0, command_timeout=20.0))
    assert probe(transport, node, 40)["ok"] is True


def test_packet_loss_delays_but_the_node_answers_within_its_budget(
    sshd_rig: SshdRig, proxy: FaultProxy
) -> None:
    # Loss emulated as TCP sees it: a fifth of the chunks wait 0.2-1 s for a "retransmission".
    proxy.set(loss=0.2, loss_delay_s=(0.2, 1.0))
    node = via_proxy(sshd_rig, proxy)
    transport = sshd_rig.transport(sshd_rig.settings(connect_timeout=5.0, command_timeout=20.0))
    assert probe(transport, node, 40)["ok"] is True
    assert proxy.retransmitted > 0  # the link really was lossy


def test_loss_heavier_than_the_budget_is_a_timeout_at_the_deadline(
    sshd_rig: SshdRig, proxy: FaultProxy
) -> None:
    proxy.set(loss=1.0, loss_delay_s=(2.0, 3.0))  # every chunk retransmitted, slowly
    node = via_proxy(sshd_rig, proxy)
    transport = sshd_rig.transport(sshd_rig.settings(connect_timeout=10.0))
    error, elapsed = failure(transport, node, 4.0)
    assert error.kind is ErrorKind.TIMEOUT and error.at_deadline, error
    assert "timed out after" in str(error), error
    assert elapsed < 4.0 + 3.0  # bounded by the budget, not by the lossy link
    assert proxy.retransmitted > 0


def test_a_stall_before_the_banner_times_out_in_the_banner_phase(
    sshd_rig: SshdRig, proxy: FaultProxy
) -> None:
    proxy.set(stall=True)
    node = via_proxy(sshd_rig, proxy)
    error, elapsed = failure(sshd_rig.transport(sshd_rig.settings(connect_timeout=1.0)), node, 20)
    assert error.kind is ErrorKind.TIMEOUT
    assert error.message == "timed out after 1.0s waiting for SSH banner"
    assert elapsed < 1.0 + 2.0


def test_resets_before_the_banner_are_retried_within_the_budget(
    sshd_rig: SshdRig, proxy: FaultProxy
) -> None:
    # What sshd's MaxStartups does to a connection over its limit: closed before the banner.
    proxy.set(reset_first=2)
    node = via_proxy(sshd_rig, proxy)
    assert probe(sshd_rig.transport(), node, 20)["ok"] is True
    assert proxy.accepted == 3


def test_a_server_that_always_resets_is_reported_after_a_few_tries(
    sshd_rig: SshdRig, proxy: FaultProxy
) -> None:
    proxy.set(reset_first=1000)
    node = via_proxy(sshd_rig, proxy)
    error, elapsed = failure(sshd_rig.transport(), node, 20)
    assert error.kind is ErrorKind.SSH_ERROR
    # The reset comes back from connect() or while reading the banner, as timing has it.
    assert error.message.startswith("connection closed"), error.message
    assert error.message.endswith("(5 tries)")
    assert proxy.accepted == 5 and elapsed < 10


def test_a_reset_that_lands_before_the_handshake_reads_is_retried_like_any_other(
    sshd_rig: SshdRig, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under load the RST can arrive between connect() and the first use of the socket (its
    # peer address, for CheckHostIP): getpeername() then fails with ENOTCONN. Make that the
    # rule here by pausing after each connect().
    connect = socket.socket.connect

    def connect_then_pause(sock: socket.socket, address: Any) -> None:
        connect(sock, address)
        time.sleep(0.2)

    monkeypatch.setattr(socket.socket, "connect", connect_then_pause)
    proxy.set(reset_first=1000)
    node = via_proxy(sshd_rig, proxy)
    error, _ = failure(sshd_rig.transport(), node, 20)
    assert error.kind is ErrorKind.SSH_ERROR
    assert error.message.startswith("connection closed"), error.message
    assert error.message.endswith("(5 tries)")
    assert proxy.accepted == 5


def test_a_connection_cut_mid_answer_is_a_connection_error(
    sshd_rig: SshdRig, proxy: FaultProxy
) -> None:
    node = via_proxy(sshd_rig, proxy)
    transport = sshd_rig.transport()
    assert probe(transport, node, 20)["ok"] is True
    whole = proxy.last_from_server
    for rst in (False, True):  # a FIN, then an RST, a few hundred bytes before the end
        proxy.set(cut_after=whole - 300, cut_rst=rst)
        error, elapsed = failure(transport, node, 20)
        assert error.kind is ErrorKind.SSH_ERROR, error
        assert elapsed < 5, elapsed  # found at once, not at the deadline


def test_a_probe_timeout_under_max_sessions_1_leaves_the_next_tick_working(
    sshd_rig: SshdRig, tmp_path: Path
) -> None:
    sshd_rig.start_node("onesession", options=("MaxSessions 1",))
    # The probe hangs on its first start only (the marker is written as the login user).
    scratch = sshd_rig.root / "onesession"
    scratch.mkdir(exist_ok=True)
    scratch.chmod(0o777)
    marker = scratch / "hung_once"
    hang_once = sshd_rig.root / "hang_once_python"
    hang_once.write_text(
        f"#!/bin/sh\nif [ ! -e {marker} ]; then : > {marker}; exec sleep 30; fi\n"
        'exec /usr/bin/python3 "$@"\n'
    )
    hang_once.chmod(0o755)
    marker.unlink(missing_ok=True)
    node = sshd_rig.node_config("onesession", python=str(hang_once))
    # A command timeout well under the hung probe's 30 s, and long enough for a healthy probe
    # on a loaded machine (1.5 s was not, at a load average of 35).
    transport = sshd_rig.transport(sshd_rig.settings(command_timeout=6.0), persistent=True)
    try:
        error, _ = failure(transport, node, 10)
        assert error.kind is ErrorKind.TIMEOUT
        # The hung probe still holds the connection's one session on the server.
        assert probe(transport, node, 15)["ok"] is True
        assert probe(transport, node, 15)["ok"] is True
    finally:
        transport.close()
        sshd_rig.stop_node("onesession")


def test_a_slot_wait_that_outlasts_the_deadline_is_a_timeout_at_the_deadline(
    sshd_rig: SshdRig,
) -> None:
    # One connection at a time to the black hole: the first holds the slot in its banner
    # phase (3 s), the second's whole budget (1 s) passes waiting for it.
    settings = sshd_rig.settings(connect_timeout=3.0, max_startups=1)
    transport = sshd_rig.transport(settings)
    hole = sshd_rig.node_config("node1", port=sshd_rig.blackhole_port)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(failure, transport, hole, 10)
        time.sleep(0.5)
        error, elapsed = failure(transport, replace(hole, name="second"), 1.0)
        assert first.result()[0].kind is ErrorKind.TIMEOUT
    assert error.kind is ErrorKind.TIMEOUT and error.at_deadline
    where = f"127.0.0.1:{sshd_rig.blackhole_port}"
    assert error.message.startswith("timed out after ")
    assert error.message.endswith(f"waiting for a connection slot to {where}")
    assert elapsed < 1.0 + 1.0


def test_a_rekeyed_host_is_refused_mid_watch_never_accepted(sshd_rig: SshdRig) -> None:
    sshd_rig.start_node("rekeyed")
    node = sshd_rig.node_config("rekeyed")
    known = sshd_rig.known_hosts.read_text()
    transport = sshd_rig.transport(persistent=True, accept_new=True)
    try:
        assert probe(transport, node, 15)["ok"] is True
        sshd_rig.stop_node("rekeyed")
        config = sshd_rig.root / "sshd_rekeyed.conf"
        text = config.read_text().replace(str(sshd_rig.host_key), str(sshd_rig.other_host_key))
        config.write_text(text)
        sshd_rig.restart_node("rekeyed")
        for _ in range(2):
            error, _ = failure(transport, node, 15)
            assert error.kind is ErrorKind.HOST_KEY_CHANGED, error
        assert sshd_rig.known_hosts.read_text() == known
    finally:
        transport.close()
        sshd_rig.stop_node("rekeyed")


def test_python_2_7_on_the_node_is_a_clear_error(sshd_rig: SshdRig) -> None:
    pyenv = Path("/root/.pyenv/versions/2.7.18")
    if not (pyenv / "bin/python2.7").exists():
        pytest.skip("pyenv's Python 2.7.18 is not installed")
    # pyenv's tree is under /root, closed to the rig's login user: a copy of the interpreter.
    home = sshd_rig.root / "py27"
    (home / "lib").mkdir(parents=True, exist_ok=True)
    (home / "bin").mkdir(exist_ok=True)
    shutil.copy(pyenv / "bin/python2.7", home / "bin/python2.7")
    shutil.copy(pyenv / "lib/libpython2.7.so.1.0", home / "lib/")
    wrapper = home / "python"
    wrapper.write_text(f'#!/bin/sh\nLD_LIBRARY_PATH={home}/lib exec {home}/bin/python2.7 -S "$@"\n')
    wrapper.chmod(0o755)
    node = sshd_rig.node_config("node2", python=str(wrapper))
    for transport in (sshd_rig.transport(), sshd_rig.transport(persistent=True)):
        try:
            error, _ = failure(transport, node, 15)
        finally:
            transport.close()
        assert error.kind is ErrorKind.PROBE_FAILED
        assert "the probe needs Python 3.6 or newer" in error.message, error.message
        assert "is 2.7.18" in error.message


def test_a_stall_mid_watch_isolates_the_node_and_it_recovers(
    sshd_rig: SshdRig, proxy: FaultProxy, tmp_path: Path
) -> None:
    stalled = via_proxy(sshd_rig, proxy, "stalled")
    nodes = (sshd_rig.node_config("node2"), stalled)
    config = Config(nodes=nodes, ssh=sshd_rig.settings(connect_timeout=1.0, command_timeout=2.0))
    breakers = BreakerPolicy(failure_threshold=2, reset_base_s=2.0, reset_max_s=4.0)
    with running_monitor(config, tmp_path, breakers) as (monitor, cycles):
        wait_for(lambda: len(cycles) >= 2, 30, "two healthy cycles")
        proxy.set(stall=True)  # the session's connection stops carrying bytes, stays open
        wait_for(lambda: "stalled" in _events(cycles, "node_isolated"), 40, "stalled isolated")
        report = monitor.view.reports["stalled"]
        assert report.error is not None and report.error.kind.value in ("timeout", "skipped")
        assert monitor.view.reports["node2"].reachable
        proxy.clear()
        wait_for(lambda: "stalled" in _events(cycles, "node_recovered"), 40, "recovered")
        assert monitor.breakers["stalled"].state is BreakerState.CLOSED


def _events(cycles: list[Any], code: str) -> list[str]:
    return [e.node for c in cycles for e in c.events if e.alert.code == code]
