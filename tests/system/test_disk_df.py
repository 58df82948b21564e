"""Disk use on real file systems agrees with ``df`` (root only): a loop-mounted ext4 with 5 %
reserved blocks filled to the users' limit, and a tmpfs mount that goes away."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tmpfs_mount import ROOT_ONLY, mounted_tmpfs

from ugro_health import probe
from ugro_health.config import NodeConfig, Thresholds
from ugro_health.engine.scoring import judge
from ugro_health.model import NodeSample

pytestmark = ROOT_ONLY


@pytest.fixture
def ext4_reserved(tmp_path: Path) -> Iterator[Path]:
    image, mount = tmp_path / "fs.img", tmp_path / "mnt"
    with open(image, "wb") as handle:
        handle.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "5", str(image)], check=True)
    mount.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def df_percent(mount: Path) -> int:
    out = subprocess.run(
        ["df", "--output=pcent", str(mount)], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[-1].rstrip("%"))


def disk_pct(mount: Path) -> float | None:
    with probe.Probe() as sampler:
        doc = sampler.sample({"mounts": [str(mount)], "window_s": 0})
    return NodeSample.from_probe(doc).disks[0].util_pct


def test_full_for_users_reads_as_df_does(ext4_reserved: Path):
    st = os.statvfs(ext4_reserved)
    # Fill to the users' limit (root may write into the reserve): df then says 100 %.
    with open(ext4_reserved / "fill", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, st.f_bavail * st.f_frsize)
    st = os.statvfs(ext4_reserved)
    assert st.f_bavail == 0 and st.f_bfree > 0  # the reserve is still there
    assert (st.f_blocks - st.f_bfree) / st.f_blocks < 0.97  # what used / total said
    assert df_percent(ext4_reserved) == 100
    assert disk_pct(ext4_reserved) == 100.0
    sample = NodeSample.from_probe(probe.Probe().sample({"mounts": [str(ext4_reserved)]}))
    codes = [a.code for a in judge(sample, NodeConfig(name="n"), Thresholds()).alerts]
    assert "disk_critical" in codes


def test_partly_used_matches_df(ext4_reserved: Path):
    with open(ext4_reserved / "part", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, 7 << 20)
    assert disk_pct(ext4_reserved) == float(df_percent(ext4_reserved))


def test_mount_gone_raises_mount_missing(tmp_path: Path):
    with mounted_tmpfs(tmp_path / "scratch", "64k") as mount:
        doc = probe.Probe().sample({"mounts": [str(mount)], "window_s": 0})
        assert doc["disks"][0]["mounted"] is True
    # unmounted now: the directory remains, on the parent file system
    doc = probe.Probe().sample({"mounts": [str(mount)], "window_s": 0})
    assert doc["disks"][0]["mounted"] is False and doc["disks"][0]["total_bytes"] is None
    alerts = judge(NodeSample.from_probe(doc), NodeConfig(name="n"), Thresholds()).alerts
    assert [a.code for a in alerts if a.code == "mount_missing"] == ["mount_missing"]
