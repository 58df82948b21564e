"""How much of a probe answer is kept, and which values are physically possible.

A leaf module (standard library only), imported by ``model``, whose ``from_probe`` applies
these while it reads an answer: docs/probe-protocol.md ("Limits") documents every number.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

# What is kept of a probe answer (docs/probe-protocol.md, "Limits"). A list longer than its
# limit is cut to its first entries and a text to its first characters, noted under
# ``errors["answer:limits"]``; they bound the work and memory a node's answer costs, and the size
# of the history record it becomes (under RECORD_MAX_BYTES whatever the node sends).
ANSWER_LIMITS = {
    "gpus": 32,
    "gpus[].processes": 64,
    "gpus[].throttle_reasons": 16,
    "disks": 256,
    "network": 256,
    "xids": 64,
    "matched_processes": 256,
    "matched_descendants": 256,
    "errors": 64,
}
MAX_NAME_CHARS = 128  # a name from a node: host, GPU, process, mount, interface, version
MAX_TEXT_CHARS = 256  # a message from a node: an error, an XID line, a command line
RECORD_MAX_BYTES = 1 << 20  # the most one node's report can take as JSON (tests hold it)

_EXA = float(1 << 60)
# Physical ranges by field name (units in the name; docs/probe-protocol.md lists them): a value
# outside is a broken sensor or a lying node, read as ``None`` and noted under
# ``errors["answer:ranges"]`` rather than scored.
FIELD_RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("util_pct", "mem_util_pct", "swap_util_pct"), (0.0, 100.0)),
    "temp_c": (-50.0, 200.0),
    **dict.fromkeys(("power_w", "power_limit_w"), (0.0, 10_000.0)),
    **dict.fromkeys(
        (
            "total_bytes",
            "used_bytes",
            "avail_bytes",
            "swap_total_bytes",
            "swap_used_bytes",
            "mem_used_bytes",
            "mem_total_bytes",
            "used_memory_bytes",
        ),
        (0.0, _EXA * 1024),
    ),
    **dict.fromkeys(("load1", "load5", "load15"), (0.0, 1e6)),
    "cores": (1.0, 1 << 20),
    **dict.fromkeys(("count", "zombies", "pid"), (0.0, 1 << 22)),  # Linux's largest pid_max
    **dict.fromkeys(("uptime_s", "kernel_time_s"), (0.0, 1e10)),
    "time": (0.0, 1e11),
    **dict.fromkeys(("pcie_gen", "pcie_gen_max"), (0.0, 16.0)),
    **dict.fromkeys(("pcie_width", "pcie_width_max"), (0.0, 64.0)),
    **dict.fromkeys(("nvlink_active", "nvlink_total"), (0.0, 64.0)),
    **dict.fromkeys(
        (
            "ecc_uncorrected_volatile",
            "ecc_corrected_volatile",
            "remapped_rows_pending",
            "remapped_rows_failed",
            "rx_errors",
            "tx_errors",
        ),
        (0.0, _EXA * 16),
    ),
    **dict.fromkeys(
        ("rx_bytes_per_s", "tx_bytes_per_s", "rx_errors_per_s", "tx_errors_per_s"), (0.0, 1e13)
    ),
    "xid": (0.0, 65535.0),
    "index": (0.0, 1023.0),
}

# The notes of the answer being read (``reading`` sets it; other callers note nothing).
NOTES: contextvars.ContextVar[Notes | None] = contextvars.ContextVar("ugro_notes", default=None)


class Notes:
    """What ``from_probe`` dropped: out-of-range values and cut lists, for ``errors``."""

    def __init__(self) -> None:
        self.ranges: list[str] = []
        self.out_of_range = 0
        self.cuts: list[str] = []

    def errors(self) -> dict[str, str]:
        out = {}
        if self.out_of_range:
            shown = ", ".join(self.ranges)
            out["answer:ranges"] = (
                f"{self.out_of_range} value(s) outside physical ranges read as null: {shown}"
            )
        if self.cuts:
            more = f" and {len(self.cuts) - 4} more" if len(self.cuts) > 4 else ""
            out["answer:limits"] = "answer cut to its limits: " + ", ".join(self.cuts[:4]) + more
        return out


def in_range(key: str, number: float | None) -> float | None:
    """``number`` when field ``key`` may physically hold it, else None (and a note)."""
    limits = FIELD_RANGES.get(key)
    if number is None or limits is None or limits[0] <= number <= limits[1]:
        return number
    notes = NOTES.get()
    if notes is not None:
        notes.out_of_range += 1
        if len(notes.ranges) < 3:  # a few examples: the count says the rest
            notes.ranges.append(f"{key}={number:g} (range {limits[0]:g}..{limits[1]:g})")
    return None


@contextlib.contextmanager
def reading(notes: Notes) -> Iterator[Notes]:
    """Collect into ``notes`` what is cut or dropped while an answer is read."""
    token = NOTES.set(notes)
    try:
        yield notes
    finally:
        NOTES.reset(token)


def cut(what: str, count: int, kept: int) -> None:
    """Note that list ``what`` of ``count`` entries was cut to ``kept``."""
    notes = NOTES.get()
    if notes is not None:
        notes.cuts.append(f"{count} {what} (kept {kept})")
