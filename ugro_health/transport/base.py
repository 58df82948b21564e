"""What every transport offers the engine, and how the probe's answer is read.

A transport runs the probe on one node and returns its JSON document (a dict), or raises
``TransportError`` with a classified ``ErrorKind``. Nothing else may escape a transport: the
engine turns that error into a node report.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from ugro_health.config import NodeConfig
from ugro_health.model import ErrorKind

RESPONSE_PREFIX = b"UGRO1 "


class TransportError(Exception):
    def __init__(self, kind: ErrorKind, message: str, *, at_deadline: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        # A timeout whose phase the caller's deadline cut shorter than the phase's own limit.
        self.at_deadline = at_deadline


class Transport(Protocol):
    def run_probe(
        self, node: NodeConfig, request: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        """Run the probe once on ``node``; ``deadline`` is a ``time.monotonic()`` instant."""
        ...

    def forget(self, node_name: str) -> None:
        """Drop whatever is kept for ``node_name`` (a persistent session, a probe instance)."""
        ...

    def close(self) -> None: ...


def _no_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and neither do our outputs.
    raise ValueError(f"{name} is not a JSON number")


def parse_response_line(line: bytes) -> dict[str, Any] | None:
    """The probe document in one output line, or None for a line that is not a response.

    Raises ``TransportError(PROBE_INVALID)`` for a response line that is not a JSON object.
    """
    line = line.strip()
    if not line.startswith(RESPONSE_PREFIX):
        return None
    try:
        # An overflowing literal (1e999) still parses, as inf: ``model.as_float`` drops it.
        doc = json.loads(line[len(RESPONSE_PREFIX) :], parse_constant=_no_constant)
    except ValueError as exc:
        raise TransportError(
            ErrorKind.PROBE_INVALID, f"probe answered invalid JSON: {exc}"
        ) from exc
    except RecursionError as exc:  # [[[[...]]]] deep enough to exhaust the parser's stack
        raise TransportError(
            ErrorKind.PROBE_INVALID, "probe answered JSON nested too deep"
        ) from exc
    if not isinstance(doc, dict):
        raise TransportError(ErrorKind.PROBE_INVALID, "probe answered JSON that is not an object")
    return doc


def parse_probe_output(raw: bytes) -> dict[str, Any]:
    """The first probe document in ``raw`` (one-shot output), ignoring shell noise around it."""
    for line in raw.splitlines():
        doc = parse_response_line(line)
        if doc is not None:
            return doc
    preview = raw[:120].decode("utf-8", "replace").strip() or "<no output>"
    raise TransportError(ErrorKind.PROBE_INVALID, f"no probe answer in output: {preview!r}")


def check_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Raise ``PROBE_FAILED`` for a probe that reported its own failure."""
    if doc.get("ok") is False:
        raise TransportError(ErrorKind.PROBE_FAILED, str(doc.get("error") or "probe failed"))
    return doc
