"""The in-process transport for the control host itself: the probe is imported, not streamed.

One ``Probe`` instance is kept per node name so that, in ``watch``, CPU and network rates are
measured between ticks and NVML initialises once.
"""

from __future__ import annotations

import threading
from typing import Any

from ugro_health import probe
from ugro_health.config import NodeConfig
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError, check_document


class LocalTransport:
    def __init__(self) -> None:
        self._probes: dict[str, probe.Probe] = {}
        self._lock = threading.Lock()

    def run_probe(
        self, node: NodeConfig, request: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        with self._lock:
            instance = self._probes.setdefault(node.name, probe.Probe())
        try:
            doc = instance.sample(request)
        except Exception as exc:  # the probe reports its own failures; this is a last resort
            raise TransportError(ErrorKind.PROBE_FAILED, f"{type(exc).__name__}: {exc}") from exc
        return check_document(doc)

    def forget(self, node_name: str) -> None:
        with self._lock:
            instance = self._probes.pop(node_name, None)
        if instance is not None:
            _release(instance)

    def close(self) -> None:
        with self._lock:
            instances = list(self._probes.values())
            self._probes.clear()
        for instance in instances:
            _release(instance)


def _release(instance: probe.Probe) -> None:
    """Shut NVML down, unless a sub-check is still hung: NVML's shutdown would wait behind a
    hung NVML call (as the remote probe's ``main()`` knows), and with it ``watch``'s exit."""
    if not instance.has_hung_checks:
        instance.close()
