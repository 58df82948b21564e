"""LocalTransport letting go of its probes: never waiting on NVML behind a hung GPU check.

There is no GPU here, so NVML is a fake module: its device count hangs (a wedged driver) until
the test releases it, and its shutdown waits behind that call, as NVML's own lock makes it.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import pytest

from ugro_health.config import NodeConfig
from ugro_health.transport.local import LocalTransport

REQUEST = {"window_s": 0, "subcheck_timeout_s": 0.3, "mounts": ["/"]}


def wedged_pynvml(release: threading.Event) -> Any:
    nv: Any = types.ModuleType("pynvml")
    nv.calls = []
    nv.nvmlInit = lambda: nv.calls.append("init")

    def count() -> int:
        release.wait(30)
        return 0

    def shutdown() -> None:
        nv.calls.append("shutdown")
        release.wait(30)  # behind the hung call

    nv.nvmlDeviceGetCount = count
    nv.nvmlShutdown = shutdown
    return nv


def returns_within(limit: float, call: Callable[[], None]) -> bool:
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(limit)
    return not thread.is_alive()


@pytest.mark.parametrize("release_by", ["forget", "close"])
def test_a_hung_gpu_check_does_not_hang_forget_or_close(
    monkeypatch: pytest.MonkeyPatch, release_by: str
) -> None:
    release = threading.Event()
    nv = wedged_pynvml(release)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    transport = LocalTransport()
    node = NodeConfig(name="here", host="localhost")
    try:
        doc = transport.run_probe(node, REQUEST, time.monotonic() + 5)
        assert doc["errors"]["nvml"] == "timeout after 0.3s"
        if release_by == "forget":
            assert returns_within(1.0, lambda: transport.forget("here"))
        else:
            assert returns_within(1.0, transport.close)
        assert "shutdown" not in nv.calls
    finally:
        release.set()


def test_nvml_is_shut_down_when_nothing_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    release.set()  # the driver answers
    nv = wedged_pynvml(release)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    transport = LocalTransport()
    node = NodeConfig(name="here", host="localhost")
    assert transport.run_probe(node, REQUEST, time.monotonic() + 5)["ok"] is True
    transport.forget("here")
    assert nv.calls == ["init", "shutdown"]
