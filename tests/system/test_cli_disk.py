"""``check`` on a full or read-only state directory: health is still reported (root only)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli  # tests/unit, on pytest's pythonpath
from tmpfs_mount import ROOT_ONLY, mounted_tmpfs

pytestmark = ROOT_ONLY


@pytest.fixture
def tiny_state(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "state", "16k") as mount:
        yield mount


def test_full_disk(tmp_path: Path, tiny_state: Path):
    (tmp_path / "cluster.yaml").write_text("nodes:\n  - name: here\n    host: localhost\n")
    outcomes = []
    for _ in range(8):  # each record is a few KiB: the 16 KiB tmpfs fills within a few runs
        result = run_cli("--state-dir", str(tiny_state), "check", "--json", cwd=tmp_path)
        doc = json.loads(result.stdout)
        assert doc["nodes"][0]["reachable"] is True
        assert result.returncode == {"ok": 0, "warning": 1, "critical": 2}[doc["status"]]
        outcomes.append(result.stderr)
    full = [e for e in outcomes if "No space left on device" in e]
    assert full, outcomes
    assert all(len(e.strip().splitlines()) == 1 and "Traceback" not in e for e in full), full
    history = run_cli("--state-dir", str(tiny_state), "history", "--json", cwd=tmp_path)
    assert history.returncode == 0
    assert "unreadable" not in history.stderr  # whole lines only, nothing torn
    assert len(json.loads(history.stdout)["samples"]) == len(outcomes) - len(
        [e for e in full if "history not recorded" in e or "history and state not" in e]
    )


def test_read_only_state_dir(tmp_path: Path, tiny_state: Path):
    (tmp_path / "cluster.yaml").write_text("nodes:\n  - name: here\n    host: localhost\n")
    assert run_cli("--state-dir", str(tiny_state), "check", cwd=tmp_path).returncode in (0, 1)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_state)], check=True)
    result = run_cli("--state-dir", str(tiny_state), "check", "--json", cwd=tmp_path)
    assert json.loads(result.stdout)["nodes"][0]["reachable"] is True
    assert result.stderr == (
        f"ugro-health: warning: history and state not recorded: Read-only file system "
        f"({tiny_state})\n"
    )
    status = run_cli("--state-dir", str(tiny_state), "status", "--json", cwd=tmp_path)
    assert json.loads(status.stdout)["nodes"][0]["name"] == "here"  # the earlier state is intact
