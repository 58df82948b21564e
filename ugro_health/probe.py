"""The probe: the only code that runs on a cluster node.

It samples one node (CPU, memory, disks, network, processes, GPUs, kernel Xid errors) and
answers with one JSON document, as specified in docs/probe-protocol.md. The same file is
imported in-process for the local node (``Probe().sample(request)``) and streamed to a remote
node's python over one SSH exec channel (``BOOTSTRAP`` reads ``source_bytes()`` from stdin,
its functions compiled on first call: transport/probe_source.py), where ``main()`` answers one
request per stdin line with ``UGRO1 <json>``.

May import: the standard library at top level and nothing of ours; psutil and pynvml are used
when importable (psutil only where /proc is missing). A cold probe's CPU is its node's cost of a
`check` (docs/benchmarks.md): the top level imports only what every sample needs (json, os, re,
sys, threading, time); the rest (subprocess, xml, ...) is imported where it is used. Must
stay valid on Python 3.6: no dataclasses, no walrus, no builtin generics in annotations (and
annotations are strings: typing is not imported there). Every sub-check runs in its own
thread with its own deadline, so a hung NFS mount or a wedged nvidia-smi is reported as a
timeout and never hangs the probe; a probe that fails as a whole still answers a JSON document.
"""

import json
import os
import re
import sys
import threading
import time

# Annotations are strings and typing is imported for mypy only: the node's Python evaluates
# annotations when it defines a function, and importing typing costs a Python 3.6 about 10 ms of
# CPU per cold probe. mypy takes the MYPY branch; at run time Json is plain dict.
MYPY = False
if MYPY:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

    Json = Dict[str, Any]
else:
    Json = dict

PROBE_VERSION = 1
PREFIX = "UGRO1 "
# The fixed remote command (after `<python> -c`): read the source length, the source, run it.
# It parses on Python 2 too, to say why it cannot go on.
BOOTSTRAP = (
    'import sys;sys.version_info<(3,6)and sys.exit("ugro-health: the probe needs Python 3.6 or'
    ' newer; "+sys.executable+" is "+sys.version.split()[0]);'
    "n=int(sys.stdin.buffer.readline());"
    'exec(compile(sys.stdin.buffer.read(n),"ugro_probe","exec"))'
)
DEFAULT_MAX_OUTPUT_BYTES = 1000000
DEFAULT_REQUEST = {
    "op": "sample",
    "mounts": ["/"],
    "window_s": 0.25,
    "subcheck_timeout_s": 3.0,
    "match": [],
    "max_output_bytes": DEFAULT_MAX_OUTPUT_BYTES,
}  # type: Dict[str, Any]
MAX_XIDS = 20
MAX_MATCHED = 256
XID_REFRESH_S = 30.0  # a persistent probe re-reads the kernel log at most this often
XID_REFUSED_S = 600.0  # ... and retries a refused kernel log this rarely
NVLINK_REFRESH_S = 30.0  # nvidia-smi path: `nvidia-smi nvlink --status` at most this often
NVLINK_ABSENT_S = 600.0  # ... and this rarely when no GPU reported any NVLink
CMDLINE_CHARS = 300
MESSAGE_CHARS = 300
MIB = 1024 * 1024
PROC = "/proc"  # a module attribute so tests can point it elsewhere and exercise psutil


# ---------------------------------------------------------------------------- small helpers


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def _read_text(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "replace")


def _text(value: "Any") -> "Optional[str]":
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip() or None


def _finite(value: "Any") -> "Optional[float]":
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _round(value: "Optional[float]", digits: int = 1) -> "Optional[float]":
    return None if value is None else round(value, digits)


def _int(value: "Any") -> "Optional[int]":
    number = _finite(value)
    return None if number is None else int(number)


def _pct(part: "Optional[float]", whole: "Optional[float]") -> "Optional[float]":
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 1)


def python_version() -> str:
    """This interpreter's version as platform.python_version() reads it (from sys.version),
    without importing platform."""
    return sys.version.split()[0]


def error_doc(message: str) -> "Json":
    """The document a probe answers when it fails as a whole."""
    return {"probe_version": PROBE_VERSION, "ok": False, "error": message}


_SOURCE = []  # type: List[bytes]


def source_bytes() -> bytes:
    """This module's source, as the transport streams it after ``BOOTSTRAP`` (read once)."""
    if not _SOURCE:
        with open(__file__, "rb") as handle:
            _SOURCE.append(handle.read())
    return _SOURCE[0]


# ---------------------------------------------------------------------------- deadlines


class _Check(object):
    """One sub-check running in a daemon thread; the caller waits for it until its deadline."""

    def __init__(self, name: str, fn: "Callable[..., Any]", args: "Tuple[Any, ...]") -> None:
        self.name = name
        self.value = None  # type: Any
        self.error = None  # type: Optional[str]
        self.done = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, args=(fn, args), name="ugro-" + name)
        self.thread.daemon = True

    def _run(self, fn: "Callable[..., Any]", args: "Tuple[Any, ...]") -> None:
        try:
            self.value = fn(*args)
        except Exception as exc:
            self.error = _describe(exc)
        finally:
            self.done.set()

    def start(self) -> "_Check":
        self.thread.start()
        return self

    def wait(self, timeout_s: float) -> bool:
        return self.done.wait(max(0.0, self.started + timeout_s - time.monotonic()))


def run_command(argv: "List[str]", timeout_s: float) -> "Tuple[int, str, str]":
    """Run a command with a timeout; on timeout its whole process group is killed."""
    import subprocess

    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # so a killed shell script takes its children with it
    )
    try:
        out, err = proc.communicate(timeout=max(0.01, timeout_s))
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise RuntimeError(
            "timeout after %.1fs running %s" % (timeout_s, os.path.basename(argv[0]))
        ) from None
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _kill_group(proc: "Any") -> None:
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    try:
        proc.communicate(timeout=1.0)
    except subprocess.TimeoutExpired:
        # A grandchild that left the process group still holds the pipes: stop reading.
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
        proc.wait()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise RuntimeError("timeout: no time left in this check")
    return left


# ---------------------------------------------------------------------------- /proc parsers


