"""Probe.sample() for real on this machine, with its deadlines, and its GPU paths.

There is no GPU here: the nvidia-smi path runs against a fake `nvidia-smi` on PATH that replays
real recordings (tests/fixtures/probe/fake_nvidia_smi.py), and the NVML path against a small
fake `pynvml` whose values are those of the same recorded H100.
"""

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ugro_health import probe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"
MIB = 1024 * 1024
H100_UUID = "GPU-00000000-0000-0000-0000-000000000000"


@pytest.fixture
def no_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` now raises ImportError


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory put first on PATH for fake commands."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return directory


@pytest.fixture
def no_kmsg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/kmsg unreadable (here: absent), so the kernel log comes from `dmesg`."""
    monkeypatch.setattr(probe, "KMSG", str(tmp_path / "no-kmsg"))


def write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def install_fake_smi(fake_bin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    log = tmp_path / "smi.log"
    monkeypatch.setenv("FAKE_SMI_LOG", str(log))
    script = FIXTURES / "fake_nvidia_smi.py"
    write_exe(fake_bin / "nvidia-smi", f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    return log


@pytest.fixture
def sampler() -> Iterator[probe.Probe]:
    with probe.Probe() as instance:
        yield instance


# ---------------------------------------------------------------- for real, on this machine


def test_sample_on_this_machine(sampler: probe.Probe) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi; the test expects a node without GPUs")
    before = time.time()
    doc = sampler.sample({"mounts": ["/"], "window_s": 0.1})
    assert doc["ok"] is True
    assert doc["probe_version"] == 1
    assert doc["hostname"] == socket.gethostname()
    assert doc["kernel"] == os.uname().release
    assert doc["python"] == platform.python_version()
    assert before <= doc["time"] <= time.time()
    assert doc["uptime_s"] > 0
    assert doc["cpu"]["cores"] == os.cpu_count()
    assert 0.0 <= doc["cpu"]["util_pct"] <= 100.0
    assert doc["cpu"]["load1"] == pytest.approx(os.getloadavg()[0], abs=2.0)
    memory = doc["memory"]
    assert 0 < memory["used_bytes"] < memory["total_bytes"]
    (disk,) = doc["disks"]
    assert disk["mount"] == "/"
    assert disk["error"] is None
    assert 0 < disk["used_bytes"] <= disk["total_bytes"]
    assert all(n["iface"] != "lo" for n in doc["network"])
    assert doc["processes"]["count"] > 1
    assert doc["gpus"] == []
    assert doc["gpu_info"] == {"source": None, "driver_version": None, "cuda_version": None}
    # reading the kernel log needs privileges this runner may lack; nothing else may fail
    assert set(doc["errors"]) <= {"xid"}
    assert isinstance(doc["xids"], list) or "xid" in doc["errors"]


def test_first_call_samples_a_window_later_calls_measure_between_ticks(
    sampler: probe.Probe,
) -> None:
    started = time.monotonic()
    sampler.sample({"window_s": 0.5})
    assert time.monotonic() - started >= 0.5
    # Keep one core busy between the two ticks, in another process: this one's own CPU time
    # is the monitor's and left out. Reaped only after the sample, so not counted as a child.
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.4)
        started = time.monotonic()
        doc = sampler.sample({"window_s": 5.0})
    finally:
        spinner.kill()
        spinner.wait()
    assert time.monotonic() - started < 2.0  # no new 5 s window: the previous tick is used
    assert doc["cpu"]["window_s"] >= 0.4  # from the end of the previous tick
    assert doc["cpu"]["util_pct"] >= 30.0 / (os.cpu_count() or 1)


def test_zombies_and_matched_processes(sampler: probe.Probe) -> None:
    marker = f"ugro-probe-test-marker-{os.getpid()}"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    zombie = subprocess.Popen(["true"])  # exits at once; not waited for until the end
    try:
        time.sleep(0.3)
        doc = sampler.sample({"match": [marker, "(unclosed"], "window_s": 0})
        matched = doc["matched_processes"]
        assert [(m["pid"], m["pattern"]) for m in matched] == [(sleeper.pid, marker)]
        assert matched[0]["cmdline"].endswith(marker)
        assert doc["processes"]["zombies"] >= 1
        assert "match:(unclosed" in doc["errors"]  # a bad pattern is reported, not fatal
        # Broad enough to match this test process too (whose probe must not report itself),
        # narrow enough to stay under the probe's cap on a busy machine.
        broad = re.escape(sys.executable)
        everything = sampler.sample({"match": [broad], "window_s": 0})["matched_processes"]
        assert sleeper.pid in [m["pid"] for m in everything]
        assert os.getpid() not in [m["pid"] for m in everything]  # never the probe itself
    finally:
        sleeper.kill()
        sleeper.wait()
        zombie.wait()


def test_psutil_is_used_where_proc_is_missing(
    sampler: probe.Probe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    psutil = pytest.importorskip("psutil")
    monkeypatch.setattr(probe, "PROC", str(tmp_path / "no-proc"))
    doc = sampler.sample({"window_s": 0.1, "match": ["."]})
    assert doc["ok"] is True
    assert doc["memory"]["total_bytes"] == psutil.virtual_memory().total
    assert doc["cpu"]["util_pct"] is not None
    assert doc["processes"]["count"] > 1
    assert doc["uptime_s"] > 0
    assert set(doc["errors"]) <= {"xid"}


def test_a_failing_probe_still_answers_a_document(
    sampler: probe.Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> str:
        raise RuntimeError("interpreter in a strange state")

    monkeypatch.setattr(probe, "python_version", broken)
    doc = sampler.sample({})
    assert doc == {
        "probe_version": 1,
        "ok": False,
        "error": "probe failed: RuntimeError: interpreter in a strange state",
    }


# ---------------------------------------------------------------- deadlines


def processes_running(needle: bytes) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if needle in handle.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.usefixtures("no_pynvml")
def test_wedged_nvidia_smi_is_a_reported_timeout(sampler: probe.Probe, fake_bin: Path) -> None:
    # the shell's child holds the pipe too: both must be killed (the whole process group)
    write_exe(fake_bin / "nvidia-smi", "#!/bin/sh\nsleep 987654\n")
    started = time.monotonic()
    doc = sampler.sample({"subcheck_timeout_s": 1.0, "window_s": 0})
    assert time.monotonic() - started < 1.0 + 1.5
    assert "timeout" in doc["errors"]["nvidia-smi"]
    assert doc["gpus"] is None  # unknown, not "no GPUs"
    assert doc["ok"] is True
    assert doc["memory"]["total_bytes"] > 0  # the rest of the sample is there
    time.sleep(1.5)  # the check's own kill fires at its deadline
    assert processes_running(b"sleep\x00987654") == []


def test_hung_mount_times_out_alone_and_is_not_restarted(
    sampler: probe.Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_statvfs = os.statvfs
    release = threading.Event()
    calls = []

    def statvfs(path: Any) -> Any:
        if path == "/x":
            calls.append(path)
            release.wait(30)  # an NFS server that stopped answering
        return real_statvfs(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    monkeypatch.setattr(probe, "is_mount_point", lambda path: True)  # /x: an NFS mount point
    try:
        doc = sampler.sample({"mounts": ["/", "/x"], "subcheck_timeout_s": 0.5, "window_s": 0})
        assert doc["errors"]["disk:/x"] == "timeout after 0.5s"
        root, hung = doc["disks"]
        assert root["total_bytes"] > 0 and root["error"] is None
        assert hung == {
            "mount": "/x",
            "total_bytes": None,
            "used_bytes": None,
            "avail_bytes": None,
            "error": "timeout after 0.5s",
            "mounted": None,
        }
        started = time.monotonic()
        again = sampler.sample({"mounts": ["/", "/x"], "subcheck_timeout_s": 0.5, "window_s": 0})
        assert time.monotonic() - started < 0.5
        assert "still hung" in again["errors"]["disk:/x"]
        assert len(calls) == 1  # no second thread piles up behind the first
    finally:
        release.set()
    time.sleep(0.1)
    third = sampler.sample({"mounts": ["/x"], "subcheck_timeout_s": 0.5, "window_s": 0})
    assert len(calls) == 2  # once the old check returned, the mount is checked afresh
    assert "FileNotFoundError" in third["errors"]["disk:/x"]


@pytest.mark.usefixtures("no_kmsg")
def test_kernel_log_read_from_dmesg(sampler: probe.Probe, fake_bin: Path) -> None:
    recording = FIXTURES / "dmesg_ctime_xid_gpud.txt"
    write_exe(fake_bin / "dmesg", f'#!/bin/sh\ncat "{recording}"\n')
    doc = sampler.sample({"window_s": 0})
    assert [x["xid"] for x in doc["xids"]] == [13, 13, 13, 109, 31, 109]
    assert "xid" not in doc["errors"]


@pytest.mark.usefixtures("no_kmsg")
def test_unreadable_kernel_log_is_an_error_not_a_failure(
    sampler: probe.Probe, fake_bin: Path
) -> None:
    # util-linux's wording as a user sees it under kernel.dmesg_restrict=1
    write_exe(
        fake_bin / "dmesg",
        "#!/bin/sh\necho 'dmesg: read kernel buffer failed: Operation not permitted' >&2\nexit 1\n",
    )
    write_exe(
        fake_bin / "journalctl",
        "#!/bin/sh\necho 'Hint: You are currently not seeing messages from other users and the"
        " system.' >&2\nexit 0\n",
    )
    doc = sampler.sample({"window_s": 0})
    assert doc["ok"] is True
    assert doc["xids"] is None
    assert "Operation not permitted" in doc["errors"]["xid"]
    assert "journalctl:" in doc["errors"]["xid"]


# ---------------------------------------------------------------- nvidia-smi fallback


@pytest.mark.usefixtures("no_pynvml")
def test_nvidia_smi_driver_610_versions_end_to_end(
    sampler: probe.Probe, fake_bin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_fake_smi(fake_bin, monkeypatch, tmp_path)
    monkeypatch.setenv("FAKE_SMI_VERSION", "smi_610_version.txt")
    info = sampler.sample({"window_s": 0})["gpu_info"]
    assert (info["driver_version"], info["cuda_version"]) == ("610.57.04", "13.3")


@pytest.mark.usefixtures("no_pynvml")
def test_nvidia_smi_fallback_end_to_end(
    sampler: probe.Probe, fake_bin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = install_fake_smi(fake_bin, monkeypatch, tmp_path)
    doc = sampler.sample({"window_s": 0})
    assert doc["gpu_info"] == {
        "source": "nvidia-smi",
        "driver_version": "590.48.01",
        "cuda_version": "13.1",
    }
    (gpu,) = doc["gpus"]
    assert (gpu["index"], gpu["uuid"], gpu["name"]) == (0, H100_UUID, "NVIDIA H100 80GB HBM3")
    assert gpu["mem_used_bytes"] == 19818 * MIB
    assert gpu["power_w"] == 631.95
    assert gpu["remapped_rows_pending"] == 0
    assert gpu["throttle_reasons"] == []
    assert [(p["pid"], p["used_memory_bytes"]) for p in gpu["processes"]] == [
        (11327, 2566 * MIB),
        (11328, 1542 * MIB),
        (11345, 15690 * MIB),
    ]
    assert all(isinstance(p["alive"], bool) for p in gpu["processes"])
    assert set(doc["errors"]) <= {"xid"}
    calls = log.read_text().splitlines()
    assert calls[0].startswith("--query-gpu=index,name,uuid")
    assert not any(c.startswith("-q") for c in calls)  # remapped rows came with the CSV
    assert (gpu["nvlink_active"], gpu["nvlink_total"]) == (None, None)  # no NVLink lines


@pytest.mark.usefixtures("no_pynvml")
def test_nvidia_smi_nvlink_counts_are_read_and_kept_between_ticks(
    sampler: probe.Probe, fake_bin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = install_fake_smi(fake_bin, monkeypatch, tmp_path)
    monkeypatch.setenv("FAKE_SMI_NVLINK", "smi_nvlink_status_gb200.txt")  # its GPU 0: 18 up
    (gpu,) = sampler.sample({"window_s": 0})["gpus"]
    assert (gpu["nvlink_active"], gpu["nvlink_total"]) == (18, 18)
    (gpu,) = sampler.sample({"window_s": 0})["gpus"]
    assert (gpu["nvlink_active"], gpu["nvlink_total"]) == (18, 18)
    runs = [c for c in log.read_text().splitlines() if c.startswith("nvlink")]
    assert runs == ["nvlink --status"]  # once: kept for NVLINK_REFRESH_S
    monkeypatch.setattr(probe, "NVLINK_REFRESH_S", 0.0)
    monkeypatch.setenv("FAKE_SMI_NVLINK", "smi_nvlink_status_v100_inactive.txt")  # no GPU 0
    (gpu,) = sampler.sample({"window_s": 0})["gpus"]
    assert (gpu["nvlink_active"], gpu["nvlink_total"]) == (None, None)


@pytest.mark.usefixtures("no_pynvml")
def test_nvidia_smi_older_driver_drops_unknown_fields_once(
    sampler: probe.Probe, fake_bin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = install_fake_smi(fake_bin, monkeypatch, tmp_path)
    monkeypatch.setenv("FAKE_SMI_STATE", "idle")
    monkeypatch.setenv("FAKE_SMI_UNKNOWN", "clocks_event_reasons.active,remapped_rows.pending")
    monkeypatch.setenv("FAKE_SMI_XML", "smi_a100_sxm4_mig_535_q.xml")
    doc = sampler.sample({"window_s": 0})
    (gpu,) = doc["gpus"]
    assert gpu["throttle_reasons"] == ["gpu_idle"]  # via clocks_throttle_reasons.active
    assert gpu["remapped_rows_pending"] is None
    queries = [c for c in log.read_text().splitlines() if c.startswith("--query-gpu")]
    assert [("clocks_event" in q, "remapped" in q) for q in queries] == [
        (True, True),
        (False, True),
        (False, False),
    ]
    xml_runs = [c for c in log.read_text().splitlines() if c.startswith("-q")]
    assert len(xml_runs) == 1  # tried once for remapped rows; that XML has none (MIG: N/A)
    log.write_text("")
    sampler.sample({"window_s": 0})
    calls = log.read_text().splitlines()
    assert [c.startswith("--query-gpu") for c in calls].count(True) == 1  # accepted set kept
    assert not any(c.startswith("-q") for c in calls)


def test_remapped_rows_filled_from_xml(monkeypatch: pytest.MonkeyPatch) -> None:
    xml = (FIXTURES / "smi_rtx4000_ada_595_q.xml").read_text()
    (from_xml,) = probe.parse_smi_xml(xml)["gpus"]
    gpu = probe.empty_gpu(0)
    gpu["uuid"] = from_xml["uuid"]  # the same GPU as seen by a --query-gpu without remap fields
    monkeypatch.setattr(probe, "run_command", lambda argv, timeout: (0, xml, ""))
    errors: dict = {}
    instance = probe.Probe()
    versions = instance._smi_merge_xml("nvidia-smi", time.monotonic() + 5, [gpu], errors)
    assert (gpu["remapped_rows_pending"], gpu["remapped_rows_failed"]) == (0, 0)
    assert gpu["remapped_rows_correctable"] == 0
    assert versions == {"driver_version": "595.84", "cuda_version": "13.2"}
    assert errors == {}
    assert instance._smi_xml_useless is False


# ---------------------------------------------------------------- NVML


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_pynvml(processes: Any = None, init_error: Any = None) -> types.ModuleType:
    """pynvml with the values of the recorded H100 under load (590.48.01); a second GPU is
    lost. Fields the recording shows as N/A raise NotSupported, as NVML does."""
    nv: Any = types.ModuleType("pynvml")
    nv.calls = []
    not_supported = NVMLError(3)
    if processes is None:
        processes = [(11327, 2566 * MIB), (11328, 1542 * MIB), (11345, 15690 * MIB)]

    def init() -> None:
        nv.calls.append("init")
        if init_error is not None:
            raise init_error

    def handle(index: int) -> str:
        if index == 1:
            raise NVMLError(15)  # NVML_ERROR_GPU_IS_LOST
        return "h100"

    def raise_not_supported(*args: Any) -> None:
        raise not_supported

    proc = types.SimpleNamespace
    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: nv.calls.append("shutdown")
    nv.nvmlDeviceGetCount = lambda: 2
    nv.nvmlDeviceGetHandleByIndex = handle
    nv.nvmlSystemGetDriverVersion = lambda: "590.48.01"
    nv.nvmlSystemGetCudaDriverVersion = lambda: 13010
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"  # old bindings return bytes
    nv.nvmlDeviceGetUUID = lambda h: H100_UUID
    nv.nvmlDeviceGetPciInfo = lambda h: proc(busId="00000000:00:09.0")
    nv.nvmlDeviceGetUtilizationRates = lambda h: proc(gpu=100, memory=11)
    nv.nvmlDeviceGetMemoryInfo = lambda h: proc(used=19818 * MIB, total=81559 * MIB)
    nv.nvmlDeviceGetTemperature = lambda h, sensor: 59
    nv.nvmlDeviceGetPowerUsage = lambda h: 631950
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700000
    nv.nvmlDeviceGetTotalEccErrors = lambda h, kind, counter: 0
    nv.nvmlDeviceGetRetiredPagesPendingStatus = raise_not_supported
    nv.nvmlDeviceGetRemappedRows = lambda h: (0, 0, 0, 0)
    # no nvmlDeviceGetCurrentClocksEventReasons: bindings older than R535 lack it
    nv.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x0
    nv.nvmlDeviceGetCurrPcieLinkGeneration = lambda h: 5
    nv.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: 5
    nv.nvmlDeviceGetCurrPcieLinkWidth = lambda h: 16
    nv.nvmlDeviceGetMaxPcieLinkWidth = lambda h: 16
    nv.nvmlDeviceGetNvLinkState = raise_not_supported
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        proc(pid=pid, usedGpuMemory=used) for pid, used in processes
    ]
    nv.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return nv


def test_nvml_path_with_unsupported_fields_and_a_lost_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nv = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    with probe.Probe() as instance:
        doc = instance.sample({"window_s": 0})
        instance.sample({"window_s": 0})
        assert nv.calls == ["init"]  # initialised once per Probe
    assert nv.calls == ["init", "shutdown"]
    assert doc["gpu_info"] == {
        "source": "nvml",
        "driver_version": "590.48.01",
        "cuda_version": "13.1",
    }
    good, lost = doc["gpus"]
    assert good["name"] == "NVIDIA H100 80GB HBM3"
    assert good["pci_bus_id"] == "00000000:00:09.0"
    assert (good["util_pct"], good["mem_util_pct"]) == (100.0, 11.0)
    assert good["mem_used_bytes"] == 19818 * MIB
    assert (good["power_w"], good["power_limit_w"]) == (631.95, 700.0)
    assert good["temp_c"] == 59.0
    assert good["retired_pages_pending"] is None  # NotSupported: that field only
    assert (good["nvlink_active"], good["nvlink_total"]) == (None, None)
    assert (good["remapped_rows_pending"], good["remapped_rows_failed"]) == (0, 0)
    assert good["throttle_reasons"] == []
    assert (good["pcie_gen"], good["pcie_width_max"]) == (5, 16)
    assert [p["pid"] for p in good["processes"]] == [11327, 11328, 11345]
    assert lost["index"] == 1
    assert "15" in lost["error"]
    assert lost["name"] is None
    assert set(doc["errors"]) <= {"xid"}


def test_nvml_process_names_and_liveness_come_from_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    live = os.getpid()
    gone = 2**22 + 7  # above the kernel's pid_max
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(processes=[(live, MIB), (gone, MIB)]))
    doc = probe.Probe().sample({"window_s": 0})
    procs = {p["pid"]: p for p in doc["gpus"][0]["processes"]}
    assert procs[live]["alive"] is True
    assert procs[live]["name"] == Path("/proc/self/comm").read_text().strip()
    assert procs[gone] == {"pid": gone, "name": None, "used_memory_bytes": MIB, "alive": False}


@pytest.mark.usefixtures("fake_bin")
def test_nvml_refusing_to_start_is_reported_when_nothing_else_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=NVMLError(4)))
    monkeypatch.setattr(probe, "_which", lambda name: None)
    doc = probe.Probe().sample({"window_s": 0})
    assert doc["gpus"] == []
    assert doc["errors"]["nvml"] == "nvmlInit: NVMLError: NVML error 4"


@pytest.mark.usefixtures("no_kmsg")
def test_persistent_probe_reads_the_kernel_log_once_not_every_tick(
    sampler: probe.Probe, fake_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording = FIXTURES / "dmesg_ctime_xid_gpud.txt"
    runs = tmp_path / "dmesg_runs"
    write_exe(fake_bin / "dmesg", f'#!/bin/sh\necho run >> "{runs}"\ncat "{recording}"\n')
    docs = [sampler.sample({"window_s": 0}) for _ in range(3)]
    assert runs.read_text().count("run") == 1  # no process started per tick
    assert docs[0]["xids"] and all(d["xids"] == docs[0]["xids"] for d in docs)
    monkeypatch.setattr(probe, "XID_REFRESH_S", 0.0)  # once stale, it is read again
    sampler.sample({"window_s": 0})
    assert runs.read_text().count("run") == 2


@pytest.mark.usefixtures("no_kmsg")
def test_refused_kernel_log_is_not_retried_every_tick(
    sampler: probe.Probe, fake_bin: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "dmesg_runs"
    write_exe(
        fake_bin / "dmesg",
        f'#!/bin/sh\necho run >> "{runs}"\n'
        "echo 'dmesg: read kernel buffer failed: Operation not permitted' >&2\nexit 1\n",
    )
    write_exe(fake_bin / "journalctl", "#!/bin/sh\necho 'No journal files were found.' >&2\n")
    docs = [sampler.sample({"window_s": 0}) for _ in range(3)]
    assert runs.read_text().count("run") == 1
    assert all("Operation not permitted" in d["errors"]["xid"] for d in docs)
