"""``status`` by a user who cannot read the store says so in one line (not NEVER POLLED)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_env

from ugro_health.store import StateStore
from ugro_health.store.history import record_from_json

NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run status as another user")
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    runs = subprocess.run([*setpriv, sys.executable, "-c", "pass"], capture_output=True)
    if runs.returncode != 0:  # e.g. a pyenv build whose libpython lies under root's 0700 home
        pytest.skip(f"{sys.executable} cannot be run by another user here")
    path = Path(tempfile.mkdtemp(prefix="ugro-access-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def status_as_nobody(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        [*setpriv, sys.executable, "-m", "ugro_health", *args, "status"],
        cwd=cwd,
        env=cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_without_read_access_is_one_line(shared_dir: Path) -> None:
    (shared_dir / "cluster.yaml").write_text("nodes:\n  - name: gpu1\n    port: 9\n")
    (shared_dir / "cluster.yaml").chmod(0o644)
    state_dir = shared_dir / "store"
    doc = {"name": "gpu1", "status": "ok", "score": 99, "reachable": True, "polled_at": 1e9}
    StateStore(state_dir).record_cycle([record_from_json(doc)])  # 0600 in 0700, root's
    result = status_as_nobody(shared_dir, "--state-dir", str(state_dir))
    assert result.returncode == 3, result
    assert "NEVER POLLED" not in result.stdout and result.stdout == ""
    assert result.stderr == (
        f"ugro-health: state not read: Permission denied ({state_dir / 'state.json'}); "
        "run status as the user that runs check or watch\n"
    )
    state_dir.chmod(0o755)  # the directory is open, the file still 0600
    again = status_as_nobody(shared_dir, "--state-dir", str(state_dir))
    assert again.returncode == 3 and again.stderr == result.stderr
