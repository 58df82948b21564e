"""The real NVIDIA outputs simulated nodes are built from, read with the probe's own parsers.

Each simulated GPU row starts as the recorded H100 row (``nvidia-smi --query-gpu``, cells with
their recorded units), so whatever the probe makes of a real H100 (names, totals, limits, PCIe,
ECC and remap fields, the ``[N/A]`` cells) the simulator gives too; only the cells a story moves
are rewritten, in the recording's own format. Files and provenance: ``recordings/README.md``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from ugro_health import probe

RECORDINGS = Path(__file__).resolve().parent / "recordings"

# Bus ids of the eight GPUs of an HGX H100 board, in nvidia-smi's order.
HGX_BUSES = ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")


def read(name: str) -> str:
    return (RECORDINGS / name).read_text()


@functools.cache
def gpu_row(state: str) -> dict[str, str]:
    """The recorded ``--query-gpu`` row (``load`` or ``idle``), keyed by field name."""
    rows, problems = probe.parse_smi_csv(read(f"smi_h100_590_query_gpu_{state}.csv"))
    assert len(rows) == 1 and not problems, "the H100 recording holds one GPU row"
    return rows[0]


# The cells of a recorded row the simulator reads as numbers.
NUMBERS = (
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "power.limit",
)


@functools.cache
def values(state: str) -> dict[str, float]:
    """The ``NUMBERS`` of the recorded row (``load`` or ``idle``), as numbers."""
    row = gpu_row(state)
    return {key: probe.smi_number(row[key]) or 0.0 for key in NUMBERS}


def idle_values() -> dict[str, float]:
    """The idle recording's utilisation, memory, temperature and power."""
    return values("idle")


def load_values() -> dict[str, float]:
    """The same under load, with the memory total and the power limit."""
    return values("load")


@functools.cache
def apps_header() -> str:
    """The ``--query-compute-apps`` header line as recorded."""
    return read("smi_h100_590_compute_apps_load.csv").splitlines()[0]


@functools.cache
def versions() -> dict[str, Any]:
    return probe.parse_smi_version(read("smi_h100_590_version.txt"))


@functools.cache
def nvlink_speed() -> str:
    """One active link's cell as recorded (``53.125 GB/s``)."""
    for line in read("smi_nvlink_status_gb200.txt").splitlines():
        match = re.match(r"^\s*Link \d+:\s*(.+)$", line)
        if match:
            return match.group(1).strip()
    raise AssertionError("the NVLink recording lists no link")


@functools.cache
def xid79_line() -> str:
    """The recorded ``NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus`` line."""
    for line in read("dmesg_fallen_off_bus_nvsentinel.txt").splitlines():
        if "Xid" in line and ": 79," in line:
            return line.strip()
    raise AssertionError("the kernel log recording holds no Xid 79 line")


def bus_id(gpu: int) -> str:
    """``00000000:9A:00.0``: nvidia-smi's form of the GPU's PCI address."""
    return f"00000000:{HGX_BUSES[gpu % len(HGX_BUSES)]}:00.0"


def xid_line(gpu: int, uptime_s: float) -> str:
    """The recorded Xid 79 line, moved to ``gpu``'s bus and stamped as dmesg stamps it."""
    short = f"0000:{HGX_BUSES[gpu % len(HGX_BUSES)].lower()}:00"
    line = re.sub(r"PCI:[0-9a-fA-F:]+\)", f"PCI:{short})", xid79_line(), count=1)
    return f"[{uptime_s:12.6f}] {line}"