def parse_proc_stat(text: str) -> "Json":
    """Aggregate CPU ticks from /proc/stat: total and idle (idle + iowait)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [float(f) for f in fields[1:]]
            # guest and guest_nice (fields 9, 10) are already counted in user and nice
            total = sum(ticks[:8])
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)
            return {"total": total, "idle": idle}
    raise ValueError("no aggregate cpu line in /proc/stat")


def parse_meminfo(text: str) -> "Dict[str, int]":
    """/proc/meminfo as bytes per key (values are in kB there)."""
    info = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            scale = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
            info[key.strip()] = int(parts[0]) * scale
    return info


def memory_from_meminfo(info: "Dict[str, int]") -> "Json":
    total = info.get("MemTotal")
    available = info.get("MemAvailable")
    if available is None and total is not None:  # kernels before 3.14
        available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
    used = None if total is None or available is None else total - available
    swap_total = info.get("SwapTotal")
    swap_free = info.get("SwapFree")
    swap_used = None if swap_total is None or swap_free is None else swap_total - swap_free
    return _memory_doc(total, used, swap_total, swap_used)


def _memory_doc(
    total: "Optional[int]",
    used: "Optional[int]",
    swap_total: "Optional[int]",
    swap_used: "Optional[int]",
) -> "Json":
    return {
        "total_bytes": total,
        "used_bytes": used,
        "util_pct": _pct(used, total),
        "swap_total_bytes": swap_total,
        "swap_used_bytes": swap_used,
        "swap_util_pct": _pct(swap_used, swap_total),
    }


def parse_net_dev(text: str) -> "Dict[str, Dict[str, int]]":
    """/proc/net/dev counters per interface (loopback included; callers skip it)."""
    counters = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16:
            continue
        counters[name.strip()] = {
            "rx_bytes": int(fields[0]),
            "rx_errors": int(fields[2]),
            "tx_bytes": int(fields[8]),
            "tx_errors": int(fields[10]),
        }
    return counters


def parse_uptime(text: str) -> float:
    return float(text.split()[0])


def parse_pid_stat_state(text: str) -> str:
    """The state letter of /proc/<pid>/stat; the command name may itself contain ') '."""
    return text[text.rindex(")") + 1 :].split()[0]


def parse_pid_stat_ppid(text: str) -> int:
    """The parent pid of /proc/<pid>/stat (the field after the state)."""
    return int(text[text.rindex(")") + 1 :].split()[1])


# ---------------------------------------------------------------------------- kernel log


_XID_RE = re.compile(r"NVRM: Xid \(([^)]*)\):?\s*(\d+)")
_KTIME_RE = re.compile(r"^\[\s*(\d+\.\d+)\]")
# "fallen off the bus" without an Xid number: the driver's probe routine prints it, in one line
# ("NVRM: GPU at 0000:01:00.0 has fallen off the bus.") or over three, the first naming the GPU
# ("NVRM: The NVIDIA GPU 0000:b3:00.0" / "... installed in this system has" / "NVRM: fallen off
# the bus and is not responding to commands."). Counted as Xid 79, which means the same.
_GPU_NAMED_RE = re.compile(r"NVRM: (?:The NVIDIA GPU|GPU at) (?:PCI:)?([0-9A-Fa-f:.]+)")
_FALLEN_RE = re.compile(r"fallen off the bus")
XID_FALLEN_OFF_BUS = 79


def parse_xid_lines(text: str, limit: int = MAX_XIDS) -> "List[Json]":
    """NVIDIA Xid events in kernel log text, oldest first, the last ``limit`` of them."""
    events = []
    ktime = None  # type: Optional[float]
    named = None  # type: Optional[str]  # the GPU the current (multi-line) message names
    for line in text.splitlines():
        stamp = _KTIME_RE.match(line)
        if stamp:
            ktime = float(stamp.group(1))
            named = None
        elif not line[:1].isspace():  # a new unstamped message (ctime output, journal)
            ktime = None
            named = None
        gpu_named = _GPU_NAMED_RE.search(line)
        if gpu_named:
            # as Xid lines name it: domain:bus:device, without the PCI function (".0")
            named = gpu_named.group(1).rstrip(".:").rsplit(".", 1)[0]
        match = _XID_RE.search(line)
        if match:
            device = match.group(1).strip()
            xid = int(match.group(2))
            message = line[match.start() :]
            if device.startswith("PCI:"):
                device = device[4:]
        elif _FALLEN_RE.search(line) and named is not None:
            device, xid = named, XID_FALLEN_OFF_BUS
            message = "NVRM: GPU %s has fallen off the bus (no Xid line)" % named
            named = None  # one event per message
        else:
            continue
        events.append(
            {
                "xid": xid,
                "gpu": device or None,
                "message": message.strip()[:MESSAGE_CHARS],
                "kernel_time_s": ktime,
            }
        )
    return events[-limit:] if limit else []


_JOURNAL_DENIED = ("insufficient permissions", "not seeing messages", "No journal files")
KMSG = "/dev/kmsg"  # a module attribute so tests can point it at a recording
_KMSG_ESCAPE_RE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def read_kernel_xids(timeout_s: float) -> "List[Json]":
    """Xids from /dev/kmsg (no process to start), else `dmesg`, else `journalctl -k`; raises
    with every reason when none works. /dev/kmsg is what `dmesg` itself reads, with the same
    privileges (kernel.dmesg_restrict refuses both): when it cannot be read, `dmesg` runs and
    says why in its own words."""
    try:
        return parse_xid_lines(kmsg_text(read_kmsg(KMSG)))
    except OSError:
        pass
    deadline = time.monotonic() + timeout_s
    commands = (["dmesg"], ["journalctl", "-k", "-b", "--no-pager", "-o", "short-monotonic"])
    reasons = []
    for argv in commands:
        exe = _which(argv[0])
        if exe is None:
            reasons.append("%s: not found" % argv[0])
            continue
        code, out, err = run_command([exe, *argv[1:]], _remaining(deadline))
        denied = any(hint in err for hint in _JOURNAL_DENIED)
        if code == 0 and not denied:
            return parse_xid_lines(out)
        reason = (err or out).strip().splitlines()
        reasons.append("%s: %s" % (argv[0], reason[0][:200] if reason else "exit %d" % code))
    raise RuntimeError("; ".join(reasons))


def read_kmsg(path: str) -> bytes:
    """Every record of the kernel log buffer from ``path`` (/dev/kmsg, or a recording of it).

    The device hands out one record per read, from the oldest kept, and EAGAIN after the
    newest (opened non-blocking); EPIPE means records were overwritten meanwhile, and the next
    read goes on at the oldest left, as `dmesg` does."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    chunks = []  # type: List[bytes]
    try:
        while True:
            try:
                chunk = os.read(fd, 16384)  # larger than a record can be
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue
            if not chunk:  # the end of a recording
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def kmsg_text(raw: bytes, needle: bytes = b"NVRM") -> str:
    """/dev/kmsg records (``prio,seq,usec,flags;message`` lines, each maybe followed by
    `` KEY=value`` lines) as `dmesg` prints them: ``[seconds.micros] message``, with escapes
    (``\\xHH``) undone and a multi-line message's further lines indented under the first.
    Only records containing ``needle`` are kept: no Xid event spans two records, so
    parse_xid_lines finds the same events in less text."""
    lines = []
    for record in raw.split(b"\n") if needle in raw else ():
        if needle not in record or record[:1] == b" ":
            continue
        head, sep, message = record.partition(b";")
        fields = head.split(b",")
        if not sep or len(fields) < 3 or not fields[2].isdigit():
            continue
        usec = int(fields[2])
        prefix = "[%5d.%06d] " % (usec // 1000000, usec % 1000000)
        if b"\\x" in message:
            message = _KMSG_ESCAPE_RE.sub(lambda m: bytes([int(m.group(1), 16)]), message)
        text = message.decode("utf-8", "replace")
        lines.append(prefix + text.replace("\n", "\n" + " " * len(prefix)))
    return "\n".join(lines) + "\n" if lines else ""


def _which(name: str) -> "Optional[str]":
    """The first executable ``name`` on PATH, as shutil.which() finds a plain command name
    (importing shutil costs a Python 3.6 about 5 ms: it imports bz2, lzma, fnmatch...)."""
    path = os.environ.get("PATH", os.defpath)
    for directory in path.split(os.pathsep) if path else ():
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.F_OK | os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


# ---------------------------------------------------------------------------- GPU: shared


THROTTLE_BITS = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)


def throttle_names(mask: "Optional[int]") -> "Optional[List[str]]":
    """NVML's clocks event (throttle) reason bitmask as lower-case names without prefix."""
    if mask is None:
        return None
    names = [name for bit, name in THROTTLE_BITS if mask & bit]
    known = 0
    for bit, _ in THROTTLE_BITS:
        known |= bit
    if mask & ~known:
        names.append("unknown_0x%x" % (mask & ~known))
    return names


