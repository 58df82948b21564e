"""The probe's pure parsers, fed with real recorded outputs (tests/fixtures/probe/README.md).

Expected values are read off the recordings by eye (the numbers a person sees in the fixture),
not computed with the code under test.
"""

from pathlib import Path

import pytest

from ugro_health import probe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"
MIB = 1024 * 1024


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# ---------------------------------------------------------------- /proc (this machine's files)


def test_proc_stat_counts_idle_and_iowait_as_idle() -> None:
    # first line of the recording: "cpu  2823 0 1663 55954 245 0 50 11 0 0"
    counters = probe.parse_proc_stat(fixture("proc_stat_1.txt"))
    assert counters == {"total": 2823 + 0 + 1663 + 55954 + 245 + 0 + 50 + 11, "idle": 55954 + 245}


def test_cpu_util_between_two_recorded_reads() -> None:
    before = probe.parse_proc_stat(fixture("proc_stat_1.txt"))
    after = probe.parse_proc_stat(fixture("proc_stat_2.txt"))
    # second read: "cpu  2850 0 1677 56177 245 0 50 11 0 0" -> 27+14 busy of 27+14+223 ticks
    assert probe.cpu_util(before, after) == pytest.approx(100.0 * 41 / 264, abs=0.05)
    assert probe.cpu_util(after, after) is None  # no ticks elapsed: unknown, not 0


def test_meminfo_used_is_total_minus_available() -> None:
    info = probe.parse_meminfo(fixture("proc_meminfo.txt"))
    assert info["MemTotal"] == 24684092 * 1024
    memory = probe.memory_from_meminfo(info)
    assert memory["total_bytes"] == 24684092 * 1024
    assert memory["used_bytes"] == (24684092 - 24378524) * 1024
    assert memory["util_pct"] == pytest.approx(100.0 * (24684092 - 24378524) / 24684092, abs=0.05)
    # this machine has no swap: the share of nothing is unknown, not 0 %
    assert memory["swap_total_bytes"] == 0
    assert memory["swap_util_pct"] is None


def test_meminfo_without_memavailable_falls_back_to_free_buffers_cached() -> None:
    text = "\n".join(
        line for line in fixture("proc_meminfo.txt").splitlines() if "MemAvailable" not in line
    )
    memory = probe.memory_from_meminfo(probe.parse_meminfo(text))
    assert memory["used_bytes"] == (24684092 - (24406324 + 3280 + 121304)) * 1024


def test_net_dev_counters_and_rates_skip_loopback() -> None:
    counters = probe.parse_net_dev(fixture("proc_net_dev_1.txt"))
    assert counters["eth0"] == {
        "rx_bytes": 78577386,
        "rx_errors": 0,
        "tx_bytes": 135880,
        "tx_errors": 0,
    }
    assert counters["lo"]["rx_bytes"] == 3193
    later = {name: dict(c) for name, c in counters.items()}
    later["eth0"]["rx_bytes"] += 5000
    later["eth0"]["tx_errors"] += 4
    rates = {r["iface"]: r for r in probe.net_rates(counters, later, 2.0)}
    assert "lo" not in rates
    assert rates["eth0"]["rx_bytes_per_s"] == 2500.0
    assert rates["eth0"]["tx_errors_per_s"] == 2.0
    assert rates["eth0"]["tx_errors"] == 4


def test_net_rate_of_a_reset_or_new_counter_is_unknown() -> None:
    counters = probe.parse_net_dev(fixture("proc_net_dev_2.txt"))
    reset = {name: dict(c, rx_bytes=0) for name, c in counters.items()}
    rates = {r["iface"]: r for r in probe.net_rates(counters, reset, 1.0)}
    assert rates["eth0"]["rx_bytes_per_s"] is None
    first = {r["iface"]: r for r in probe.net_rates(None, counters, 1.0)}
    assert first["eth0"]["tx_bytes_per_s"] is None


def test_uptime_and_pid_stat_states() -> None:
    assert probe.parse_uptime(fixture("proc_uptime.txt")) > 0
    # a command name containing ") Z (" must not be read as a zombie
    assert probe.parse_pid_stat_state(fixture("proc_pid_stat_tricky_comm.txt")) == "R"
    assert probe.parse_pid_stat_state(fixture("proc_pid_stat_zombie.txt")) == "Z"


# ---------------------------------------------------------------- nvidia-smi CSV (H100, 590)


def h100_row(state: str) -> dict:
    rows, problems = probe.parse_smi_csv(fixture(f"smi_h100_590_query_gpu_{state}.csv"))
    assert problems == []
    assert len(rows) == 1
    return rows[0]


