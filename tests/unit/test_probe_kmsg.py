"""The kernel log read from /dev/kmsg, as `dmesg` prints it, without starting a process.

Against a recorded /dev/kmsg excerpt (tests/fixtures/probe/kmsg_excerpt_with_xids.txt: records
of this machine's real /dev/kmsg, then the Xid lines of the dmesg fixtures as kmsg records), and
against this machine's own /dev/kmsg and `dmesg` where both can be read. When /dev/kmsg cannot
be read the probe runs `dmesg` as before (test_probe_sample.py covers that path and its errors).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ugro_health import probe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"
KMSG_FIXTURE = FIXTURES / "kmsg_excerpt_with_xids.txt"


def write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_recorded_kmsg_gives_the_xids_dmesg_would() -> None:
    xids = probe.parse_xid_lines(probe.kmsg_text(probe.read_kmsg(str(KMSG_FIXTURE))))
    assert [(x["xid"], x["gpu"]) for x in xids] == [
        (79, "0000:b3:00"),  # the three-line "fallen off the bus" message, one record
        (13, "0000:cb:00"),
        (13, "0000:cb:00"),
        (13, "0000:cb:00"),
        (109, "0000:cb:00"),
        (31, "0000:cb:00"),
        (109, "0000:cb:00"),
        (79, "0000:44:00"),
    ]
    assert xids[0]["kernel_time_s"] == 42325.159741
    assert xids[1]["message"].startswith("NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>'")


def test_only_records_naming_nvrm_are_kept_and_nothing_changes() -> None:
    raw = probe.read_kmsg(str(KMSG_FIXTURE))
    everything, kept = probe.kmsg_text(raw, needle=b""), probe.kmsg_text(raw)
    assert len(kept) < len(everything)
    assert probe.parse_xid_lines(kept) == probe.parse_xid_lines(everything)
    assert probe.kmsg_text(b"6,1,0,-;no driver here\n") == ""


def test_records_render_as_dmesg_prints_them() -> None:
    text = probe.kmsg_text(probe.read_kmsg(str(KMSG_FIXTURE)), needle=b"").splitlines()
    # escapes undone (a tab), KEY=value lines left out, the stamp as "[%5d.%06d] "
    assert "[    0.250428] rcu: \tRCU restricting CPUs from NR_CPUS=256 to nr_cpu_ids=2." in text
    assert not any("SUBSYSTEM=" in line for line in text)
    # a multi-line record's further lines are indented under the first, as in the dmesg
    # recording of the same message (tests/fixtures/probe/dmesg_fallen_off_bus_nvsentinel.txt)
    recorded = (FIXTURES / "dmesg_fallen_off_bus_nvsentinel.txt").read_text().splitlines()
    start = text.index("[42325.159741] NVRM: The NVIDIA GPU 0000:b3:00.0")
    assert text[start + 1 : start + 3] == recorded[1:3]


def test_this_machines_kmsg_renders_exactly_as_its_dmesg() -> None:
    dmesg = shutil.which("dmesg")
    if dmesg is None or not os.access(probe.KMSG, os.R_OK):
        pytest.skip("needs a readable /dev/kmsg and dmesg")
    env = dict(os.environ, LC_ALL="C")
    for _ in range(5):  # a new kernel message between the two reads: read both again
        before = probe.read_kmsg(probe.KMSG)
        printed = subprocess.run([dmesg], capture_output=True, env=env, check=True).stdout
        if probe.read_kmsg(probe.KMSG) == before:
            break
    assert probe.kmsg_text(before, needle=b"") == printed.decode("utf-8", "replace")


def test_kernel_log_is_read_without_starting_dmesg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_exe(bin_dir / "dmesg", f'#!/bin/sh\necho run >> "{runs}"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(probe, "KMSG", str(KMSG_FIXTURE))
    doc = probe.Probe().sample({"window_s": 0})
    assert [x["xid"] for x in doc["xids"]] == [79, 13, 13, 13, 109, 31, 109, 79]
    assert "xid" not in doc["errors"]
    assert not runs.exists()


@pytest.mark.parametrize("unreadable", ["missing", "directory"])
def test_unreadable_kmsg_falls_back_to_dmesg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unreadable: str
) -> None:
    kmsg = tmp_path / "kmsg"
    if unreadable == "directory":
        kmsg.mkdir()  # opens, but every read fails (EISDIR)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recording = FIXTURES / "dmesg_ctime_xid_gpud.txt"
    write_exe(bin_dir / "dmesg", f'#!/bin/sh\ncat "{recording}"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(probe, "KMSG", str(kmsg))
    assert [x["xid"] for x in probe.read_kernel_xids(5.0)] == [13, 13, 13, 109, 31, 109]


def test_a_refused_kmsg_reports_dmesgs_own_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kernel.dmesg_restrict=1 refuses both /dev/kmsg and dmesg: the error stays dmesg's
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_exe(
        bin_dir / "dmesg",
        "#!/bin/sh\necho 'dmesg: read kernel buffer failed: Operation not permitted' >&2\nexit 1\n",
    )
    write_exe(bin_dir / "journalctl", "#!/bin/sh\necho 'No journal files were found.' >&2\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(probe, "KMSG", str(tmp_path / "kmsg"))
    with pytest.raises(RuntimeError) as caught:
        probe.read_kernel_xids(5.0)
    assert str(caught.value) == (
        "dmesg: dmesg: read kernel buffer failed: Operation not permitted; "
        "journalctl: No journal files were found."
    )
