"""Disk use as ``df`` computes it, and a configured mount that is not mounted (issue 10)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ugro_health import probe
from ugro_health.config import NodeConfig, Thresholds
from ugro_health.engine.scoring import judge
from ugro_health.model import DiskSample, NodeSample, Severity

# `df -B1 /` on the machine these tests were written on: 24753922048 used, 84190371840
# available, 270553174016 in all, "23%". used / total would read 9 %.
DF_ROOT = (270553174016, 24753922048, 84190371840)


def test_util_pct_is_dfs_percent():
    total, used, avail = DF_ROOT
    assert DiskSample("/", total, used, avail_bytes=avail).util_pct == 23.0


def test_util_pct_rounds_up_as_df_does():
    assert DiskSample("/", 1000, 1, avail_bytes=999).util_pct == 1.0  # 0.1 % -> 1 %
    assert DiskSample("/", 1000, 900, avail_bytes=100).util_pct == 90.0  # exact stays
    # Full for users while root still has its 5 % reserve: df says 100 %, used/total 95 %.
    assert DiskSample("/", 1000, 950, avail_bytes=0).util_pct == 100.0
    assert DiskSample("/", 0, 0, avail_bytes=0).util_pct is None


def test_util_pct_of_old_records_without_avail():
    assert DiskSample("/", 200, 50).util_pct == 25.0


def test_warning_fires_at_90_by_df_with_reserved_blocks():
    # 5 % reserved: used 85.5 of 100, available 4.5 -> df says 95 %; used/total said 85 %.
    sample = NodeSample(disks=(DiskSample("/", 1000, 855, avail_bytes=45),))
    codes = [a.code for a in judge(sample, NodeConfig(name="n"), Thresholds()).alerts]
    assert "disk_critical" in codes


@pytest.mark.skipif(shutil.which("df") is None, reason="no df")
def test_probe_agrees_with_df_on_this_machine():
    out = subprocess.run(
        ["df", "-B1", "--output=used,avail,pcent", "/"], capture_output=True, text=True, check=True
    ).stdout.split()
    doc = probe.disk_usage("/")
    disk = DiskSample("/", doc["total_bytes"], doc["used_bytes"], avail_bytes=doc["avail_bytes"])
    assert doc["mounted"] is True
    assert abs(doc["used_bytes"] - int(out[3])) < 1 << 30  # the disk may change in between
    assert abs(doc["avail_bytes"] - int(out[4])) < 1 << 30
    assert disk.util_pct is not None and abs(disk.util_pct - int(out[5].rstrip("%"))) <= 1


MOUNTINFO = (
    "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "40 22 0:35 / /mnt/data\\040set rw - nfs4 srv:/export rw\n"
    "41 22 0:36 / /scratch rw - tmpfs tmpfs rw\n"
)


def test_parse_mountinfo_undoes_escapes():
    assert probe.parse_mountinfo(MOUNTINFO) == ["/", "/mnt/data set", "/scratch"]


def test_is_mount_point(tmp_path: Path):
    assert probe.is_mount_point("/") is True
    assert probe.is_mount_point(str(tmp_path)) is False  # a directory on its parent's fs
    assert probe.is_mount_point(str(tmp_path / "absent")) is False
    (tmp_path / "to-root").symlink_to("/")
    assert probe.is_mount_point(str(tmp_path / "to-root")) is True


def test_is_mount_point_reads_mountinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(MOUNTINFO)
    monkeypatch.setattr(probe, "PROC", str(tmp_path))
    assert probe.is_mount_point("/scratch") is True
    assert probe.is_mount_point("/mnt/data set") is True
    assert probe.is_mount_point("/mnt") is False


def test_unmounted_mount_is_not_measured_and_alerts(tmp_path: Path):
    with probe.Probe() as sampler:
        doc = sampler.sample({"mounts": ["/", str(tmp_path)], "window_s": 0})
    root, missing = doc["disks"]
    assert root["mounted"] is True and root["total_bytes"]
    assert missing["mounted"] is False
    assert missing["total_bytes"] is None and missing["used_bytes"] is None  # not the parent's
    sample = NodeSample.from_probe(doc)
    assert sample.metrics()["disks"][str(tmp_path)]["mounted"] is False
    alerts = judge(sample, NodeConfig(name="n"), Thresholds()).alerts
    (alert,) = [a for a in alerts if a.code == "mount_missing"]
    assert alert.severity is Severity.CRITICAL and str(tmp_path) in alert.message
    assert os.path.isdir(tmp_path)