def test_smi_csv_header_units_are_dropped() -> None:
    row = h100_row("load")
    assert row["memory.used"] == "19818 MiB"
    assert row["power.draw"] == "631.95 W"


def test_smi_gpu_under_load() -> None:
    gpu = probe.smi_row_to_gpu(h100_row("load"))
    assert gpu["index"] == 0
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["uuid"] == "GPU-00000000-0000-0000-0000-000000000000"
    assert gpu["pci_bus_id"] == "00000000:00:09.0"
    assert gpu["util_pct"] == 100.0
    assert gpu["mem_util_pct"] == 11.0
    assert gpu["mem_used_bytes"] == 19818 * MIB
    assert gpu["mem_total_bytes"] == 81559 * MIB
    assert gpu["temp_c"] == 59.0
    assert gpu["power_w"] == 631.95
    assert gpu["power_limit_w"] == 700.0
    assert gpu["ecc_uncorrected_volatile"] == 0
    assert gpu["ecc_corrected_volatile"] == 0
    assert (gpu["remapped_rows_pending"], gpu["remapped_rows_failed"]) == (0, 0)
    assert (gpu["pcie_gen"], gpu["pcie_gen_max"], gpu["pcie_width"], gpu["pcie_width_max"]) == (
        5,
        5,
        16,
        16,
    )
    assert gpu["throttle_reasons"] == []  # clocks_event_reasons.active 0x0...0


def test_smi_gpu_idle_reports_idle_throttle_and_na_fields_as_none() -> None:
    gpu = probe.smi_row_to_gpu(h100_row("idle"))
    assert gpu["throttle_reasons"] == ["gpu_idle"]  # 0x0000000000000001
    assert gpu["util_pct"] == 0.0
    assert gpu["retired_pages_pending"] is None  # "[N/A]" on this H100
    assert gpu["nvlink_active"] is None  # not part of --query-gpu


def test_smi_compute_apps_per_gpu() -> None:
    apps = probe.parse_smi_apps(fixture("smi_h100_590_compute_apps_load.csv"))
    procs = apps["GPU-00000000-0000-0000-0000-000000000000"]
    assert [(p["pid"], p["name"], p["used_memory_bytes"]) for p in procs] == [
        (11327, "/root/tools/memhog", 2566 * MIB),
        (11328, "/root/tools/memhog", 1542 * MIB),
        (11345, "./gpu_burn", 15690 * MIB),
    ]
    assert probe.parse_smi_apps(fixture("smi_h100_590_compute_apps_idle.csv")) == {}


def test_smi_apps_process_name_with_commas_is_joined_back() -> None:
    header = fixture("smi_h100_590_compute_apps_load.csv").splitlines()[0]
    line = "t, n, b, s, GPU-1, 7, chrome --flag=a,b, --x, 12 MiB"  # synthetic free-text name
    apps = probe.parse_smi_apps(header + "\n" + line + "\n")
    assert apps["GPU-1"][0]["name"] == "chrome --flag=a, b, --x"
    assert apps["GPU-1"][0]["used_memory_bytes"] == 12 * MIB


def test_smi_csv_keeps_error_lines_apart() -> None:
    # synthetic: a per-GPU error line before the table, as a wedged GPU produces
    text = "Unable to determine the device handle for GPU0000:3B:00.0: Unknown Error\n"
    text += fixture("smi_h100_590_query_gpu_load.csv")
    rows, problems = probe.parse_smi_csv(text)
    assert len(rows) == 1
    assert problems == ["Unable to determine the device handle for GPU0000:3B:00.0: Unknown Error"]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("[N/A]", None), ("N/A", None), ("[Not Supported]", None), ("", None), (" 42 ", "42")],
)
def test_smi_value_not_available_spellings(cell: str, expected: object) -> None:
    assert probe.smi_value(cell) == expected


def test_smi_version() -> None:
    versions = probe.parse_smi_version(fixture("smi_h100_590_version.txt"))
    assert versions == {"driver_version": "590.48.01", "cuda_version": "13.1"}


# ---------------------------------------------------------------- nvidia-smi -q -x


