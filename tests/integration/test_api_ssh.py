"""The Python API against the real sshd rig: cancelling an async monitor while a node stalls
mid-round closes every SSH session and thread in bounded time, on asyncio and on trio."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import paramiko
import pytest
from fault_proxy import FaultProxy
from sshd_rig import SshdRig
from watch_rig import wait_for

from ugro_health import HealthMonitor
from ugro_health.config import Config

pytestmark = [pytest.mark.ssh, pytest.mark.slow]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stalling(sshd_rig: SshdRig) -> Iterator[FaultProxy]:
    """Node ``apistall`` (an sshd of its own) behind a fault proxy, enrolled on the proxy port."""
    sshd_rig.start_node("apistall")
    sshd_rig.start_node("apiok")
    with FaultProxy(sshd_rig.nodes["apistall"].port) as proxy:
        public = Path(f"{sshd_rig.host_key}.pub").read_text().split()[:2]
        with sshd_rig.known_hosts.open("a") as fh:
            fh.write(f"[127.0.0.1]:{proxy.port} {' '.join(public)}\n")
        yield proxy
    sshd_rig.stop_node("apistall")
    sshd_rig.stop_node("apiok")


def transports_alive(before: set[threading.Thread]) -> list[str]:
    """Threads the monitor started that still run: its own and paramiko's (one per session)."""
    return [
        t.name
        for t in threading.enumerate()
        if t not in before
        and t.is_alive()
        and (t.name.startswith("ugro-") or isinstance(t, paramiko.Transport))
    ]


@pytest.mark.anyio
async def test_cancelling_mid_round_closes_every_session_and_thread(
    sshd_rig: SshdRig, stalling: FaultProxy, tmp_path: Path
) -> None:
    stalled = replace(sshd_rig.node_config("apistall"), port=stalling.port)
    config = Config(
        nodes=(sshd_rig.node_config("apiok"), stalled),
        # A stalled node would hold the round for its whole budget (over a minute): only the
        # cancellation can end it sooner.
        ssh=sshd_rig.settings(connect_timeout=5.0, command_timeout=60.0),
    )
    before = set(threading.enumerate())
    monitor = HealthMonitor(config, state_dir=tmp_path, interval_s=1.0)
    cancelled_at = None
    with anyio.fail_after(180):
        async with anyio.create_task_group() as tg:
            tg.start_soon(monitor.run_async)
            while monitor.stats.cycles < 1:
                await anyio.sleep(0.05)
            # Both nodes answered: a live session (and probe) on each.
            assert len(sshd_rig.probe_processes("apistall")) == 1
            assert len(sshd_rig.probe_processes("apiok")) == 1
            stalling.set(stall=True)
            rounds = monitor.stats.cycles
            # The next round is in flight and its request is stuck in the proxy.
            while not (monitor.engine.scheduler.in_flight and monitor.stats.cycles == rounds):
                await anyio.sleep(0.02)
            await anyio.sleep(1.0)
            assert monitor.stats.cycles == rounds  # the round is still waiting for apistall
            cancelled_at = time.monotonic()
            tg.cancel_scope.cancel()
    took = time.monotonic() - cancelled_at
    assert took < 20, f"closing took {took:.1f}s"
    # paramiko's reader threads notice their closed socket within a second or so.
    wait_for(lambda: not transports_alive(before), 15, "the monitor's threads to end")
    # The sshd side saw each connection end: no session, no probe left on either node.
    wait_for(lambda: not sshd_rig.probe_processes("apiok"), 15, "apiok's probe to exit")
    wait_for(lambda: not sshd_rig.sessions("apiok"), 15, "apiok's session to end")
    # The stalled link holds our close (and the request) as it held everything: once the
    # network flows again, sshd reads that the client is gone and ends the session.
    stalling.clear()
    wait_for(lambda: not sshd_rig.sessions("apistall"), 15, "apistall's session to end")
    assert monitor.stats.cycles == rounds  # the abandoned round was not reported
