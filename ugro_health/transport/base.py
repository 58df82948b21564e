"""What every transport offers the engine, and how the probe's answer is read.

A transport runs the probe on one node and returns its JSON document (a dict), or raises
``TransportError`` with a classified ``ErrorKind``. Nothing else may escape a transport: the
engine turns that error into a node report.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from ugro_health.config import NodeConfig
from ugro_health.model import ErrorKind

RESPONSE_PREFIX = b"UGRO1 "
# Where a transport puts the wall-clock instants its request was sent and its answer received,
# ``(sent, received)``, in the document it returns (a tuple: no JSON answer can forge one). The
# node stamps its clock between the two, which bounds the skew (engine.collect, clock_skew).
EXCHANGE_KEY = "\x00exchange"


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


# The most objects and arrays one answer may hold. One within model.ANSWER_LIMITS (32 GPUs of 64
# processes, 256 mounts, 256 interfaces, ...) holds a few thousand; a million empty ``{}`` fit
# under the output cap and would cost gigabytes once decoded, judged and stored. Counted on the
# raw bytes before decoding: a brace inside a string counts too, so the bound is generous.
MAX_JSON_CONTAINERS = 100_000


def find_frame(data: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """Where the first complete answer frame in ``data`` (from ``start``) lies: the offset of
    its ``UGRO1 `` marker and the offset just past its newline; None when there is none yet.

    The marker counts anywhere, not only at a line's start: a login shell that prints text
    without a newline (``printf "motd "``) puts it on the same line as the first frame.
    """
    begin = data.find(RESPONSE_PREFIX, start)
    if begin < 0:
        return None
    end = data.find(b"\n", begin)
    return None if end < 0 else (begin, end + 1)


def parse_response_line(line: bytes) -> dict[str, Any] | None:
    """The probe document in one output line, or None for a line that is not a response.

    A line is a response when it holds the ``UGRO1 `` marker, wherever (noise may precede it).
    Raises ``TransportError(PROBE_INVALID)`` for a response that is not a JSON object, or that
    holds more than ``MAX_JSON_CONTAINERS`` objects and arrays.
    """
    begin = line.find(RESPONSE_PREFIX)
    if begin < 0:
        return None
    body = line[begin + len(RESPONSE_PREFIX) :].strip()
    containers = body.count(b"{") + body.count(b"[")
    if containers > MAX_JSON_CONTAINERS:
        raise TransportError(
            ErrorKind.PROBE_INVALID,
            f"probe answer holds {containers} objects and arrays"
            f" (limit {MAX_JSON_CONTAINERS}, docs/probe-protocol.md)",
        )
    try:
        # An overflowing literal (1e999) still parses, as inf: ``model.as_float`` drops it.
        doc = json.loads(body, parse_constant=_no_constant)
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
    frame = find_frame(raw)
    if frame is None and raw.find(RESPONSE_PREFIX) >= 0:  # the last line may lack its newline
        frame = (raw.find(RESPONSE_PREFIX), len(raw))
    if frame is not None:
        doc = parse_response_line(raw[frame[0] : frame[1]])
        assert doc is not None  # the slice starts with the marker
        return doc
    preview = raw[:120].decode("utf-8", "replace").strip() or "<no output>"
    raise TransportError(ErrorKind.PROBE_INVALID, f"no probe answer in output: {preview!r}")


def stamp_exchange(doc: dict[str, Any], sent: float) -> dict[str, Any]:
    """``doc`` with its exchange times: ``sent`` (``time.time()`` as the request left) and now."""
    doc[EXCHANGE_KEY] = (sent, time.time())
    return doc


def check_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Raise ``PROBE_FAILED`` for a probe that reported its own failure."""
    if doc.get("ok") is False:
        raise TransportError(ErrorKind.PROBE_FAILED, str(doc.get("error") or "probe failed"))
    return doc