def test_xml_a100_in_mig_mode() -> None:
    parsed = probe.parse_smi_xml(fixture("smi_a100_sxm4_mig_535_q.xml"))
    assert (parsed["driver_version"], parsed["cuda_version"]) == ("535.54.03", "12.2")
    (gpu,) = parsed["gpus"]
    assert gpu["name"] == "NVIDIA A100-SXM4-80GB"
    assert gpu["uuid"] == "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    assert gpu["util_pct"] is None  # N/A with MIG enabled
    assert gpu["mem_used_bytes"] == 50 * MIB
    assert gpu["mem_total_bytes"] == 81920 * MIB
    assert gpu["temp_c"] == 27.0
    assert (gpu["power_w"], gpu["power_limit_w"]) == (67.03, 500.0)
    assert gpu["remapped_rows_pending"] is None  # <remapped_rows>N/A</remapped_rows>
    assert gpu["ecc_uncorrected_volatile"] == 0
    assert gpu["throttle_reasons"] == []
    assert gpu["processes"] == []


def test_xml_old_schema_tesla_t4() -> None:
    parsed = probe.parse_smi_xml(fixture("smi_tesla_t4_515_q.xml"))
    (gpu,) = parsed["gpus"]
    assert parsed["cuda_version"] == "11.7"
    assert (gpu["power_w"], gpu["power_limit_w"]) == (26.78, 70.0)  # <power_readings> (v11)
    assert gpu["throttle_reasons"] == []  # <clocks_throttle_reasons> naming
    assert gpu["retired_pages_pending"] is False
    assert (gpu["pcie_width"], gpu["pcie_width_max"]) == (8, 16)
    assert [(p["pid"], p["name"], p["used_memory_bytes"]) for p in gpu["processes"]] == [
        (675, "/usr/lib/xorg/Xorg", 22 * MIB),
        (5762, "python", 1005 * MIB),
    ]


def test_xml_new_schema_rtx_4000_ada() -> None:
    (gpu,) = probe.parse_smi_xml(fixture("smi_rtx4000_ada_595_q.xml"))["gpus"]
    assert gpu["throttle_reasons"] == ["gpu_idle"]
    assert gpu["power_w"] == 8.81  # <average_power_draw>, no <power_draw> any more
    assert (gpu["remapped_rows_pending"], gpu["remapped_rows_failed"]) == (0, 0)
    assert gpu["remapped_rows_correctable"] == 0
    assert gpu["ecc_uncorrected_volatile"] is None  # ECC disabled: all N/A
    assert (gpu["pcie_gen"], gpu["pcie_gen_max"]) == (1, 4)
    assert len(gpu["processes"]) == 4


# ---------------------------------------------------------------- nvidia-smi nvlink


def test_nvlink_status_counts_inactive_links() -> None:
    links = probe.parse_smi_nvlink(fixture("smi_nvlink_status_v100_inactive.txt"))
    assert links == {3: (4, 6)}


def test_nvlink_status_of_several_gpus() -> None:
    links = probe.parse_smi_nvlink(fixture("smi_nvlink_status_gb200.txt"))
    assert links == {0: (18, 18), 1: (2, 2)}


def test_nvlink_status_all_inactive_leaves_the_count_unknown() -> None:
    links = probe.parse_smi_nvlink(fixture("smi_nvlink_status_b200_all_inactive.txt"))
    assert links == {2: (0, None)}


def test_nvlink_status_without_links_or_gpus() -> None:
    assert probe.parse_smi_nvlink("GPU 0: NVIDIA H100 PCIe (UUID: GPU-1)\n") == {}
    assert probe.parse_smi_nvlink("No devices were found\n") == {}


# ---------------------------------------------------------------- kernel log


def test_xids_from_dmesg_ctime_output() -> None:
    events = probe.parse_xid_lines(fixture("dmesg_ctime_xid_gpud.txt"))
    assert [e["xid"] for e in events] == [13, 13, 13, 109, 31, 109]
    assert {e["gpu"] for e in events} == {"0000:cb:00"}
    assert events[3]["message"].startswith("NVRM: Xid (PCI:0000:cb:00): 109, pid=1797828")


def test_xids_are_capped_to_the_most_recent() -> None:
    events = probe.parse_xid_lines(fixture("dmesg_ctime_xid_gpud.txt"), limit=2)
    assert [e["xid"] for e in events] == [31, 109]


def test_xid_79_and_kernel_timestamp() -> None:
    events = probe.parse_xid_lines(fixture("dmesg_fallen_off_bus_nvsentinel.txt"))
    # the multi-line "fallen off the bus" report carries no Xid number: it counts as Xid 79
    # for the GPU its first line names, stamped with that line's time
    assert [(e["xid"], e["gpu"], e["kernel_time_s"]) for e in events] == [
        (79, "0000:b3:00", 1843.308145),  # as Xid lines name the GPU
        (79, "0000:44:00", None),  # the unstamped Xid line
    ]
    assert events[0]["message"] == "NVRM: GPU 0000:b3:00 has fallen off the bus (no Xid line)"
    stamped = "[ 1843.308145] " + events[1]["message"]
    assert probe.parse_xid_lines(stamped)[0]["kernel_time_s"] == 1843.308145