def cuda_version_string(version: "Any") -> "Optional[str]":
    """NVML's CUDA driver version integer (12040) as text ("12.4")."""
    number = _int(version)
    if not number:
        return None
    return "%d.%d" % (number // 1000, (number % 1000) // 10)


def empty_gpu(index: "Optional[int]") -> "Json":
    """A GPU entry with every metric unknown; collectors fill in what they can read."""
    return {
        "index": index,
        "name": None,
        "uuid": None,
        "pci_bus_id": None,
        "util_pct": None,
        "mem_util_pct": None,
        "mem_used_bytes": None,
        "mem_total_bytes": None,
        "temp_c": None,
        "power_w": None,
        "power_limit_w": None,
        "ecc_uncorrected_volatile": None,
        "ecc_corrected_volatile": None,
        "retired_pages_pending": None,
        "remapped_rows_pending": None,
        "remapped_rows_failed": None,
        "remapped_rows_correctable": None,
        "remapped_rows_uncorrectable": None,
        "throttle_reasons": None,
        "pcie_gen": None,
        "pcie_gen_max": None,
        "pcie_width": None,
        "pcie_width_max": None,
        "nvlink_active": None,
        "nvlink_total": None,
        "processes": [],
        "error": None,
    }


def _proc_comm(pid: int) -> "Optional[str]":
    try:
        return _read_text("%s/%d/comm" % (PROC, pid)).strip() or None
    except OSError:
        return None


def _pid_alive(pid: int) -> "Optional[bool]":
    if not os.path.isdir(PROC):
        return None
    return os.path.exists("%s/%d" % (PROC, pid))


# ---------------------------------------------------------------------------- GPU: nvidia-smi

# The fields every driver since R450 knows; newer ones are tried first and dropped on refusal.
SMI_BASE_FIELDS = (
    "index,name,uuid,pci.bus_id,driver_version,utilization.gpu,utilization.memory,"
    "memory.used,memory.total,temperature.gpu,power.draw,power.limit,"
    "ecc.errors.uncorrected.volatile.total,ecc.errors.corrected.volatile.total,"
    "retired_pages.pending,pcie.link.gen.current,pcie.link.gen.max,"
    "pcie.link.width.current,pcie.link.width.max"
)
SMI_REMAP_FIELDS = (
    "remapped_rows.pending,remapped_rows.failure,remapped_rows.correctable,"
    "remapped_rows.uncorrectable"
)
SMI_FIELD_SETS = (
    ",".join((SMI_BASE_FIELDS, SMI_REMAP_FIELDS, "clocks_event_reasons.active")),
    ",".join((SMI_BASE_FIELDS, SMI_REMAP_FIELDS, "clocks_throttle_reasons.active")),
    ",".join((SMI_BASE_FIELDS, "clocks_throttle_reasons.active")),
    SMI_BASE_FIELDS,
)
SMI_APPS_FIELDS = "gpu_uuid,pid,process_name,used_memory"
_SMI_HEADER_KEYS = ("index", "uuid", "name", "pid", "gpu_uuid")
_UNIT_RE = re.compile(r"\s*\[[^\]]*\]$")
_NUM_RE = re.compile(r"^[-+]?\d+(?:\.\d+)?")


_SMI_NOT_VALUES = ("N/A", "NOT SUPPORTED", "UNKNOWN", "UNKNOWN ERROR", "ERR!", "NOT AVAILABLE")


def smi_value(cell: "Optional[str]") -> "Optional[str]":
    """A CSV/XML cell, or None for the many spellings of "not available", and for a label
    standing where a value belongs (driver 610: ``Deprecated, see "KMD version" instead``)."""
    if cell is None:
        return None
    cell = cell.strip()
    if not cell or cell.startswith("[") or cell.upper() in _SMI_NOT_VALUES:
        return None
    if cell.lower().startswith("deprecated"):
        return None
    return cell


def smi_number(cell: "Optional[str]") -> "Optional[float]":
    """The leading number of a cell, tolerating units ("69.85 W", "16x", "81559 MiB")."""
    value = smi_value(cell)
    match = _NUM_RE.match(value) if value else None
    return float(match.group(0)) if match else None


def _smi_int(cell: "Optional[str]") -> "Optional[int]":
    number = smi_number(cell)
    return None if number is None else int(number)


def _smi_mib(cell: "Optional[str]") -> "Optional[int]":
    number = smi_number(cell)
    return None if number is None else int(number * MIB)


def _smi_yes(cell: "Optional[str]") -> "Optional[bool]":
    value = smi_value(cell)
    if value is None:
        return None
    if value.lower() in ("yes", "true", "active", "enabled"):
        return True
    if value.lower() in ("no", "false", "not active", "disabled"):
        return False
    number = smi_number(value)
    return None if number is None else number != 0


def _smi_flag(cell: "Optional[str]") -> "Optional[int]":
    flag = _smi_yes(cell)
    return None if flag is None else int(flag)


def _smi_hex(cell: "Optional[str]") -> "Optional[int]":
    value = smi_value(cell)
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def parse_smi_csv(text: str) -> "Tuple[List[Dict[str, str]], List[str]]":
    """``nvidia-smi --query-* --format=csv[,nounits]`` output as rows keyed by field name.

    Units in the header (``memory.used [MiB]``) are dropped. nvidia-smi does not quote cells,
    so surplus cells in a row are joined back into ``process_name``, the one free-text field.
    Lines that are not part of the table (per-GPU error messages) are returned separately.
    """
    header = None  # type: Optional[List[str]]
    rows, problems = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if header is None:
            names = [_UNIT_RE.sub("", cell) for cell in cells]
            if any(key in names for key in _SMI_HEADER_KEYS):
                header = names
            else:
                problems.append(line.strip())
            continue
        row = _smi_row(header, cells)
        if row is None:
            problems.append(line.strip())
        else:
            rows.append(row)
    return rows, problems


def _smi_row(header: "List[str]", cells: "List[str]") -> "Optional[Dict[str, str]]":
    extra = len(cells) - len(header)
    if extra > 0 and "process_name" in header:
        at = header.index("process_name")
        joined = ", ".join(cells[at : at + extra + 1])
        cells = [*cells[:at], joined, *cells[at + extra + 1 :]]
    if len(cells) != len(header):
        return None
    return dict(zip(header, cells))  # noqa: B905 (lengths checked; strict= needs 3.10)


def _first(row: "Dict[str, str]", keys: "Iterable[str]", parse: "Callable[[Any], Any]") -> "Any":
    for key in keys:
        value = parse(row.get(key))
        if value is not None:
            return value
    return None


def smi_row_to_gpu(row: "Dict[str, str]") -> "Json":
    """One ``--query-gpu`` row as a GPU entry of the sample document."""
    gpu = empty_gpu(_smi_int(row.get("index")))
    gpu.update(
        name=smi_value(row.get("name")),
        uuid=smi_value(row.get("uuid")),
        pci_bus_id=smi_value(row.get("pci.bus_id")),
        util_pct=smi_number(row.get("utilization.gpu")),
        mem_util_pct=smi_number(row.get("utilization.memory")),
        mem_used_bytes=_smi_mib(row.get("memory.used")),
        mem_total_bytes=_smi_mib(row.get("memory.total")),
        temp_c=smi_number(row.get("temperature.gpu")),
        power_w=_first(row, ("power.draw", "power.draw.average", "power.draw.instant"), smi_number),
        power_limit_w=_first(row, ("power.limit", "enforced.power.limit"), smi_number),
        ecc_uncorrected_volatile=_smi_int(row.get("ecc.errors.uncorrected.volatile.total")),
        ecc_corrected_volatile=_smi_int(row.get("ecc.errors.corrected.volatile.total")),
        retired_pages_pending=_smi_yes(row.get("retired_pages.pending")),
        remapped_rows_pending=_smi_flag(row.get("remapped_rows.pending")),
        remapped_rows_failed=_smi_flag(row.get("remapped_rows.failure")),
        remapped_rows_correctable=_smi_int(row.get("remapped_rows.correctable")),
        remapped_rows_uncorrectable=_smi_int(row.get("remapped_rows.uncorrectable")),
        throttle_reasons=throttle_names(
            _first(row, ("clocks_event_reasons.active", "clocks_throttle_reasons.active"), _smi_hex)
        ),
        pcie_gen=_smi_int(row.get("pcie.link.gen.current")),
        pcie_gen_max=_smi_int(row.get("pcie.link.gen.max")),
        pcie_width=_smi_int(row.get("pcie.link.width.current")),
        pcie_width_max=_smi_int(row.get("pcie.link.width.max")),
    )
    return gpu


def parse_smi_apps(text: str) -> "Dict[str, List[Json]]":
    """``--query-compute-apps`` output as processes per GPU UUID."""
    rows, _ = parse_smi_csv(text)
    apps = {}  # type: Dict[str, List[Json]]
    for row in rows:
        pid = _smi_int(row.get("pid"))
        uuid = smi_value(row.get("gpu_uuid"))
        if pid is None or uuid is None:
            continue
        used = _first(row, ("used_memory", "used_gpu_memory"), _smi_mib)
        name = smi_value(row.get("process_name"))
        apps.setdefault(uuid, []).append(
            {"pid": pid, "name": name, "used_memory_bytes": used, "alive": None}
        )
    return apps


# ``nvidia-smi --version`` labels, preferred first: driver 610 declares "DRIVER version" and
# "CUDA version" deprecated (their value is a sentence pointing at the new labels).
_SMI_VERSION_KEYS = (
    ("driver_version", ("kmd version", "driver version")),
    ("cuda_version", ("cuda umd version", "cuda version")),
)


def parse_smi_version(text: str) -> "Json":
    """``nvidia-smi --version`` output: driver and CUDA versions."""
    values = {}  # type: Dict[str, Optional[str]]
    for line in text.splitlines():
        key, _, value = line.partition(":")
        values.setdefault(key.strip().lower(), smi_value(value))
    found = {}  # type: Dict[str, Optional[str]]
    for field, labels in _SMI_VERSION_KEYS:
        found[field] = next((values[k] for k in labels if values.get(k)), None)
    return found


_NVLINK_GPU_RE = re.compile(r"^GPU (\d+):")
_NVLINK_LINK_RE = re.compile(r"^\s*Link (\d+):\s*(.*)$")


def parse_smi_nvlink(text: str) -> "Dict[int, Tuple[int, Optional[int]]]":
    """``nvidia-smi nvlink --status`` -> {GPU index: (active links, links)}.

    A link reads ``Link 3: 25.781 GB/s`` when up and ``Link 3: <inactive>`` when down. When
    every link is down the driver prints only ``NVML: Unable to retrieve NVLink information as
    all links are inActive`` under the GPU: that is (0, None), the count unknown. A GPU with
    neither (no NVLink) is left out.
    """
    out = {}  # type: Dict[int, Tuple[int, Optional[int]]]
    gpu = None  # type: Optional[int]
    for line in text.splitlines():
        header = _NVLINK_GPU_RE.match(line)
        if header:
            gpu = int(header.group(1))
            continue
        if gpu is None:
            continue
        link = _NVLINK_LINK_RE.match(line)
        if link:
            state = link.group(2).strip()
            up = "inactive" not in state.lower()
            if up and smi_number(state) is None:
                continue  # "N/A" or anything but a speed: this link's state is unknown
            active, total = out.get(gpu, (0, 0))
            out[gpu] = (active + int(up), (total or 0) + 1)
        elif "all links are inactive" in line.lower():
            out[gpu] = (0, None)
    return out


def _xml_text(node: "Any", path: str) -> "Optional[str]":
    found = node.find(path) if node is not None else None
    return None if found is None else smi_value(found.text)


def parse_smi_xml(text: str) -> "Json":
    """``nvidia-smi -q -x`` output: driver, CUDA and one GPU entry per ``<gpu>``."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.fromstring(text)
    gpus = [_xml_gpu(index, node) for index, node in enumerate(root.findall("gpu"))]
    return {
        "driver_version": _xml_text(root, "driver_version"),
        "cuda_version": _xml_text(root, "cuda_version"),
        "gpus": gpus,
    }


def _xml_gpu(index: int, node: "Any") -> "Json":
    gpu = empty_gpu(index)
    power = node.find("gpu_power_readings")
    if power is None:
        power = node.find("power_readings")  # schema v11 and older
    link = node.find("pci/pci_gpu_link_info")
    gpu.update(
        name=_xml_text(node, "product_name"),
        uuid=_xml_text(node, "uuid"),
        pci_bus_id=smi_value(node.get("id")),
        util_pct=smi_number(_xml_text(node, "utilization/gpu_util")),
        mem_util_pct=smi_number(_xml_text(node, "utilization/memory_util")),
        mem_used_bytes=_smi_mib(_xml_text(node, "fb_memory_usage/used")),
        mem_total_bytes=_smi_mib(_xml_text(node, "fb_memory_usage/total")),
        temp_c=smi_number(_xml_text(node, "temperature/gpu_temp")),
        power_w=_xml_first_number(
            power, ("power_draw", "average_power_draw", "instant_power_draw")
        ),
        power_limit_w=_xml_first_number(power, ("current_power_limit", "enforced_power_limit")),
        retired_pages_pending=_smi_yes(_xml_text(node, "retired_pages/pending_retirement")),
        throttle_reasons=_xml_throttle(node),
        pcie_gen=_smi_int(_xml_text(link, "pcie_gen/current_link_gen")),
        pcie_gen_max=_smi_int(_xml_text(link, "pcie_gen/max_link_gen")),
        pcie_width=_smi_int(_xml_text(link, "link_widths/current_link_width")),
        pcie_width_max=_smi_int(_xml_text(link, "link_widths/max_link_width")),
        processes=_xml_processes(node),
    )
    gpu.update(_xml_ecc(node.find("ecc_errors/volatile")))
    gpu.update(_xml_remapped(node.find("remapped_rows")))
    return gpu


def _xml_first_number(node: "Any", tags: "Iterable[str]") -> "Optional[float]":
    for tag in tags:
        number = smi_number(_xml_text(node, tag))
        if number is not None:
            return number
    return None


def _xml_sum(node: "Any", tags: "Iterable[str]") -> "Optional[int]":
    values = [_smi_int(_xml_text(node, tag)) for tag in tags]
    present = [v for v in values if v is not None]
    return sum(present) if present else None


_XML_UNCORRECTED = (
    "dram_uncorrectable",
    "sram_uncorrectable",
    "sram_uncorrectable_parity",
    "sram_uncorrectable_secded",
)


def _xml_ecc(volatile: "Any") -> "Json":
    uncorrected = _xml_sum(volatile, _XML_UNCORRECTED)
    if uncorrected is None:  # schema before v12
        uncorrected = _smi_int(_xml_text(volatile, "double_bit/total"))
    corrected = _xml_sum(volatile, ("dram_correctable", "sram_correctable"))
    if corrected is None:
        corrected = _smi_int(_xml_text(volatile, "single_bit/total"))
    return {"ecc_uncorrected_volatile": uncorrected, "ecc_corrected_volatile": corrected}


def _xml_remapped(node: "Any") -> "Json":
    return {
        "remapped_rows_pending": _smi_flag(_xml_text(node, "remapped_row_pending")),
        "remapped_rows_failed": _smi_flag(_xml_text(node, "remapped_row_failure")),
        "remapped_rows_correctable": _smi_int(_xml_text(node, "remapped_row_corr")),
        "remapped_rows_uncorrectable": _smi_int(_xml_text(node, "remapped_row_unc")),
    }


def _xml_throttle(node: "Any") -> "Optional[List[str]]":
    reasons = node.find("clocks_event_reasons")
    if reasons is None:
        reasons = node.find("clocks_throttle_reasons")
    if reasons is None:
        return None
    # <clocks_throttle_reasons>N/A</clocks_throttle_reasons> (seen on a Tesla P4), or every
    # reason N/A: unknown, not "none active".
    if not any(smi_value(child.text) for child in reasons):
        return None
    names = []
    for child in reasons:
        if (child.text or "").strip() == "Active":
            name = re.sub(r"^clocks_(event|throttle)_reason_", "", child.tag)
            names.append("display_clock_setting" if name == "display_clocks_setting" else name)
    return names


def _xml_processes(node: "Any") -> "List[Json]":
    processes = []
    for info in node.findall("processes/process_info"):
        pid = _smi_int(_xml_text(info, "pid"))
        if pid is not None:
            processes.append(
                {
                    "pid": pid,
                    "name": _xml_text(info, "process_name"),
                    "used_memory_bytes": _smi_mib(_xml_text(info, "used_memory")),
                    "alive": None,
                }
            )
    return processes


# ---------------------------------------------------------------------------- GPU: NVML

_NVML_NOT_FOUND = (9, 12)  # NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIBRARY_NOT_FOUND
_NVML_GPU_IS_LOST = 15
_NVML_NOT_AVAILABLE = 1 << 63  # usedGpuMemory at or above this is NVML_VALUE_NOT_AVAILABLE


def nvml_init() -> "Tuple[Any, Optional[str]]":
    """(pynvml, None) when NVML works; (None, None) on a node without an NVIDIA stack;
    (None, reason) when NVML is there but refuses to start."""
    try:
        nvml = __import__("pynvml")
    except Exception:
        return None, None
    try:
        nvml.nvmlInit()
    except Exception as exc:
        if getattr(exc, "value", None) in _NVML_NOT_FOUND:
            return None, None
        return None, "nvmlInit: " + _describe(exc)
    return nvml, None


class _NvmlDevice(object):
    """One GPU handle; every NVML call goes through ``get``, which turns any NVMLError
    (not supported, no permission, GPU lost...) or a function missing from an old pynvml
    into None for that field, so one bad field never loses the rest of the sample."""

    def __init__(self, nvml: "Any", handle: "Any") -> None:
        self.nvml = nvml
        self.handle = handle
        self.lost = False

    def get(self, function: str, *args: "Any") -> "Any":
        fn = getattr(self.nvml, function, None)
        if fn is None:
            return None
        try:
            return fn(self.handle, *args)
        except Exception as exc:
            if getattr(exc, "value", None) == _NVML_GPU_IS_LOST:
                self.lost = True
            return None

    def const(self, name: str, default: int) -> int:
        value = getattr(self.nvml, name, default)
        return value if isinstance(value, int) else default


def nvml_sample(nvml: "Any") -> "Json":
    """Every GPU through NVML, plus the driver and CUDA versions."""
    count = nvml.nvmlDeviceGetCount()
    gpus = [_nvml_gpu(nvml, index) for index in range(count)]
    system = _NvmlDevice(nvml, None)
    return {
        "info": {
            "source": "nvml",
            "driver_version": _text(_nvml_system(system, "nvmlSystemGetDriverVersion")),
            "cuda_version": cuda_version_string(
                _nvml_system(system, "nvmlSystemGetCudaDriverVersion")
            ),
        },
        "gpus": gpus,
        "errors": {},
    }


def _nvml_system(system: "_NvmlDevice", function: str) -> "Any":
    fn = getattr(system.nvml, function, None)
    try:
        return fn() if fn is not None else None
    except Exception:
        return None


def _nvml_gpu(nvml: "Any", index: int) -> "Json":
    gpu = empty_gpu(index)
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:
        gpu["error"] = _describe(exc)
        return gpu
    device = _NvmlDevice(nvml, handle)
    for part in (_nvml_identity, _nvml_load, _nvml_memory_health, _nvml_links):
        gpu.update(part(device))
    gpu["processes"] = _nvml_processes(device)
    if device.lost:
        gpu["error"] = "GPU is lost"
    return gpu


def _nvml_identity(device: "_NvmlDevice") -> "Json":
    pci = device.get("nvmlDeviceGetPciInfo")
    return {
        "name": _text(device.get("nvmlDeviceGetName")),
        "uuid": _text(device.get("nvmlDeviceGetUUID")),
        "pci_bus_id": _text(getattr(pci, "busId", None)),
    }


def _milliwatts(value: "Any") -> "Optional[float]":
    number = _finite(value)
    return None if number is None else round(number / 1000.0, 2)


def _nvml_load(device: "_NvmlDevice") -> "Json":
    util = device.get("nvmlDeviceGetUtilizationRates")
    memory = device.get("nvmlDeviceGetMemoryInfo")
    limit = device.get("nvmlDeviceGetEnforcedPowerLimit")
    if limit is None:
        limit = device.get("nvmlDeviceGetPowerManagementLimit")
    sensor = device.const("NVML_TEMPERATURE_GPU", 0)
    mask = device.get("nvmlDeviceGetCurrentClocksEventReasons")
    if mask is None:
        mask = device.get("nvmlDeviceGetCurrentClocksThrottleReasons")
    return {
        "util_pct": _finite(getattr(util, "gpu", None)),
        "mem_util_pct": _finite(getattr(util, "memory", None)),
        "mem_used_bytes": _int(getattr(memory, "used", None)),
        "mem_total_bytes": _int(getattr(memory, "total", None)),
        "temp_c": _finite(device.get("nvmlDeviceGetTemperature", sensor)),
        "power_w": _milliwatts(device.get("nvmlDeviceGetPowerUsage")),
        "power_limit_w": _milliwatts(limit),
        "throttle_reasons": throttle_names(_int(mask)),
    }


def _nvml_memory_health(device: "_NvmlDevice") -> "Json":
    uncorrected = device.const("NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1)
    corrected = device.const("NVML_MEMORY_ERROR_TYPE_CORRECTED", 0)
    volatile = device.const("NVML_VOLATILE_ECC", 0)
    enabled = device.const("NVML_FEATURE_ENABLED", 1)
    pending = device.get("nvmlDeviceGetRetiredPagesPendingStatus")
    rows = device.get("nvmlDeviceGetRemappedRows")  # (correctable, uncorrectable, pending, failed)
    rows = tuple(rows) if isinstance(rows, (tuple, list)) and len(rows) >= 4 else None
    return {
        "ecc_uncorrected_volatile": _int(
            device.get("nvmlDeviceGetTotalEccErrors", uncorrected, volatile)
        ),
        "ecc_corrected_volatile": _int(
            device.get("nvmlDeviceGetTotalEccErrors", corrected, volatile)
        ),
        "retired_pages_pending": None if pending is None else pending == enabled,
        "remapped_rows_correctable": _int(rows[0]) if rows else None,
        "remapped_rows_uncorrectable": _int(rows[1]) if rows else None,
        "remapped_rows_pending": int(bool(rows[2])) if rows else None,
        "remapped_rows_failed": int(bool(rows[3])) if rows else None,
    }


def _nvml_links(device: "_NvmlDevice") -> "Json":
    links = {
        "pcie_gen": _int(device.get("nvmlDeviceGetCurrPcieLinkGeneration")),
        "pcie_gen_max": _int(device.get("nvmlDeviceGetMaxPcieLinkGeneration")),
        "pcie_width": _int(device.get("nvmlDeviceGetCurrPcieLinkWidth")),
        "pcie_width_max": _int(device.get("nvmlDeviceGetMaxPcieLinkWidth")),
        "nvlink_active": None,
        "nvlink_total": None,
    }
    active = total = 0
    enabled = device.const("NVML_FEATURE_ENABLED", 1)
    for link in range(device.const("NVML_NVLINK_MAX_LINKS", 18)):
        state = device.get("nvmlDeviceGetNvLinkState", link)
        if state is None:
            if link == 0:  # no NVLink on this GPU (NotSupported): leave both unknown
                return links
            continue  # links past this GPU's count answer InvalidArgument
        total += 1
        active += int(state == enabled)
    if total:
        links.update(nvlink_active=active, nvlink_total=total)
    return links


def _nvml_processes(device: "_NvmlDevice") -> "List[Json]":
    seen = {}  # type: Dict[int, Json]
    for function in (
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetGraphicsRunningProcesses",
    ):
        for proc in device.get(function) or []:
            pid = _int(getattr(proc, "pid", None))
            if pid is None or pid in seen:
                continue
            used = _int(getattr(proc, "usedGpuMemory", None))
            if used is not None and used >= _NVML_NOT_AVAILABLE:
                used = None
            seen[pid] = {
                "pid": pid,
                "name": _proc_comm(pid),
                "used_memory_bytes": used,
                "alive": _pid_alive(pid),
            }
    return list(seen.values())


# ---------------------------------------------------------------------------- system metrics


def _psutil() -> "Any":
    try:
        return __import__("psutil")
    except Exception:
        return None


def _require_psutil(what: str) -> "Any":
    module = _psutil()
    if module is None:
        raise RuntimeError("%s: neither %s nor psutil is available" % (what, PROC))
    return module


def _clock_ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0  # USER_HZ on every Linux architecture


def own_cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its children already reaped: the
    monitor's own work (in-process: all of ugro-health; remotely: the probe and the nvidia-smi,
    dmesg it ran), which the node's CPU figure leaves out."""
    times = os.times()
    return times[0] + times[1] + times[2] + times[3]


def cpu_counters() -> "Json":
    """All CPUs' total and idle time, and this process's own, in seconds."""
    if os.path.exists(PROC + "/stat"):
        ticks = parse_proc_stat(_read_text(PROC + "/stat"))
        hz = _clock_ticks()
        total, idle = ticks["total"] / hz, ticks["idle"] / hz
    else:
        fields = _require_psutil("cpu").cpu_times()._asdict()
        total = sum(v for k, v in fields.items() if k not in ("guest", "guest_nice"))
        idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return {"total": total, "idle": idle, "own": own_cpu_seconds()}


def cpu_util(before: "Optional[Json]", after: "Optional[Json]") -> "Optional[float]":
    """Busy share of all CPUs between two readings, the monitor's own CPU time taken out."""
    if not before or not after:
        return None
    total = after["total"] - before["total"]
    if total <= 0:
        return None
    busy = total - (after["idle"] - before["idle"])
    busy -= max(0.0, after.get("own", 0.0) - before.get("own", 0.0))
    return round(max(0.0, min(100.0, 100.0 * busy / total)), 1)


def net_counters() -> "Dict[str, Dict[str, int]]":
    if os.path.exists(PROC + "/net/dev"):
        return parse_net_dev(_read_text(PROC + "/net/dev"))
    counters = _require_psutil("network").net_io_counters(pernic=True)
    return {
        name: {
            "rx_bytes": c.bytes_recv,
            "tx_bytes": c.bytes_sent,
            "rx_errors": c.errin,
            "tx_errors": c.errout,
        }
        for name, c in counters.items()
    }


def net_rates(
    before: "Optional[Dict[str, Dict[str, int]]]",
    after: "Dict[str, Dict[str, int]]",
    seconds: float,
) -> "List[Json]":
    """Per-interface byte and error rates between two counter readings (loopback skipped)."""
    entries = []
    for iface in sorted(after):
        if iface == "lo":
            continue
        now = after[iface]
        then = (before or {}).get(iface)
        entry = {"iface": iface}  # type: Json
        for key in ("rx_bytes", "tx_bytes", "rx_errors", "tx_errors"):
            entry[key + "_per_s"] = _rate(now, then, key, seconds)
        entry.update(rx_errors=now["rx_errors"], tx_errors=now["tx_errors"])
        entries.append(entry)
    return entries


def _rate(
    now: "Dict[str, int]", then: "Optional[Dict[str, int]]", key: str, seconds: float
) -> "Optional[float]":
    if then is None or seconds <= 0 or now[key] < then[key]:  # a new or reset counter
        return None
    return round((now[key] - then[key]) / seconds, 1)


def memory_usage() -> "Json":
    if os.path.exists(PROC + "/meminfo"):
        return memory_from_meminfo(parse_meminfo(_read_text(PROC + "/meminfo")))
    psutil = _require_psutil("memory")
    vm, swap = psutil.virtual_memory(), psutil.swap_memory()
    return _memory_doc(vm.total, vm.total - vm.available, swap.total, swap.used)


def uptime_seconds() -> float:
    if os.path.exists(PROC + "/uptime"):
        return parse_uptime(_read_text(PROC + "/uptime"))
    return time.time() - _require_psutil("uptime").boot_time()


def disk_usage(mount: str) -> "Json":
    """Size and use of one mount; runs in its own thread (statvfs can hang on NFS).

    A path that is not a mount point (an NFS mount missing, a disk not mounted) is reported as
    ``mounted: false`` with no sizes: measuring it would measure the parent file system."""
    doc = {
        "mount": mount,
        "total_bytes": None,
        "used_bytes": None,
        "avail_bytes": None,
        "error": None,
        "mounted": is_mount_point(mount),
    }  # type: Json
    if doc["mounted"] is False:
        return doc
    st = os.statvfs(mount)
    block = st.f_frsize or st.f_bsize
    doc.update(
        total_bytes=st.f_blocks * block,
        used_bytes=(st.f_blocks - st.f_bfree) * block,
        avail_bytes=st.f_bavail * block,
    )
    return doc


_MOUNTINFO_ESCAPE_RE = re.compile(r"\\([0-7]{3})")


def parse_mountinfo(text: str) -> "List[str]":
    """The mount points listed in /proc/<pid>/mountinfo (field 5, octal escapes undone)."""
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(_MOUNTINFO_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def is_mount_point(path: str) -> "Optional[bool]":
    """Whether ``path`` (symbolic links resolved) is a mount point: from /proc/self/mountinfo,
    else os.path.ismount; None when neither can tell (e.g. the path cannot be resolved)."""
    real = os.path.realpath(path)
    try:
        return real in parse_mountinfo(_read_text(PROC + "/self/mountinfo"))
    except OSError:
        pass
    if not os.path.exists(real):
        return False
    return os.path.ismount(real)


def _read_head(path: str, size: int) -> bytes:
    """The first ``size`` bytes of a /proc file: one open, one read (a Python file object costs
    about twice as much, and the process scan reads two files per process per tick)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def _cmdline(pid: int) -> str:
    raw = _read_head("%s/%d/cmdline" % (PROC, pid), CMDLINE_CHARS * 4)
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def _match(cmdline: str, patterns: "List[Tuple[str, Any]]") -> "Optional[str]":
    for text, compiled in patterns:
        if compiled.search(cmdline):
            return text
    return None


def scan_processes(patterns: "List[Tuple[str, Any]]", exclude: "Iterable[int]") -> "Json":
    """Process and zombie counts, the processes whose command line matches a pattern (with
    their parent pid), and the processes descending from those (a launcher's workers)."""
    if not os.path.isdir(PROC):
        return _scan_processes_psutil(patterns, set(exclude))
    count = zombies = 0
    matched = []  # type: List[Json]
    parents = {}  # type: Dict[int, int]
    skip = set(exclude)
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            # The state is within the first 300 bytes; latin-1 decodes any byte, and cheaply.
            stat = _read_head("%s/%d/stat" % (PROC, pid), 512).decode("latin-1")
            state = parse_pid_stat_state(stat)
            parents[pid] = parse_pid_stat_ppid(stat)
            cmdline = _cmdline(pid) if patterns and pid not in skip else ""
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        count += 1
        zombies += state == "Z"
        _add_match(matched, pid, parents[pid], cmdline, patterns)
    return {
        "count": count,
        "zombies": zombies,
        "matched": matched,
        "descendants": _descendants(matched, parents, skip, _proc_cmdline),
    }


def _add_match(
    matched: "List[Json]", pid: int, ppid: int, cmdline: str, patterns: "List[Tuple[str, Any]]"
) -> None:
    pattern = _match(cmdline, patterns) if cmdline else None
    if pattern is not None and len(matched) < MAX_MATCHED:
        matched.append(
            {"pid": pid, "cmdline": cmdline[:CMDLINE_CHARS], "pattern": pattern, "ppid": ppid}
        )


def _proc_cmdline(pid: int) -> "Optional[str]":
    try:
        return _cmdline(pid)
    except OSError:
        return None


def _descendants(
    matched: "List[Json]", parents: "Dict[int, int]", skip: "Any", cmdline: "Callable[[int], Any]"
) -> "List[Json]":
    """Every process below a matched one that is not matched itself (a launcher's workers,
    which run e.g. ``python train.py``), with its parent pid; at most MAX_MATCHED."""
    children = {}  # type: Dict[int, List[int]]
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    seen = set(m["pid"] for m in matched)
    todo = [child for m in matched for child in children.get(m["pid"], ())]
    out = []  # type: List[Json]
    while todo and len(out) < MAX_MATCHED:
        pid = todo.pop(0)
        if pid in seen or pid in skip:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
        text = cmdline(pid)
        if text:  # gone meanwhile, or a zombie (no command line): not a rank any more
            out.append({"pid": pid, "ppid": parents[pid], "cmdline": text[:CMDLINE_CHARS]})
    return out


def _scan_processes_psutil(patterns: "List[Tuple[str, Any]]", skip: "Any") -> "Json":
    psutil = _require_psutil("processes")
    count = zombies = 0
    matched = []  # type: List[Json]
    parents = {}  # type: Dict[int, int]
    commands = {}  # type: Dict[int, str]
    for proc in psutil.process_iter():
        try:
            status = proc.status()
            parents[proc.pid] = proc.ppid()
            cmdline = " ".join(proc.cmdline()) if patterns and proc.pid not in skip else ""
        except Exception:
            continue
        count += 1
        zombies += status == "zombie"
        commands[proc.pid] = cmdline
        _add_match(matched, proc.pid, parents[proc.pid], cmdline, patterns)
    return {
        "count": count,
        "zombies": zombies,
        "matched": matched,
        "descendants": _descendants(matched, parents, skip, commands.get),
    }


# ---------------------------------------------------------------------------- requests


def normalize_request(raw: "Any") -> "Json":
    """The request with defaults filled in; raises ValueError on a malformed one."""
    if not isinstance(raw, dict):
        raise ValueError("request must be a JSON object")
    req = dict(DEFAULT_REQUEST)
    req.update({k: v for k, v in raw.items() if v is not None})
    for key in ("mounts", "match"):
        if not isinstance(req[key], list) or not all(isinstance(x, str) for x in req[key]):
            raise ValueError("%s must be a list of strings" % key)
    req["mounts"] = list(dict.fromkeys(req["mounts"]))
    req["window_s"] = _bounded(req, "window_s", 0.0, 10.0)
    req["subcheck_timeout_s"] = _bounded(req, "subcheck_timeout_s", 0.05, 120.0)
    req["max_output_bytes"] = int(_bounded(req, "max_output_bytes", 64, 1 << 30))
    return req


def _bounded(req: "Json", key: str, low: float, high: float) -> float:
    value = req[key]
    if isinstance(value, bool) or _finite(value) is None:
        raise ValueError("%s must be a number" % key)
    return min(high, max(low, float(value)))


def _compile_patterns(texts: "List[str]", errors: "Dict[str, str]") -> "List[Tuple[str, Any]]":
    patterns = []
    for text in texts:
        try:
            patterns.append((text, re.compile(text)))
        except re.error as exc:
            errors["match:" + text] = "bad pattern: %s" % exc
    return patterns


def encode_document(doc: "Json", max_bytes: int) -> "Tuple[Json, str]":
    """The document and its JSON text; one over ``max_bytes`` becomes an ok:false document."""
    try:
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        doc = error_doc("response not encodable: %s" % _describe(exc))
        text = json.dumps(doc, separators=(",", ":"))
    if len(text.encode("utf-8")) > max_bytes:
        doc = error_doc("response of %d bytes exceeds max_output_bytes %d" % (len(text), max_bytes))
        text = json.dumps(doc, separators=(",", ":"))
    return doc, text


# ---------------------------------------------------------------------------- the probe


class Probe(object):
    """Samples this node. Keep one per node: it holds the previous CPU and network counters
    (so rates are measured between ticks), NVML initialised once, what nvidia-smi accepts,
    and sub-checks still hung from earlier samples (never started twice)."""

    def __init__(self) -> None:
        self._previous = None  # type: Optional[Tuple[float, Any, Any]]
        self._hung = {}  # type: Dict[str, _Check]
        self._xid_cache = None  # type: Optional[Tuple[float, Any, Optional[str]]]
        self._nvml = None  # type: Any
        self._nvml_reason = None  # type: Optional[str]
        self._nvml_tried = False
        self._smi_fields = None  # type: Optional[str]
        self._smi_versions = None  # type: Optional[Json]
        self._smi_xml_useless = False
        self._smi_nvlink = None  # type: Optional[Tuple[float, Dict[int, Tuple[int, Optional[int]]]]]

    def __enter__(self) -> "Probe":
        return self

    def __exit__(self, *exc_info: "Any") -> None:
        self.close()

    def close(self) -> None:
        """Release NVML (if this probe started it)."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None

    @property
    def has_hung_checks(self) -> bool:
        return any(check.thread.is_alive() for check in self._hung.values())

    def sample(self, request: "Optional[Json]" = None) -> "Json":
        """One sample document (docs/probe-protocol.md); never raises."""
        return self.respond(request if request is not None else {})[0]

    def respond(self, request: "Any") -> "Tuple[Json, str]":
        """The sample document for a request and its JSON text, size-capped."""
        try:
            req = normalize_request(request)
        except ValueError as exc:
            return encode_document(error_doc("bad request: %s" % exc), DEFAULT_MAX_OUTPUT_BYTES)
        try:
            doc = self._sample(req)
        except Exception as exc:
            doc = error_doc("probe failed: %s" % _describe(exc))
        return encode_document(doc, req["max_output_bytes"])

    def answer(self, line: bytes) -> "Tuple[str, bool]":
        """The protocol reply line for one request line, and whether to stop."""
        try:
            raw = json.loads(line.decode("utf-8"))
        except ValueError as exc:
            _, text = encode_document(error_doc("bad request: %s" % exc), DEFAULT_MAX_OUTPUT_BYTES)
            return PREFIX + text + "\n", False
        op = raw.get("op", "sample") if isinstance(raw, dict) else None
        if op == "exit":
            return "", True
        if isinstance(raw, dict) and op != "sample":
            doc = error_doc("bad request: unknown op %r" % (op,))
            _, text = encode_document(doc, DEFAULT_MAX_OUTPUT_BYTES)
            return PREFIX + text + "\n", False
        _, text = self.respond(raw)
        return PREFIX + text + "\n", False

    # -- sub-check plumbing

    def _launch(self, name: str, fn: "Callable[..., Any]", *args: "Any") -> "Optional[_Check]":
        old = self._hung.get(name)
        if old is not None:
            if old.thread.is_alive():
                return None
            del self._hung[name]
        return _Check(name, fn, args).start()

    def _collect(
        self, check: "Optional[_Check]", name: str, timeout: float, errors: "Json"
    ) -> "Any":
        if check is None:
            errors[name] = "still hung since an earlier sample (timeout)"
            return None
        if not check.wait(timeout):
            self._hung[name] = check
            errors[name] = "timeout after %ss" % (timeout,)
            return None
        if check.error is not None:
            errors[name] = check.error
            return None
        return check.value

    # The kernel log is read by starting dmesg (or journalctl): in a persistent probe that would
    # start processes on every tick, so the answer is kept for XID_REFRESH_S (a refusal, which
    # will not change, for XID_REFUSED_S).

    def _xid_cached(self) -> bool:
        cached = self._xid_cache
        if cached is None:
            return False
        ttl = XID_REFUSED_S if cached[2] is not None else XID_REFRESH_S
        return time.monotonic() - cached[0] < ttl

    def _launch_xid(self, timeout: float) -> "Optional[_Check]":
        if self._xid_cached():
            return None
        return self._launch("xid", read_kernel_xids, timeout)

    def _collect_xid(self, check: "Optional[_Check]", timeout: float, errors: "Json") -> "Any":
        cached = self._xid_cache
        if check is None and cached is not None and self._xid_cached():
            if cached[2] is not None:
                errors["xid"] = cached[2]
            return cached[1]
        value = self._collect(check, "xid", timeout, errors)
        if check is not None and check.error is not None:
            self._xid_cache = (time.monotonic(), None, errors.get("xid"))
        elif "xid" not in errors:
            self._xid_cache = (time.monotonic(), value, None)
        return value

    # -- the sample

    def _sample(self, req: "Json") -> "Json":
        errors = {}  # type: Dict[str, str]
        start = self._counters(errors)  # the CPU window spans the whole run (at least window_s)
        timeout = req["subcheck_timeout_s"]
        patterns = _compile_patterns(req["match"], errors)
        disks = [(m, self._launch("disk:" + m, disk_usage, m)) for m in req["mounts"]]
        xid = self._launch_xid(timeout)
        procs = self._launch("processes", scan_processes, patterns, [os.getpid()])
        gpu_name, gpu = self._start_gpu(timeout, errors)
        doc = self._base_document(errors)
        doc["disks"] = [self._disk(m, c, timeout, errors) for m, c in disks]
        processes = self._collect(procs, "processes", timeout, errors) or {}
        doc["processes"] = {"count": processes.get("count"), "zombies": processes.get("zombies")}
        doc["matched_processes"] = processes.get("matched") if processes else None
        doc["matched_descendants"] = processes.get("descendants") if processes else None
        doc["xids"] = self._collect_xid(xid, timeout, errors)
        doc.update(self._gpu_result(gpu_name, gpu, timeout, errors))
        cpu = self._rates(start, req["window_s"], errors)
        doc["cpu"]["util_pct"], doc["cpu"]["window_s"], doc["network"] = cpu
        doc["time"] = time.time()
        doc["errors"] = errors
        return doc

    def _base_document(self, errors: "Dict[str, str]") -> "Json":
        load = _guard(os.getloadavg, errors, "load") or (None, None, None)
        node = os.uname()
        return {
            "probe_version": PROBE_VERSION,
            "ok": True,
            "hostname": node.nodename,  # what socket.gethostname() answers on Linux
            "time": None,
            "python": python_version(),
            "kernel": node.release or None,
            "uptime_s": _round(_guard(uptime_seconds, errors, "uptime"), 1),
            "cpu": {
                "util_pct": None,
                "cores": os.cpu_count(),
                "load1": _round(load[0], 2),
                "load5": _round(load[1], 2),
                "load15": _round(load[2], 2),
                "window_s": None,
            },
            "memory": _guard(memory_usage, errors, "memory") or _memory_doc(None, None, None, None),
        }

    def _counters(self, errors: "Dict[str, str]") -> "Tuple[float, Any, Any]":
        cpu = _guard(cpu_counters, errors, "cpu")
        return time.monotonic(), cpu, _guard(net_counters, errors, "network")

    def _rates(
        self, start: "Tuple[float, Any, Any]", window_s: float, errors: "Dict[str, str]"
    ) -> "Tuple[Optional[float], float, Any]":
        """CPU use, its window in seconds, and network rates since the previous sample's end
        (a persistent probe), else since ``start``, this sample's beginning, waiting until
        ``window_s`` has passed."""
        previous = self._previous
        if previous is None or start[0] - previous[0] < 0.05:
            previous = start
            time.sleep(max(0.0, start[0] + window_s - time.monotonic()))
        current = self._counters(errors)
        self._previous = current
        seconds = current[0] - previous[0]
        network = net_rates(previous[2], current[2], seconds) if current[2] is not None else None
        return cpu_util(previous[1], current[1]), round(seconds, 3), network

    def _disk(
        self, mount: str, check: "Optional[_Check]", timeout: float, errors: "Json"
    ) -> "Json":
        result = self._collect(check, "disk:" + mount, timeout, errors)
        if result is not None:
            return result
        return {
            "mount": mount,
            "total_bytes": None,
            "used_bytes": None,
            "avail_bytes": None,
            "error": errors.get("disk:" + mount),
            "mounted": None,
        }

    # -- GPUs

    def _start_gpu(
        self, timeout: float, errors: "Dict[str, str]"
    ) -> "Tuple[str, Optional[_Check]]":
        if not self._nvml_tried:
            init = self._launch("nvml", nvml_init)
            result = self._collect(init, "nvml", timeout, errors)
            if result is not None:
                self._nvml_tried = True
                self._nvml, self._nvml_reason = result
        if self._nvml is not None:
            return "nvml", self._launch("nvml", nvml_sample, self._nvml)
        return "nvidia-smi", self._launch("nvidia-smi", self._smi_sample, timeout)

    def _gpu_result(
        self, name: str, check: "Optional[_Check]", timeout: float, errors: "Json"
    ) -> "Json":
        result = self._collect(check, name, timeout, errors)
        if result is None and name == "nvidia-smi" and self._nvml_reason:
            errors["nvml"] = self._nvml_reason
        if result is None:
            # No NVIDIA stack is not an error (empty list); a failed check leaves gpus null.
            info = {"source": None, "driver_version": None, "cuda_version": None}
            return {"gpu_info": info, "gpus": None if name in errors else []}
        errors.update(result["errors"])
        for gpu in result["gpus"]:
            for proc in gpu["processes"]:
                proc["alive"] = _pid_alive(proc["pid"])
        return {"gpu_info": result["info"], "gpus": result["gpus"]}

    def _smi_sample(self, timeout: float) -> "Optional[Json]":
        """GPUs through nvidia-smi; None when it is not installed (no NVIDIA stack)."""
        exe = _which("nvidia-smi")
        if exe is None:
            return None
        deadline = time.monotonic() + timeout
        errors = {}  # type: Dict[str, str]
        rows, problems = parse_smi_csv(self._smi_query(exe, deadline))
        if problems:
            errors["nvidia-smi"] = problems[0][:MESSAGE_CHARS]
        gpus = [smi_row_to_gpu(row) for row in rows]
        self._smi_attach_apps(exe, deadline, gpus, errors)
        versions = self._smi_version(exe, deadline)
        if not self._smi_xml_useless and any(g["remapped_rows_pending"] is None for g in gpus):
            versions = self._smi_merge_xml(exe, deadline, gpus, errors) or versions
        # Last: a slow `nvlink --status` must not leave the remapped rows (CRITICAL) no time.
        self._smi_attach_nvlink(exe, deadline, gpus, errors)
        info = {"source": "nvidia-smi", "driver_version": None, "cuda_version": None}
        info.update({k: v for k, v in versions.items() if v})
        if info["driver_version"] is None and rows:
            info["driver_version"] = smi_value(rows[0].get("driver_version"))
        return {"info": info, "gpus": gpus, "errors": errors}

    def _smi_query(self, exe: str, deadline: float) -> str:
        field_sets = SMI_FIELD_SETS if self._smi_fields is None else (self._smi_fields,)
        message = ""
        for fields in field_sets:
            argv = [exe, "--query-gpu=" + fields, "--format=csv,nounits"]
            code, out, err = run_command(argv, _remaining(deadline))
            if code == 0 or parse_smi_csv(out)[0]:
                self._smi_fields = fields
                return out
            message = (out + err).strip()
            if "valid field" not in message:  # a driver problem, not an unknown field
                break
        self._smi_fields = None
        raise RuntimeError("nvidia-smi --query-gpu failed: %s" % message[:MESSAGE_CHARS])

    def _smi_attach_apps(
        self, exe: str, deadline: float, gpus: "List[Json]", errors: "Json"
    ) -> None:
        argv = [exe, "--query-compute-apps=" + SMI_APPS_FIELDS, "--format=csv,nounits"]
        try:
            code, out, err = run_command(argv, _remaining(deadline))
        except RuntimeError as exc:
            errors["nvidia-smi:apps"] = str(exc)
            return
        if code != 0:
            errors["nvidia-smi:apps"] = (out + err).strip()[:MESSAGE_CHARS]
        apps = parse_smi_apps(out)
        for gpu in gpus:
            gpu["processes"] = apps.get(gpu["uuid"] or "", [])

    def _smi_attach_nvlink(
        self, exe: str, deadline: float, gpus: "List[Json]", errors: "Json"
    ) -> None:
        """NVLink counts from ``nvidia-smi nvlink --status``, kept for NVLINK_REFRESH_S (link
        state changes rarely and a persistent probe would otherwise start it every tick)."""
        cached = self._smi_nvlink
        now = time.monotonic()
        if cached is not None:
            ttl = NVLINK_REFRESH_S if cached[1] else NVLINK_ABSENT_S
            if now - cached[0] >= ttl:
                cached = None
        if cached is None:
            try:
                code, out, err = run_command([exe, "nvlink", "--status"], _remaining(deadline))
            except RuntimeError as exc:
                errors["nvidia-smi:nvlink"] = str(exc)[:MESSAGE_CHARS]
                return
            links = parse_smi_nvlink(out)
            if code != 0 and not links:
                errors["nvidia-smi:nvlink"] = (out + err).strip()[:MESSAGE_CHARS]
            cached = self._smi_nvlink = (now, links)
        for gpu in gpus:
            state = cached[1].get(gpu["index"]) if gpu["index"] is not None else None
            if state is not None:
                gpu["nvlink_active"], gpu["nvlink_total"] = state

    def _smi_version(self, exe: str, deadline: float) -> "Json":
        if self._smi_versions is None:
            try:
                code, out, _ = run_command([exe, "--version"], _remaining(deadline))
            except RuntimeError:
                return {}
            self._smi_versions = parse_smi_version(out) if code == 0 else {}
        return self._smi_versions

    def _smi_merge_xml(
        self, exe: str, deadline: float, gpus: "List[Json]", errors: "Json"
    ) -> "Json":
        """Fill remapped-row counters from ``nvidia-smi -q -x`` (drivers whose --query-gpu
        lacks them); remember when the XML has none either, so it is not run every tick."""
        from xml.etree.ElementTree import ParseError

        try:
            code, out, err = run_command([exe, "-q", "-x"], _remaining(deadline))
            parsed = parse_smi_xml(out) if code == 0 else None
        except (RuntimeError, ParseError) as exc:
            errors["nvidia-smi:xml"] = str(exc)[:MESSAGE_CHARS]
            return {}
        if parsed is None:
            errors["nvidia-smi:xml"] = (out + err).strip()[:MESSAGE_CHARS]
            return {}
        by_uuid = {g["uuid"]: g for g in parsed["gpus"] if g["uuid"]}
        keys = [k for k in empty_gpu(None) if k.startswith("remapped_rows_")]
        for gpu in gpus:
            source = by_uuid.get(gpu["uuid"])
            for key in keys:
                if source is not None and gpu[key] is None:
                    gpu[key] = source[key]
        self._smi_xml_useless = all(g["remapped_rows_pending"] is None for g in parsed["gpus"])
        return {k: parsed[k] for k in ("driver_version", "cuda_version") if parsed[k]}


def _guard(fn: "Callable[[], Any]", errors: "Dict[str, str]", key: str) -> "Any":
    """Run a quick local read; a failure becomes errors[key] and a None value."""
    try:
        return fn()
    except Exception as exc:
        errors[key] = _describe(exc)
        return None


# ---------------------------------------------------------------------------- remote main


def _protocol_stream() -> "Any":
    """The protocol's own stream, on a copy of fd 1; fd 1 itself then points at stderr, so
    neither a stray print() nor what a C library (NVML, psutil) writes to fd 1 can corrupt it."""
    sys.stdout.flush()
    out = sys.stdout  # type: Any
    try:
        out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
    except OSError:  # no fd 2 to point at: fd 1 stays, Python's prints at least are kept off
        pass
    sys.stdout = sys.stderr
    return out


def main(instance: "Optional[Probe]" = None) -> None:
    """Answer requests from stdin, one ``UGRO1 <json>`` line each, until EOF or op=exit,
    with ``instance`` (a new ``Probe`` by default; the simulator passes its own)."""
    out = _protocol_stream()
    probe = Probe() if instance is None else instance
    try:
        while True:
            line = sys.stdin.buffer.readline()
            if not line:
                break
            if not line.strip():
                continue
            reply, stop = probe.answer(line)
            if stop:
                break
            out.write(reply)
            out.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        hung = probe.has_hung_checks
        if not hung:
            probe.close()  # NVML shutdown could block behind a hung NVML call
        try:
            out.flush()
        except Exception:
            pass
        if hung:
            # A thread stuck in statvfs on a dead NFS mount must not keep the process alive.
            os._exit(0)


if __name__ == "__main__":
    main()