def test_fallen_off_the_bus_on_one_line_and_unrelated_nvrm_lines() -> None:
    text = (
        "[   49.261458] NVRM: GPU at 0000:01:00.0 has fallen off the bus.\n"
        "[   49.261465] NVRM: os_pci_init_handle: invalid context!\n"
        "[   50.000000] NVRM: The NVIDIA GPU 0000:02:00.0\n"
        "               NVRM: (PCI ID: 10de:2330) installed in this system is\n"
        "               NVRM: not supported by the NVIDIA 390.xx driver release.\n"
    )
    events = probe.parse_xid_lines(text)
    assert [(e["xid"], e["gpu"], e["kernel_time_s"]) for e in events] == [
        (79, "0000:01:00", 49.261458)
    ]


# ---------------------------------------------------------------- small pure helpers


def test_throttle_names_from_bitmask() -> None:
    assert probe.throttle_names(0) == []
    assert probe.throttle_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert probe.throttle_names(0x1FF) == [name for _, name in probe.THROTTLE_BITS]
    assert probe.throttle_names(0x1000) == ["unknown_0x1000"]
    assert probe.throttle_names(None) is None


def test_cuda_version_string() -> None:
    assert probe.cuda_version_string(12040) == "12.4"
    assert probe.cuda_version_string(13010) == "13.1"
    assert probe.cuda_version_string(None) is None


def test_request_defaults_and_validation() -> None:
    req = probe.normalize_request({"mounts": ["/", "/", "/data"], "window_s": 99})
    assert req["mounts"] == ["/", "/data"]
    assert req["window_s"] == 10.0
    assert req["subcheck_timeout_s"] == 3.0
    bad: object
    for bad in ([], {"mounts": "/"}, {"window_s": "soon"}, {"match": [1]}):
        with pytest.raises(ValueError):
            probe.normalize_request(bad)


def test_encode_document_replaces_an_oversized_response() -> None:
    doc = {"ok": True, "blob": "x" * 500}
    kept, _ = probe.encode_document(doc, 10000)
    assert kept is doc
    replaced, text = probe.encode_document(doc, 100)
    assert replaced["ok"] is False
    assert "max_output_bytes" in replaced["error"]
    assert len(text) < 200


# ---------------------------------------------------------------- labels and N/A as values


def test_smi_version_of_driver_610_reads_the_kmd_version() -> None:
    # DRIVER/CUDA version lines there say "Deprecated, see ... instead": not a version.
    versions = probe.parse_smi_version(fixture("smi_610_version.txt"))
    assert versions == {"driver_version": "610.57.04", "cuda_version": "13.3"}


@pytest.mark.parametrize(
    "cell",
    ['Deprecated, see "KMD version" instead', "[Unknown Error]", "Unknown Error", "ERR!"],
)
def test_smi_value_rejects_labels_and_errors(cell: str) -> None:
    assert probe.smi_value(cell) is None


def test_xml_deprecated_version_elements_are_unknown() -> None:
    parsed = probe.parse_smi_xml(fixture("smi_tesla_t4_deprecated_versions_q.xml"))
    assert (parsed["driver_version"], parsed["cuda_version"]) == (None, None)


def test_xml_throttle_reasons_na_as_a_whole_is_unknown() -> None:
    (gpu,) = probe.parse_smi_xml(fixture("smi_tesla_t4_515_throttle_na_q.xml"))["gpus"]
    assert gpu["throttle_reasons"] is None  # unknown, not "no reason active"
    assert gpu["power_w"] == 26.78  # the rest of the GPU is read


def test_nvlink_link_state_na_is_not_counted_as_up() -> None:
    text = "GPU 0: NVIDIA X (UUID: GPU-1)\n\t Link 0: 25.781 GB/s\n\t Link 1: N/A\n"
    assert probe.parse_smi_nvlink(text) == {0: (1, 1)}
    assert probe.parse_smi_nvlink("GPU 0: NVIDIA X (UUID: GPU-1)\n\t Link 0: N/A\n") == {}


def test_unknown_throttle_reasons_stay_unknown_in_the_model() -> None:
    from ugro_health.model import GpuSample

    (gpu,) = probe.parse_smi_xml(fixture("smi_tesla_t4_515_throttle_na_q.xml"))["gpus"]
    assert GpuSample.from_probe(gpu).to_json()["throttle_reasons"] is None
    assert GpuSample.from_probe({**gpu, "throttle_reasons": []}).to_json()["throttle_reasons"] == []
